"""Kernel start on Kubernetes, split into phases, beside a local and an SSH kernel; and the
gateway's API requests per minute with 1, 10 and 30 idle kernel pods.

Needs the cluster of ci/kubernetes (/tmp/kernelyard-k8s/env) and the SSH hosts of
ci/ssh-hosts (``bash ci/ssh-hosts/start.sh 3``). Run it with the repo's venv:

    python bench/kubernetes_start.py [--rounds 5] [--idle 1,10,30] [--window 60] [--quick]

Two gateways run for the whole run, both as in tests/: one outside the cluster with the
settings of ``tests.kubernetes.gateway_args`` (kernels in a new namespace ``bench-...``,
deleted at the end, also on failure) that also starts the local kernel, and one for the
SSH hosts (their network can't reach the node address the pods call back to). Each round
starts one kernel of each kind in turn, the order rotating. The Kubernetes start is
split with, in this order (all clocks are this machine's):

- API call: POST -> the API server's answer to the gateway's ``create pod`` (the audit
  log's ``stageTimestamp``, microseconds);
- scheduling: -> the scheduler's ``Scheduled`` event (``eventTime``, microseconds; the
  pod's ``PodScheduled`` condition has 1 s resolution and is recorded too);
- container start: -> the start of the pod's first process, the launcher, on this host
  (/proc, 10 ms; the container's ``state.running.startedAt`` has 1 s and is recorded);
- callback: -> the gateway's log line "the launcher on ... called back ... (at <epoch>)";
- kernel_info: -> the first kernel_info_reply on a new websocket.

Idle load: with N kernel pods running (started 3 at a time), the audit log's lines of
the user kernelyard-gateway received in a window after a settle time, per minute.
Results: bench/results/<time>-kubernetes[-quick].json (and the gateway logs).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from remote_start import KERNEL, write_specs  # noqa: E402
from remote_start import STATE as SSH_STATE  # noqa: E402
from yarn import CALLBACK_LINE, git_commit, kernel_info_at, loadavg, log  # noqa: E402

from tests.contract import write_launcher_spec  # noqa: E402
from tests.gateway import Gateway, start_gateway  # noqa: E402
from tests.kubernetes import (  # noqa: E402
    delete_namespace,
    gateway_args,
    gateway_requests,
    kubectl_json,
    make_namespace,
)
from tests.procs import process_table  # noqa: E402

RESULTS = ROOT / "bench" / "results"
USER = "alice"
POD_KERNEL = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
PHASES = ["api_call", "scheduling", "container_start", "callback", "kernel_info"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def epoch(text: str) -> float:
    """An RFC 3339 time of the API server (seconds or microseconds) as an epoch."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def stats(values: list[float]) -> dict[str, float]:
    """Median and p90 (nearest rank) in ms."""
    if not values:
        return {}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, max(0, -(-9 * len(ordered) // 10) - 1))]
    return {"median_ms": round(statistics.median(values) * 1000, 1),
            "p90_ms": round(p90 * 1000, 1), "n": len(values)}


# ---- the gateways ----------------------------------------------------------------------


@contextlib.contextmanager
def gateways(tmp: Path, namespace: str) -> Iterator[dict[str, Gateway]]:
    """The Kubernetes (+ local) gateway and the SSH gateway, stopped at the end."""
    ssh = dict(line.split("=", 1) for line in (SSH_STATE / "env").read_text().splitlines())
    specs = tmp / "jupyter"
    write_specs(specs, ssh["KY_SSH_HOSTS"].split(",")[0])  # local_py, ssh_py
    write_launcher_spec(specs, "k8s_py", "kernelyard-kubernetes", POD_KERNEL)
    venv_spec = {"argv": [sys.executable, *KERNEL[1:]], "display_name": "local venv",
                 "language": "python"}  # the pod image's ipykernel 7.4 / IPython 9, locally
    (specs / "kernels" / "local_venv").mkdir()
    (specs / "kernels" / "local_venv" / "kernel.json").write_text(json.dumps(venv_spec))
    env = {"JUPYTER_PATH": str(specs)}
    user = f"--SharedTokenAuthenticator.user={USER}"
    started: dict[str, Gateway] = {}
    try:
        started["k8s"] = start_gateway(tmp / "k8s", *gateway_args(namespace), user, env=env)
        started["ssh"] = start_gateway(
            tmp / "ssh", "--ip", ssh["KY_SSH_GATEWAY_IP"], user,
            f"--SSHProvisioner.username={ssh['KY_SSH_USER']}",
            f"--SSHProvisioner.client_keys={ssh['KY_SSH_KEY']}",
            f"--SSHProvisioner.known_hosts={ssh['KY_SSH_KNOWN_HOSTS']}", env=env)
        yield started
    finally:
        for gw in started.values():
            gw.stop()


# ---- one start ---------------------------------------------------------------------------


def launcher_started(kernel_id: str) -> float | None:
    """Epoch when the pod's launcher process started on this host (10 ms resolution)."""
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    for proc in process_table().values():
        if any(kernel_id in a for a in proc.cmdline) and any(
                a.endswith("/launcher.py") for a in proc.cmdline):
            with contextlib.suppress(OSError):
                raw = Path(f"/proc/{proc.pid}/stat").read_text()
                return boot + int(raw[raw.rindex(")") + 2:].split()[19]) / CLK_TCK
    return None


def pod_times(namespace: str, kernel_id: str) -> dict[str, float]:
    """The pod's own timestamps (1 s) and the scheduler's Scheduled event (microseconds)."""
    (pod,) = kubectl_json("-n", namespace, "get", "pods",
                          "-l", f"kernelyard.io/kernel-id={kernel_id}")["items"]
    out = {"pod_created_1s": epoch(pod["metadata"]["creationTimestamp"])}
    for cond in pod["status"].get("conditions", []):
        if cond["type"] == "PodScheduled":
            out["pod_scheduled_1s"] = epoch(cond["lastTransitionTime"])
    for status in pod["status"].get("containerStatuses", []):
        if "running" in status.get("state", {}):
            out["container_started_1s"] = epoch(status["state"]["running"]["startedAt"])
    events = kubectl_json("-n", namespace, "get", "events.events.k8s.io",
                          "--field-selector", f"regarding.name={pod['metadata']['name']}")
    for event in events["items"]:
        if event.get("reason") == "Scheduled" and event.get("eventTime"):
            out["scheduled_event"] = epoch(event["eventTime"])
    return out


def requests_in(namespace: str, since: float, until: float) -> list[dict[str, Any]]:
    """The audit log's requests of the gateway identity in our namespace (other gateways,
    the tests' among them, use the same identity in theirs)."""
    found: dict[str, dict[str, Any]] = {}  # once per request: an older audit policy
    for event in gateway_requests(since, until, namespace):  # logged ResponseStarted too
        if event["stage"] == "ResponseComplete" or event["auditID"] not in found:
            found[event["auditID"]] = event
    return list(found.values())


def pod_created(namespace: str, since: float, until: float, kernel_id: str) -> float | None:
    """When the API server answered the gateway's create of this kernel's pod."""
    for event in requests_in(namespace, since, until):
        ref = event.get("objectRef", {})
        if (event["verb"] == "create" and ref.get("resource") == "pods"
                and kernel_id in ref.get("name", event.get("requestURI", ""))):
            return epoch(event["stageTimestamp"])
    creates = [epoch(e["stageTimestamp"]) for e in requests_in(namespace, since, until)
               if e["verb"] == "create" and e.get("objectRef", {}).get("resource") == "pods"]
    return creates[0] if len(creates) == 1 else None


def verbs(namespace: str, since: float, until: float) -> dict[str, int]:
    """The gateway's API requests in a time range, by verb, resource and status code."""
    return dict(Counter(f"{e['verb']} {e.get('objectRef', {}).get('resource', '?')} "
                        f"{e.get('responseStatus', {}).get('code', '?')}"
                        for e in requests_in(namespace, since, until)))


def one_start(gw: Gateway, spec: str, namespace: str) -> dict[str, Any]:
    """POST .. kernel_info_reply, the marks between, then the shutdown."""
    t0 = time.time()
    kid = gw.start_kernel(spec, env={"KERNEL_USERNAME": USER})
    reply = kernel_info_at(gw, kid)
    sample: dict[str, Any] = {"kernel_id": kid, "post": t0, "kernel_info_reply": reply,
                              "total_s": reply - t0}
    found = re.search(CALLBACK_LINE.format(kid=kid), gw.log())
    if found:
        sample["callback"] = float(found.group(2))
    if spec == "k8s_py":
        sample["launcher_started"] = launcher_started(kid)
        sample.update(pod_times(namespace, kid))
        time.sleep(0.5)  # the audit log's lines of the last requests
        sample["pod_created"] = pod_created(namespace, t0 - 1, reply + 1, kid)
        sample["start_requests"] = verbs(namespace, t0, reply)
    d0 = time.time()
    gw.request("DELETE", f"/api/kernels/{kid}")
    sample["shutdown_s"] = time.time() - d0
    if spec == "k8s_py":
        time.sleep(3)  # what the gateway does after answering (the watch's events)
        sample["shutdown_requests"] = verbs(namespace, d0, time.time())
    return sample


def phases(sample: dict[str, Any]) -> dict[str, float]:
    """Seconds per phase, from the finest mark each boundary has."""
    marks = [sample["post"], sample.get("pod_created"),
             sample.get("scheduled_event", sample.get("pod_scheduled_1s")),
             sample.get("launcher_started") or sample.get("container_started_1s"),
             sample.get("callback"), sample["kernel_info_reply"]]
    if any(m is None for m in marks):
        return {}
    return {name: b - a for name, a, b in zip(PHASES, marks, marks[1:], strict=False)}


# ---- idle load ---------------------------------------------------------------------------


def idle_level(gw: Gateway, namespace: str, kernels: list[str], count: int, window: float,
               settle: float) -> dict[str, Any]:
    """Start kernels up to ``count``, let them settle, count one window's requests."""
    missing = count - len(kernels)
    with ThreadPoolExecutor(3) as pool:
        kernels += pool.map(lambda _: gw.start_kernel("k8s_py", env={"KERNEL_USERNAME": USER}),
                            range(missing))
    time.sleep(settle)
    t0 = time.time()
    time.sleep(window)
    t1 = time.time()
    time.sleep(2)  # the audit log's last lines
    by_verb = verbs(namespace, t0, t1)
    total = sum(by_verb.values())
    log(f"{count} idle kernels: {total} requests in {window:.0f} s {by_verb}")
    return {"kernels": count, "from": t0, "until": t1, "window_s": round(t1 - t0, 1),
            "requests": total,
            "per_minute": round(total * 60 / (t1 - t0), 1), "by_verb": by_verb}


def free_mib() -> int:
    """MemAvailable in MiB (free -m's 'available')."""
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(meminfo["MemAvailable"].split()[0]) // 1024


# ---- the run -----------------------------------------------------------------------------


def run(opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    namespace = make_namespace("bench")
    result: dict[str, Any] = {"namespace": namespace, "free_mib_before": free_mib()}
    try:
        with gateways(tmp, namespace) as gws:
            kinds = [("local", gws["k8s"], "local_py"), ("ssh", gws["ssh"], "ssh_py"),
                     ("local_venv", gws["k8s"], "local_venv"),
                     ("kubernetes", gws["k8s"], "k8s_py")]
            # warm-up: the ssh connection, the NetworkPolicy, the image's page cache
            result["warmups"] = {k: one_start(gw, spec, namespace) for k, gw, spec in kinds}
            samples: dict[str, list[dict[str, Any]]] = {k: [] for k, _, _ in kinds}
            for i in range(opts.rounds):
                for kind, gw, spec in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
                    sample = one_start(gw, spec, namespace)
                    samples[kind].append(sample)
                    log(f"round {i + 1} {kind}: {sample['total_s'] * 1000:.0f} ms "
                        f"{ {k: round(v * 1000) for k, v in phases(sample).items()} }")
            result["starts"] = samples
            kernels: list[str] = []
            result["idle"] = [idle_level(gws["k8s"], namespace, kernels, n, opts.window,
                                         opts.settle) for n in opts.idle]
            result["free_mib_with_kernels"] = free_mib()
            for kid in kernels:
                gws["k8s"].request("DELETE", f"/api/kernels/{kid}")
        for name in ("k8s", "ssh"):  # the gateway logs
            shutil.copytree(tmp / name, opts.out.with_suffix("") / name,
                            ignore=shutil.ignore_patterns("runtime", "data"))
        time.sleep(2)  # the stopped gateway's watches are in the audit log now
        for level in result["idle"]:
            level["watches_open"] = open_watches(namespace, level["from"], level["until"])
    finally:
        delete_namespace(namespace)
    return result


def open_watches(namespace: str, t0: float, t1: float) -> int:
    """The most watch requests of the gateway open at once during a window (call it after
    the gateway has stopped: a watch's ResponseComplete line is written when it ends)."""
    spans = [(epoch(e["requestReceivedTimestamp"]), epoch(e["stageTimestamp"]))
             for e in requests_in(namespace, 0, t1) if e["verb"] == "watch"]
    points = [t0] + [start for start, _ in spans if t0 <= start <= t1]
    return max(sum(1 for start, end in spans if start <= at < end) for at in points)


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, samples in result["starts"].items():
        row = {"total": stats([s["total_s"] for s in samples]),
               "shutdown": stats([s["shutdown_s"] for s in samples])}
        split = [phases(s) for s in samples if phases(s)]
        for name in PHASES:
            if split and kind == "kubernetes":
                row[name] = stats([p[name] for p in split])
        if kind == "ssh":
            row["to_callback"] = stats([s["callback"] - s["post"] for s in samples
                                        if "callback" in s])
        out[kind] = row
    k8s = result["starts"]["kubernetes"]
    out["requests_per_start"] = stats_count([s["start_requests"] for s in k8s])
    out["requests_per_shutdown"] = stats_count([s["shutdown_requests"] for s in k8s])
    return out


def stats_count(samples: list[dict[str, int]]) -> dict[str, Any]:
    totals = [sum(s.values()) for s in samples]
    return {"median": statistics.median(totals), "max": max(totals), "example": samples[-1]}


KINDS = {"local": "local, Debian ipykernel 6.17", "ssh": "SSH host, Debian ipykernel 6.17",
         "local_venv": "local, venv ipykernel 7.4", "kubernetes": "pod, image's ipykernel 7.4"}


def print_table(result: dict[str, Any]) -> None:
    s = result["summary"]
    base = {kind: s["local_venv" if kind == "kubernetes" else "local"]["total"]["median_ms"]
            for kind in KINDS}
    print("\n| POST -> kernel_info_reply (ms) | median | p90 | median / same kernel local |"
          "\n|---|---|---|---|")
    for kind, label in KINDS.items():
        row = s[kind]["total"]
        print(f"| {label} | {row['median_ms']:.0f} | {row['p90_ms']:.0f} | "
              f"{row['median_ms'] / base[kind]:.2f}x |")
    for name in PHASES:
        row = s["kubernetes"].get(name)
        if row:
            print(f"| pod: {name} | {row['median_ms']:.0f} | {row['p90_ms']:.0f} | "
                  f"{row['median_ms'] / base['kubernetes']:.2f}x |")
    print("| DELETE /api/kernels/{id}: " + ", ".join(
        f"{kind} {s[kind]['shutdown']['median_ms']:.0f}" for kind in KINDS) + " | | | |")
    print(f"\nAPI requests per start: {s['requests_per_start']}; per shutdown: "
          f"{s['requests_per_shutdown']}")
    print("\n| idle kernels | requests in window | per minute | watches open at once |\n"
          "|---|---|---|---|")
    for level in result["idle"]:
        print(f"| {level['kernels']} | {level['requests']} in {level['window_s']} s | "
              f"{level['per_minute']} | {level.get('watches_open')} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 20 s windows")
    parser.add_argument("--rounds", type=int, help="starts of each kind (default 5)")
    parser.add_argument("--idle", default="1,10,30", type=lambda t: [int(x) for x in t.split(",")],
                        help="idle kernel counts, ascending")
    parser.add_argument("--window", type=float, help="seconds counted per level (default 60)")
    parser.add_argument("--settle", type=float, default=10,
                        help="seconds between the last start and the window")
    opts = parser.parse_args()
    opts.rounds = opts.rounds or (2 if opts.quick else 5)
    opts.window = opts.window or (20 if opts.quick else 60)
    return opts


def main() -> None:
    opts = parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    opts.out = RESULTS / f"{stamp}-kubernetes{'-quick' if opts.quick else ''}.json"
    config = {k: v for k, v in vars(opts).items() if k != "out"}
    began, load = time.time(), loadavg()
    with tempfile.TemporaryDirectory(prefix="kernelyard-bench-k8s-") as tmp:
        result = run(opts, Path(tmp))
    result = {"config": config, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "commit": git_commit(), "kernel": KERNEL,
              "machine": {"cpus": os.cpu_count(), "loadavg_before": load,
                          "loadavg_after": loadavg()},
              "duration_s": round(time.time() - began, 1), **result}
    result["summary"] = summarize(result)
    opts.out.write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"\nresults: {opts.out.relative_to(ROOT)}; load average {result['machine']}")


if __name__ == "__main__":
    main()

"""Benchmark kernelyard against Kernel Gateway, Enterprise Gateway and a direct ipykernel.

    bash bench/setup.sh            # once: the venvs in bench/.venvs/
    python bench/run.py [--quick]  # re-runs itself in bench/.venvs/kernelyard

All targets run at once and the benchmarks alternate between them round by
round (in a rotating order), so that machine noise hits every target alike.
Results go to bench/results/<time>-<mode>.json; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import client
import targets
from targets import Target

BENCH = Path(__file__).resolve().parent
RUNNER_VENV = BENCH / ".venvs" / "kernelyard"
RESULTS = BENCH / "results"
ALL_TARGETS = ("direct", "kernelyard", "jkg", "eg")
LINES_CODE = "for i in range({n}): print(i)"
DISPLAY_CODE = "from IPython.display import display\nfor i in range({n}): display(i)"


@dataclass(frozen=True)
class Config:
    rounds: int
    starts: int  # kernel starts per target per round
    executes: int  # timed `1+1` executes per target, protocol and round
    warmup: int
    lines: int
    displays: int
    concurrent: int


FULL = Config(rounds=3, starts=10, executes=500, warmup=30, lines=200_000, displays=10_000,
              concurrent=30)
QUICK = Config(rounds=1, starts=4, executes=200, warmup=20, lines=50_000, displays=2_000,
               concurrent=10)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- one kernel at a time ---------------------------------------------------


class KernelSession:
    """A kernel of a target with one open channel; shuts the kernel down on exit."""

    def __init__(self, target: Target, *, v1: bool = False):
        self.target, self.v1 = target, v1
        self.kernel_id = target.start_kernel()
        self.channel: Any = None

    def __enter__(self) -> KernelSession:
        try:
            self.reconnect(self.v1)
        except BaseException:
            self.target.shutdown_kernel(self.kernel_id)
            raise
        return self

    def reconnect(self, v1: bool) -> None:
        if self.channel is not None:
            self.channel.close()
        self.channel = self.target.connect(self.kernel_id, v1=v1)
        client.kernel_info(self.channel)
        client.wait_iopub(self.channel)

    def __exit__(self, *exc: object) -> None:
        try:
            if self.channel is not None:
                self.channel.close()
        finally:
            self.target.shutdown_kernel(self.kernel_id)


def gateway_cpu(target: Target) -> float | None:
    return targets.cpu_seconds(target.pid) if target.pid else None


def bench_start(target: Target, cfg: Config) -> dict[str, Any]:
    """Kernel start: start request until the first kernel_info_reply on a fresh channel."""
    samples = []
    for _ in range(cfg.starts):
        t0 = time.perf_counter()
        kid = target.start_kernel()
        try:
            ch = target.connect(kid)
            try:
                client.kernel_info(ch)
                samples.append(time.perf_counter() - t0)
            finally:
                ch.close()
        finally:
            target.shutdown_kernel(kid)
    return {"start_s": samples}


def time_executes(channel: Any, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        res = client.execute(channel, "1+1", timeout=30)
        if res.results != ["2"]:
            raise RuntimeError(f"unexpected result of 1+1: {res}")
        samples.append(res.seconds)
    return samples


def bench_execute(target: Target, cfg: Config) -> dict[str, Any]:
    """`1+1` round trips (reply + idle) and the gateway's CPU time, per wire format."""
    out: dict[str, Any] = {}
    with KernelSession(target) as ks:
        protocols = ["json"]
        if target.supports_v1(ks.kernel_id):
            protocols.append("v1")
        for proto in protocols:
            ks.reconnect(proto == "v1")
            time_executes(ks.channel, cfg.warmup)
            cpu0 = gateway_cpu(target)
            samples = time_executes(ks.channel, cfg.executes)
            cpu1 = gateway_cpu(target)
            out[f"rtt_{proto}_s"] = samples
            if cpu0 is not None and cpu1 is not None:
                out[f"cpu_{proto}_s_per_exec"] = [(cpu1 - cpu0) / cfg.executes]
    return out


def bench_output(target: Target, cfg: Config) -> dict[str, Any]:
    """A cell printing many lines, and one making many display() calls."""
    with KernelSession(target) as ks:
        cpu0 = gateway_cpu(target)
        lines = client.execute(ks.channel, LINES_CODE.format(n=cfg.lines), timeout=900)
        cpu1 = gateway_cpu(target)
        client.drain(ks.channel)
        disp = client.execute(ks.channel, DISPLAY_CODE.format(n=cfg.displays), timeout=900)
    out = {
        "lines_s": [lines.seconds],
        "lines_received": [lines.stdout_lines],
        "lines_stderr": ["".join(lines.stderr)[:500]],
        "display_s": [disp.seconds],
        "displays_received": [disp.displays],
        "display_stderr": ["".join(disp.stderr)[:500]],
    }
    if cpu0 is not None and cpu1 is not None:
        out["lines_cpu_s"] = [cpu1 - cpu0]
    return out


# --- many kernels at once ---------------------------------------------------


def in_threads(fn: Callable[[int], Any], n: int, timeout: float) -> list[Any]:
    """Run fn(0..n-1) in n threads; each result is the return value or the exception."""
    results: list[Any] = [TimeoutError("thread did not finish")] * n

    def run(i: int) -> None:
        try:
            results[i] = fn(i)
        except Exception as e:  # every failure is a counted error
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(deadline - time.monotonic(), 0))
    return results


class ConcurrentKernel:
    """One of the kernels started at once, driven by its own thread like a real client:
    start, wait for kernel_info_reply, keep reading (which answers websocket pings) until
    every kernel is ready or failed, then check that `1+1` still runs over the channel."""

    def __init__(self, target: Target, t0: float, all_ready: threading.Event):
        self.target, self.t0, self.all_ready = target, t0, all_ready
        self.kernel_id: str | None = None
        self.ready_s: float | None = None
        self.error: str | None = None
        self.started = threading.Event()  # set once ready or failed

    def run(self, deadline: float) -> None:
        ch = None
        try:
            self.kernel_id = self.target.start_kernel()
            ch = self.target.connect(self.kernel_id)
            client.kernel_info(ch, timeout=deadline - time.monotonic())
            self.ready_s = time.perf_counter() - self.t0
        except Exception as e:
            self.error = f"start: {e!r}"[:300]
        finally:
            self.started.set()
        if ch is None:
            return
        try:
            if self.ready_s is not None:
                self._idle_until_all_ready(ch)
                self._check(ch)
        except Exception as e:
            self.error = f"execute: {e!r}"[:300]
        finally:
            ch.close()

    def _idle_until_all_ready(self, ch: Any) -> None:
        while not self.all_ready.is_set():
            try:
                ch.recv(0.2)
            except TimeoutError:
                pass

    def _check(self, ch: Any) -> None:
        res = client.execute(ch, "1+1", timeout=120)
        if res.results != ["2"]:
            raise RuntimeError(f"unexpected result of 1+1: {res}")


def bench_concurrent(target: Target, cfg: Config, wait: float = 240) -> dict[str, Any]:
    """N kernels started at once: time until all answered kernel_info, errors, gateway RSS."""
    rss0 = targets.rss_bytes(target.pid) if target.pid else None
    all_ready = threading.Event()
    t0, deadline = time.perf_counter(), time.monotonic() + wait
    kernels = [ConcurrentKernel(target, t0, all_ready) for _ in range(cfg.concurrent)]
    threads = [threading.Thread(target=k.run, args=(deadline,), daemon=True) for k in kernels]
    for t in threads:
        t.start()
    for k in kernels:
        k.started.wait(max(deadline - time.monotonic(), 0))
    rss1 = targets.rss_bytes(target.pid) if target.pid else None
    all_ready.set()
    for t in threads:
        t.join(150)
    errors = [k.error or "start: no answer in time" for k in kernels
              if k.error or k.ready_s is None]
    ids = [k.kernel_id for k in kernels if k.kernel_id]
    shut = in_threads(lambda i: target.shutdown_kernel(ids[i]), len(ids), timeout=120)
    errors += [f"shutdown: {r!r}"[:300] for r in shut if isinstance(r, BaseException)]
    ready = [k.ready_s for k in kernels if k.ready_s is not None]
    out: dict[str, Any] = {"concurrent_errors": [len(errors)], "concurrent_error_text": errors}
    if ready:
        out["concurrent_s"] = [max(ready)]
        out["concurrent_ready"] = [len(ready)]
    if rss0 is not None and rss1 is not None:
        out["rss_per_kernel_mb"] = [(rss1 - rss0) / cfg.concurrent / 2**20]
    return out


BENCHMARKS: dict[str, Callable[[Any, Config], dict[str, Any]]] = {
    "start": bench_start,
    "execute": bench_execute,
    "output": bench_output,
    "concurrent": bench_concurrent,
}


# --- the run ----------------------------------------------------------------


def start_targets(
    names: list[str], running: dict[str, Target], logs: Path | None = None
) -> dict[str, str]:
    """Start what can be started into ``running`` (which the caller stops, even half-started
    ones); return why the others failed."""
    failed: dict[str, str] = {}
    for name in names:
        target = targets.make_target(name)
        if isinstance(target, targets.GatewayTarget) and not target.installed():
            failed[name] = f"not installed in {target.venv} (run bash bench/setup.sh)"
            continue
        log(f"starting {name}")
        running[name] = target
        try:
            target.start()
        except Exception as e:
            failed[name] = f"failed to start: {e}"[:3000]
            log(f"{name}: {failed[name]}")
            stop_target(running.pop(name), logs)
            continue
        log(f"{name}: up (pid {target.pid}), kernels run {target.kernel_python}")
    return failed


def stop_target(target: Target, logs: Path | None = None) -> None:
    log(f"stopping {target.name}")
    try:
        target.stop(logs)
    except Exception as e:
        log(f"stopping {target.name} failed: {e!r}")


def run_rounds(running: dict[str, Target], cfg: Config, benches: list[str]) -> tuple[dict, dict]:
    """samples[target][metric] = list of values; errors[target] = list of failure texts."""
    samples: dict[str, dict[str, list]] = {name: {} for name in running}
    errors: dict[str, list[str]] = {name: [] for name in running}
    names = list(running)
    for rnd in range(cfg.rounds if names else 0):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for bench_name in benches:
            bench = BENCHMARKS[bench_name]
            for name in order:
                t0 = time.monotonic()
                try:
                    result = bench(running[name], cfg)
                except Exception as e:
                    errors[name].append(f"round {rnd + 1} {bench_name}: {e!r}"[:1000])
                    log(f"round {rnd + 1} {bench_name} {name}: FAILED {e!r}")
                    continue
                for key, values in result.items():
                    samples[name].setdefault(key, []).extend(values)
                log(f"round {rnd + 1}/{cfg.rounds} {bench_name:10} {name:10} "
                    f"{time.monotonic() - t0:6.1f}s")
    return samples, errors


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(0.99 * len(ordered)) - 1, 0)]


def summarize(samples: dict[str, list], cfg: Config) -> dict[str, float | int]:
    """One target's numbers (ms, MB, counts) from its raw samples."""
    s: dict[str, float | int] = {}

    def med(key: str, scale: float = 1.0) -> float | None:
        return statistics.median(samples[key]) * scale if samples.get(key) else None

    for key, value in {
        "start_ms": med("start_s", 1e3),
        "rtt_json_ms": med("rtt_json_s", 1e3),
        "rtt_v1_ms": med("rtt_v1_s", 1e3),
        "cpu_json_ms_per_exec": med("cpu_json_s_per_exec", 1e3),
        "cpu_v1_ms_per_exec": med("cpu_v1_s_per_exec", 1e3),
        "lines_s": med("lines_s"),
        "lines_cpu_s": med("lines_cpu_s"),
        "display_s": med("display_s"),
        "concurrent_s": med("concurrent_s"),
        "rss_per_kernel_mb": med("rss_per_kernel_mb"),
    }.items():
        if value is not None:
            s[key] = value
    for proto in ("json", "v1"):
        if samples.get(f"rtt_{proto}_s"):
            s[f"rtt_{proto}_p99_ms"] = p99(samples[f"rtt_{proto}_s"]) * 1e3
    if samples.get("lines_received"):
        s["lines_received_min"] = min(samples["lines_received"])
        s["lines_per_s"] = statistics.median(
            n / t for n, t in zip(samples["lines_received"], samples["lines_s"], strict=True)
        )
    if samples.get("displays_received"):
        s["displays_received_min"] = min(samples["displays_received"])
        s["display_dropped_pct"] = 100 * (1 - s["displays_received_min"] / cfg.displays)
    if samples.get("concurrent_errors"):
        s["concurrent_errors"] = sum(samples["concurrent_errors"])
    return s


# --- report -----------------------------------------------------------------

ROWS = [  # (summary key, label, format, whether a ratio means something)
    ("start_ms", "kernel start, median (ms)", "{:.0f}", True),
    ("rtt_json_ms", "execute `1+1` round trip, median (ms), JSON", "{:.2f}", True),
    ("rtt_json_p99_ms", "execute round trip, p99 (ms), JSON", "{:.2f}", True),
    ("rtt_v1_ms", "execute round trip, median (ms), v1 protocol", "{:.2f}", True),
    ("rtt_v1_p99_ms", "execute round trip, p99 (ms), v1 protocol", "{:.2f}", True),
    ("cpu_json_ms_per_exec", "gateway CPU per execute (ms), JSON", "{:.2f}", True),
    ("cpu_v1_ms_per_exec", "gateway CPU per execute (ms), v1", "{:.2f}", True),
    ("lines_s", "{lines} printed lines: time to idle (s)", "{:.2f}", True),
    ("lines_received_min", "{lines} printed lines: lines received (min)", "{:d}", True),
    ("lines_per_s", "printed lines received per second", "{:,.0f}", True),
    ("lines_cpu_s", "gateway CPU for the printed lines (s)", "{:.2f}", True),
    ("display_s", "{displays} display() calls: time to idle (s)", "{:.2f}", True),
    ("displays_received_min", "display_data received (min)", "{:d}", True),
    ("display_dropped_pct", "display_data dropped (%)", "{:.1f}", False),
    ("concurrent_s", "{concurrent} kernels at once: time until all ready (s)", "{:.1f}", True),
    ("concurrent_errors", "{concurrent} kernels at once: errors (all rounds)", "{:d}", False),
    ("rss_per_kernel_mb", "gateway RSS increase per kernel (MB)", "{:.2f}", True),
]
LABELS = {"direct": "direct", "kernelyard": "kernelyard", "jkg": "JKG 3.0.1", "eg": "EG 3.3.0"}


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return ""
    return f"{a / b:.2f}x"


def markdown_table(summary: dict[str, dict], failed: dict[str, str], cfg: Config) -> str:
    names = [n for n in ALL_TARGETS if n in summary or n in failed]
    others = [n for n in ("direct", "jkg", "eg") if n in names]
    head = ["metric", *(LABELS[n] for n in names), *(f"ky/{LABELS[n]}" for n in others)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ky = summary.get("kernelyard", {})
    for key, label, fmt, with_ratio in ROWS:
        cells = [label.format(**asdict(cfg))]
        for n in names:
            value = summary.get(n, {}).get(key)
            cells.append("failed" if n in failed else "n/a" if value is None else
                         fmt.format(value))
        cells += [ratio(ky.get(key), summary.get(n, {}).get(key)) if with_ratio else ""
                  for n in others]
        if any(c not in ("n/a", "failed", "") for c in cells[1 : 1 + len(names)]):
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(summary: dict[str, dict]) -> list[dict[str, Any]]:
    """The issue's targets, checked against this run."""
    ky, direct, jkg = (summary.get(n, {}) for n in ("kernelyard", "direct", "jkg"))

    def check(name: str, value: float | None, limit: float, at_most: bool) -> dict[str, Any]:
        met = None if value is None else (value <= limit if at_most else value >= limit)
        return {"goal": name, "value": value, "limit": limit, "met": met}

    def rel(a: dict, b: dict, key: str) -> float | None:
        return a[key] / b[key] if key in a and b.get(key) else None

    return [
        check("execute round trip median <= 1.25x direct", rel(ky, direct, "rtt_json_ms"),
              1.25, True),
        check("gateway CPU per execute <= 0.5x JKG", rel(ky, jkg, "cpu_json_ms_per_exec"),
              0.5, True),
        check("kernel start <= 1.1x direct", rel(ky, direct, "start_ms"), 1.1, True),
        check("printed-lines throughput >= 0.9x direct", rel(ky, direct, "lines_per_s"),
              0.9, False),
        check("no errors with many kernels at once", ky.get("concurrent_errors"), 0, True),
    ]


def goals_text(checks: list[dict[str, Any]]) -> str:
    out = []
    for c in checks:
        mark = "n/a" if c["met"] is None else "MET" if c["met"] else "NOT MET"
        value = "" if c["value"] is None else f" (measured {c['value']:.2f})"
        if isinstance(c["value"], int):
            value = f" (measured {c['value']})"
        out.append(f"- {c['goal']}: **{mark}**{value}")
    return "\n".join(out)


# --- main -------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    git = ["git", "-C", str(BENCH.parent)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "kernelyard", "pyproject.toml"],
                           capture_output=True, text=True).stdout.strip()
    return {"cpus": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "git_commit": commit, "kernelyard_uncommitted_changes": bool(dirty)}


def ensure_runner_venv() -> None:
    """Re-exec in bench/.venvs/kernelyard (which has the client deps and ipykernel)."""
    python = RUNNER_VENV / "bin" / "python"
    if not python.exists():
        sys.exit(f"{python} is missing: run `bash bench/setup.sh` first")
    stamp = RUNNER_VENV / ".bench-stamp"
    pyproject = hashlib.sha256((BENCH.parent / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or pyproject[:16] not in stamp.read_text():
        sys.exit("kernelyard's pyproject.toml changed since bench/.venvs/kernelyard was made: "
                 "run `bash bench/setup.sh` again")
    if Path(sys.prefix).resolve() != RUNNER_VENV.resolve():
        os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small counts, ~3 minutes (smoke test)")
    p.add_argument("--rounds", type=int, help="override the number of rounds")
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS),
                   help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    p.add_argument("--targets", default=",".join(ALL_TARGETS),
                   help=f"comma-separated subset of {','.join(ALL_TARGETS)}")
    return p.parse_args()


def on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so that the finally blocks stop every target


def split_names(text: str, known: Any, what: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = set(names) - set(known)
    if unknown:
        sys.exit(f"unknown {what}: {sorted(unknown)}")
    return names


def run(cfg: Config, mode: str, names: list[str], benches: list[str]) -> dict[str, Any]:
    """Start the targets, run the rounds, stop the targets; return the report."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = RESULTS / f"{stamp}-{mode}-logs"
    machine = machine_info()  # before the run: other people may commit meanwhile
    began = time.monotonic()
    running: dict[str, Target] = {}
    try:
        failed = start_targets(names, running, logs)
        samples, errors = run_rounds(running, cfg, benches)
    finally:
        for target in running.values():
            stop_target(target, logs)
    summary = {name: summarize(s, cfg) for name, s in samples.items()}
    return {
        "mode": mode, "stamp": stamp, "config": asdict(cfg), "benchmarks": benches,
        "machine": machine, "duration_s": time.monotonic() - began,
        "versions": {n: t.versions for n, t in running.items()},
        "kernel_python": {n: t.kernel_python for n, t in running.items()},
        "failed_targets": failed, "errors": errors, "summary": summary,
        "goals": goals(summary), "logs": str(logs), "samples": samples,
    }


def print_report(report: dict[str, Any], path: Path) -> None:
    cfg = Config(**report["config"])
    machine = report["machine"]
    print(f"## kernelyard benchmark ({report['mode']} mode, {cfg.rounds} round(s), "
          f"{report['duration_s'] / 60:.1f} min, commit {machine['git_commit']}, "
          f"{machine['cpus']} CPUs {machine['cpu_model']})\n")
    print(markdown_table(report["summary"], report["failed_targets"], cfg))
    print()
    for name, versions in report["versions"].items():
        print(f"- {LABELS[name]}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print("\n" + goals_text(report["goals"]))
    for name, why in report["failed_targets"].items():
        print(f"\n{name} FAILED: {why}")
    for name, errs in report["errors"].items():
        for err in errs:
            print(f"\n{name} error: {err}")
    for name, samples in report["samples"].items():
        for err in samples.get("concurrent_error_text", []):
            print(f"\n{name} error with {cfg.concurrent} kernels at once: {err}")
    print(f"\nresults: {path}\ngateway logs: {report['logs']}")


def main() -> int:
    ensure_runner_venv()
    args = parse_args()
    cfg = QUICK if args.quick else FULL
    if args.rounds:
        cfg = Config(**{**asdict(cfg), "rounds": args.rounds})
    names = split_names(args.targets, ALL_TARGETS, "targets")
    benches = split_names(args.benchmarks, BENCHMARKS, "benchmarks")
    signal.signal(signal.SIGTERM, on_sigterm)
    mode = "quick" if args.quick else "full"
    log(f"mode {mode}: {cfg}")
    report = run(cfg, mode, names, benches)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{report['stamp']}-{mode}.json"
    path.write_text(json.dumps(report, indent=1))
    print_report(report, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

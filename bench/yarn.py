"""YARN cluster-mode Spark kernels: where a start's time goes, and the RM polling load.

Needs the single-machine YARN of ci/yarn (its state in /tmp/kernelyard-yarn/env), and
for ``--targets ...,eg`` the EG venv of bench/setup.sh. Run it with the repo's venv
(kernelyard, tornado and websocket-client):

    .venv/bin/python bench/yarn.py start [--starts 5] [--targets kernelyard,eg]
    .venv/bin/python bench/yarn.py polling [--kernels 3,10] [--window 60] [--targets ...]

``start``: sequential starts of ``spark_python_yarn_cluster`` as alice in queue
analytics (with several targets, one start each per round, in rotating order). Each
POST /api/kernels is split with the gateway's log lines (EG: the launcher's line in
the driver's container log) and the RM's app record into submit, YARN scheduling,
driver start and callback -> 201. The gateway's CPU per start is its own plus its
children's (reaped or not: the spark-submit JVMs), from /proc before and after.

``polling``: a counting reverse proxy (bench/rm_proxy.py) sits in front of the RM
and the kernelspec points at it; with 0, then 3, then 10 idle kernels the requests
of a 60 s window are counted by path. Targets run one after the other.

Every YARN application of a run carries the run's tag; whatever is still active
under it at the end is killed, and the run fails if that leaves any behind.
Results: bench/results/<time>-yarn-<command>-<targets>.json (and the gateway logs).
EG's kernelspec (bin/run.sh, scripts/launch_ipykernel.py) is in bench/eg_yarn_kernelspec/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from rm_proxy import CountingProxy  # noqa: E402

from tests.gateway import Gateway, free_port, start_gateway, stop_process  # noqa: E402
from tests.yarncluster import ACTIVE, apps, kill, rm  # noqa: E402

STATE = Path(os.environ.get("KY_YARN_STATE", "/tmp/kernelyard-yarn"))
RESULTS = ROOT / "bench" / "results"
SPEC = "spark_python_yarn_cluster"
START_TIMEOUT = 400  # seconds for one POST on two busy cores
CLK_TCK = os.sysconf("SC_CLK_TCK")
C1 = "-XX:TieredStopAtLevel=1"  # faster JVM start on two cores (as tests/integration does)


# ---- the cluster ----------------------------------------------------------------------


class Yarn:
    """The cluster of ci/yarn: its env file and the few RM REST calls the benchmark makes."""

    def __init__(self, state: Path = STATE):
        lines = (state / "env").read_text().splitlines()
        self.env = dict(line.split("=", 1) for line in lines if "=" in line)
        self.rm_url = self.env["KY_YARN_RM_URL"]

    def rm(self, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
        return rm(self.env, path, method, body)

    def apps(self, tag: str, states: str = "") -> list[dict[str, Any]]:
        return apps(self.env, tag, states or None)

    def app_of_kernel(self, tag: str, kernel_id: str) -> dict[str, Any] | None:
        """The newest app of the run whose name holds the kernel id (both gateways do that)."""
        mine = [a for a in self.apps(tag) if kernel_id in a["name"]]
        return max(mine, key=lambda a: a["startedTime"], default=None)

    def kill_active(self, tag: str) -> list[str]:
        """Kill every active application carrying ``tag``; their ids."""
        left = self.apps(tag, ACTIVE)
        for app in left:
            with contextlib.suppress(OSError):
                kill(self.env, app["id"])
        return [a["id"] for a in left]

    def wait_inactive(self, tag: str, timeout: float = 90) -> list[str]:
        """Wait until nothing tagged ``tag`` is active; the ids still active at the timeout."""
        deadline = time.monotonic() + timeout
        while (left := [a["id"] for a in self.apps(tag, ACTIVE)]) and (
                time.monotonic() < deadline):
            time.sleep(1)
        return left

    def available_mb(self) -> int:
        return int(self.rm("/ws/v1/cluster/metrics")["clusterMetrics"]["availableMB"])

    def site(self, name: str) -> str:
        """A property of yarn-site.xml (as the RM runs it)."""
        text = Path(self.env["HADOOP_CONF_DIR"], "yarn-site.xml").read_text()
        found = re.search(rf"<name>{re.escape(name)}</name><value>([^<]*)</value>", text)
        return found.group(1) if found else ""


# ---- measuring --------------------------------------------------------------------------


def _cpu_fields(pid: int) -> tuple[int, float]:
    """(ppid, utime + stime + cutime + cstime in s) of a process, zombies included."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def cpu_with_children(pid: int) -> float:
    """CPU seconds of a process and of all its children: the reaped ones (cutime, cstime)
    and those not reaped yet, running or zombie (EG reaps spark-submit only at cleanup)."""
    total = _cpu_fields(pid)[1]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != pid:
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid, seconds = _cpu_fields(int(entry.name))
                if ppid == pid:
                    total += seconds
    return total


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def kernel_info_at(gw: Gateway, kernel_id: str, timeout: float = 120) -> float:
    """Epoch when a kernel_info_reply arrives on a newly opened websocket."""
    ks = gw.connect(kernel_id)
    try:
        msg_id = ks.send("shell", "kernel_info_request", {})
        deadline = time.monotonic() + timeout
        while True:
            msg = ks.recv(timeout=max(1.0, deadline - time.monotonic()))
            if msg["channel"] == "shell" and msg["parent_header"].get("msg_id") == msg_id:
                return time.time()
    finally:
        ks.close()


def git_commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    return out.stdout.strip()


def log(text: str) -> None:
    print(f"[yarn-bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---- the gateways -----------------------------------------------------------------------


@dataclass
class Target:
    """A running gateway with the YARN kernelspec, and how to read its start timings."""

    name: str
    gw: Gateway
    tag: str  # every YARN application of the run carries it
    tmp: Path
    kernels: set[str] = field(default_factory=set)
    extra_env: dict[str, str] = field(default_factory=dict)
    # (target, kernel id, app record) -> submit_s, submit_end, callback_at (what is known)
    timings: Callable[[Target, str, dict[str, Any]], dict[str, float]] = (
        lambda target, kid, app: {})

    @property
    def pid(self) -> int:
        return int(self.gw.proc.pid)

    def post(self, env: dict[str, str]) -> tuple[int, Any]:
        model = {"name": SPEC, "env": {**env, **self.extra_env}}
        status, body, _ = self.gw.request("POST", "/api/kernels", model, timeout=START_TIMEOUT)
        if status == 201:
            self.kernels.add(body["id"])
        return status, body

    def delete(self, kernel_id: str) -> int:
        status = self.gw.request("DELETE", f"/api/kernels/{kernel_id}", timeout=120)[0]
        self.kernels.discard(kernel_id)
        return int(status)

    def alive(self) -> dict[str, str]:
        """Execution state of every kernel the gateway lists."""
        status, listed, _ = self.gw.request("GET", "/api/kernels")
        return {k["id"]: k.get("execution_state", "?") for k in listed} if status == 200 else {}


@dataclass
class SparkSizing:
    driver_memory: str
    driver_overhead: str  # '' = Spark's default (max(10 %, 384m))


def yarn_spark_conf(yarn: Yarn, sizing: SparkSizing) -> dict[str, str]:
    """The Spark conf the CI cluster needs (as tests/integration/test_yarn_kernels.py)."""
    spark_home = yarn.env["KY_YARN_SPARK_HOME"]
    conf = {
        "spark.yarn.jars": f"local:{spark_home}/jars/*",
        "spark.yarn.stagingDir": f"file://{yarn.env['KY_YARN_STAGING_DIR']}",
        "spark.yarn.appMasterEnv.SPARK_LOCAL_IP": "127.0.0.1",
        "spark.executorEnv.SPARK_LOCAL_IP": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.driver.extraJavaOptions": C1,
        "spark.executor.extraJavaOptions": C1,
    }
    if sizing.driver_overhead:
        conf["spark.driver.memoryOverhead"] = sizing.driver_overhead
    return conf


def install_ky_spec(prefix: Path, yarn: Yarn, rm_url: str, sizing: SparkSizing) -> Path:
    args = [sys.executable, "-m", "kernelyard.cli.main", "kernelspec", "install", "yarn",
            "--name", SPEC, "--prefix", str(prefix), "--python", yarn.env["KY_YARN_PYTHON"],
            "--driver-memory", sizing.driver_memory, "--executor-memory", "512m",
            "--spark-session", "lazy", "--queue", "analytics", "--rm-urls", rm_url,
            "--launch-timeout", str(START_TIMEOUT - 30)]
    for key, value in yarn_spark_conf(yarn, sizing).items():
        args += ["--spark-conf", f"{key}={value}"]
    subprocess.run(args, check=True, capture_output=True)
    return prefix / "share" / "jupyter"


SUBMIT_LINE = r"Kernel {kid}: spark-submit took ([0-9.]+) s \(at ([0-9.]+)\)"
CALLBACK_LINE = (r"Kernel {kid}: the launcher on \S+ called back ([0-9.]+) s after submit "
                 r"\(at ([0-9.]+)\)")


def ky_timings(target: Target, kid: str, app: dict[str, Any]) -> dict[str, float]:
    """spark-submit's duration and end, and the callback's time, from kernelyard's log."""
    log_text = target.gw.log()
    out: dict[str, float] = {}
    found = re.search(SUBMIT_LINE.format(kid=kid), log_text)
    if found:
        out["submit_s"], out["submit_end"] = float(found.group(1)), float(found.group(2))
    found = re.search(CALLBACK_LINE.format(kid=kid), log_text)
    if found:
        out["callback_at"] = float(found.group(2))
    return out


@contextlib.contextmanager
def kernelyard_target(yarn: Yarn, rm_url: str, sizing: SparkSizing,
                      poll_interval: float) -> Iterator[Target]:
    tmp = Path(tempfile.mkdtemp(prefix="kernelyard-yarn-bench-"))
    tag = f"kybench-{uuid.uuid4().hex[:12]}"
    specs = install_ky_spec(tmp / "specs", yarn, rm_url, sizing)
    env = {"JUPYTER_PATH": str(specs), "HADOOP_CONF_DIR": yarn.env["HADOOP_CONF_DIR"],
           "JAVA_HOME": yarn.env["JAVA_HOME"], "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_SUBMIT_OPTS": C1}
    gw = start_gateway(tmp, f"--YarnProvisioner.instance_tag={tag}",
                       f"--YarnProvisioner.poll_interval={poll_interval}", env=env)
    target = Target("kernelyard", gw, tag, tmp, timings=ky_timings)
    try:
        yield target
    finally:
        shutdown(target, yarn)
        shutil.rmtree(tmp, ignore_errors=True)


def shutdown(target: Target, yarn: Yarn) -> None:
    """Delete the run's kernels, stop the gateway, kill what is left of the run on YARN."""
    for kid in list(target.kernels):
        with contextlib.suppress(Exception):
            target.delete(kid)
    stop_process(target.gw.proc)
    killed = yarn.kill_active(target.tag)
    if killed:
        log(f"killed applications left active: {killed}")
    left = yarn.wait_inactive(target.tag)
    if left:
        raise RuntimeError(f"YARN applications of tag {target.tag} still active: {left}")
    log(f"no application of tag {target.tag} is RUNNING or ACCEPTED any more")


def keep_logs(target: Target, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for path in target.tmp.glob("*.log"):
        shutil.copy(path, dest / path.name)


# ---- Enterprise Gateway -----------------------------------------------------------------

EG_VENV = ROOT / "bench" / ".venvs" / "eg"
EG_SPEC_FILES = ROOT / "bench" / "eg_yarn_kernelspec"  # bin/run.sh, scripts/launch_ipykernel.py
EG_PROXY = "enterprise_gateway.services.processproxies.yarn.YarnClusterProcessProxy"
EG_LAUNCH_TIMEOUT = str(START_TIMEOUT - 30)  # EG's default is 30 s


# What kernelyard's YARN kernelspecs get by default (no executors until a job needs them);
# without it, Spark on YARN asks for 2 executors per kernel at once.
KY_DYNAMIC_ALLOCATION = {"spark.dynamicAllocation.enabled": "true",
                         "spark.dynamicAllocation.shuffleTracking.enabled": "true",
                         "spark.dynamicAllocation.minExecutors": "0",
                         "spark.dynamicAllocation.initialExecutors": "0"}


def eg_kernel_json(yarn: Yarn, sizing: SparkSizing, tag: str) -> dict[str, Any]:
    """EG's spark_python_yarn_cluster kernelspec, for this cluster and run."""
    conf = {**yarn_spark_conf(yarn, sizing), **KY_DYNAMIC_ALLOCATION,
            "spark.executor.memory": "512m", "spark.yarn.submit.waitAppCompletion": "false",
            "spark.yarn.maxAppAttempts": "1", "spark.yarn.tags": tag,
            "spark.pyspark.python": str(EG_VENV / "bin" / "python")}
    opts = ["--master yarn --deploy-mode cluster --name ${KERNEL_ID}",
            "--queue ${KERNEL_QUEUE}", f"--driver-memory {sizing.driver_memory}",
            *(f"--conf {key}={value}" for key, value in conf.items())]
    return {
        "display_name": "Spark - Python (YARN Cluster Mode), EG layout",
        "language": "python",
        "metadata": {"process_proxy": {"class_name": EG_PROXY}},
        "env": {"SPARK_HOME": yarn.env["KY_YARN_SPARK_HOME"], "JAVA_HOME": yarn.env["JAVA_HOME"],
                "HADOOP_CONF_DIR": yarn.env["HADOOP_CONF_DIR"], "PATH": os.environ["PATH"],
                "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_SUBMIT_OPTS": C1,
                "SPARK_OPTS": " ".join(opts), "LAUNCH_OPTS": ""},
        "argv": ["{resource_dir}/bin/run.sh",
                 "--RemoteProcessProxy.kernel-id", "{kernel_id}",
                 "--RemoteProcessProxy.response-address", "{response_address}",
                 "--RemoteProcessProxy.public-key", "{public_key}",
                 "--RemoteProcessProxy.port-range", "{port_range}",
                 "--RemoteProcessProxy.spark-context-initialization-mode", "lazy"],
    }


def eg_timings(target: Target, kid: str, app: dict[str, Any]) -> dict[str, float]:
    """When the launcher sent its connection info, from the driver container's log (Spark's
    PythonRunner merges the Python's stderr into the driver's stdout)."""
    if not app.get("id"):
        return {}
    logs = Path(Yarn().env["KY_YARN_NM_LOG_DIR"], app["id"])
    for path in sorted(logs.glob("container_*_000001/std*")):
        found = re.search(rf"launcher: kernel {kid} sent its connection info at ([0-9.]+)",
                          path.read_text(errors="replace"))
        if found:
            return {"callback_at": float(found.group(1))}
    return {}


def start_eg(tmp: Path, rm_url: str) -> Gateway:
    port, token = free_port(), uuid.uuid4().hex
    env = {**os.environ, "JUPYTER_PATH": str(tmp / "jupyter"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_DATA_DIR": str(tmp / "data"),
           "JUPYTER_CONFIG_DIR": str(tmp / "config"), "IPYTHONDIR": str(tmp / "ipython")}
    argv = [str(EG_VENV / "bin" / "jupyter"), "enterprisegateway", "--ip=127.0.0.1",
            f"--port={port}", "--port_retries=0", f"--EnterpriseGatewayApp.auth_token={token}",
            f"--EnterpriseGatewayApp.yarn_endpoint={rm_url}",
            "--EnterpriseGatewayApp.impersonation_enabled=True",
            "--EnterpriseGatewayApp.list_kernels=True"]
    log_path = tmp / "gateway-eg.log"
    with log_path.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    gw = Gateway(proc, f"http://127.0.0.1:{port}", token, log_path, tmp / "runtime")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if gw.request("GET", "/api/kernelspecs", timeout=5)[0] == 200:
                return gw
        time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError(f"EG did not start:\n{gw.log()[-3000:]}")


@contextlib.contextmanager
def eg_target(yarn: Yarn, rm_url: str, sizing: SparkSizing) -> Iterator[Target]:
    tmp = Path(tempfile.mkdtemp(prefix="eg-yarn-bench-"))
    tag = f"egbench-{uuid.uuid4().hex[:12]}"
    spec_dir = tmp / "jupyter" / "kernels" / SPEC
    shutil.copytree(EG_SPEC_FILES, spec_dir)
    (spec_dir / "kernel.json").write_text(json.dumps(eg_kernel_json(yarn, sizing, tag), indent=1))
    gw = start_eg(tmp, rm_url)
    target = Target("eg", gw, tag, tmp, extra_env={"KERNEL_LAUNCH_TIMEOUT": EG_LAUNCH_TIMEOUT},
                    timings=eg_timings)
    try:
        yield target
    finally:
        shutdown(target, yarn)
        shutil.rmtree(tmp, ignore_errors=True)


# ---- start ------------------------------------------------------------------------------

KERNEL_ENV = {"KERNEL_USERNAME": "alice", "KERNEL_QUEUE": "analytics"}


def one_start(target: Target, yarn: Yarn) -> dict[str, Any]:
    """One start, split into its parts; the kernel is deleted and its app gone after."""
    load, cpu0, post = loadavg(), cpu_with_children(target.pid), time.time()
    status, body = target.post(KERNEL_ENV)
    created = time.time()
    cpu = cpu_with_children(target.pid) - cpu0
    if status != 201:
        raise RuntimeError(f"POST /api/kernels: {status} {body}")
    kid = body["id"]
    try:
        ready = kernel_info_at(target.gw, kid)
        app = yarn.app_of_kernel(target.tag, kid)
    finally:
        target.delete(kid)
    sample = {"kernel_id": kid, "loadavg": load, "post": post, "created": created,
              "ready": ready, "gateway_cpu_s": round(cpu, 3), "app": _app_fields(app)}
    sample.update(split(sample, target.timings(target, kid, app or {})))
    if app and yarn.wait_inactive(target.tag, 90):
        raise RuntimeError(f"{app['id']} did not end after its kernel was deleted")
    return sample


def _app_fields(app: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("id", "user", "queue", "startedTime", "launchTime", "allocatedMB", "state")
    return {k: app.get(k) for k in keys} if app else {}


def split(sample: dict[str, Any], logged: dict[str, float]) -> dict[str, float]:
    """The parts of a start. The ``t_`` parts follow each other and add up to the total."""
    app = sample["app"]
    out = {"post_to_201_s": sample["created"] - sample["post"],
           "post_to_kernel_info_s": sample["ready"] - sample["post"]}
    if not app or not app.get("launchTime"):
        return {k: round(v, 3) for k, v in out.items()}
    accepted, launched = app["startedTime"] / 1000, app["launchTime"] / 1000
    out.update(yarn_scheduling_s=launched - accepted,
               t_post_to_rm_accepted_s=accepted - sample["post"],
               t_rm_accepted_to_am_launch_s=launched - accepted)
    if "submit_s" in logged:
        out["submit_s"] = logged["submit_s"]
    if "callback_at" in logged:
        callback = logged["callback_at"]
        out.update(driver_start_s=callback - launched,
                   callback_to_201_s=sample["created"] - callback,
                   t_am_launch_to_callback_s=callback - launched,
                   t_callback_to_201_s=sample["created"] - callback)
    return {k: round(v, 3) for k, v in out.items()}


START_PARTS = [
    ("post_to_201_s", "POST -> 201 (total)"),
    ("submit_s", "submit: spark-submit (gateway log)"),
    ("yarn_scheduling_s", "YARN scheduling: RM startedTime -> launchTime"),
    ("driver_start_s", "driver start: AM launch -> launcher callback"),
    ("callback_to_201_s", "callback -> 201 (kernel_info)"),
    ("gateway_cpu_s", "gateway CPU per start, with spark-submit (s)"),
    ("post_to_kernel_info_s", "POST -> kernel_info_reply on a new websocket"),
    ("t_post_to_rm_accepted_s", "timeline: POST -> RM startedTime (incl. spark-submit)"),
    ("t_rm_accepted_to_am_launch_s", "timeline: RM startedTime -> launchTime"),
    ("t_am_launch_to_callback_s", "timeline: launchTime -> callback"),
    ("t_callback_to_201_s", "timeline: callback -> 201"),
]


def cmd_start(opts: argparse.Namespace) -> dict[str, Any]:
    """Rounds of one start per target, the targets' order rotating from round to round."""
    yarn = Yarn()
    sizing = SparkSizing(opts.driver_memory, opts.driver_overhead)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {"samples": [], "warmups": []} for name in opts.targets}
    with contextlib.ExitStack() as stack:
        targets = [stack.enter_context(make_target(name, opts, yarn, yarn.rm_url, sizing))
                   for name in opts.targets]
        try:
            for i in range(opts.warmup + opts.starts):
                for target in targets[i % len(targets):] + targets[:i % len(targets)]:
                    sample = one_start(target, yarn)
                    runs[target.name]["warmups" if i < opts.warmup else "samples"].append(sample)
                    log(f"{target.name} start {i + 1}: {sample['post_to_201_s']:.1f} s to 201, "
                        f"gateway CPU {sample['gateway_cpu_s']:.2f} s, load {sample['loadavg']}")
        finally:
            for target in targets:
                keep_logs(target, opts.out.with_suffix("") / target.name)
    for run in runs.values():
        run["summary"] = {key: summary([s[key] for s in run["samples"] if key in s])
                          for key, _ in START_PARTS}
    return {"targets": runs, "sizing": sizing.__dict__}


def print_start(result: dict[str, Any]) -> None:
    names = list(result["targets"])
    print(f"\n| part ({result['config']['starts']} starts each; median, min-max in s) | "
          + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for key, label in START_PARTS:
        cells = []
        for name in names:
            row = result["targets"][name]["summary"].get(key)
            cells.append(f"{row['median']:.2f} ({row['min']:.2f}-{row['max']:.2f})"
                         if row else "n/a")
        print(f"| {label} | " + " | ".join(cells) + " |")


# ---- polling ----------------------------------------------------------------------------


def start_kernels(target: Target, yarn: Yarn, count: int, container_mb: int,
                  queues: list[str], parallel: int) -> list[str]:
    """Start ``count`` kernels, ``parallel`` at a time, while the cluster has room; the ids."""
    started: list[str] = []
    lock = threading.Lock()

    def start(i: int) -> None:
        with lock:
            if yarn.available_mb() < container_mb:
                log(f"kernel {i}: no room left on the cluster, not started")
                return
        status, body = target.post({"KERNEL_USERNAME": "alice",
                                    "KERNEL_QUEUE": queues[i % len(queues)]})
        if status != 201:
            log(f"kernel {i}: POST failed: {status} {str(body)[:300]}")
            return
        with lock:
            started.append(body["id"])

    first = len(target.kernels)
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(start, range(first, first + count)))
    return started


def count_window(proxy: CountingProxy, seconds: float) -> dict[str, Any]:
    load0, begin = loadavg(), time.time()
    time.sleep(seconds)
    end = time.time()
    counts = proxy.requests_between(begin, end)
    total = sum(counts.values())
    return {"window_s": round(end - begin, 2), "requests": counts, "total": total,
            "per_minute": round(total * 60 / (end - begin), 1),
            "loadavg_before": load0, "loadavg_after": loadavg()}


def cmd_polling(opts: argparse.Namespace) -> dict[str, Any]:
    """Each target in turn (they would share the cluster's memory), behind its own proxy."""
    yarn = Yarn()
    sizing = SparkSizing(opts.driver_memory, opts.driver_overhead)
    runs = {name: polling_run(opts, yarn, sizing, name) for name in opts.targets}
    return {"targets": runs, "sizing": sizing.__dict__,
            "eg_by_source_per_kernel_per_min": EG_POLLS_PER_KERNEL_PER_MIN}


def polling_run(opts: argparse.Namespace, yarn: Yarn, sizing: SparkSizing,
                name: str) -> dict[str, Any]:
    proxy = CountingProxy(yarn.rm_url).start()
    levels: list[dict[str, Any]] = []
    try:
        with make_target(name, opts, yarn, proxy.url, sizing) as target:
            try:
                for wanted in [0, *opts.kernels]:
                    levels.append(polling_level(opts, yarn, proxy, target, wanted))
            finally:
                keep_logs(target, opts.out.with_suffix("") / name)
    finally:
        proxy.stop()
    return {"levels": levels, "proxy_totals": proxy.snapshot()}


def polling_level(opts: argparse.Namespace, yarn: Yarn, proxy: CountingProxy, target: Target,
                  wanted: int) -> dict[str, Any]:
    missing = wanted - len(target.kernels)
    if missing > 0:
        log(f"starting {missing} kernels (to {wanted})")
        start_kernels(target, yarn, missing, opts.container_mb, opts.queues, opts.parallel)
    time.sleep(opts.settle)
    running = yarn.apps(target.tag, "RUNNING")
    log(f"{len(target.kernels)} kernels up ({len(running)} RUNNING apps); counting "
        f"{opts.window:.0f} s")
    window = count_window(proxy, opts.window)
    states = target.alive()
    level = {"kernels_wanted": wanted, "kernels": len(target.kernels),
             "running_apps": len(yarn.apps(target.tag, "RUNNING")),
             "allocated_mb": sum(int(a.get("allocatedMB") or 0) for a in running),
             "mb_per_app": sorted({int(a.get("allocatedMB") or 0) for a in running}),
             "kernel_states": states, **window}
    log(f"{level['kernels']} kernels: {window['per_minute']} RM requests/min "
        f"{window['requests']}, load {window['loadavg_after']}")
    return level


# EG 3.3.0, by its source: YarnClusterProcessProxy.poll() (processproxies/yarn.py) makes one
# GET /ws/v1/cluster/apps/{id}/state per kernel each time jupyter_client's restarter polls,
# every KernelRestarter.time_to_dead = 3.0 s.
EG_POLLS_PER_KERNEL_PER_MIN = 60 / 3.0


def print_polling(result: dict[str, Any]) -> None:
    print("\n| target | idle kernels | RM requests/min (by path, in the window) | "
          "EG 3.3.0 by its source | load avg (1 min) |\n|---|---|---|---|---|")
    for name, run in result["targets"].items():
        for lv in run["levels"]:
            paths = ", ".join(f"{k}: {v}" for k, v in sorted(lv["requests"].items()))
            model = lv["kernels"] * EG_POLLS_PER_KERNEL_PER_MIN
            print(f"| {name} | {lv['kernels']} | {lv['per_minute']} ({paths or '-'}) | "
                  f"{model:.0f} | {lv['loadavg_after'][0]} |")


# ---- main -------------------------------------------------------------------------------


def make_target(name: str, opts: argparse.Namespace, yarn: Yarn, rm_url: str,
                sizing: SparkSizing) -> contextlib.AbstractContextManager[Target]:
    if name == "eg":
        return eg_target(yarn, rm_url, sizing)
    return kernelyard_target(yarn, rm_url, sizing, opts.poll_interval)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "polling"):
        p = sub.add_parser(name)
        p.add_argument("--targets", default="kernelyard", type=lambda s: s.split(","),
                       help="kernelyard, eg or kernelyard,eg")
        p.add_argument("--poll-interval", type=float, default=2.0,
                       help="kernelyard's YarnProvisioner.poll_interval (its default: 2)")
        p.add_argument("--driver-memory", default="512m" if name == "start" else "460m")
        p.add_argument("--driver-overhead", default="" if name == "start" else "300m",
                       help="spark.driver.memoryOverhead ('' = Spark's default)")
    start = sub.choices["start"]
    start.add_argument("--starts", type=int, default=5)
    start.add_argument("--warmup", type=int, default=1, help="starts before the measured ones")
    polling = sub.choices["polling"]
    polling.add_argument("--kernels", default="3,10",
                         type=lambda s: sorted(int(x) for x in s.split(",")))
    polling.add_argument("--window", type=float, default=60.0)
    polling.add_argument("--settle", type=float, default=15.0,
                         help="seconds after the last start before counting")
    polling.add_argument("--queues", default="analytics,default", type=lambda s: s.split(","),
                         help="kernels alternate between these queues (each queue's AM "
                         "limit is 90 %% of the cluster)")
    polling.add_argument("--container-mb", type=int, default=768,
                         help="start a kernel only while the cluster has this much free")
    polling.add_argument("--parallel", type=int, default=2, help="starts at a time")
    return parser.parse_args()


def main() -> None:
    opts = parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if set(opts.targets) - {"kernelyard", "eg"}:
        raise SystemExit(f"unknown target in {opts.targets}")
    opts.out = RESULTS / f"{stamp}-yarn-{opts.command}-{'-'.join(opts.targets)}.json"
    config = {k: v for k, v in vars(opts).items() if k != "out"}
    began, load = time.time(), loadavg()
    result = (cmd_start if opts.command == "start" else cmd_polling)(opts)
    result = {"command": opts.command, "config": config,
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": git_commit(),
              "machine": {"cpus": os.cpu_count(), "loadavg_before": load,
                          "loadavg_after": loadavg()},
              "duration_s": round(time.time() - began, 1), **result}
    opts.out.write_text(json.dumps(result, indent=1))
    (print_start if opts.command == "start" else print_polling)(result)
    print(f"\nresults: {opts.out.relative_to(ROOT)}; load average {result['machine']}")


if __name__ == "__main__":
    main()

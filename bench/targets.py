"""The benchmark targets: how to start, use and stop each gateway (and the direct baseline).

Every target offers ``start_kernel`` (returns a kernel id), ``connect`` (a
``client.KernelChannel`` to that kernel) and ``shutdown_kernel``; gateways also
expose the ``pid`` of the gateway process, whose CPU time and RSS are measured.
Gateways run from their own venv in bench/.venvs/, each with a private temp
dir for JUPYTER_RUNTIME_DIR / JUPYTER_DATA_DIR / JUPYTER_CONFIG_DIR / IPYTHONDIR,
on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import client

BENCH = Path(__file__).resolve().parent
VENVS = BENCH / ".venvs"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
VERSION_CODE = """
import importlib.metadata as md, json, sys
out = {"python": sys.version.split()[0]}
for p in ("kernelyard", "jupyter_kernel_gateway", "jupyter_enterprise_gateway",
          "jupyter_server", "jupyter_client", "ipykernel", "pyzmq", "tornado"):
    try:
        out[p] = md.version(p)
    except md.PackageNotFoundError:
        pass
print(json.dumps(out))
"""


# --- /proc ------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat from field 3 (state) on; the name may contain spaces."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process itself (all its threads, not its children)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def _start_time(pid: int) -> int | None:
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, ValueError, IndexError):
        return None


def descendants(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of every process below ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            started = _start_time(child)
            if started is not None:
                found.append((child, started))
                todo.append(child)
    return found


def kill_leftovers(procs: list[tuple[int, int]]) -> int:
    """SIGKILL those of ``procs`` still alive (same pid *and* start time); return how many."""
    killed = 0
    for pid, started in procs:
        if _start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def python_versions(python: str, env: dict[str, str], cwd: Path) -> dict[str, str]:
    """Versions of Python and the Jupyter packages in ``python``'s environment."""
    out = subprocess.run([python, "-c", VERSION_CODE], capture_output=True, text=True,
                         check=True, cwd=cwd, env=env)
    return json.loads(out.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_dirs(root: Path) -> dict[str, str]:
    """Env vars giving a target its own Jupyter/IPython dirs under ``root``."""
    dirs = {
        "JUPYTER_RUNTIME_DIR": root / "runtime",
        "JUPYTER_DATA_DIR": root / "data",
        "JUPYTER_CONFIG_DIR": root / "config",
        "IPYTHONDIR": root / "ipython",
    }
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return {k: str(v) for k, v in dirs.items()}


def clean_env() -> dict[str, str]:
    """This process's env without anything that would point a child at another Python."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "JUPYTER_PATH", "KERNELYARD_AUTH_TOKEN")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("JUPYTER_")}


# --- targets ----------------------------------------------------------------


class Target:
    """Base class: a thing that starts kernels."""

    name = ""
    label = ""
    pid: int | None = None

    def __init__(self) -> None:
        self.tmp: Path | None = None
        self.versions: dict[str, str] = {}
        self.kernel_python = ""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, keep_logs: Path | None = None) -> None:
        """Stop everything this target started; copy its logs into ``keep_logs`` first."""
        raise NotImplementedError

    def start_kernel(self) -> str:
        raise NotImplementedError

    def connect(self, kernel_id: str, *, v1: bool = False) -> client.KernelChannel:
        raise NotImplementedError

    def shutdown_kernel(self, kernel_id: str) -> None:
        raise NotImplementedError

    def supports_v1(self, kernel_id: str) -> bool:
        """Whether the target speaks the v1.kernel.websocket.jupyter.org wire format."""
        return False

    def check_kernel(self) -> None:
        """Start one kernel, note which Python runs it, shut it down (also a warm-up)."""
        kid = self.start_kernel()
        try:
            ch = self.connect(kid)
            try:
                client.kernel_info(ch)
                client.wait_iopub(ch)
                res = client.execute(ch, "import sys; print(sys.executable, end='')")
                self.kernel_python = res.stdout_text
            finally:
                ch.close()
        finally:
            self.shutdown_kernel(kid)

    def _make_tmp(self) -> Path:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        return self.tmp

    def _remove_tmp(self, keep_logs: Path | None) -> None:
        if self.tmp is None:
            return
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for log in self.tmp.glob("*.log"):
                shutil.copyfile(log, keep_logs / f"{self.name}-{log.name}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None


class DirectTarget(Target):
    """ipykernel driven by jupyter_client in this process: no gateway at all."""

    name = "direct"
    label = "direct ipykernel"

    def __init__(self) -> None:
        super().__init__()
        self._kms: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._env: dict[str, str] = {}

    def start(self) -> None:
        tmp = self._make_tmp()
        self._env = {**clean_env(), **private_dirs(tmp)}
        self.versions = python_versions(sys.executable, self._env, tmp)
        self.check_kernel()

    def start_kernel(self) -> str:
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        assert self.tmp is not None
        kid = uuid.uuid4().hex
        km = KernelManager(
            kernel_name="python3",
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[]),  # only ipykernel's own
            connection_file=str(self.tmp / "runtime" / f"kernel-{kid}.json"),
        )
        with self._lock:
            self._kms[kid] = km
        with (self.tmp / "kernels.log").open("a") as log:  # as a gateway's kernels do
            km.start_kernel(env=self._env, cwd=str(self.tmp), stdout=log, stderr=log)
        return kid

    def connect(self, kernel_id: str, *, v1: bool = False) -> client.KernelChannel:
        return client.ZmqChannel(self._kms[kernel_id])

    def shutdown_kernel(self, kernel_id: str) -> None:
        with self._lock:
            km = self._kms.pop(kernel_id, None)
        if km is not None and km.has_kernel:
            km.shutdown_kernel(now=False)
            km.cleanup_resources()

    def stop(self, keep_logs: Path | None = None) -> None:
        for kid in list(self._kms):
            try:
                self.shutdown_kernel(kid)
            except Exception:  # fall back to killing it
                km = self._kms.pop(kid, None)
                if km is not None and km.has_kernel:
                    km.kill_kernel()
        self._remove_tmp(keep_logs)


@dataclass
class GatewaySpec:
    name: str
    label: str
    venv: str
    argv: list[str]  # after the executable; {port} and {token} are filled in
    token_env: str | None = None  # env var carrying the token, if not on the command line


# A user name for the kernel, as Jupyter Server's gateway client sends (EG refuses 'root').
KERNEL_REQUEST = {"name": "python3", "env": {"KERNEL_USERNAME": "bench"}}

GATEWAYS = {
    "kernelyard": GatewaySpec(
        "kernelyard", "kernelyard", "kernelyard",
        ["bin/kernelyard", "serve", "--ip", "127.0.0.1", "--port", "{port}",
         "--port-retries", "0"],
        token_env="KERNELYARD_AUTH_TOKEN",
    ),
    "jkg": GatewaySpec(
        "jkg", "Kernel Gateway 3.0.1", "jkg",
        ["bin/jupyter", "kernelgateway", "--ip=127.0.0.1", "--port={port}",
         "--port_retries=0", "--KernelGatewayApp.auth_token={token}"],
    ),
    "eg": GatewaySpec(
        "eg", "Enterprise Gateway 3.3.0", "eg",
        ["bin/jupyter", "enterprisegateway", "--ip=127.0.0.1", "--port={port}",
         "--port_retries=0", "--EnterpriseGatewayApp.auth_token={token}"],
    ),
}


class GatewayTarget(Target):
    """A gateway server process started from its venv."""

    def __init__(self, spec: GatewaySpec):
        super().__init__()
        self.spec = spec
        self.name, self.label = spec.name, spec.label
        self.venv = VENVS / spec.venv
        self.token = secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None
        self.base = ""
        self._kernels: set[str] = set()
        self._lock = threading.Lock()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    @property
    def log_path(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "gateway.log"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def installed(self) -> bool:
        return (self.venv / self.spec.argv[0]).exists()

    def start(self, timeout: float = 90) -> None:
        tmp = self._make_tmp()
        port = free_port()
        env = {**clean_env(), **private_dirs(tmp)}
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '')}"
        if self.spec.token_env:
            env[self.spec.token_env] = self.token
        self.versions = python_versions(str(self.venv / "bin/python"), env, tmp)
        argv = [a.format(port=port, token=self.token) for a in self.spec.argv]
        argv[0] = str(self.venv / argv[0])
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=tmp, start_new_session=True)
        self.pid = self.proc.pid
        self.base = f"http://127.0.0.1:{port}"
        self._wait_ready(timeout)
        self.check_kernel()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n"
                                   + self.log_tail())
            try:
                client.http_json("GET", self.base + "/api/kernelspecs", self.headers, timeout=5)
                return
            except (OSError, client.HttpError):
                time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not answer within {timeout}s:\n" + self.log_tail())

    def start_kernel(self) -> str:
        model = client.http_json("POST", self.base + "/api/kernels", self.headers,
                                 KERNEL_REQUEST, timeout=120)
        with self._lock:
            self._kernels.add(model["id"])
        return model["id"]

    def connect(self, kernel_id: str, *, v1: bool = False) -> client.KernelChannel:
        url = f"ws{self.base[4:]}/api/kernels/{kernel_id}/channels"
        return client.WsChannel(url, self.headers, v1=v1)

    def supports_v1(self, kernel_id: str) -> bool:
        ch = self.connect(kernel_id, v1=True)
        try:
            return isinstance(ch, client.WsChannel) and ch.v1
        finally:
            ch.close()

    def shutdown_kernel(self, kernel_id: str) -> None:
        try:
            client.http_json("DELETE", f"{self.base}/api/kernels/{kernel_id}", self.headers,
                             timeout=60)
        except client.HttpError as e:
            if e.status != 404:
                raise
        with self._lock:
            self._kernels.discard(kernel_id)

    def stop(self, keep_logs: Path | None = None) -> None:
        """Delete our kernels, SIGTERM the gateway, then SIGKILL anything of it left."""
        if self.proc is None:
            self._remove_tmp(keep_logs)
            return
        for kid in list(self._kernels):
            try:
                self.shutdown_kernel(kid)
            except Exception:  # the kill below is the fallback
                pass
        procs = descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.2)
        kill_leftovers(procs)
        self.proc = None
        self._remove_tmp(keep_logs)


def make_target(name: str) -> Target:
    return DirectTarget() if name == "direct" else GatewayTarget(GATEWAYS[name])

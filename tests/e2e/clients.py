"""End-to-end helpers: real Jupyter Server / JupyterLab processes in front of kernelyard.

Every process runs in its own temp folders (root dir, JUPYTER_RUNTIME_DIR,
JUPYTER_CONFIG_DIR, JUPYTER_DATA_DIR, JupyterLab settings and workspaces), so
nothing is read from or written to the user's Jupyter setup.

A missing prerequisite skips the test, or fails it under KERNELYARD_REAL_PARTS=required
(CI, which installs them all with ``bash ci/e2e/install.sh``): tests/realparts.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websocket

from tests import realparts
from tests.gateway import Gateway, KernelSocket, free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
E2E_NODE_DIR = Path(os.environ.get("KERNELYARD_E2E_NODE_DIR", REPO / "ci" / "e2e"))
CHROMIUM = Path(os.environ.get("KERNELYARD_E2E_CHROMIUM", "/usr/bin/chromium"))


def require(ok: bool, what: str) -> None:
    """Skip, or in CI fail, the test when a prerequisite is missing (tests/realparts.py)."""
    if not ok:
        realparts.missing("e2e", f"e2e prerequisite missing: {what}")


def require_jupyterlab() -> None:
    try:
        import jupyter_server
        import jupyterlab
    except ImportError as e:
        require(False, f"JupyterLab 4 / jupyter_server for {sys.executable} ({e})")
        return
    require(jupyterlab.__version__.startswith("4."),
            f"JupyterLab 4 (found JupyterLab {jupyterlab.__version__})")
    require(jupyter_server.__version__.startswith("2."),
            f"jupyter_server 2 (found {jupyter_server.__version__})")


def require_browser() -> None:
    require(CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK), f"Chromium at {CHROMIUM}")
    require(shutil.which("node") is not None, "node (Node.js 20) on PATH")
    require((E2E_NODE_DIR / "node_modules" / "playwright-core" / "package.json").is_file(),
            f"playwright-core in {E2E_NODE_DIR / 'node_modules'}")


# JupyterLab settings that keep a test run quiet and offline: no news, no update check,
# no PyPI lookups by the extension manager.
JUPYTER_CONFIG = {
    "ServerApp": {"open_browser": False},
    "LabApp": {
        "news_url": None,
        "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
        "extension_manager": "readonly",
    },
}
LAB_USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


@dataclass
class JupyterProcess:
    """A running ``jupyter server`` or ``jupyter lab`` that uses kernelyard as its gateway."""

    proc: subprocess.Popen
    url: str
    token: str
    log_path: Path
    root_dir: Path

    def request(
        self, method: str, path: str, body: Any = None, *, timeout: float = 60
    ) -> tuple[int, Any]:
        """Call Jupyter Server's own REST API; return (status, parsed JSON body or text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def connect(self, kernel_id: str, *, session_id: str | None = None) -> KernelSocket:
        """Open Jupyter Server's kernel websocket (which it proxies to kernelyard)."""
        session_id = session_id or uuid.uuid4().hex
        ws = websocket.create_connection(
            f"ws{self.url[len('http'):]}/api/kernels/{kernel_id}/channels"
            f"?session_id={session_id}",
            header=[f"Authorization: token {self.token}"],
            timeout=60,
        )
        return KernelSocket(ws, v1=False, session_id=session_id)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (Jupyter Server then shuts its gateway kernels down), SIGKILL if stuck."""
        return stop_process(self.proc, signal.SIGTERM, timeout)


def start_jupyter(
    tmp: Path,
    gateway: Gateway,
    *,
    app: str = "server",
    root_dir: Path | None = None,
    args: tuple[str, ...] = (),
    wait: float = 90,
) -> JupyterProcess:
    """Start ``jupyter <app> --gateway-url=<kernelyard>`` on a free loopback port.

    The gateway token goes through GatewayClient's env var and Jupyter's own token
    through JUPYTER_TOKEN, so neither shows in the process list.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    root = root_dir or tmp / "root"
    root.mkdir(parents=True, exist_ok=True)
    dirs = {name: tmp / name for name in ("runtime", "config", "data", "workspaces")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps(JUPYTER_CONFIG))
    settings = dirs["config"] / "lab" / "user-settings"
    for rel, value in LAB_USER_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))

    token = f"jupyter-e2e-{uuid.uuid4().hex}"
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("JUPYTER_", "JUPYTERLAB_", "KERNELYARD_"))
    }
    env.update(
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        JUPYTER_TOKEN=token,
        JUPYTER_GATEWAY_AUTH_TOKEN=gateway.token,
    )
    port = free_port()
    cmd = [
        sys.executable, "-m", "jupyter", app,
        f"--gateway-url={gateway.url}",
        "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
        f"--ServerApp.root_dir={root}",
        "--no-browser", "--allow-root",
        *args,
    ]
    log_path = tmp / f"jupyter-{app}-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    jp = JupyterProcess(proc, f"http://127.0.0.1:{port}", token, log_path, root)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            # GET /api/me (checks the token) needs no gateway, unlike /api/status, which
            # lists the gateway's kernels: a gateway error then fails the test, not this.
            status, _ = jp.request("GET", "/api/me", timeout=5)
        except OSError:
            status = 0
        if status == 200:
            return jp
        time.sleep(0.2)
    jp.stop()
    raise RuntimeError(f"jupyter {app} did not start (exit {proc.returncode}):\n{jp.log()}")


def gateway_kernel_ids(gateway: Gateway) -> set[str]:
    status, kernels, _ = gateway.request("GET", "/api/kernels")
    assert status == 200, (status, kernels)
    return {k["id"] for k in kernels}


def diagnostics(*procs: Gateway | JupyterProcess) -> str:
    """The logs of the given processes, for assertion messages."""
    return "\n".join(f"----- {p.log_path.name} -----\n{p.log()}" for p in procs)

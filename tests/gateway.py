"""Start a real kernelyard process for tests, and talk to it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

from tests.envsweep import EnvSweep
from tests.waits import poll

LISTENING = re.compile(r"is listening on (http\S+)")
# Secrets shorter than this are not swept for: they would match ordinary words.
MIN_SECRET_LENGTH = 8
# Seconds a test waits for a kernel start: longer than the gateway's own bounds
# (launch_timeout + the ready wait, 240 s by default), so a slow start on a loaded
# machine fails in the gateway, with its reason, or not at all.
START_WAIT = 600.0


@dataclass
class SecretRegistry:
    """Every secret the test run handed out, and every place that must not hold one.

    ``start_gateway`` registers each gateway's token and log file, and every
    ``Gateway`` its process, whose kernels' environments are kept as they appear
    (tests/envsweep.py); tests add more (kernel keys, callback tokens, launcher
    logs). ``tests/conftest.py`` sweeps the logs (the gateways' own output, tornado's
    and the access log included) and the kernels' environments for the secrets when
    the session ends and fails the run on a hit.
    """

    secrets: dict[str, str] = field(default_factory=dict)  # value -> what it is
    logs: list[Path] = field(default_factory=list)
    envs: EnvSweep = field(default_factory=EnvSweep)

    def add_secret(self, value: str | bytes | None, what: str) -> None:
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if text and len(text) >= MIN_SECRET_LENGTH:
            self.secrets.setdefault(text, what)

    def add_log(self, path: Path) -> None:
        if path not in self.logs:
            self.logs.append(path)

    def add_gateway(self, pid: int) -> None:
        """Keep the environment of every process the gateway ``pid`` starts."""
        self.envs.add_root(pid)

    def leaks(self) -> list[tuple[str, str]]:
        """(where, what) for every registered secret found in a log or a kernel's env."""
        found = []
        for path in self.logs:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += [(str(path), what) for value, what in self.secrets.items()
                      if value.encode() in data]
        return found + self.envs.leaks(self.secrets)


SECRETS = SecretRegistry()
# Set by `pytest --gateway-log-level=LEVEL` (tests/conftest.py): the --log-level of
# every gateway started without one of its own.
DEFAULT_LOG_LEVEL: str | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gateway:
    """A running ``kernelyard serve`` process."""

    proc: subprocess.Popen
    url: str
    token: str
    log_path: Path
    runtime_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        SECRETS.add_log(self.log_path)
        SECRETS.add_secret(self.token, f"a gateway's auth token (first: {self.log_path.name})")
        SECRETS.add_gateway(self.proc.pid)

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :]

    def headers(self, token: str | None = None) -> dict[str, str]:
        tok = self.token if token is None else token
        return {"Authorization": f"token {tok}"} if tok else {}

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bytes | None = None,
        timeout: float = 60,
    ) -> tuple[int, Any, dict[str, str]]:
        """Send a request; return (status, parsed JSON body or text, headers)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(
            self.url.rstrip("/") + path, data=data, method=method, headers=self.headers(token)
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, _parse(resp.read()), dict(resp.headers)
        except urllib.error.HTTPError as e:
            return e.code, _parse(e.read()), dict(e.headers)

    def start_kernel(self, name: str = "python3", **body: Any) -> str:
        """Start a kernel; the gateway's own timeouts (not the client's) bound the wait."""
        status, model, _ = self.request("POST", "/api/kernels", {"name": name, **body},
                                        timeout=START_WAIT)
        assert status == 201, (status, model)
        return model["id"]

    def connect(
        self, kernel_id: str, *, session_id: str | None = None, v1: bool = False
    ) -> KernelSocket:
        q = f"?session_id={session_id}" if session_id else ""
        protocols = ["v1.kernel.websocket.jupyter.org"] if v1 else None
        ws = websocket.create_connection(
            f"{self.ws_url.rstrip('/')}/api/kernels/{kernel_id}/channels{q}",
            header=[f"{k}: {v}" for k, v in self.headers().items()],
            subprotocols=protocols,
            timeout=60,
        )
        return KernelSocket(ws, v1=v1, session_id=session_id or uuid.uuid4().hex)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_shows(self, text: str, timeout: float = 10, count: int = 1) -> bool:
        """Whether ``text`` appears ``count`` times in the log within ``timeout`` seconds
        (jupyter_server writes a request's access line just after the response)."""
        return poll(lambda: self.log().count(text) >= count, timeout, 0.05)

    def as_caller(self, token: str) -> Gateway:
        """The same gateway, seen by a client that sends ``token``."""
        return dataclasses.replace(self, token=token)

    def run(self, kernel_id: str, code: str, timeout: float = 60,
            check: bool = False) -> dict[str, Any]:
        """Run ``code`` on a kernel through a websocket of its own (``KernelSocket.execute``);
        ``check``: assert that it raised no error."""
        ks = self.connect(kernel_id)
        try:
            out = ks.execute(code, timeout=timeout)
        finally:
            ks.close()
        assert not check or out["error"] is None, out
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        SECRETS.envs.look()  # the kernels still running, before the gateway takes them down
        return stop_process(self.proc, sig, timeout)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Signal a process, SIGKILL it if it has not exited within ``timeout``; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _parse(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return data.decode(errors="replace")


def start_gateway(
    tmp: Path,
    *args: str,
    token: str | None = "test-token",
    env: dict[str, str] | None = None,
    wait: float = 240,
    allow_shared_kernel_account: bool = True,
) -> Gateway:
    """Start ``kernelyard serve`` on a free loopback port and wait until it listens.

    ``allow_shared_kernel_account``: pass the waiver, so that a gateway with per-user
    authenticators starts with kernelspecs that run every kernel as the gateway's own
    account (the tests' usual setup; tests/integration/test_shared_accounts.py is
    about the refusal and passes False).
    """
    runtime = tmp / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"gateway-{uuid.uuid4().hex[:6]}.log"
    full_env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime),
                "JUPYTER_DATA_DIR": str(tmp / "data"), **(env or {})}
    full_env.pop("KERNELYARD_AUTH_TOKEN", None)
    if token:
        full_env["KERNELYARD_AUTH_TOKEN"] = token
    cmd = [sys.executable, "-m", "kernelyard.cli.main", "serve", "--port", str(free_port()),
           "--port-retries", "0", *args]
    if allow_shared_kernel_account:
        cmd.append("--KernelyardApp.allow_shared_kernel_account=True")
    if DEFAULT_LOG_LEVEL and not any(a.startswith(("--log-level", "--debug")) for a in args):
        cmd.append(f"--log-level={DEFAULT_LOG_LEVEL}")
    SECRETS.add_log(log_path)
    SECRETS.add_secret(token, f"a gateway's auth token (first: {log_path.name})")
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=tmp)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        m = LISTENING.search(log_path.read_text(errors="replace"))
        if m:
            return Gateway(proc, m.group(1), token or "", log_path, runtime)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"gateway did not start:\n{log_path.read_text(errors='replace')}")


def token_cli_run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``kernelyard token ARGS`` on the store of the gateway whose data dir is
    ``data_dir`` (the store key comes from the files there, not from this process)."""
    env = {**os.environ, "JUPYTER_DATA_DIR": str(data_dir)}
    env.pop("KERNELYARD_STORE_KEY", None)
    return subprocess.run([sys.executable, "-m", "kernelyard.cli.main", "token", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def token_cli(data_dir: Path, *args: str) -> str:
    """``token_cli_run`` that must succeed; its output."""
    result = token_cli_run(data_dir, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def issue(data_dir: Path, user: str, *args: str) -> str:
    """``kernelyard token issue USER ARGS`` on the gateway's store; the token."""
    return token_cli(data_dir, "issue", user, *args)


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def traceback_text(error: dict[str, Any] | None) -> str:
    """An `error` message's content as plain text (IPython colours its tracebacks)."""
    if error is None:
        return "no error"
    lines = [error.get("ename", "?") + ": " + error.get("evalue", ""), *error.get("traceback", [])]
    return ANSI_ESCAPE.sub("", "\n".join(lines))


class KernelSocket:
    """A kernel websocket in either wire format, with helpers to execute code."""

    def __init__(self, ws: websocket.WebSocket, *, v1: bool, session_id: str):
        self.ws = ws
        self.v1 = v1
        self.session_id = session_id

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id, "msg_type": msg_type, "session": self.session_id,
            "username": "test", "version": "5.3", "date": "2026-01-01T00:00:00Z",
        }
        if self.v1:
            from jupyter_server.services.kernels.connection.base import serialize_msg_to_ws_v1

            parts = [json.dumps(p).encode() for p in (header, {}, {}, content)]
            self.ws.send_binary(serialize_msg_to_ws_v1(parts, channel))
        else:
            self.ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                                     "content": content, "channel": channel, "buffers": []}))
        return msg_id

    def recv(self, timeout: float = 60) -> dict[str, Any]:
        self.ws.settimeout(timeout)
        frame = self.ws.recv()
        if self.v1:
            from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1

            channel, parts = deserialize_msg_from_ws_v1(frame)
            header, parent, metadata, content = (json.loads(p) for p in parts[:4])
            return {"channel": channel, "header": header, "parent_header": parent,
                    "metadata": metadata, "content": content,
                    "msg_type": header["msg_type"]}
        msg = json.loads(frame)
        msg.setdefault("msg_type", msg["header"]["msg_type"])
        return msg

    def submit(self, code: str) -> str:
        """Send an execute_request without waiting; returns its msg_id."""
        return self.send("shell", "execute_request", {
            "code": code, "silent": False, "store_history": False,
            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})

    def wait_idle(self, msg_id: str, timeout: float = 30) -> dict[str, Any] | None:
        """Wait until the kernel is idle after ``msg_id``; return its error content, if any."""
        error = None
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "error":
                error = msg["content"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return error

    def execute(self, code: str, timeout: float = 60) -> dict[str, Any]:
        """Run code; return {'stdout', 'stderr', 'reply', 'error', 'results'} once idle."""
        msg_id = self.submit(code)
        out: dict[str, Any] = {"stdout": "", "stderr": "", "reply": None, "error": None,
                               "results": []}
        idle = False
        deadline = time.monotonic() + timeout
        while not (idle and out["reply"] is not None):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply to {code!r}: {out}")
            msg = self.recv(left)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]] += content["text"]
            elif kind == "error":
                out["error"] = content
            elif kind == "execute_result":
                out["results"].append(content["data"].get("text/plain"))
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
            elif kind == "execute_reply":
                out["reply"] = content
        return out

    def close(self) -> None:
        self.ws.close()


def audit_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of an audit log file (none while it does not exist)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_audit(path: Path, timeout: float = 20, **match: Any) -> dict[str, Any]:
    """The first audit line with these fields (lines are written as requests end)."""
    found = poll(lambda: [r for r in audit_lines(path)
                          if all(r.get(k) == v for k, v in match.items())], timeout, 0.1)
    assert found, (match, audit_lines(path)[-10:])
    return found[0]

"""Run the real launcher around real kernels, with a real callback server, for tests."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from jupyter_client import BlockingKernelClient

from kernelyard.callbacks import CALLBACK_PATH
from kernelyard.launcher import (
    CONTROL_PATH,
    KERNEL_PORT_NAMES,
    SIGNATURE_HEADER,
    control_request_body,
    sign,
)
from tests.procs import children_of, wait_gone
from tests.waits import poll

REPO = Path(__file__).resolve().parent.parent
LAUNCHER_FILE = REPO / "kernelyard" / "launcher.py"
DEBIAN_PYTHON = "/usr/bin/python3"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def ipykernel_argv(python: str = sys.executable) -> list[str]:
    return [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def free_port_range(width: int = 40) -> tuple[int, int]:
    """A random range below Linux's ephemeral ports (32768+), so tests rarely collide."""
    lo = random.randrange(20000, 32000 - width)
    return lo, lo + width - 1


@dataclass
class Recorded:
    headers: dict[str, str]
    body: bytes
    status: int


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # refused TLS handshakes are part of the tests


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by openssl."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


class CallbackServer:
    """The gateway's callback endpoint, reduced to recording what arrives.

    Answers with ``statuses`` in order, then ``default_status`` for every later request.
    """

    def __init__(self, statuses: tuple[int, ...] = (), default_status: int = 200,
                 tls: tuple[Path, Path] | None = None):
        self.requests: list[Recorded] = []
        self._statuses = list(statuses)
        self._default = default_status
        self._accepted = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = server._statuses.pop(0) if server._statuses else server._default
                server.requests.append(Recorded(dict(self.headers), body, status))
                answer = b"{}" if status == 200 else b'{"error": "no"}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                if 200 <= status < 300:
                    server._accepted.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, kernel_id: str) -> str:
        return (f"{self.scheme}://127.0.0.1:{self.httpd.server_port}"
                f"/{CALLBACK_PATH}/{kernel_id}")

    def accepted(self, timeout: float) -> Recorded:
        """The request that was answered 2xx (waits for it)."""
        assert self._accepted.wait(timeout), f"no accepted callback in {timeout}s"
        return next(r for r in self.requests if 200 <= r.status < 300)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class LauncherRun:
    """One launcher process (and its kernel) started by a test."""

    proc: subprocess.Popen[bytes]
    pid: int
    run_dir: Path
    kernel_id: str
    key: str
    token: str
    port_range: tuple[int, int]
    callback: CallbackServer
    output: Path
    detach_stdout: str = ""
    _report: dict[str, Any] | None = field(default=None, repr=False)

    def report(self, timeout: float = 30) -> dict[str, Any]:
        """The callback body (waits for it)."""
        if self._report is None:
            self._report = json.loads(self.callback.accepted(timeout).body)
        return self._report

    def connection_info(self) -> dict[str, Any]:
        report = self.report()
        info = {name: report[name] for name in KERNEL_PORT_NAMES}
        info.update(ip=report["ip"], key=self.key, transport="tcp",
                    signature_scheme="hmac-sha256")
        return info

    def control(self, action: str = "status", *, body: bytes | None = None,
                signature: str | None = None, method: str = "POST",
                path: str = CONTROL_PATH, **fields: Any) -> tuple[int, dict[str, Any]]:
        """Send a control request (signed with the kernel key unless told otherwise)."""
        if body is None:
            body = control_request_body(action, **fields)
        if signature is None:
            signature = sign(self.key.encode(), body)
        port = self.report()["launcher_port"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", data=body if method == "POST" else None,
            method=method, headers={SIGNATURE_HEADER: signature,
                                    "Content-Type": "application/json"},
        )
        try:
            with NO_PROXY.open(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def wait_exit(self, timeout: float = 30) -> int | None:
        """The launcher's exit status (None for a detached one, once it is gone)."""
        if self.proc.pid == self.pid:
            return self.proc.wait(timeout)
        assert not wait_gone({self.pid}, timeout), f"launcher {self.pid} still runs"
        return None

    def files_text(self) -> str:
        """Everything in the run dir and the launcher's own output, as text."""
        paths = [p for p in self.run_dir.iterdir() if p.is_file()] + [self.output]
        return "\n".join(p.read_text(errors="replace") for p in paths if p.exists())

    def cleanup(self) -> None:
        """Kill the launcher, its kernel's process group and everything below them.

        Processes are found by the kernel id in their argv (the launcher's options,
        the kernel's connection file) as well as by parentage, so a detached
        launcher whose pid never arrived is found too. They are frozen first, so
        none can start another process while we collect them.
        """
        pids = {self.pid, self.proc.pid} | pids_mentioning(self.kernel_id)
        for pid in pids:
            with suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
        pids |= {child for pid in pids for child in children_of(pid)}
        own_group = os.getpgid(0)
        for pid in pids:
            with suppress(OSError):
                if os.getpgid(pid) != own_group:
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        wait_gone(pids, 10)
        self.callback.close()


def pids_mentioning(text: str) -> set[int]:
    """Processes whose argv contains ``text``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and text.encode() in proc_text(int(entry.name), "cmdline"):
            found.add(int(entry.name))
    return found


def start_launcher(
    workdir: Path,
    kernel_argv: list[str],
    *,
    python: str = sys.executable,
    as_module: bool = False,
    secrets_via: str = "stdin",
    detach: bool = False,
    ip: str | None = "127.0.0.1",
    callback: CallbackServer | None = None,
    extra_options: tuple[str, ...] = (),
    track: Callable[[LauncherRun], None] | None = None,
) -> LauncherRun:
    """Start the launcher (as a file, or with ``-m``) and hand it the secrets.

    ``track`` gets the run as soon as the process exists (to clean it up whatever
    happens next).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    kernel_id = f"k-{secrets.token_hex(8)}"
    key, token = secrets.token_hex(32), secrets.token_urlsafe(32)
    callback = callback or CallbackServer()
    port_range = free_port_range()
    run_dir = workdir / "run"
    options = ["--kernel-id", kernel_id, "--run-dir", str(run_dir), "--kernel-name", "python3",
               "--port-range", f"{port_range[0]}..{port_range[1]}", *extra_options]
    if ip:
        options += ["--ip", ip]
    if detach:
        options.append("--detach")
    env = dict(os.environ)
    secret_values = {"key": key, "token": token, "callback_url": callback.url(kernel_id)}
    if secrets_via == "stdin":
        options.append("--secrets-from-stdin")
    else:
        env.update(KERNELYARD_KERNEL_KEY=key, KERNELYARD_CALLBACK_TOKEN=token,
                   KERNELYARD_CALLBACK_URL=secret_values["callback_url"])
    if as_module:
        env["PYTHONPATH"] = str(REPO)
        head = [python, "-m", "kernelyard.launcher"]
    else:
        head = [python, str(LAUNCHER_FILE) if python == sys.executable
                else str(copy_standalone(workdir))]
    output = workdir / "launcher-output.txt"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [*head, *options, "--", *kernel_argv], cwd=workdir, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE if detach else out, stderr=out,
            start_new_session=True,
        )
    line = json.dumps(secret_values).encode() + b"\n" if secrets_via == "stdin" else b""
    run = LauncherRun(proc, proc.pid, run_dir, kernel_id, key, token, port_range, callback,
                      output)
    if track is not None:
        track(run)
    if detach:
        # returns at EOF: neither the detached launcher nor the kernel holds the pipe
        stdout, _ = proc.communicate(line, timeout=20)
        run.detach_stdout = stdout.decode()
        run.pid = json.loads(run.detach_stdout)["pid"]
    else:
        assert proc.stdin is not None
        proc.stdin.write(line)
        proc.stdin.close()
    return run


def copy_standalone(workdir: Path) -> Path:
    """The launcher file as it is shipped, away from the kernelyard package: alone but for
    its Spark startup file beside it."""
    folder = workdir / "standalone"
    folder.mkdir(exist_ok=True)
    target = folder / "launcher.py"
    target.write_bytes(LAUNCHER_FILE.read_bytes())
    (folder / "launcher_spark.py").write_bytes(LAUNCHER_FILE.with_name("launcher_spark.py")
                                               .read_bytes())
    return target


@contextmanager
def kernel_client(run: LauncherRun) -> Iterator[BlockingKernelClient]:
    """A client on the ports and key the launcher reported, ready to execute."""
    client = BlockingKernelClient()
    client.load_connection_info(run.connection_info())
    client.start_channels(hb=False)  # heartbeats miss under load; wait for kernel_info instead
    try:
        client.wait_for_ready(timeout=30)
        yield client
    finally:
        client.stop_channels()


def run_code(client: BlockingKernelClient, code: str, timeout: float = 30) -> tuple[str, str]:
    """Execute ``code``; return (reply status, stdout)."""
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])

    reply = client.execute_interactive(code, output_hook=hook, timeout=timeout)
    return reply["content"]["status"], "".join(out)


def wait_iopub(client: BlockingKernelClient, msg_id: str, msg_type: str,
               timeout: float = 20) -> dict[str, Any]:
    """The first iopub message of ``msg_type`` answering ``msg_id``."""
    deadline = time.monotonic() + timeout
    while True:
        msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == msg_type:
            return msg


def wait_reply(client: BlockingKernelClient, msg_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = client.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


def proc_text(pid: int, name: str) -> bytes:
    """/proc/PID/<name> (cmdline, environ), or b'' once the process is gone."""
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def wait_until(predicate: Any, timeout: float = 10, interval: float = 0.1) -> bool:
    return bool(poll(predicate, timeout, interval))


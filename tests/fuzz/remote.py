"""Remote kernels on the CI's SSH hosts, with the launcher's callback intercepted.

A gateway started by ``start_ssh_gateway`` tells its launchers to call back to an
``Interceptor`` (``CallbackRegistry.callback_url``) instead of to itself. The
interceptor answers the launcher 200 and keeps what it sent: the one-time token
and the report. The gateway's registration stays pending (up to the kernelspec's
launch_timeout), so a test can hit the real callback endpoint with that token
and forward the genuine report when it is done.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests import realparts
from tests.gateway import SECRETS, Gateway, start_gateway

REMOTE_PY = "/usr/bin/python3"
PY_KERNEL = [REMOTE_PY, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


@dataclass
class Callback:
    """One launcher callback, as it reached the interceptor."""

    kernel_id: str
    token: str
    body: bytes

    @property
    def report(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class Interceptor:
    """Stands where the gateway's callback endpoint would be; keeps what arrives.

    With ``forward`` set to the gateway's URL it passes each callback on as it came
    and answers the launcher what the gateway answered (a recording proxy);
    without, it answers 200 itself and the gateway keeps waiting.
    """

    def __init__(self, host: str):
        self.callbacks: list[Callback] = []
        self.forward: str | None = None
        self._arrived = threading.Condition()
        interceptor = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                auth = self.headers.get("Authorization", "")
                kernel_id = self.path.rstrip("/").rsplit("/", 1)[-1]
                interceptor._add(Callback(kernel_id, auth.removeprefix("Bearer "), body))
                status, answer = 200, b"{}"
                if interceptor.forward:
                    status, answer = raw_request(interceptor.forward, "POST", self.path, body, {
                        "Authorization": auth, "Content-Type": "application/json"})
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_port}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _add(self, callback: Callback) -> None:
        SECRETS.add_secret(callback.token, f"the callback token of kernel {callback.kernel_id}")
        with self._arrived:
            self.callbacks.append(callback)
            self._arrived.notify_all()

    def wait(self, count: int, timeout: float = 120) -> list[Callback]:
        """The first ``count`` distinct kernels' callbacks (waits for them)."""
        def distinct() -> list[Callback]:
            seen: dict[str, Callback] = {}
            for cb in self.callbacks:
                seen.setdefault(cb.kernel_id, cb)
            return list(seen.values())

        with self._arrived:
            if not self._arrived.wait_for(lambda: len(distinct()) >= count, timeout):
                raise TimeoutError(f"{len(distinct())} of {count} launcher callbacks arrived "
                                   f"in {timeout}s")
            return distinct()[:count]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_ssh_spec(root: Path, name: str, hosts: list[str], argv: list[str] | None = None,
                   **config: Any) -> None:
    folder = root / "kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": ["kernelyard-launcher", "--", *(argv or PY_KERNEL)], "display_name": name,
            "language": "python", "interrupt_mode": "signal",
            "metadata": {"kernel_provisioner": {"provisioner_name": "kernelyard-ssh",
                                                "config": {"hosts": hosts, **config}}}}
    (folder / "kernel.json").write_text(json.dumps(spec))


def start_ssh_gateway(root: Path, hosts: Mapping[str, str], *extra: str,
                      callback_url: str | None = None) -> Gateway:
    """A gateway on the hosts' bridge; kernelspecs come from ``root / 'jupyter'``."""
    args = ["--ip", hosts["KY_SSH_GATEWAY_IP"],
            *realparts.ssh_login_args(hosts),
            "--SSHProvisioner.poll_interval=1"]  # connect_timeout: the default, for loaded hosts
    if callback_url:
        args.append(f"--CallbackRegistry.callback_url={callback_url}")
    return start_gateway(root, *args, *extra, env={"JUPYTER_PATH": str(root / "jupyter")})


def raw_request(url: str, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None,
                timeout: float = 60) -> tuple[int, bytes]:
    """One HTTP request exactly as given (no redirects, no proxy, no added auth)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()

"""No secret reaches any log, at any level, DEBUG included.

One gateway runs with ``--log-level=DEBUG`` and serves local kernels and SSH
kernels (ci/ssh-hosts). The test goes through a whole lifecycle on both: start,
execute over both websocket formats (and with ``?token=``), interrupt, restart,
a session, a failed start, callbacks (the launchers' genuine ones, passed on by a
recording proxy, and a forged one), shutdown. Meanwhile it collects every secret
that exists: the auth token, each kernel's HMAC key (from the connection files
and from kernelyard's own store), each callback token, the store's encryption
key, the cookie secret. Then it reads every log that was written (the gateway's,
the audit log, the local kernels', the launchers' and the remote kernels' on the
hosts, read while they existed, since a shutdown removes run dirs) and looks for
each secret and for generic secret patterns. The API's answers are checked too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import pytest
import websocket

from kernelyard.store import StoreFactory
from tests.fuzz.remote import Interceptor, raw_request, start_ssh_gateway, write_ssh_spec
from tests.gateway import SECRETS, Gateway, KernelSocket, issue
from tests.kernelspecs import make_test_kernelspecs
from tests.procs import wait_gone
from tests.realparts import ssh_hosts

# Shapes of secrets, whatever their value: a log line must not match any of these.
SECRET_PATTERNS = {
    "a connection-file key": re.compile(r"""["']key["']\s*:\s*b?["'][^"']{8,}"""),
    "a bearer credential": re.compile(r"Bearer\s+[A-Za-z0-9_\-.~+/=]{12,}"),
    "an Authorization header value": re.compile(
        r"Authorization['\"]?\s*[:=]\s*['\"]?(token|bearer)\s+[A-Za-z0-9_\-]{6,}", re.I),
    "a token in a URL": re.compile(r"[?&][^=&\s]*token=(?!\[secret\])[^&\s'\"]+", re.I),
    "a secret env variable": re.compile(
        r"KERNELYARD_(KERNEL_KEY|CALLBACK_TOKEN|AUTH_TOKEN|STORE_KEY)['\"]?\s*[:=]\s*['\"]?\w"),
    "a 256-bit hex key": re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])"),
}


class LogWatcher:
    """Opens every file matching ``patterns`` as it appears, so it can be read once deleted.

    Kernel logs and run dirs are removed when a kernel shuts down (or restarts: the
    same path then holds a new file), so each file is kept open by its inode.
    """

    def __init__(self, *patterns: tuple[Path, str]):
        self.patterns = patterns
        self.files: dict[tuple[Path, int], IO[bytes]] = {}
        self._stop = threading.Event()
        self._contents: dict[str, bytes] | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for root, pattern in self.patterns:
                for path in root.glob(pattern):
                    self._open(path)
            self._stop.wait(0.02)

    def _open(self, path: Path) -> None:
        try:
            key = (path, path.stat().st_ino)
            if key not in self.files and path.is_file():
                self.files[key] = path.open("rb")
        except OSError:
            pass  # gone already

    def stop(self) -> dict[str, bytes]:
        """Each file's last contents (even if it is gone by now), by 'path#n'."""
        if self._contents is None:
            self._stop.set()
            self._thread.join()
            self._contents = {}
            for n, ((path, _), f) in enumerate(sorted(self.files.items(), key=str)):
                f.seek(0)
                self._contents[f"{path}#{n}"] = f.read()
                f.close()
        return self._contents


@dataclass
class Secrets:
    values: dict[str, str] = field(default_factory=dict)  # value -> what it is

    def add(self, value: Any, what: str) -> None:
        text = value.decode() if isinstance(value, bytes) else str(value or "")
        if len(text) >= 8:
            self.values.setdefault(text, what)
            SECRETS.add_secret(text, what)


@dataclass
class World:
    gw: Gateway
    root: Path
    remote_dir: Path
    interceptor: Interceptor
    watcher: LogWatcher
    secrets: Secrets
    answers: list[str] = field(default_factory=list)  # every API answer body, as text

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        status, answer, headers = self.gw.request(method, path, body, **kw)
        self.answers.append(json.dumps(answer) + json.dumps(headers))
        return status, answer

    def collect_keys(self) -> None:
        """Every kernel's HMAC key: from the connection files and from the store."""
        for path in self.gw.runtime_dir.glob("kernel-*.json"):
            self.secrets.add(json.loads(path.read_text()).get("key"), f"the key in {path.name}")
        for record in asyncio.run(_stored_records(self.root / "data")):
            self.secrets.add(record.connection.get("key"), f"kernel {record.kernel_id}'s key")
        for path in self.remote_dir.glob("kernels/*/kernel-*.json"):
            self.secrets.add(json.loads(path.read_text()).get("key"), f"the key in {path}")


async def _stored_records(data: Path) -> list[Any]:
    factory = StoreFactory(url=f"sqlite:///{data / 'kernelyard.db'}",
                           key_file=str(data / "kernelyard_store.key"))
    try:
        return await factory.store.all()
    finally:
        await factory.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    hosts = ssh_hosts()
    h1, h2 = hosts["KY_SSH_HOSTS"].split(",")[:2]
    root = tmp_path_factory.mktemp("no-secrets")
    jupyter = make_test_kernelspecs(root / "jupyter")
    # The run dirs live where the test can read them (the hosts share this filesystem).
    remote_dir = Path(tempfile.mkdtemp(prefix="kernelyard-secrets-"))
    shutil.chown(remote_dir, user=hosts["KY_SSH_USER"], group=hosts["KY_SSH_USER"])
    write_ssh_spec(jupyter, "ssh_py", [h1], remote_dir=str(remote_dir))
    write_ssh_spec(jupyter, "ssh_dies", [h2], remote_dir=str(remote_dir), argv=[
        "/usr/bin/python3", "-c", "import sys; sys.exit('bad kernel config')",
        "{connection_file}"])
    interceptor = Interceptor(hosts["KY_SSH_GATEWAY_IP"])
    watcher = LogWatcher((remote_dir, "kernels/*/*.log"), (root, "**/kernel-*.log"))
    gw = start_ssh_gateway(root, hosts, "--log-level=DEBUG",
                           f"--KernelyardApp.audit_log={root / 'audit.log'}",
                           '--KernelyardApp.authenticators=["api-token", "token"]',
                           callback_url=interceptor.url)
    interceptor.forward = gw.url
    world = World(gw, root, remote_dir, interceptor, watcher, Secrets())
    world.secrets.add(gw.token, "the gateway's auth token")
    try:
        yield world
    finally:
        if gw.proc.poll() is None:
            for kernel in gw.request("GET", "/api/kernels")[1] or []:
                gw.request("DELETE", f"/api/kernels/{kernel['id']}")
            gw.stop()
        interceptor.close()
        watcher.stop()
        shutil.rmtree(remote_dir, ignore_errors=True)


def _interrupt_a_long_cell(world: World, kid: str) -> None:
    ks = world.gw.connect(kid)
    try:
        msg_id = ks.submit("import time; time.sleep(60)")
        time.sleep(1.5)
        assert world.call("POST", f"/api/kernels/{kid}/interrupt", {})[0] == 204
        error = ks.wait_idle(msg_id)
        assert error is not None and error["ename"] == "KeyboardInterrupt"
    finally:
        ks.close()


def _execute_every_way(world: World, kid: str) -> None:
    for v1 in (False, True):
        ks = world.gw.connect(kid, v1=v1, session_id=uuid.uuid4().hex)
        try:
            assert ks.execute("print('hello')")["stdout"] == "hello\n"
        finally:
            ks.close()
    # the token in the query string, as some clients send it
    ws = websocket.create_connection(
        f"{world.gw.ws_url.rstrip('/')}/api/kernels/{kid}/channels?token={world.gw.token}",
        timeout=60)
    ks = KernelSocket(ws, v1=False, session_id=uuid.uuid4().hex)
    try:
        assert ks.execute("print(1 + 1)")["stdout"] == "2\n"
    finally:
        ks.close()


def _issue_api_token(world: World, user: str) -> str:
    """``kernelyard token issue`` on the gateway's store: a per-user API token."""
    token = issue(world.root / "data", user)
    world.secrets.add(token, f"{user}'s API token")
    return token


def test_a_user_with_an_api_token(world: World) -> None:
    token = _issue_api_token(world, "alice")
    alice = dataclasses.replace(world.gw, token=token)
    kid = alice.start_kernel("python3")
    world.collect_keys()
    ks = alice.connect(kid, v1=True)
    try:
        assert ks.execute("print('alice')")["stdout"] == "alice\n"
    finally:
        ks.close()
    assert world.call("GET", f"/api/kernels/{kid}", token=token)[0] == 200
    # API tokens are read from the header only: in a URL it is refused (and must not be logged)
    assert world.call("GET", f"/api/kernels/{kid}?token={token}", token="")[0] == 401
    assert world.call("GET", "/api/kernels", token=token + "x")[0] == 401
    assert world.call("DELETE", f"/api/kernels/{kid}", token=token)[0] == 204


def test_a_whole_lifecycle_of_local_and_ssh_kernels(world: World) -> None:
    gw, call = world.gw, world.call
    kernels = {name: gw.start_kernel(name) for name in ("python3", "ssh_py")}
    world.collect_keys()
    assert len(world.interceptor.callbacks) == 1  # the SSH launcher's genuine callback
    for kid in kernels.values():
        _execute_every_way(world, kid)
        _interrupt_a_long_cell(world, kid)
        status, model = call("POST", f"/api/kernels/{kid}/restart", {})
        assert status == 200 and model["id"] == kid
        world.collect_keys()
        ks = gw.connect(kid)
        try:
            assert ks.execute("print('after restart')")["stdout"] == "after restart\n"
        finally:
            ks.close()
        call("GET", f"/api/kernels/{kid}")
        call("GET", f"/api/kernels?token={gw.token}", token="")
    assert len(world.interceptor.callbacks) == 2  # and its callback after the restart
    status, session = call("POST", "/api/sessions", {"path": "s.ipynb", "type": "notebook",
                                                     "kernel": {"name": "python3"}})
    assert status == 201
    world.collect_keys()
    call("GET", "/api/sessions")
    assert call("DELETE", f"/api/sessions/{session['id']}")[0] == 204
    for name in ("dies_at_start", "no_such_binary", "ssh_dies"):
        status, answer = call("POST", "/api/kernels", {"name": name}, timeout=200)
        assert status == 500, (name, status, answer)
    forged = world.interceptor.callbacks[0]
    assert raw_request(gw.url, "POST", f"/kernelyard/callback/{uuid.uuid4()}", forged.body,
                       {"Authorization": f"Bearer {forged.token}"})[0] == 403
    assert call("GET", "/api/kernels", token="not-the-token")[0] == 401
    for kid in kernels.values():
        assert call("DELETE", f"/api/kernels/{kid}")[0] == 204
    pids = [json.loads(cb.body)["pid"] for cb in world.interceptor.callbacks]
    assert wait_gone(set(pids), 30) == set()
    assert call("GET", "/api/kernels")[1] == []


def test_every_secret_was_collected(world: World) -> None:
    """The sweep below is only as good as this list: keys of 2 kernels x 2 starts at least."""
    data = world.root / "data"
    ring = (data / "kernelyard_store.key").read_text()
    for n, key in enumerate(re.split(r"[\s,]+", re.sub(r"#.*", "", ring))):
        world.secrets.add(key, f"store key {n + 1}")
    cookie = world.gw.runtime_dir / "jupyter_cookie_secret"
    if cookie.exists():
        world.secrets.add(cookie.read_text().strip(), "the cookie secret")
    for cb in world.interceptor.callbacks:
        world.secrets.add(cb.token, f"the callback token of kernel {cb.kernel_id}")
    keys = [what for what in world.secrets.values.values() if "key" in what]
    assert len(keys) >= 3, world.secrets.values  # local, SSH, SSH after its restart
    assert len(world.interceptor.callbacks) >= 2


def test_tornados_output_and_the_access_log_go_to_the_swept_log(world: World) -> None:
    """tornado's own loggers (tornado.general: a malformed request) and the access log
    (successes at DEBUG) write to the gateway's log, which the sweeps read."""
    parts = urlsplit(world.gw.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall(b"GET /api HTTP/1.1\r\nHost: x\r\nX-Probe: a\x01b\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")
    assert world.gw.log_shows("Malformed HTTP message"), world.gw.log()[-2000:]
    world.call("GET", "/api/kernels")
    assert world.gw.log_shows("] 200 GET /api/kernels ("), world.gw.log()[-2000:]
    assert world.gw.log_path in SECRETS.logs


def _all_logs(world: World) -> dict[str, bytes]:
    """Every log the run wrote: gateway, local kernels, launchers and remote kernels."""
    world.gw.stop()  # its last lines (shutdown) are written by now
    time.sleep(0.2)
    logs = {str(p): p.read_bytes() for p in world.root.rglob("*.log*") if p.is_file()}
    logs.update(world.watcher.stop())
    keep = world.root / "collected-logs"
    keep.mkdir(exist_ok=True)
    for n, (name, data) in enumerate(logs.items()):
        copy = keep / f"{n:03d}-{Path(name.split('#')[0]).name}"
        copy.write_bytes(data)
        SECRETS.add_log(copy)  # swept again at the end of the session
    return logs


def test_no_secret_in_any_log(world: World) -> None:
    logs = _all_logs(world)
    names = sorted(Path(name.split("#")[0]).name for name in logs)
    assert any(n.startswith("gateway-") for n in names), names
    assert "audit.log" in names, names
    assert names.count("launcher.log") >= 3, names  # 2 starts of ssh_py, 1 of ssh_dies
    assert sum(n.startswith("kernel-") for n in names) >= 3, names  # local kernels
    assert any(n.startswith("kernel-") and n.endswith(".log") for n in names), names
    gateway_log = next(data for name, data in logs.items() if "gateway-" in name)
    assert b"[D " in gateway_log, "the gateway did not log at DEBUG"
    kinds = sorted({what.split(" of ")[0].split(" in ")[0]
                    for what in world.secrets.values.values()})
    print(f"{len(world.secrets.values)} secrets ({', '.join(kinds)}) looked for in {len(logs)} "
          f"logs ({sum(map(len, logs.values()))} bytes): {', '.join(names)}")
    leaks = [f"{what} in {name}" for name, data in logs.items()
             for value, what in world.secrets.values.items() if value.encode() in data]
    assert not leaks, "\n".join(leaks)
    shapes = [f"{kind} in {name}: {m.group(0)[:80]!r}" for name, data in logs.items()
              for kind, pattern in SECRET_PATTERNS.items()
              for m in pattern.finditer(data.decode(errors="replace"))]
    assert not shapes, "\n".join(shapes)


def test_no_secret_in_any_api_answer(world: World) -> None:
    text = "\n".join(world.answers)
    assert not [what for value, what in world.secrets.values.items() if value in text]
    assert '"key"' not in text

"""A client's deadline and departure end a kernel start (issue 10, item 16).

A real gateway with a slow kernelspec: its command sleeps before it becomes
ipykernel, much longer than any client waits. A ``KERNEL_LAUNCH_TIMEOUT`` the
client sends ends the start at that deadline, and a client that closes its
connection mid-start takes the start with it; in both cases no kernel and no
process is left. ``KERNEL_WORKING_DIR`` (which Jupyter Server sends) follows
``GatewayMappingKernelManager.working_dir_policy``.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.gateway import Gateway, start_gateway
from tests.kernelspecs import PY, make_test_kernelspecs, write_spec
from tests.procs import tagged_pids as _tagged_pids

# Sleeps far longer than the test waits, then becomes the kernel (argv[1] tags the process).
SLOW = "import os, sys, time; time.sleep(600); " \
       "os.execv(sys.executable, [sys.executable, '-m', 'ipykernel_launcher', '-f', sys.argv[2]])"
CONFIG = "c.GatewayKernelManager.start_timeout = 900\n"


def _wait(what: str, check, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    """A gateway whose kernelspec 'slow' never gets ready while a test waits; its tag."""
    tmp_path = tmp_path_factory.mktemp("slow")
    tag = f"slow-kernel-{uuid.uuid4().hex}"
    specs = make_test_kernelspecs(tmp_path / "jupyter")
    write_spec(specs, "slow", [PY, "-c", SLOW, tag, "{connection_file}"])
    (tmp_path / "kernelyard_config.py").write_text(CONFIG)
    gw = start_gateway(tmp_path, "--config", str(tmp_path / "kernelyard_config.py"),
                       env={"JUPYTER_PATH": str(specs)})
    yield gw, tag
    gw.stop()
    for pid in _tagged_pids(tag):  # never leave a sleeper behind, even on failure
        os.kill(pid, 9)


def _nothing_left(gw: Gateway, tag: str) -> None:
    _wait("the slow kernel's process to end", lambda: not _tagged_pids(tag))
    status, kernels, _ = gw.request("GET", "/api/kernels")
    assert status == 200 and kernels == [], kernels


def test_a_shorter_client_deadline_ends_the_start(slow: tuple[Gateway, str]) -> None:
    gw, tag = slow
    status, body, _ = gw.request("POST", "/api/kernels",
                                 {"name": "slow", "env": {"KERNEL_LAUNCH_TIMEOUT": "3"}},
                                 timeout=120)
    assert status == 504, body
    assert "KERNEL_LAUNCH_TIMEOUT" in body["message"] and "3" in body["message"], body
    _nothing_left(gw, tag)


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf", "nan", "1e999", "", " 3", "3s"])
def test_a_bad_launch_timeout_is_400(slow: tuple[Gateway, str], value: str) -> None:
    gw, tag = slow
    status, body, _ = gw.request("POST", "/api/kernels",
                                 {"name": "slow", "env": {"KERNEL_LAUNCH_TIMEOUT": value}},
                                 timeout=120)
    assert status == 400 and "KERNEL_LAUNCH_TIMEOUT" in body["message"], (value, body)
    assert not _tagged_pids(tag)


def test_a_longer_client_deadline_is_the_gateways_own(slow: tuple[Gateway, str]) -> None:
    gw, _ = slow
    for value in ("40", "12.5", "100000000"):
        status, model, _ = gw.request(
            "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_LAUNCH_TIMEOUT": value}})
        assert status == 201, (value, model)
        assert gw.request("DELETE", f"/api/kernels/{model['id']}")[0] == 204


def _send_and_leave(gw: Gateway, method: str, path: str, payload: object, tag: str) -> None:
    """Send a request, wait until the slow kernel runs, and close the connection."""
    url = urlsplit(gw.url)
    body = json.dumps(payload).encode()
    request = (f"{method} {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
               f"Authorization: token {gw.token}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection((url.hostname, url.port), timeout=60) as client:
        client.sendall(request)
        _wait("the slow kernel to be launched", lambda: bool(_tagged_pids(tag)))
    _wait("the slow kernel's process to end", lambda: not _tagged_pids(tag))
    assert gw.log_shows(f"{method} {path}: the client closed the connection")


@pytest.mark.parametrize(("path", "payload"), [
    ("/api/kernels", {"name": "slow"}),
    ("/api/sessions", {"path": "left.ipynb", "type": "notebook", "kernel": {"name": "slow"}}),
])
def test_a_client_that_leaves_mid_start_leaves_nothing(
        slow: tuple[Gateway, str], path: str, payload: dict[str, object]) -> None:
    gw, tag = slow
    _send_and_leave(gw, "POST", path, payload, tag)
    _nothing_left(gw, tag)
    status, sessions, _ = gw.request("GET", "/api/sessions")
    assert status == 200 and sessions == [], sessions


def test_a_client_that_leaves_a_session_patch_keeps_the_old_kernel(
        slow: tuple[Gateway, str]) -> None:
    gw, tag = slow
    status, session, _ = gw.request("POST", "/api/sessions", {
        "path": "switch.ipynb", "type": "notebook", "kernel": {"name": "python3"}})
    assert status == 201, session
    try:
        _send_and_leave(gw, "PATCH", f"/api/sessions/{session['id']}",
                        {"kernel": {"name": "slow"}}, tag)
        status, now, _ = gw.request("GET", f"/api/sessions/{session['id']}")
        assert status == 200 and now["kernel"]["id"] == session["kernel"]["id"], now
        _, kernels, _ = gw.request("GET", "/api/kernels")
        assert [k["id"] for k in kernels] == [session["kernel"]["id"]], kernels
    finally:
        assert gw.request("DELETE", f"/api/sessions/{session['id']}")[0] == 204


# ---- KERNEL_WORKING_DIR ------------------------------------------------------------------

CWD_AND_ENV = ("import os, json; "
               "print(json.dumps([os.getcwd(), os.environ.get('KERNEL_WORKING_DIR')]))")


def _kernel_cwd_and_env(gw: Gateway, kid: str) -> list[str | None]:
    ks = gw.connect(kid)
    try:
        out = ks.execute(CWD_AND_ENV)
    finally:
        ks.close()
    assert out["error"] is None, out
    return json.loads(out["stdout"])


def _gateway(tmp: Path, policy: str | None) -> Gateway:
    specs = make_test_kernelspecs(tmp / "jupyter")
    config = tmp / "kernelyard_config.py"
    config.write_text("" if policy is None else
                      f"c.GatewayMappingKernelManager.working_dir_policy = {policy!r}\n")
    return start_gateway(tmp, "--config", str(config), env={"JUPYTER_PATH": str(specs)})


def test_working_dir_is_ignored_by_default(tmp_path: Path) -> None:
    """Jupyter Server sends its own filesystem's path: by default it is dropped (and logged)."""
    gw = _gateway(tmp_path, None)
    elsewhere = tmp_path / "notebook-server-dir"
    elsewhere.mkdir()
    try:
        kid = gw.start_kernel(env={"KERNEL_WORKING_DIR": str(elsewhere)})
        cwd, env = _kernel_cwd_and_env(gw, kid)
        assert cwd != str(elsewhere) and env is None, (cwd, env)
        assert gw.log_shows("KERNEL_WORKING_DIR")
        # A path that does not exist on the gateway starts a kernel just the same.
        kid2 = gw.start_kernel(env={"KERNEL_WORKING_DIR": "/no/such/notebook/dir"})
        assert gw.request("DELETE", f"/api/kernels/{kid2}")[0] == 204
    finally:
        gw.stop()


def test_working_dir_refused_when_the_policy_says_so(tmp_path: Path) -> None:
    gw = _gateway(tmp_path, "refuse")
    try:
        status, body, _ = gw.request("POST", "/api/kernels",
                                     {"env": {"KERNEL_WORKING_DIR": str(tmp_path)}})
        assert status == 400, body
        assert "KERNEL_WORKING_DIR" in body["message"]
        assert "working_dir_policy" in body["message"], body
        assert gw.start_kernel()  # without it, kernels start
    finally:
        gw.stop()


def test_working_dir_within_the_users_home(tmp_path: Path) -> None:
    """'home': honoured inside the home of the user the kernel runs for, else a 400."""
    home = Path(os.path.expanduser("~"))
    inside = Path(os.path.realpath(home)) / f".kernelyard-test-{uuid.uuid4().hex[:8]}"
    inside.mkdir()
    gw = _gateway(tmp_path, "home")
    try:
        kid = gw.start_kernel(env={"KERNEL_WORKING_DIR": str(inside)})
        cwd, env = _kernel_cwd_and_env(gw, kid)
        assert cwd == str(inside) and env == str(inside), (cwd, env)
        outside = "/etc" if not str(home).startswith("/etc") else "/usr"
        link = inside / "escape"
        link.symlink_to(outside)
        for bad, why in ((outside, "home"), (str(link), "home"),
                         (str(inside / "missing"), "not a directory"),
                         ("relative/dir", "absolute")):
            status, body, _ = gw.request("POST", "/api/kernels",
                                         {"env": {"KERNEL_WORKING_DIR": bad}})
            assert status == 400 and "KERNEL_WORKING_DIR" in body["message"], (bad, body)
            assert why in body["message"], (bad, body)
    finally:
        gw.stop()
        for child in inside.iterdir():
            child.unlink()
        inside.rmdir()


# ---- remote kernels (real SSH hosts) -----------------------------------------------------


@pytest.fixture(scope="module")
def ssh_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with 'ssh_slow': its launcher calls back at once, but the kernel command
    sleeps for 600 s before it becomes ipykernel (and the gateway would wait 900 s)."""
    from tests.integration import test_ssh
    from tests.realparts import ssh_hosts

    hosts = ssh_hosts()
    root = tmp_path_factory.mktemp("ssh-deadlines")
    root.chmod(0o755)
    py = test_ssh.REMOTE_PY
    test_ssh._spec(root / "jupyter", "ssh_slow", hosts["KY_SSH_HOSTS"].split(",")[:1],
                   [py, "-c", SLOW, "slow-remote-kernel", "{connection_file}"])
    (root / "jupyter").chmod(0o755)
    gw = test_ssh._start(root, hosts, "--GatewayKernelManager.start_timeout=900")
    yield gw
    gw.stop()


def _remote_kernel_gone(gw: Gateway, kid: str) -> None:
    from tests.procs import pgrep

    _wait("the remote kernel's processes to end", lambda: not pgrep(kid))
    status, kernels, _ = gw.request("GET", "/api/kernels")
    assert status == 200 and kid not in json.dumps(kernels), kernels


def test_a_remote_start_ends_at_the_client_deadline(ssh_gw: Gateway) -> None:
    kid = str(uuid.uuid4())
    status, body, _ = ssh_gw.request("POST", "/api/kernels", {"name": "ssh_slow", "env": {
        "KERNEL_LAUNCH_TIMEOUT": "4", "KERNEL_ID": kid}}, timeout=120)
    assert status == 504 and "KERNEL_LAUNCH_TIMEOUT" in body["message"], body
    _remote_kernel_gone(ssh_gw, kid)


def test_a_remote_start_ends_with_its_client(ssh_gw: Gateway) -> None:
    from tests.procs import pgrep

    kid = str(uuid.uuid4())
    url = urlsplit(ssh_gw.url)
    body = json.dumps({"name": "ssh_slow", "env": {"KERNEL_ID": kid}}).encode()
    request = (f"POST /api/kernels HTTP/1.1\r\nHost: {url.netloc}\r\n"
               f"Authorization: token {ssh_gw.token}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection((url.hostname, url.port), timeout=60) as client:
        client.sendall(request)
        _wait("the remote kernel to be launched", lambda: bool(pgrep(kid)))
    _remote_kernel_gone(ssh_gw, kid)


# ---- a real Jupyter Server as the client -------------------------------------------------


@pytest.mark.e2e
def test_jupyter_servers_deadline_leaves_no_kernel(
        slow: tuple[Gateway, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jupyter Server gives up at its request_timeout and sends KERNEL_LAUNCH_TIMEOUT (that
    less a 2 s pad, from its own env): the gateway ends the start first and keeps nothing."""
    from tests.e2e.clients import diagnostics, require_jupyterlab, start_jupyter

    require_jupyterlab()
    gw, tag = slow
    monkeypatch.setenv("KERNEL_LAUNCH_TIMEOUT", "3")  # Jupyter Server's env
    jp = start_jupyter(tmp_path / "jupyter-server", gw, app="server",
                       args=("--GatewayClient.request_timeout=5",))
    try:
        status, body = jp.request("POST", "/api/sessions", {
            "path": "slow.ipynb", "type": "notebook", "kernel": {"name": "slow"}})
        assert status >= 500, (status, body, diagnostics(jp, gw))
        assert gw.log_shows("KERNEL_LAUNCH_TIMEOUT of 3 s"), diagnostics(gw)
        _nothing_left(gw, tag)
        status, sessions = jp.request("GET", "/api/sessions")
        assert status == 200 and sessions == [], sessions
    finally:
        jp.stop()

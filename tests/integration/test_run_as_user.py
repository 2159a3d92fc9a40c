"""Kernels run as their user: real Linux users (ci/users.sh), no mocks.

Local kernels go through the run-as helper (``python -m kernelyard.runas``),
started directly (the gateway is root here) or through ``sudo -n``; SSH kernels
run as the user through ``sudo -u`` on the shared SSH hosts (ci/ssh-hosts), or
by logging in as the user on an sshd this module starts on the loopback. The
hosts are network namespaces of this machine, so they share its /etc/passwd and
the uids seen there are the ones ``pwd`` gives here.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import realparts
from tests.gateway import Gateway, free_port, start_gateway, stop_process
from tests.kernelspecs import provisioner_spec as _spec
from tests.procs import children_of, pgrep, wait_gone

USERS_STATE = realparts.state("users")
USER_PY = "/usr/bin/python3"  # readable by every user (the gateway's venv is under /root)
KERNEL = [USER_PY, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
RUNTIME = ".local/share/jupyter/runtime"
HELPER = [sys.executable, "-I", "-m", "kernelyard.runas"]
ALLOW = ["--allow-user", "alice", "--allow-user", "bob"]
REPORT = (
    "import json, os, pwd, socket\n"
    "m = os.umask(0); os.umask(m)\n"
    "print(json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(),\n"
    "  'groups': os.getgroups(), 'home': os.environ.get('HOME'), 'user': os.environ.get('USER'),\n"
    "  'logname': os.environ.get('LOGNAME'), 'cwd': os.getcwd(), 'umask': m,\n"
    "  'env': sorted(os.environ), 'path': os.environ.get('PATH', ''),\n"
    "  'parent': open('/proc/%d/comm' % os.getppid()).read().strip(),\n"
    "  'host': socket.gethostname(),\n"
    "  'passwd_uid': pwd.getpwnam(os.environ.get('USER', 'root')).pw_uid}))"
)


# ---- setup -------------------------------------------------------------------------------


def _users_ready() -> None:
    realparts.need("root", "users")


@pytest.fixture(scope="module")
def loopback_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An sshd of this module's own on 127.0.0.1 that lets alice and bob log in."""
    _users_ready()
    folder = tmp_path_factory.mktemp("sshd")
    key = folder / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    port = free_port()
    known = folder / "known_hosts"
    host_key = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    known.write_text(f"[127.0.0.1]:{port} {host_key}\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = (folder / "sshd.log").open("w")
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null", "-h", str(key), "-p", str(port),
         "-o", "ListenAddress=127.0.0.1", "-o", "PasswordAuthentication=no",
         "-o", "KbdInteractiveAuthentication=no", "-o", "PermitRootLogin=no",
         "-o", "UsePAM=no", "-o", "AllowUsers=alice bob", "-o", f"PidFile={folder}/sshd.pid",
         "-o", "Subsystem=sftp internal-sftp"],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not _listening(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not _listening(port):
        stop_process(proc)
        pytest.fail(f"the loopback sshd did not start:\n{(folder / 'sshd.log').read_text()}")
    yield {"port": str(port), "known_hosts": str(known)}
    stop_process(proc)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, hosts: dict[str, str],
       loopback_sshd: dict[str, str]) -> Iterator[Gateway]:
    _users_ready()
    root = tmp_path_factory.mktemp("runas")
    specs = root / "jupyter"
    _spec(specs, "as_user", KERNEL, "kernelyard-local", run_as_user=True,
          runas_allowed_users=["alice", "bob"])
    _spec(specs, "as_user_sudo", KERNEL, "kernelyard-local", run_as_user=True,
          runas_command=["sudo", "-n", "--", *HELPER, *ALLOW])
    _spec(specs, "as_gateway", KERNEL, "kernelyard-local")
    h1, h2 = hosts["KY_SSH_HOSTS"].split(",")[:2]
    _spec(specs, "ssh_sudo", ["kernelyard-launcher", "--", *KERNEL], "kernelyard-ssh",
          hosts=[h1, h2], user_mode="sudo", **realparts.ssh_login_config(hosts),
          poll_interval=1.0)
    _spec(specs, "ssh_login", ["kernelyard-launcher", "--", *KERNEL], "kernelyard-ssh",
          hosts=["127.0.0.1"], port=int(loopback_sshd["port"]), user_mode="login",
          user_keys_dir=str(USERS_STATE / "keys"), known_hosts=loopback_sshd["known_hosts"],
          poll_interval=1.0)
    home_root = str(Path(pwd.getpwnam("alice").pw_dir).parent)
    gateway = start_gateway(root, "--ip", hosts["KY_SSH_GATEWAY_IP"],
                            f"--ServerApp.root_dir={home_root}",
                            env={"JUPYTER_PATH": str(specs)})
    yield gateway
    for kernel in gateway.request("GET", "/api/kernels")[1] or []:
        gateway.request("DELETE", f"/api/kernels/{kernel['id']}")
    gateway.stop()


# ---- helpers -----------------------------------------------------------------------------


def _start_as(gw: Gateway, spec: str, user: str, **body: Any) -> str:
    return gw.start_kernel(spec, env={"KERNEL_USERNAME": user}, **body)


def _report(gw: Gateway, kid: str) -> dict[str, Any]:
    return json.loads(gw.run(kid, REPORT, check=True)["stdout"])


def _launcher_tree(run_dir: Path) -> set[int]:
    """An SSH kernel's processes: its detached launcher and everything below it.

    Not every process naming the kernel id: the gateway's status, cancel and release
    probes name its run dir too, and in sudo mode each runs under a root-owned sudo.
    """
    pid = int((run_dir / "launcher.pid").read_text())
    return {pid} | children_of(pid)


def _commands(pids: set[int]) -> list[str]:
    found = []
    for pid in sorted(pids):
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return found


def _owner_of(pid: int) -> int:
    return os.stat(f"/proc/{pid}").st_uid


def _delete(gw: Gateway, kid: str) -> None:
    pids = pgrep(kid)
    assert gw.request("DELETE", f"/api/kernels/{kid}")[0] == 204
    assert wait_gone(pids) == set(), f"kernel {kid} left processes behind"


def _connection_file(user: str, kid: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir) / RUNTIME / f"kernel-{kid}.json"


# ---- local kernels -----------------------------------------------------------------------


def test_local_kernel_runs_as_alice_in_her_home(gw: Gateway) -> None:
    alice = pwd.getpwnam("alice")
    kid = _start_as(gw, "as_user", "alice")
    probe = Path(alice.pw_dir) / f"kernelyard-probe-{kid}.txt"
    try:
        seen = _report(gw, kid)
        assert (seen["uid"], seen["euid"], seen["gid"]) == (alice.pw_uid, alice.pw_uid,
                                                           alice.pw_gid)
        assert 0 not in seen["groups"]
        assert seen["home"] == alice.pw_dir and seen["cwd"] == os.path.realpath(alice.pw_dir)
        assert seen["user"] == seen["logname"] == "alice"
        assert seen["umask"] == 0o077
        # The gateway's own env stays behind: no token, no venv on the PATH.
        assert "KERNELYARD_AUTH_TOKEN" not in seen["env"] and "VIRTUAL_ENV" not in seen["env"]
        assert "/root" not in seen["path"]
        assert "KERNEL_USERNAME" in seen["env"]
        gw.run(kid, f"open({probe.name!r}, 'w').write('mine')", check=True)
        info = probe.stat()
        assert (info.st_uid, info.st_gid) == (alice.pw_uid, alice.pw_gid)
        assert stat.S_IMODE(info.st_mode) == 0o600
        conn = _connection_file("alice", kid)
        assert conn.stat().st_uid == alice.pw_uid and stat.S_IMODE(conn.stat().st_mode) == 0o600
        assert conn.parent.stat().st_mode & 0o777 == 0o700  # (ipykernel adds the sticky bit)
        assert {_owner_of(p) for p in pgrep(kid)} == {alice.pw_uid}
    finally:
        probe.unlink(missing_ok=True)
        _delete(gw, kid)
    assert not _connection_file("alice", kid).exists()


def test_kernels_of_alice_and_bob_run_as_each(gw: Gateway) -> None:
    kids = {user: _start_as(gw, "as_user", user) for user in ("alice", "bob")}
    try:
        for user, kid in kids.items():
            entry = pwd.getpwnam(user)
            seen = _report(gw, kid)
            assert seen["uid"] == entry.pw_uid and seen["home"] == entry.pw_dir, (user, seen)
    finally:
        for kid in kids.values():
            _delete(gw, kid)


def test_cwd_inside_the_home_is_kept_and_outside_it_is_not(gw: Gateway) -> None:
    alice = pwd.getpwnam("alice")
    project = Path(alice.pw_dir) / "kernelyard-test-project"
    project.mkdir(exist_ok=True)
    os.chown(project, alice.pw_uid, alice.pw_gid)
    home_root = Path(alice.pw_dir).parent
    notebook = f"{Path(alice.pw_dir).name}/{project.name}/nb.ipynb"
    try:
        kid = _start_as(gw, "as_user", "alice", path=notebook)
        try:
            assert _report(gw, kid)["cwd"] == os.path.realpath(project)
        finally:
            _delete(gw, kid)
        # bob asked for alice's folder: he starts in his own home instead.
        kid = _start_as(gw, "as_user", "bob", path=notebook)
        try:
            assert _report(gw, kid)["cwd"] == os.path.realpath(pwd.getpwnam("bob").pw_dir)
        finally:
            _delete(gw, kid)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    assert home_root.exists()


@pytest.mark.parametrize(("user", "words"), [
    ("root", "as root"),
    ("daemon", "below the minimum"),
    ("nobody", "not allowed"),
    ("no_such_user_ky", "no such user"),
])
def test_users_that_may_not_run_kernels_are_refused(gw: Gateway, user: str,
                                                    words: str) -> None:
    before = gw.request("GET", "/api/kernels")[1]
    status, body, _ = gw.request("POST", "/api/kernels",
                                 {"name": "as_user", "env": {"KERNEL_USERNAME": user}})
    assert status == 403, body
    assert words in body["message"] and user in body["message"], body
    assert gw.request("GET", "/api/kernels")[1] == before


def test_a_kernel_run_as_user_needs_a_user(gw: Gateway) -> None:
    status, body, _ = gw.request("POST", "/api/kernels",
                                 {"name": "as_user", "env": {"KERNEL_USERNAME": "../etc"}})
    assert status in (400, 403), body
    assert "KERNEL_USERNAME" in body["message"], body


def test_interrupt_restart_and_shutdown_as_the_user(gw: Gateway) -> None:
    _interrupt_restart_shutdown(gw, "as_user", "bob")


def test_through_sudo_signals_go_through_the_helper(gw: Gateway) -> None:
    """The gateway's child is sudo, not the kernel: signals reach it as the user."""
    bob = pwd.getpwnam("bob")
    seen = _interrupt_restart_shutdown(gw, "as_user_sudo", "bob")
    assert seen["uid"] == bob.pw_uid and seen["parent"] == "sudo", seen


def _interrupt_restart_shutdown(gw: Gateway, spec: str, user: str) -> dict[str, Any]:
    uid = pwd.getpwnam(user).pw_uid
    kid = _start_as(gw, spec, user)
    ks = gw.connect(kid)
    try:
        assert ks.execute("x = 6*7; print(x)")["stdout"] == "42\n"
        msg_id = ks.submit("import time; time.sleep(60)")
        time.sleep(1.0)
        assert gw.request("POST", f"/api/kernels/{kid}/interrupt", {})[0] == 204
        error = ks.wait_idle(msg_id)
        assert error is not None and error["ename"] == "KeyboardInterrupt"
    finally:
        ks.close()
    first = pgrep(kid)
    status, model, _ = gw.request("POST", f"/api/kernels/{kid}/restart", {})
    assert status == 200 and model["id"] == kid
    assert wait_gone(first) == set(), "the restart left the old kernel running"
    seen = _report(gw, kid)
    assert seen["uid"] == uid
    assert all(_owner_of(p) == uid for p in pgrep(kid) if _is_kernel(p))
    _delete(gw, kid)
    assert not _connection_file(user, kid).exists()
    return seen


def _is_kernel(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() != "sudo"
    except OSError:
        return False


def test_kernelspecs_without_run_as_user_keep_the_gateway_user(gw: Gateway) -> None:
    kid = _start_as(gw, "as_gateway", "alice")
    try:
        assert _report(gw, kid)["uid"] == os.getuid()
    finally:
        _delete(gw, kid)


# ---- the helper on its own -----------------------------------------------------------------


def _helper(request: dict[str, Any], *options: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run([*HELPER, *options], input=json.dumps(request) + "\n",
                          capture_output=True, text=True, cwd="/", timeout=30)
    lines = done.stdout.splitlines()
    return done.returncode, json.loads(lines[0]) if lines else {}, done.stdout + done.stderr


def test_helper_drops_every_privilege_before_the_kernel_runs() -> None:
    _users_ready()
    alice = pwd.getpwnam("alice")
    code = ("import os\n"
            "for f in (os.setuid, os.seteuid, os.setgid, os.setegid):\n"
            "    try:\n        f(0)\n        print('REGAINED', f.__name__)\n"
            "    except PermissionError:\n        pass\n"
            "print('ids', os.getresuid(), os.getresgid(), os.getgroups())\n")
    kid = "0b5b5c52-2222-4222-8333-944455556666"
    rc, reply, out = _helper({"action": "launch", "user": "alice", "kernel_id": kid,
                              "argv": [USER_PY, "-c", code], "connection": {"k": 1}})
    try:
        assert rc == 0 and reply["connection_file"].startswith(alice.pw_dir), out
        assert "REGAINED" not in out
        ids = (alice.pw_uid,) * 3, (alice.pw_gid,) * 3
        assert f"ids {ids[0]} {ids[1]}" in out, out
    finally:
        _connection_file("alice", kid).unlink(missing_ok=True)


def test_helper_refuses_without_running_anything() -> None:
    _users_ready()
    marker = Path("/tmp") / f"kernelyard-runas-marker-{os.getpid()}"
    argv = ["/usr/bin/touch", str(marker)]
    kid = "0b5b5c52-3333-4222-8333-944455556666"
    for user, options in [("root", ()), ("bob", ("--allow-user", "alice")),
                          ("alice", ("--allow-group", "no-such-group-ky"))]:
        rc, reply, out = _helper({"user": user, "kernel_id": kid, "argv": argv}, *options)
        assert rc == 2 and reply.get("kind") == "refused", out
    rc, reply, out = _helper({"user": "alice", "kernel_id": kid, "argv": argv},
                             "--min-uid", "0")
    assert rc == 2 and "min_uid" in reply["error"], out
    assert not marker.exists()


def test_helper_signals_only_the_users_own_processes() -> None:
    _users_ready()
    victim = subprocess.Popen(["sleep", "30"])  # root's
    try:
        rc, reply, out = _helper({"action": "signal", "user": "alice", "pid": victim.pid,
                                  "signum": 9})
        assert rc == 2 and "not the user's" in reply["error"], out
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


# ---- SSH kernels ---------------------------------------------------------------------------


def test_ssh_kernel_through_sudo_runs_as_alice_on_the_host(gw: Gateway) -> None:
    alice = pwd.getpwnam("alice")
    kid = _start_as(gw, "ssh_sudo", "alice")
    probe = Path(alice.pw_dir) / f"kernelyard-ssh-probe-{kid}.txt"
    try:
        seen = _report(gw, kid)
        assert seen["host"] in ("h1", "h2"), seen
        assert seen["uid"] == seen["passwd_uid"] == alice.pw_uid, seen
        assert seen["home"] == alice.pw_dir
        gw.run(kid, f"open({probe.name!r}, 'w').write('mine')", check=True)
        assert probe.stat().st_uid == alice.pw_uid
        run_dir = Path(alice.pw_dir) / ".kernelyard" / "kernels" / kid
        assert run_dir.stat().st_uid == alice.pw_uid
        # Looked at over a few status polls: their sudo (root's) names the run dir too.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            tree = _launcher_tree(run_dir)
            assert {_owner_of(p) for p in tree} == {alice.pw_uid}, _commands(tree)
            assert any("ipykernel_launcher" in c for c in _commands(tree)), _commands(tree)
            time.sleep(0.02)
        ks = gw.connect(kid)
        try:
            msg_id = ks.submit("import time; time.sleep(60)")
            time.sleep(1.0)
            assert gw.request("POST", f"/api/kernels/{kid}/interrupt", {})[0] == 204
            assert (ks.wait_idle(msg_id) or {}).get("ename") == "KeyboardInterrupt"
        finally:
            ks.close()
    finally:
        probe.unlink(missing_ok=True)
        _delete(gw, kid)
    assert not (Path(alice.pw_dir) / ".kernelyard" / "kernels" / kid).exists()


def test_ssh_kernels_through_sudo_for_two_users(gw: Gateway) -> None:
    kids = {user: _start_as(gw, "ssh_sudo", user) for user in ("alice", "bob")}
    try:
        for user, kid in kids.items():
            assert _report(gw, kid)["uid"] == pwd.getpwnam(user).pw_uid
    finally:
        for kid in kids.values():
            _delete(gw, kid)


def test_ssh_refuses_root_and_a_missing_user(gw: Gateway) -> None:
    status, body, _ = gw.request("POST", "/api/kernels",
                                 {"name": "ssh_sudo", "env": {"KERNEL_USERNAME": "root"}})
    assert status == 403 and "root" in body["message"], body
    status, body, _ = gw.request("POST", "/api/kernels", {"name": "ssh_sudo"})
    assert status in (400, 403), body


def test_ssh_kernel_logging_in_as_the_user(gw: Gateway) -> None:
    bob = pwd.getpwnam("bob")
    kid = _start_as(gw, "ssh_login", "bob")
    try:
        seen = _report(gw, kid)
        assert seen["uid"] == bob.pw_uid and seen["home"] == bob.pw_dir, seen
    finally:
        _delete(gw, kid)


def test_ssh_login_without_a_key_for_the_user_is_refused(
    gw: Gateway, hosts: dict[str, str]
) -> None:
    status, body, _ = gw.request("POST", "/api/kernels",
                                 {"name": "ssh_login",
                                  "env": {"KERNEL_USERNAME": hosts["KY_SSH_USER"]}})
    assert status == 500 and "no SSH key for user" in body["message"], body

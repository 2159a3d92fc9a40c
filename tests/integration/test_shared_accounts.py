"""Kernels of different users never share an OS account behind per-user authentication.

(a) A gateway with an authenticator that names users (api-token, proxy-header)
and a kernelspec that runs every kernel as one account refuses to start,
naming the kernelspec and both fixes; (b) the waiver
``KernelyardApp.allow_shared_kernel_account`` starts it with a warning; (c) with
kernels run as their users (real users alice and bob, ci/users.sh), bob's
kernel can read neither alice's connection file nor the gateway's environment,
and cannot run code in alice's kernel over ZMQ with what it can read: locally,
on the shared SSH hosts (sudo mode) and through an sshd alice and bob log in to
(login mode). A control run with alice's key shows that the probe would see a
kernel that answers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import realparts
from tests.gateway import Gateway, free_port, issue, start_gateway
from tests.integration.test_run_as_user import (
    KERNEL,
    USERS_STATE,
    _users_ready,
    loopback_sshd,  # noqa: F401 - a fixture
)
from tests.kernelspecs import IPYKERNEL, write_spec
from tests.kernelspecs import provisioner_spec as _spec
from tests.realparts import ssh_hosts

RUN_AS = "LocalKernelProvisioner.run_as_user"
WAIVER = "KernelyardApp.allow_shared_kernel_account"
# The run-as helper of this checkout (``-I`` ignores PYTHONPATH: the installed one otherwise).
HELPER_FROM_CHECKOUT = [
    sys.executable, "-I", "-c",
    f"import runpy, sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r}); "
    "runpy.run_module('kernelyard.runas', run_name='__main__', alter_sys=True)",
    "--allow-user", "alice", "--allow-user", "bob"]
PROXY_SECRET = "proxy-secret-for-shared-account-tests"

# Run in bob's kernel: what it can read and reach of alice's kernel. Arguments as JSON.
PROBE = r"""
import json, os, time, uuid
import zmq
from jupyter_client.session import Session
args = json.loads(PROBE_ARGS)
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "read"
    except OSError as e:
        out[name] = type(e).__name__
for i, path in enumerate(args["files"]):
    attempt("file%d" % i, lambda: open(path, "rb").read())
for i, path in enumerate(args["dirs"]):
    attempt("dir%d" % i, lambda: os.listdir(path))
attempt("environ", lambda: open("/proc/%d/environ" % args["gateway_pid"], "rb").read())
session = Session(key=args["key"].encode(), signature_scheme="hmac-sha256")
ctx = zmq.Context()
sock = ctx.socket(zmq.DEALER)
sock.linger = 0
sock.connect("tcp://%s:%d" % (args["ip"], args["shell_port"]))
msg = session.msg("execute_request", {"code": args["code"], "silent": False,
                  "store_history": False, "user_expressions": {}, "allow_stdin": False})
session.send(sock, msg)
out["reply"] = None
if sock.poll(args["wait_ms"]):
    reply = session.recv(sock, mode=0)[1]
    out["reply"] = reply["content"]["status"] if reply else "unsigned"
sock.close()
print(json.dumps(out))
"""


# ---- (a) and (b): the startup check --------------------------------------------------------


def _specs(root: Path) -> Path:
    """A shared-account local kernelspec and an SSH one in service mode, and a run-as one."""
    write_spec(root, "shared_local", IPYKERNEL)
    write_spec(root, "ssh_service", ["kernelyard-launcher", "--", *IPYKERNEL], metadata={
        "kernel_provisioner": {"provisioner_name": "kernelyard-ssh",
                               "config": {"hosts": ["h1"], "user_mode": "service"}}})
    write_spec(root, "own_user", IPYKERNEL, metadata={
        "kernel_provisioner": {"provisioner_name": "kernelyard-local",
                               "config": {"run_as_user": True}}})
    return root


def _serve(tmp: Path, *args: str, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    """``kernelyard serve`` that is expected to exit at startup."""
    full = {**os.environ, "JUPYTER_PATH": str(_specs(tmp / "jupyter")),
            "JUPYTER_DATA_DIR": str(tmp / "data"), "JUPYTER_RUNTIME_DIR": str(tmp / "rt"),
            **(env or {})}
    full.pop("KERNELYARD_AUTH_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "kernelyard.cli.main", "serve", "--port", str(free_port()),
         *args], capture_output=True, text=True, timeout=90, env=full, cwd=tmp)


@pytest.mark.parametrize(("authenticator", "env"), [
    ("api-token", {}),
    ("proxy-header", {"KERNELYARD_PROXY_SECRET": PROXY_SECRET}),
])
def test_per_user_authentication_with_a_shared_account_refuses_to_start(
    tmp_path: Path, authenticator: str, env: dict[str, str]
) -> None:
    result = _serve(tmp_path, f"--KernelyardApp.authenticators={authenticator}", env=env)
    assert result.returncode != 0, result.stderr
    assert "is listening on" not in result.stderr
    log = result.stderr
    assert "Refusing to start" in log and authenticator in log
    assert "'shared_local'" in log and "'ssh_service'" in log, log
    assert "'own_user'" not in log, log  # its kernels run as their users
    assert RUN_AS in log and "SSHProvisioner.user_mode" in log and WAIVER in log, log


def test_the_shared_token_alone_starts_with_shared_accounts(tmp_path: Path) -> None:
    (tmp_path / "jupyter").mkdir()
    gw = start_gateway(tmp_path, allow_shared_kernel_account=False,
                       env={"JUPYTER_PATH": str(_specs(tmp_path / "jupyter"))})
    try:
        assert "Refusing" not in gw.log() and WAIVER not in gw.log()
        assert gw.request("GET", "/api/kernelspecs")[0] == 200
    finally:
        gw.stop()


def test_the_waiver_starts_with_a_warning_at_every_start(tmp_path: Path) -> None:
    for attempt in range(2):
        folder = tmp_path / f"start{attempt}"
        folder.mkdir()
        gw = start_gateway(folder, "--KernelyardApp.authenticators=api-token",
                           f"--{WAIVER}=True", allow_shared_kernel_account=False,
                           env={"JUPYTER_PATH": str(_specs(folder / "jupyter"))})
        try:
            warning = [line for line in gw.log().splitlines() if WAIVER in line]
            assert warning and warning[0].startswith("[W"), gw.log()
            assert "'shared_local'" in gw.log() and "Refusing" not in gw.log()
        finally:
            gw.stop()


# ---- without authentication, KERNEL_USERNAME names the owner: no identity may change --------


@pytest.mark.parametrize(("provisioner", "config", "setting"), [
    ("kernelyard-local", {"run_as_user": True}, RUN_AS),
    ("kernelyard-ssh", {"hosts": ["h1"], "user_mode": "sudo"}, "SSHProvisioner.user_mode"),
    ("kernelyard-ssh", {"hosts": ["h1"], "user_mode": "login"}, "SSHProvisioner.user_mode"),
    ("kernelyard-yarn", {}, "YarnProvisioner.impersonate"),  # on by default
])
def test_no_authentication_with_kernels_run_as_their_owner_refuses_to_start(
    tmp_path: Path, provisioner: str, config: dict[str, Any], setting: str
) -> None:
    specs = tmp_path / "jupyter"
    write_spec(specs, "as_owner", IPYKERNEL, metadata={
        "kernel_provisioner": {"provisioner_name": provisioner, "config": config}})
    env = {**os.environ, "JUPYTER_PATH": str(specs), "JUPYTER_DATA_DIR": str(tmp_path / "d"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    env.pop("KERNELYARD_AUTH_TOKEN", None)
    result = subprocess.run(
        [sys.executable, "-m", "kernelyard.cli.main", "serve", "--port", str(free_port())],
        capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path)
    log = result.stderr
    assert result.returncode != 0 and "is listening on" not in log, log
    assert "'as_owner'" in log and setting in log and "KERNEL_USERNAME" in log, log
    assert "KernelyardApp.authenticators" in log, log


def test_no_authentication_takes_kernel_username_as_the_owner(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, token=None, allow_shared_kernel_account=False)
    try:
        assert "KERNEL_USERNAME is taken as its kernel's owner" in gw.log()
        kid = gw.start_kernel(env={"KERNEL_USERNAME": "alice"})
        status, model, _ = gw.request("GET", f"/api/kernels/{kid}")
        assert status == 200 and model.get("owner") == "alice", model
        ks = gw.connect(kid)  # the one anonymous caller reaches every kernel
        try:
            out = ks.execute("import os; print(os.getuid())")
        finally:
            ks.close()
        assert out["stdout"].strip() == str(os.getuid()), out  # the gateway's account
        assert gw.request("DELETE", f"/api/kernels/{kid}")[0] == 204
    finally:
        gw.stop()


# ---- the gateway is not dumpable: its own account's processes can't read its environ ---------

HOLDER = (
    "import os, sys, time\n"
    "if sys.argv[1] == 'undumpable':\n"
    "    from kernelyard.startup_checks import make_undumpable\n"
    "    assert make_undumpable()\n"
    "print(os.getpid(), flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.parametrize(("mode", "readable"), [("undumpable", False), ("control", True)])
def test_a_process_of_the_same_account_cannot_read_the_gateways_environ(
    mode: str, readable: bool
) -> None:
    """As alice (not root, which may read anything): what the gateway does at start."""
    _users_ready()
    # A copy of the package alice can read: the checkout may be in a 0700 directory.
    package_dir = Path(tempfile.mkdtemp(prefix="ky-undumpable-"))
    package_dir.chmod(0o755)
    shutil.copytree(Path(__file__).resolve().parents[2] / "kernelyard", package_dir / "kernelyard",
                    ignore=shutil.ignore_patterns("__pycache__"))
    holder = subprocess.Popen(
        ["runuser", "-u", "alice", "--", "env", f"PYTHONPATH={package_dir}",
         "KERNELYARD_TEST_SECRET=s3cret", "/usr/bin/python3", "-c", HOLDER, mode],
        stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert holder.stdout is not None
        target = int(holder.stdout.readline())
        read = subprocess.run(["runuser", "-u", "alice", "--", "cat", f"/proc/{target}/environ"],
                              capture_output=True)
        assert (read.returncode == 0 and b"KERNELYARD_TEST_SECRET" in read.stdout) is readable
    finally:
        holder.kill()
        holder.wait()
        shutil.rmtree(package_dir)


# ---- (c): run as the user: what bob's kernel can reach of alice's ----------------------------


@dataclasses.dataclass
class Users:
    gw: Gateway
    alice: Gateway
    bob: Gateway


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory,
          loopback_sshd: dict[str, str]) -> Iterator[Users]:  # noqa: F811
    _users_ready()
    hosts = ssh_hosts()
    root = tmp_path_factory.mktemp("shared-accounts")
    specs = root / "jupyter"
    _spec(specs, "as_user", KERNEL, "kernelyard-local", run_as_user=True,
          runas_command=HELPER_FROM_CHECKOUT)
    h1 = hosts["KY_SSH_HOSTS"].split(",")[0]
    _spec(specs, "ssh_sudo", ["kernelyard-launcher", "--", *KERNEL], "kernelyard-ssh",
          hosts=[h1], user_mode="sudo", **realparts.ssh_login_config(hosts),
          poll_interval=1.0)
    _spec(specs, "ssh_login", ["kernelyard-launcher", "--", *KERNEL], "kernelyard-ssh",
          hosts=["127.0.0.1"], port=int(loopback_sshd["port"]), user_mode="login",
          user_keys_dir=str(USERS_STATE / "keys"), known_hosts=loopback_sshd["known_hosts"],
          poll_interval=1.0)
    # Per-user tokens and no waiver: the gateway starts only because every kernelspec it
    # serves (the venv's python3 too, hence the global run_as_user) runs kernels as their user.
    gw = start_gateway(root, "--ip", hosts["KY_SSH_GATEWAY_IP"],
                       "--KernelyardApp.authenticators=api-token",
                       "--KernelyardApp.authenticators=token", f"--{RUN_AS}=True",
                       allow_shared_kernel_account=False, env={"JUPYTER_PATH": str(specs)})
    data = root / "data"
    alice, bob = (dataclasses.replace(gw, token=issue(data, user)) for user in ("alice", "bob"))
    yield Users(gw, alice, bob)
    for kernel in gw.request("GET", "/api/kernels")[1] or []:
        gw.request("DELETE", f"/api/kernels/{kernel['id']}")
    gw.stop()


def _home(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


def _local_connection_file(kid: str) -> Path:
    return _home("alice") / ".local/share/jupyter/runtime" / f"kernel-{kid}.json"


def _remote_connection_file(kid: str) -> Path:
    # The hosts are network namespaces of this machine: the same files.
    return _home("alice") / ".kernelyard" / "kernels" / kid / f"kernel-{kid}.json"


def _probe(bob: Gateway, kid: str, args: dict[str, Any]) -> dict[str, Any]:
    ks = bob.connect(kid)
    try:
        out = ks.execute(PROBE.replace("PROBE_ARGS", repr(json.dumps(args))), timeout=120)
    finally:
        ks.close()
    assert out["error"] is None, out
    return json.loads(out["stdout"])


@pytest.mark.parametrize("spec", ["as_user", "ssh_sudo", "ssh_login"])
def test_bobs_kernel_cannot_reach_alices(users: Users, spec: str) -> None:
    local = spec == "as_user"
    # Alice's runtime dir as an earlier tool may have left it, listable by all: the
    # helper tightens it (an SSH run dir is new for each kernel: made 0700).
    runtime = _home("alice") / ".local/share/jupyter/runtime"
    saved = stat.S_IMODE(runtime.stat().st_mode) if runtime.is_dir() else None
    if local and saved is not None:
        runtime.chmod(0o755)
    try:
        _bob_vs_alice(users, spec, local)
    finally:
        if saved is not None:
            runtime.chmod(saved & ~0o077)


def _bob_vs_alice(users: Users, spec: str, local: bool) -> None:
    alice_kid = users.alice.start_kernel(spec)
    bob_kid = users.bob.start_kernel(spec, env={"KERNEL_USERNAME": "bob"})
    marker = Path("/tmp") / f"kernelyard-stolen-{alice_kid}"
    try:
        conn_file = _local_connection_file(alice_kid) if local \
            else _remote_connection_file(alice_kid)
        info = json.loads(conn_file.read_text())  # the test (root) may read it
        files = [str(conn_file), str(users.gw.runtime_dir / f"kernel-{alice_kid}.json")]
        # Alice's kernel writes the mark when it runs code; it is hers (uid) if it does.
        code = f"open({str(marker)!r}, 'w').write('ran')"
        base = {"files": files, "dirs": [str(conn_file.parent)],
                "gateway_pid": users.gw.proc.pid, "ip": info["ip"],
                "shell_port": info["shell_port"], "code": code}
        # What bob can read: no key (he guesses none); a reply would be answered in 10 s.
        seen = _probe(users.bob, bob_kid, {**base, "key": "", "wait_ms": 10_000})
        assert seen["file0"] == seen["file1"] == "PermissionError" or (
            seen["file0"] == "PermissionError" and seen["file1"] == "FileNotFoundError"), seen
        assert seen["dir0"] == "PermissionError", seen  # alice's run dir can't be listed
        assert stat.S_IMODE(conn_file.parent.stat().st_mode) & 0o077 == 0
        assert stat.S_IMODE(conn_file.stat().st_mode) == 0o600
        assert seen["environ"] == "PermissionError", seen
        assert seen["reply"] is None and not marker.exists(), seen
        # Control: with alice's key the same probe runs code in her kernel, as alice.
        seen = _probe(users.bob, bob_kid, {**base, "key": info["key"], "wait_ms": 60_000})
        assert seen["reply"] == "ok" and marker.read_text() == "ran", seen
        assert marker.stat().st_uid == pwd.getpwnam("alice").pw_uid
    finally:
        marker.unlink(missing_ok=True)
        for gw, kid in ((users.alice, alice_kid), (users.bob, bob_kid)):
            gw.request("DELETE", f"/api/kernels/{kid}")


def test_a_shared_account_kernelspec_added_later_is_refused(users: Users) -> None:
    specs = users.gw.runtime_dir.parent / "jupyter"
    _spec(specs, "ssh_service_late", ["kernelyard-launcher", "--", *KERNEL], "kernelyard-ssh",
          hosts=["h1"], user_mode="service")
    try:
        status, listing, _ = users.alice.request("GET", "/api/kernelspecs")
        assert status == 200 and "ssh_service_late" not in listing["kernelspecs"], listing
        assert "as_user" in listing["kernelspecs"]
        status, body, _ = users.alice.request("POST", "/api/kernels",
                                              {"name": "ssh_service_late"})
        assert status == 403, (status, body)
        assert "SSHProvisioner.user_mode" in body["message"] and WAIVER in body["message"]
    finally:
        shutil.rmtree(specs / "kernels" / "ssh_service_late")

"""Remote kernels on real SSH hosts (sshd in network namespaces, ci/ssh-hosts)."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import realparts
from tests.gateway import Gateway, start_gateway
from tests.kernelspecs import provisioner_spec
from tests.procs import alive, pgrep, wait_gone
from tests.realparts import ssh_hosts

REMOTE_PY = "/usr/bin/python3"
PY_KERNEL = [REMOTE_PY, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
# Over the old fixed 60 s ready wait's reach? No: under it, and over ssh_slow_ready's
# launch_timeout, so only a ready wait that follows the launch timeout refuses the start.
SLOW_READY = 45


def _down_host(env: dict[str, str]) -> str:
    """An address on the hosts' bridge where no host is."""
    return env["KY_SSH_HOSTS"].split(",")[0].rsplit(".", 1)[0] + ".254"


@pytest.fixture(scope="module")
def hosts() -> dict[str, str]:
    env = ssh_hosts()
    if len(env["KY_SSH_HOSTS"].split(",")) < 3:
        realparts.missing("ssh-hosts", f"the SSH tests need 3 hosts, not {env['KY_SSH_HOSTS']}")
    return env


def _spec(root: Path, name: str, hosts: list[str], argv: list[str], **config: object) -> None:
    provisioner_spec(root, name, ["kernelyard-launcher", "--", *argv], "kernelyard-ssh",
                     hosts=hosts, **config)


def _write_specs(root: Path, env: dict[str, str]) -> None:
    h1, h2 = env["KY_SSH_HOSTS"].split(",")[:2]
    _spec(root, "ssh_py", [h1, h2], PY_KERNEL)
    _spec(root, "ssh_least", [_down_host(env), h1, h2], PY_KERNEL, placement="least-loaded")
    _spec(root, "ssh_ir", [h1], ["R", "--slave", "-e", "IRkernel::main()", "--args",
                                 "{connection_file}"])
    _spec(root, "ssh_dies", [h2], [REMOTE_PY, "-c", "import sys; print('bad kernel config',"
                                   " file=sys.stderr); sys.exit(7)", "{connection_file}"])
    shared = Path(tempfile.mkdtemp(prefix="kernelyard-ssh-test-"))
    shared.chmod(0o755)  # the remote user must be able to run the script
    mute = shared / "mute_launcher.py"
    mute.write_text(
        "#!/usr/bin/python3\nimport json, os, sys\n"
        "if sys.argv[1] == '-c':  # status and cancel scripts run as they are\n"
        f"    os.execv({REMOTE_PY!r}, [{REMOTE_PY!r}] + sys.argv[1:])\n"
        "secrets = json.loads(sys.stdin.readline())\n"
        "secrets['callback_url'] = 'http://127.0.0.1:9/nowhere'\n"
        "r, w = os.pipe(); os.write(w, (json.dumps(secrets) + '\\n').encode()); os.close(w)\n"
        "os.dup2(r, 0)\n"
        f"os.execv({REMOTE_PY!r}, [{REMOTE_PY!r}] + sys.argv[1:])\n"
    )
    mute.chmod(0o755)
    _spec(root, "ssh_mute", [h1], PY_KERNEL, remote_python=str(mute), launch_timeout=6.0)
    # Calls back at once, answers kernel_info only after SLOW_READY seconds.
    _spec(root, "ssh_slow_ready", [h2], ["/bin/sh", "-c", f"sleep {SLOW_READY}; exec \"$@\"",
                                         "sh", *PY_KERNEL], launch_timeout=15.0)


@pytest.fixture(scope="module")
def ssh_root(tmp_path_factory: pytest.TempPathFactory, hosts: dict[str, str]) -> Path:
    root = tmp_path_factory.mktemp("ssh")
    root.chmod(0o755)
    _write_specs(root / "jupyter", hosts)
    for part in (root, root / "jupyter"):
        part.chmod(0o755)
    return root


def _start(root: Path, hosts: dict[str, str], *extra: str) -> Gateway:
    return start_gateway(
        root,
        *extra,
        "--ip", hosts["KY_SSH_GATEWAY_IP"],
        *realparts.ssh_login_args(hosts),
        "--SSHProvisioner.poll_interval=1",
        env={"JUPYTER_PATH": str(root / "jupyter")},
    )


@pytest.fixture(scope="module")
def gw(ssh_root: Path, hosts: dict[str, str]) -> Iterator[Gateway]:
    gateway = _start(ssh_root, hosts)
    yield gateway
    for kernel in gateway.request("GET", "/api/kernels")[1] or []:
        gateway.request("DELETE", f"/api/kernels/{kernel['id']}")
    gateway.stop()


def test_kernels_alternate_between_hosts(gw: Gateway) -> None:
    kids = [gw.start_kernel("ssh_py") for _ in range(2)]
    try:
        names = [gw.run(kid, "import socket; print(socket.gethostname())")["stdout"].strip()
                 for kid in kids]
    finally:
        for kid in kids:
            gw.request("DELETE", f"/api/kernels/{kid}")
    assert sorted(names) == ["h1", "h2"]


def test_a_client_may_pin_a_listed_host_only(gw: Gateway, hosts: dict[str, str]) -> None:
    h2 = hosts["KY_SSH_HOSTS"].split(",")[1]
    kid = gw.start_kernel("ssh_py", env={"KERNEL_REMOTE_HOST": h2})
    try:
        assert gw.run(kid, "import socket; print(socket.gethostname())")["stdout"] == "h2\n"
    finally:
        gw.request("DELETE", f"/api/kernels/{kid}")
    status, body, _ = gw.request("POST", "/api/kernels",
                                 {"name": "ssh_py", "env": {"KERNEL_REMOTE_HOST": "10.0.0.99"}})
    assert status == 400 and "KERNEL_REMOTE_HOST" in body["message"]


def test_execute_interrupt_restart_shutdown(gw: Gateway) -> None:
    kid = gw.start_kernel("ssh_py")
    ks = gw.connect(kid)
    try:
        assert ks.execute("x = 6*7; print(x)")["stdout"] == "42\n"
        pid_before = ks.execute("import os; print(os.getpid())")["stdout"]
        msg_id = ks.submit("import time; time.sleep(60)")
        time.sleep(1.0)
        assert gw.request("POST", f"/api/kernels/{kid}/interrupt", {})[0] == 204
        error = ks.wait_idle(msg_id)
        assert error is not None and error["ename"] == "KeyboardInterrupt"
        assert ks.execute("print(x)")["stdout"] == "42\n"
    finally:
        ks.close()
    status, model, _ = gw.request("POST", f"/api/kernels/{kid}/restart", {})
    assert status == 200 and model["id"] == kid
    out = gw.run(kid, "import os; print(os.getpid())\nx")
    assert out["error"]["ename"] == "NameError" and out["stdout"] != pid_before
    procs = pgrep(kid)
    assert procs
    assert gw.request("DELETE", f"/api/kernels/{kid}")[0] == 204
    assert wait_gone(procs) == set()


def test_kill_9_is_reported_dead(gw: Gateway) -> None:
    kid = gw.start_kernel("ssh_py")
    pid = int(gw.run(kid, "import os; print(os.getpid())")["stdout"])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    state = None
    while time.monotonic() < deadline:
        status, model, _ = gw.request("GET", f"/api/kernels/{kid}")
        state = model.get("execution_state") if status == 200 else "gone"
        if state in ("dead", "gone"):
            break
        time.sleep(0.5)
    assert state in ("dead", "gone")
    gw.request("DELETE", f"/api/kernels/{kid}")
    assert wait_gone(pgrep(kid)) == set()


def test_gateway_restart_readopts_kernel(ssh_root: Path, hosts: dict[str, str]) -> None:
    root = ssh_root / "restart"
    root.mkdir()
    (root / "jupyter").symlink_to(ssh_root / "jupyter")
    first = _start(root, hosts)
    kid = first.start_kernel("ssh_py")
    assert first.run(kid, "y = 'survives'; print(y)")["stdout"] == "survives\n"
    procs = pgrep(kid)
    assert first.stop() == 0
    assert all(alive(p) for p in procs), "the kernel did not outlive the gateway"
    second = _start(root, hosts)
    try:
        out = second.run(kid, "print(y)")
        assert out["stdout"] == "survives\n", out
        assert pgrep(kid) == procs, "a second copy of the kernel is running"
        assert second.request("DELETE", f"/api/kernels/{kid}")[0] == 204
        assert wait_gone(procs) == set()
    finally:
        second.stop()


def test_kernels_can_stop_with_the_gateway(ssh_root: Path, hosts: dict[str, str]) -> None:
    root = ssh_root / "stop_all"
    root.mkdir()
    (root / "jupyter").symlink_to(ssh_root / "jupyter")
    gw = _start(root, hosts, "--KernelyardApp.shutdown_kernels_on_stop=True")
    kid = gw.start_kernel("ssh_py")
    procs = pgrep(kid)
    assert procs
    assert gw.stop() == 0
    assert wait_gone(procs) == set()


def test_down_host_named_and_next_start_goes_elsewhere(gw: Gateway, hosts: dict[str, str]) -> None:
    """A host that does not answer is named, and passed over by the next start.

    The down host is an address of the hosts' bridge where no host is, not a stopped
    sshd of the shared real parts (other test runs use them at the same time).
    """
    status, body, _ = gw.request("POST", "/api/kernels", {"name": "ssh_least"})
    assert status == 500 and _down_host(hosts) in body["message"], body
    kid = gw.start_kernel("ssh_least")
    try:
        assert gw.run(kid, "import socket; print(socket.gethostname())")["stdout"] in (
            "h1\n", "h2\n")
    finally:
        gw.request("DELETE", f"/api/kernels/{kid}")


def test_kernel_exiting_at_once_reports_its_log(gw: Gateway) -> None:
    status, body, _ = gw.request("POST", "/api/kernels", {"name": "ssh_dies"})
    assert status == 500
    assert "exit code 7" in body["message"] and "bad kernel config" in body["message"]


def test_launcher_that_never_calls_back_is_cleaned_up(gw: Gateway) -> None:
    kid = "0b5b5c52-1111-4222-8333-944455556666"
    status, body, _ = gw.request("POST", "/api/kernels",
                                 {"name": "ssh_mute", "env": {"KERNEL_ID": kid}})
    assert status == 500 and "did not start within" in body["message"], body
    assert wait_gone(pgrep(kid)) == set()


def test_the_ready_wait_of_a_remote_kernel_follows_its_launch_timeout(gw: Gateway) -> None:
    """A remote kernel gets its launch timeout (here 15 s) to answer kernel_info, not a
    fixed 60 s: the bound a loaded cluster needs is the one its operator set."""
    kid = "0b5b5c52-1111-4222-8333-944455557777"
    status, body, _ = gw.request("POST", "/api/kernels",
                                 {"name": "ssh_slow_ready", "env": {"KERNEL_ID": kid}},
                                 timeout=SLOW_READY + 60)
    if status == 201:
        gw.request("DELETE", f"/api/kernels/{kid}")
    assert status == 500 and "no reply within 15 s" in body["message"], (status, body)
    assert wait_gone(pgrep(kid)) == set()


def test_forged_and_replayed_callbacks_are_refused(gw: Gateway) -> None:
    import urllib.error
    import urllib.request

    kid = "4f1e2d3c-aaaa-4bbb-8ccc-0123456789ab"
    url = f"{gw.url}kernelyard/callback/{kid}"
    req = urllib.request.Request(url, data=b"{}", method="POST",
                                 headers={"Authorization": "Bearer forged"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 403
    assert "forged" not in gw.log()


def test_irkernel_through_the_same_launcher(gw: Gateway) -> None:
    kid = gw.start_kernel("ssh_ir")
    ks = gw.connect(kid)
    try:
        assert ks.execute("cat(6*7)")["stdout"] == "42"
        msg_id = ks.submit("Sys.sleep(60)")
        time.sleep(1.5)
        t0 = time.monotonic()
        assert gw.request("POST", f"/api/kernels/{kid}/interrupt", {})[0] == 204
        ks.wait_idle(msg_id, timeout=30)
        assert time.monotonic() - t0 < 30
        assert ks.execute("cat(1+1)")["stdout"] == "2"
    finally:
        ks.close()
        gw.request("DELETE", f"/api/kernels/{kid}")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))

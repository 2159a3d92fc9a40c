"""One backend object per connection configuration: each kernel is watched with its own.

Two SSH kernelspecs log in to the same host as different users (alice and bob,
ci/users.sh, through this module's loopback sshd). Each kernel's run dir is in
its own login's home, so a status query made with the other kernelspec's login
finds no launcher there and reports the kernel as still starting. Before backend
objects the status poller was one per provisioner class and asked every kernel's
state with the first kernel's settings: one of the two deaths went unseen.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway import Gateway, start_gateway
from tests.integration.test_run_as_user import (
    KERNEL,
    USERS_STATE,
    _users_ready,
    loopback_sshd,  # noqa: F401 - a fixture
)
from tests.kernelspecs import provisioner_spec
from tests.realparts import ssh_hosts

# Generous: a bound for a hung test, not a measure of speed (the poll interval is 1 s).
GIVE_UP = 90.0


def _spec(root: Path, name: str, user: str, sshd: dict[str, str]) -> None:
    config: dict[str, Any] = {
        "hosts": ["127.0.0.1"], "port": int(sshd["port"]), "username": user,
        "client_keys": [str(USERS_STATE / "keys" / user)],
        "known_hosts": sshd["known_hosts"], "poll_interval": 1.0}
    provisioner_spec(root, name, ["kernelyard-launcher", "--", *KERNEL], "kernelyard-ssh",
                     **config)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory,
       loopback_sshd: dict[str, str]) -> Iterator[Gateway]:  # noqa: F811
    _users_ready()
    hosts = ssh_hosts()
    root = tmp_path_factory.mktemp("backend-objects")
    specs = root / "jupyter"
    _spec(specs, "as_alice", "alice", loopback_sshd)
    _spec(specs, "as_bob", "bob", loopback_sshd)
    gateway = start_gateway(root, "--ip", hosts["KY_SSH_GATEWAY_IP"],
                            env={"JUPYTER_PATH": str(specs)})
    yield gateway
    for kernel in gateway.request("GET", "/api/kernels")[1] or []:
        gateway.request("DELETE", f"/api/kernels/{kernel['id']}")
    gateway.stop()


def _kernel_pid(gw: Gateway, kid: str) -> int:
    return int(gw.run(kid, "import os; print(os.getpid())", timeout=120)["stdout"])


def _state(gw: Gateway, kid: str) -> str:
    status, model, _ = gw.request("GET", f"/api/kernels/{kid}")
    return str(model.get("execution_state")) if status == 200 else "gone"


def test_kernels_of_two_logins_on_one_host_are_both_seen_dead(gw: Gateway) -> None:
    kids = [gw.start_kernel("as_alice"), gw.start_kernel("as_bob")]
    try:
        for kid in kids:
            os.kill(_kernel_pid(gw, kid), signal.SIGKILL)
        states = {kid: _state(gw, kid) for kid in kids}
        deadline = time.monotonic() + GIVE_UP
        while time.monotonic() < deadline and not all(
                s in ("dead", "gone") for s in states.values()):
            time.sleep(0.5)
            states = {kid: _state(gw, kid) for kid in kids}
        assert all(s in ("dead", "gone") for s in states.values()), states
    finally:
        for kid in kids:
            gw.request("DELETE", f"/api/kernels/{kid}")

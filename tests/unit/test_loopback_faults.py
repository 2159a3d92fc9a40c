"""Each fault of ``kernelyard-loopback-faults`` gives the client the right result and
leaves nothing behind (no process, no run dir, no store record)."""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract import (
    GATEWAY_START_WAIT,
    ContractBackend,
    assert_nothing_left,
    kernel_processes,
    store_has,
    wait_dead,
    write_launcher_spec,
)
from tests.gateway import Gateway, start_gateway
from tests.kernelspecs import IPYKERNEL
from tests.unit.test_contract import loopback_backend

FAULTS: dict[str, dict[str, Any]] = {
    "fault_checkpoint_1": {"fail_at_checkpoint": 1},
    "fault_checkpoint_2": {"fail_at_checkpoint": 2},
    "fault_mute": {"never_call_back": True, "launch_timeout": 3.0},
    "fault_dies": {"die_after_callback": True},
    "fault_cancel": {"fail_at_checkpoint": 2, "cancel_raises": True},
}


@pytest.fixture(scope="module")
def backend_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def faulty(backend_dir: Path) -> ContractBackend:
    return loopback_backend(backend_dir, "kernelyard-loopback-faults")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, backend_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("faults-gw")
    runs = backend_dir / "runs"  # as loopback_backend's
    for name, config in FAULTS.items():
        write_launcher_spec(root / "jupyter", name, "kernelyard-loopback-faults", IPYKERNEL,
                            run_root=str(runs), poll_interval=1.0, **config)
    return root


@pytest.fixture(scope="module")
def gw(root: Path, faulty: ContractBackend) -> Iterator[Gateway]:
    env = {"JUPYTER_PATH": str(root / "jupyter"), **faulty.gateway_env}
    gateway = start_gateway(root, wait=GATEWAY_START_WAIT, env=env)
    yield gateway
    gateway.stop()


def _start(gw: Gateway, name: str) -> tuple[str, int, Any]:
    kid = str(uuid.uuid4())
    status, body, _ = gw.request("POST", "/api/kernels",
                                 {"name": name, "env": {"KERNEL_ID": kid}}, timeout=300)
    return kid, status, body


@pytest.mark.parametrize("checkpoint", [1, 2])
def test_a_start_failing_at_a_checkpoint_is_refused_and_cancelled(
    gw: Gateway, root: Path, faulty: ContractBackend, checkpoint: int
) -> None:
    kid, status, body = _start(gw, f"fault_checkpoint_{checkpoint}")
    assert status == 500 and f"fails at checkpoint {checkpoint}" in body["message"], body
    assert_nothing_left(faulty, root, kid)


def test_a_launcher_that_never_calls_back_times_out_and_is_cancelled(
    gw: Gateway, root: Path, faulty: ContractBackend
) -> None:
    kid, status, body = _start(gw, "fault_mute")
    assert status == 500 and "did not start within 3 s" in body["message"], body
    assert_nothing_left(faulty, root, kid)


def test_a_kernel_dying_after_its_callback_is_reported_dead(
    gw: Gateway, root: Path, faulty: ContractBackend
) -> None:
    kid, status, body = _start(gw, "fault_dies")
    assert status == 201, body
    assert wait_dead(gw, kid) in ("dead", "gone")
    gw.request("DELETE", f"/api/kernels/{kid}")
    assert_nothing_left(faulty, root, kid)


def test_a_cancel_that_raises_still_leaves_no_record_and_says_so(
    gw: Gateway, root: Path, faulty: ContractBackend, backend_dir: Path
) -> None:
    kid, status, body = _start(gw, "fault_cancel")
    try:
        assert status == 500, body
        assert "fails at checkpoint 2" in body["message"], body
        assert "cancel failed (InjectedFault: injected fault: the backend's cancel raised)" in (
            body["message"]), body
        assert not store_has(root, kid)
        assert gw.log_shows(f"Kernel {kid}: cleaning up its start failed; the backend may "
                            "still hold it (state {")
        assert kernel_processes(kid), "the failed cancel stopped the kernel anyway"
    finally:  # finish what the backend could not cancel
        for pid in kernel_processes(kid):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(backend_dir / "runs" / kid, ignore_errors=True)
    assert_nothing_left(faulty, root, kid)

"""A start cut short leaves nothing behind, cleaned up once, in one place.

The kernel manager runs in this process with real local kernels: a "slow"
kernelspec whose process runs but never becomes a kernel, and ipykernel. A
start is cut short by a cancellation (what the API does when the client closes
its connection), by the client's ``KERNEL_LAUNCH_TIMEOUT``, or by a
cancellation after the kernel answered but before the start returned (the
kernel is already in the manager's table then; the pause there is injected).
Each time: no process, no connection file, no entry in any table, the quota
free again, the id free for another try, and the kernel's resources freed once
(``Starting._clean_up_failed_start``, the one cleanup).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from kernelyard import policy
from kernelyard.errors import KernelStartFailed, StartDeadlineExceeded
from kernelyard.identity import Principal, gateway_user
from kernelyard.kernel import GatewayKernelManager
from kernelyard.manager import Caller, GatewayMappingKernelManager
from tests.kernelspecs import PY, make_test_kernelspecs, write_spec
from tests.procs import alive as _alive
from tests.procs import tagged_pids as _tagged_pids


@pytest.fixture
def tag() -> Iterator[str]:
    """A mark on the slow kernel's command line; its processes are killed at the end."""
    mark = f"slow-kernel-{uuid.uuid4().hex}"
    yield mark
    for pid in _tagged_pids(mark):
        os.kill(pid, 9)


@pytest.fixture
def cleanups(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each kernel's resources were freed, by kernel id."""
    counted: Counter[str] = Counter()
    real = GatewayKernelManager._async_cleanup_resources

    async def counting(self: Any, restart: bool = False) -> None:
        counted[self.kernel_id] += 1
        await real(self, restart=restart)

    monkeypatch.setattr(GatewayKernelManager, "_async_cleanup_resources", counting)
    return counted


@pytest.fixture
def manager(tmp_path: Path, tag: str) -> GatewayMappingKernelManager:
    specs = make_test_kernelspecs(tmp_path / "jupyter")
    write_spec(specs, "slow", [PY, "-c", "import time; time.sleep(600)", tag,
                               "{connection_file}"])
    (tmp_path / "runtime").mkdir()
    return GatewayMappingKernelManager(
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs / "kernels")]),
        connection_dir=str(tmp_path / "runtime"))


async def _until(what: str, check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.05)


def _caller() -> Caller:
    return Caller(Principal(gateway_user(), via="token"))


def _request(kernel_name: str, kernel_id: str, **env: str) -> policy.LaunchRequest:
    return policy.LaunchRequest(kernel_name=kernel_name, path=None, env=env,
                                kernel_id=kernel_id)


def _leftovers(m: GatewayMappingKernelManager, kid: str) -> list[str]:
    tables = {"kernels": m._kernels, "pending": m._pending_kernels, "starting": m._starting,
              "connections": m._kernel_connections, "ports": m._kernel_ports}
    left = [name for name, table in tables.items() if kid in table]
    left += [f"file {f}" for f in os.listdir(m.connection_dir) if kid in f]
    counts = m.kernel_counts()
    if counts.total or m.quota_gate.in_flight:
        left.append("a kernel or a start counted by the quota gate")
    return left


async def _cancelled(m: GatewayMappingKernelManager, kid: str, name: str,
                     when: Any) -> BaseException:
    task = asyncio.ensure_future(m.launch(_caller(), _request(name, kid)))
    await _until("the point to cut the start at", when)
    task.cancel()
    return (await asyncio.gather(task, return_exceptions=True))[0]


async def _id_is_free(m: GatewayMappingKernelManager, kid: str) -> None:
    """Another start may use the id of a start that never became a kernel."""
    assert await m.launch(_caller(), _request("python3", kid)) == kid
    await m.shutdown_kernel(kid, now=True)


def test_a_cancelled_start_leaves_nothing(
        manager: GatewayMappingKernelManager, tag: str, cleanups: Counter[str]) -> None:
    async def scenario() -> None:
        kid = str(uuid.uuid4())
        error = await _cancelled(manager, kid, "slow", lambda: bool(_tagged_pids(tag)))
        assert isinstance(error, asyncio.CancelledError), error
        assert not _tagged_pids(tag)
        assert _leftovers(manager, kid) == []
        assert cleanups[kid] == 1
        await _id_is_free(manager, kid)

    asyncio.run(scenario())


def test_a_start_past_the_clients_deadline_leaves_nothing(
        manager: GatewayMappingKernelManager, tag: str, cleanups: Counter[str]) -> None:
    async def scenario() -> None:
        kid = str(uuid.uuid4())
        with pytest.raises(StartDeadlineExceeded, match="KERNEL_LAUNCH_TIMEOUT"):
            await manager.launch(_caller(), _request("slow", kid, KERNEL_LAUNCH_TIMEOUT="2"))
        assert not _tagged_pids(tag)
        assert _leftovers(manager, kid) == []
        assert cleanups[kid] == 1
        await _id_is_free(manager, kid)

    asyncio.run(scenario())


def test_a_start_cancelled_once_the_kernel_answered_leaves_nothing(
        manager: GatewayMappingKernelManager, cleanups: Counter[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut after the kernel is ready and in the table, before the start returns."""
    paused = asyncio.Event()
    pids: list[int] = []

    async def pause(kernel_id: str) -> None:
        pids.append(manager._kernels[kernel_id].provisioner.pid)
        paused.set()
        await asyncio.sleep(600)

    monkeypatch.setattr(manager, "_finish_kernel_start", pause)

    async def scenario() -> None:
        kid = str(uuid.uuid4())
        error = await _cancelled(manager, kid, "python3", paused.is_set)
        assert isinstance(error, asyncio.CancelledError), error
        assert pids and not _alive(pids[0])
        assert _leftovers(manager, kid) == []
        assert cleanups[kid] == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("name", ["dies_at_start", "no_such_binary"])
def test_a_failed_start_leaves_nothing(
        manager: GatewayMappingKernelManager, cleanups: Counter[str], name: str) -> None:
    """A start the kernel manager fails itself (``KernelStartFailed``) is freed once too."""
    async def scenario() -> None:
        kid = str(uuid.uuid4())
        with pytest.raises(KernelStartFailed):
            await manager.launch(_caller(), _request(name, kid))
        assert _leftovers(manager, kid) == []
        assert cleanups[kid] == 1
        await _id_is_free(manager, kid)

    asyncio.run(scenario())

"""``kernelyard-loopback-faults``: the loopback backend with failures to order.

Each fault is a setting of the kernelspec's provisioner config
(``metadata.kernel_provisioner.config``), so one gateway can serve a kernelspec
per fault::

    {"provisioner_name": "kernelyard-loopback-faults",
     "config": {"fail_at_checkpoint": 2}}

The client-visible result each fault must give is pinned by
tests/unit/test_loopback_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

from traitlets import Bool, Integer

from ..errors import KernelStartFailed
from .loopback import LoopbackProvisioner

UNREACHABLE_CALLBACK = "http://127.0.0.1:9/kernelyard/nowhere"  # the discard port


class InjectedFault(RuntimeError):
    """A failure the fault-injecting backend was told to produce."""


class FaultyLoopbackProvisioner(LoopbackProvisioner):
    """The loopback backend, failing where its settings say."""

    fail_at_checkpoint = Integer(
        0, config=True,
        help="Fail the start right after the Nth checkpoint of submit was persisted "
        "(1: the run dir is chosen, nothing runs yet; 2: the launcher runs). 0: never.",
    )
    never_call_back = Bool(
        False, config=True,
        help="Give the launcher a callback URL where nobody listens: the start times out "
        "(launch_timeout).",
    )
    die_after_callback = Bool(
        False, config=True,
        help="SIGKILL the kernel process as soon as its start has completed: the kernel is "
        "then reported dead.",
    )
    cancel_raises = Bool(
        False, config=True,
        help="Make cancel raise without doing anything, as a backend that cannot be reached.",
    )
    _killer: asyncio.Future[None] | None = None

    async def submit(
        self, argv: list[str], env: dict[str, str], secrets: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        if self.never_call_back:
            secrets = {**secrets, "callback_url": UNREACHABLE_CALLBACK}
        count = 0
        async for checkpoint in super().submit(argv, env, secrets):
            yield checkpoint
            count += 1
            if count == self.fail_at_checkpoint:
                raise KernelStartFailed(f"injected fault: the start fails at checkpoint "
                                        f"{count} ({', '.join(sorted(checkpoint))})")

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        info = await super().launch_kernel(cmd, **kwargs)
        if self.die_after_callback:
            self._killer = asyncio.ensure_future(self._kill_when_started(int(self.state["pid"])))
        return info

    async def cancel(self, state: dict[str, Any]) -> None:
        if self.cancel_raises:
            raise InjectedFault("injected fault: the backend's cancel raised")
        await super().cancel(state)

    async def _kill_when_started(self, pid: int) -> None:
        with contextlib.suppress(Exception):
            await self.km.ready
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            self.log.info("Kernel %s: injected fault: its process %d was killed", self.kernel_id,
                          pid)

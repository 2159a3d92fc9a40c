"""What a backend reports about a kernel, and one batched poll per backend."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import RemoteProvisionerBase

PENDING, RUNNING, EXITED, FAILED = "pending", "running", "exited", "failed"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendStatus:
    """One kernel's state as its resource manager sees it."""

    phase: str
    host: str = ""
    exit_code: int | None = None
    reason: str = ""

    @property
    def ended(self) -> bool:
        return self.phase in (EXITED, FAILED)

    def describe(self) -> str:
        """For error messages: 'pending on host h1', 'exited with code 1: <log>'."""
        where = f" on host {self.host}" if self.host else ""
        if self.phase == EXITED:
            text = f"exited with code {self.exit_code}{where}"
        else:
            text = f"{self.phase}{where}"
        return f"{text}: {self.reason}" if self.reason else text


class StatusPoller:
    """Asks a backend about all of its kernels in one call per interval.

    One poller exists per backend class. Provisioners register while they have
    a kernel; ``latest`` answers from the last round without any I/O.
    """

    _pollers: dict[type, StatusPoller] = {}

    def __init__(self, interval: float):
        self.interval = interval
        self._members: dict[str, RemoteProvisionerBase] = {}
        self._latest: dict[str, BackendStatus] = {}
        self._task: asyncio.Task[None] | None = None
        self._round_done = asyncio.Event()

    @classmethod
    def for_backend(cls, backend: type, interval: float) -> StatusPoller:
        poller = cls._pollers.get(backend)
        if poller is None:
            poller = cls._pollers[backend] = cls(interval)
        return poller

    def register(self, provisioner: RemoteProvisionerBase) -> None:
        self._members[provisioner.kernel_id] = provisioner
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())

    def unregister(self, kernel_id: str) -> None:
        self._members.pop(kernel_id, None)
        self._latest.pop(kernel_id, None)

    def latest(self, kernel_id: str) -> BackendStatus | None:
        return self._latest.get(kernel_id)

    async def next_round(self) -> None:
        """Wait until the next poll round has finished."""
        self._round_done.clear()
        await self._round_done.wait()

    async def _loop(self) -> None:
        while self._members:
            await self._poll_once()
            self._round_done.set()
            await asyncio.sleep(self.interval)

    async def _poll_once(self) -> None:
        members = [p for p in self._members.values() if p.state]
        if not members:
            return
        try:
            statuses = await members[0].status([p.state for p in members])
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a backend outage must not stop polling
            log.warning("Status query of %s failed: %s", type(members[0]).__name__, e)
            return
        for provisioner, status in zip(members, statuses, strict=True):
            self._latest[provisioner.kernel_id] = status



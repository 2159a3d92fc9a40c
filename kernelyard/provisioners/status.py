"""What a backend reports about a kernel, and one batched poll per backend object.

Imports nothing of the provisioners: a poller watches anything with a kernel id and a
state (``Watched``) and asks one ``Polled`` object (a backend) about all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

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


class Watched(Protocol):
    """A kernel the poller watches: its id and its backend state (empty: not yet submitted)."""

    kernel_id: str
    state: dict[str, Any]


class Polled(Protocol):
    """What the poller asks: one batched status query for many kernels' states."""

    async def status(self, states: list[dict[str, Any]]) -> list[BackendStatus]: ...


class StatusPoller:
    """Asks one backend object about all of its kernels in one call per interval.

    Provisioners register while they have a kernel; ``latest`` answers from the
    last round without any I/O. The loop runs while anything is registered.
    """

    def __init__(self, backend: Polled, interval: float, name: str = "backend"):
        self.backend = backend
        self.interval = interval
        self.name = name
        self._members: dict[str, Watched] = {}
        self._latest: dict[str, BackendStatus] = {}
        self._task: asyncio.Task[None] | None = None
        self._round_done = asyncio.Event()

    def register(self, watched: Watched) -> None:
        self._members[watched.kernel_id] = watched
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

    async def stop(self) -> None:
        """Stop polling (the backend object is torn down); registrations are dropped."""
        self._members.clear()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._round_done.set()

    async def _loop(self) -> None:
        while self._members:
            await self._poll_once()
            self._round_done.set()
            await asyncio.sleep(self.interval)

    async def _poll_once(self) -> None:
        members = [m for m in self._members.values() if m.state]
        if not members:
            return
        try:
            statuses = await self.backend.status([m.state for m in members])
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a backend outage must not stop polling
            log.warning("Status query of %s failed: %s", self.name, e)
            return
        for member, status in zip(members, statuses, strict=True):
            if member.kernel_id in self._members:
                self._latest[member.kernel_id] = status

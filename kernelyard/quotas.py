"""Count and reserve under one lock, so concurrent starts cannot overshoot a quota.

``check_quota`` (in ``kernelyard.policy``) is pure: it judges a snapshot. Two
``POST /api/kernels`` that both count before either reserves would both pass a
limit of 1. ``QuotaGate`` closes that window for one gateway process: it takes
the snapshot and records the reservation under an ``asyncio.Lock``. Several
replicas need the same count + reserve inside one store transaction instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable

from .identity import Principal
from .policy import KernelCounts, QuotaPolicy, check_quota

CountSource = Callable[[], "KernelCounts | Awaitable[KernelCounts]"]


class Reservation:
    """One start in flight, counted against its user and kernelspec until released."""

    def __init__(self, gate: QuotaGate, user: str, kernel_name: str):
        self.user = user
        self.kernel_name = kernel_name
        self._gate = gate

    @property
    def active(self) -> bool:
        return self in self._gate._reservations

    def release(self) -> None:
        """Stop counting this start (idempotent).

        Call it as soon as the gateway's count source sees the new kernel (for
        instance right after its store record is written), so that it is not
        counted twice; leaving the ``async with`` block releases it anyway.
        """
        with contextlib.suppress(ValueError):
            self._gate._reservations.remove(self)


class QuotaGate:
    """Check a ``QuotaPolicy`` and reserve a slot in one step.

    ``count`` returns (or resolves to) the ``KernelCounts`` of the kernels the
    gateway already has, NOT counting starts that hold a reservation here; the
    gate adds those. Use::

        async with gate.reserve(subject, kernel_name):
            kernel_id = await start_the_kernel()

    ``reserve`` raises ``LimitReached`` before the body runs when a limit is
    reached. The reservation is dropped when the body exits: if the body raised,
    the start failed and its slot is free again; if it returned, the kernel now
    exists and ``count`` counts it.
    """

    def __init__(self, policy: QuotaPolicy, count: CountSource):
        self.policy = policy
        self._count = count
        self._lock = asyncio.Lock()
        self._reservations: list[Reservation] = []

    @property
    def in_flight(self) -> int:
        """How many starts hold a reservation."""
        return len(self._reservations)

    def reserved_counts(self) -> KernelCounts:
        """The counts of the starts in flight alone."""
        return KernelCounts.of((r.user, r.kernel_name) for r in self._reservations)

    async def snapshot(self) -> KernelCounts:
        """Existing kernels plus starts in flight (``reserve`` takes it under the lock).

        The reservations are read before the count is awaited: a start that
        finishes meanwhile is then counted twice at worst (its reservation and
        its kernel), never zero times.
        """
        reserved = self.reserved_counts()
        counted = self._count()
        existing = await counted if inspect.isawaitable(counted) else counted
        return existing + reserved

    @contextlib.asynccontextmanager
    async def reserve(self, principal: Principal, kernel_name: str) -> AsyncIterator[Reservation]:
        """Check the quota for one more kernel and hold a slot for the body's duration."""
        async with self._lock:
            check_quota(self.policy, principal, kernel_name, await self.snapshot())
            reservation = Reservation(self, principal.name, kernel_name)
            self._reservations.append(reservation)
        try:
            yield reservation
        finally:
            reservation.release()

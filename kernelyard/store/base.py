"""Kernel records: what the gateway must remember to re-adopt a kernel.

A record holds the owner, the kernelspec, the provisioner's persisted state
(the backend's checkpoints: host, pid, job id, ...) and the connection info.
The kernel's HMAC key and CurveZMQ secret key inside the connection info are
encrypted at rest, under the store's key ring (``kernelyard.store.secrets``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class KernelRecord:
    """One kernel as the store keeps it."""

    kernel_id: str
    kernel_name: str
    provisioner: str
    owner: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    connection: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)


class KernelStore:
    """The interface every store implements. All methods are coroutines."""

    async def put(self, record: KernelRecord) -> None:
        """Insert or replace a record."""
        raise NotImplementedError

    async def update(self, kernel_id: str, **fields: Any) -> None:
        """Change some fields (``state``, ``connection``, ``owner``) of a record."""
        raise NotImplementedError

    async def get(self, kernel_id: str) -> KernelRecord | None:
        raise NotImplementedError

    async def all(self) -> list[KernelRecord]:
        raise NotImplementedError

    async def delete(self, kernel_id: str) -> None:
        """Remove a record; removing a missing one is not an error."""
        raise NotImplementedError

    def secret(self, name: str, make: Callable[[], str]) -> str:
        """The store's own secret ``name``, kept sealed; ``make()`` makes it on first use.

        Blocking: called at startup and by the CLI, never on the event loop.
        """
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections."""
        self.close_blocking()

    def close_blocking(self) -> None:
        """Release connections, outside the event loop."""

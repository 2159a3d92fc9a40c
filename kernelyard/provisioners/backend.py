"""Backend objects: one per backend and connection configuration, shared by kernelspecs.

A provisioner holds one kernel's state; everything shared between kernels (ssh
connections, RM clients, host health, round-robin state, caches, the status
poller) lives in its backend object. Which object a provisioner gets is decided by
its ``backend_config()``: kernelspecs with equal configs share one object, and a
kernelspec that logs in as another user, on another port or with another RM
timeout gets its own (issue 11). The registry of objects is an instance, owned by
the mapping kernel manager (``GatewayMappingKernelManager.backends``); the app tears
every object down when it stops.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from .status import BackendStatus, StatusPoller

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BackendConfig:
    """What makes a backend object: hashable (tuples, not lists), the registry's key."""

    poll_interval: float = 2.0


class Backend:
    """One backend and connection configuration.

    Subclasses implement ``status`` (batched, for all of its kernels in one call)
    and ``cancel`` (idempotent, from a kernel's persisted state alone), and may
    override ``setup``/``teardown`` (calling ``super()``) and ``release``.
    """

    config_class: ClassVar[type[BackendConfig]] = BackendConfig

    def __init__(self, config: BackendConfig, logger: logging.Logger | None = None):
        self.config = config
        self.log = logger or log
        self.poller = StatusPoller(self, config.poll_interval, type(self).__name__)

    async def setup(self) -> None:
        """Called once before the object's first use (``BackendRegistry.acquire``)."""

    async def teardown(self) -> None:
        """Close every client the object holds; stops its poller. Called at gateway stop."""
        await self.poller.stop()

    async def status(self, states: list[dict[str, Any]]) -> list[BackendStatus]:
        """One ``BackendStatus`` per state, in order (one query per host/cluster)."""
        raise NotImplementedError

    async def cancel(self, state: dict[str, Any]) -> None:
        """Stop the kernel of ``state``; idempotent, works after a gateway restart."""
        raise NotImplementedError

    async def release(self, state: dict[str, Any]) -> None:
        """Free what the kernel left on the backend (optional)."""


class HasBackend(Protocol):
    """A provisioner as the registry sees it."""

    backend_class: ClassVar[type[Backend]]
    parent: Any
    log: Any

    def backend_config(self) -> BackendConfig: ...


class BackendRegistry:
    """The backend objects of one gateway, by (backend class, config)."""

    def __init__(self, logger: logging.Logger | None = None):
        self.log = logger or log
        self._backends: dict[tuple[type[Backend], BackendConfig], Backend] = {}
        self._set_up: dict[Backend, asyncio.Future[None]] = {}

    def backend_for(self, provisioner: HasBackend) -> Backend:
        """The object for this provisioner's config, made on first use (not yet set up)."""
        key = (provisioner.backend_class, provisioner.backend_config())
        backend = self._backends.get(key)
        if backend is None:
            backend = self._backends[key] = key[0](key[1], self.log)
        return backend

    async def acquire(self, provisioner: HasBackend) -> Backend:
        """``backend_for``, with the object's ``setup()`` awaited once."""
        backend = self.backend_for(provisioner)
        done = self._set_up.get(backend)
        if done is None:
            done = self._set_up[backend] = asyncio.ensure_future(backend.setup())
        await asyncio.shield(done)
        return backend

    async def teardown(self) -> None:
        """Tear every object down (errors are logged) and forget them."""
        backends, self._backends = list(self._backends.values()), {}
        self._set_up = {}
        for backend in backends:
            try:
                await backend.teardown()
            except Exception as e:  # one backend's failure must not keep others' clients
                self.log.warning("Tearing down %s failed: %s", type(backend).__name__, e)


def registry_for(provisioner: Any) -> BackendRegistry | None:
    """The gateway's registry, found up the provisioner's parent chain (None if no parent
    has one: a plain Jupyter Server, whose provisioners then keep a private registry)."""
    node = getattr(provisioner, "parent", None)
    while node is not None:
        registry = getattr(node, "backends", None)
        if isinstance(registry, BackendRegistry):
            return registry
        node = getattr(node, "parent", None)
    return None

"""The gateway's kernel manager: limits, then jupyter_server's own machinery.

Culling, pending kernels, restarts and message buffering across websocket
reconnects all come from jupyter_server's ``AsyncMappingKernelManager``. This
class adds what a shared gateway needs: a kernel limit that counts starts in
flight, a kernelspec check before anything is launched, a client-chosen kernel
id, and the guarantee that a failed start leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from jupyter_client.kernelspec import NoSuchKernel
from jupyter_client.provisioning import KernelProvisionerFactory as KPF
from jupyter_server._tz import utcnow
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Integer, default

from . import wire
from .errors import Conflict, KernelStartFailed, LimitReached, NotFound
from .kernel import GatewayKernelManager
from .store import KernelRecord, StoreFactory


class GatewayMappingKernelManager(AsyncMappingKernelManager):
    """All kernels of this gateway."""

    max_kernels = Integer(
        0,
        config=True,
        help="The most kernels this gateway runs at once, counting starts in flight "
        "(0 = no limit). A start beyond it gets 403.",
    )

    @default("kernel_manager_class")
    def _default_kernel_manager_class(self) -> str:
        return f"{GatewayKernelManager.__module__}.{GatewayKernelManager.__name__}"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._starting = 0

    def kernel_count_with_starts(self) -> int:
        """Running kernels plus starts that have not finished yet."""
        return len(self._kernels) + self._starting

    async def start_kernel(  # type: ignore[override]
        self,
        *,
        kernel_name: str | None = None,
        path: str | None = None,
        kernel_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Start a kernel and return its id once it is ready.

        Raises ``NotFound`` for an unknown kernelspec, ``Conflict`` for a kernel
        id in use, ``LimitReached`` past ``max_kernels`` and
        ``KernelStartFailed`` when the kernel cannot start.
        """
        name = kernel_name or self.default_kernel_name
        await self._check_kernelspec(name)
        if kernel_id is not None and (kernel_id in self or kernel_id in self._pending_kernels):
            raise Conflict(f"a kernel with id {kernel_id} already exists")
        if self.max_kernels and self.kernel_count_with_starts() >= self.max_kernels:
            raise LimitReached(
                f"kernel limit reached: this gateway runs at most {self.max_kernels} kernels"
            )
        self._starting += 1
        try:
            return await self._start_or_clean_up(name, path, kernel_id, kwargs)
        finally:
            self._starting -= 1

    async def _start_or_clean_up(
        self, name: str, path: str | None, kernel_id: str | None, kwargs: dict[str, Any]
    ) -> str:
        try:
            kid: str = await super().start_kernel(
                kernel_name=name, path=path, kernel_id=kernel_id, **kwargs  # type: ignore[arg-type]
            )
            # It has answered kernel_info: not 'starting' (clients would wait for it).
            self._kernels[kid].execution_state = "idle"
            return kid
        except KernelStartFailed:
            self._forget_failed_start()
            raise

    def _forget_failed_start(self) -> None:
        """jupyter_client keeps a failed start in its pending table forever; drop it."""
        for kid, task in list(self._pending_kernels.items()):
            if task.done() and kid not in self._kernels:
                self._pending_kernels.pop(kid, None)

    async def _check_kernelspec(self, name: str) -> None:
        try:
            await self._kernel_spec(name)
        except NoSuchKernel:
            raise NotFound(f"no such kernelspec: {name!r}") from None

    async def _kernel_spec(self, name: str) -> Any:
        ksm: Any = self.kernel_spec_manager
        getter = getattr(ksm, "async_get_kernel_spec", None) or ksm.get_kernel_spec
        result = getter(name)
        return await result if hasattr(result, "__await__") else result

    def start_watching_activity(self, kernel_id: str) -> None:
        """Track last activity and execution state from IOPub, decoding headers only.

        Same rules as jupyter_server's watcher, which decodes (and date-parses) every
        message a second time; this one reads the header and parent header, and the
        content of status messages only.
        """
        kernel = self._kernels[kernel_id]
        kernel.reason = ""
        kernel.last_activity = utcnow()
        kernel._activity_stream = kernel.connect_iopub()
        kernel._activity_stream.on_recv(lambda msg_list: self._record_activity(kernel, msg_list))

    def _record_activity(self, kernel: Any, msg_list: list[Any]) -> None:
        parts = wire.message_parts(msg_list)
        msg_type = wire.header_of(parts).get("msg_type")
        parent_type = wire.parent_of(parts).get("msg_type")
        tracked_parent = self.track_message_type(parent_type)
        if self.track_message_type(msg_type) or tracked_parent or kernel.execution_state == "busy":
            self.last_kernel_activity = kernel.last_activity = utcnow()
        if msg_type != "status":
            return
        state = json.loads(parts[wire.CONTENT]).get("execution_state")
        if tracked_parent:
            kernel.execution_state = state
        elif kernel.execution_state == "starting" and state != "starting":
            kernel.execution_state = "idle"

    def _handle_kernel_died(self, kernel_id: str) -> None:
        """Keep a dead kernel visible as 'dead' (with its reason) until it is deleted."""
        kernel = self._kernels.get(kernel_id)
        if kernel is None:
            return
        kernel.execution_state = "dead"
        kernel.reason = "the kernel died"
        self.log.warning("Kernel %s died", kernel_id)

    async def adopt_stored_kernels(self) -> None:
        """Take back the remote kernels a previous gateway process left running."""
        store = StoreFactory.instance().store
        for record in await store.all():
            if record.kernel_id in self:
                continue
            try:
                await self._adopt(record)
            except Exception as e:
                self.log.warning("Kernel %s could not be re-adopted: %s", record.kernel_id, e)

    async def _adopt(self, record: KernelRecord) -> None:
        kid = record.kernel_id
        km = self.kernel_manager_factory(
            connection_file=os.path.join(self.connection_dir, f"kernel-{kid}.json"),
            parent=self, log=self.log, kernel_name=record.kernel_name,
        )
        km.kernel_id = kid
        provisioner: Any = KPF.instance(parent=self.parent).create_provisioner_instance(
            kid, km.kernel_spec, parent=km
        )
        await provisioner.load_provisioner_info(
            {"kernel_id": kid, "state": record.state, "connection_info": record.connection}
        )
        status = (await provisioner.status([record.state]))[0]
        if status.ended:
            self.log.info("Kernel %s ended while the gateway was away: %s", kid, status.describe())
            await provisioner.cleanup(restart=False)
            return
        km.provisioner = provisioner
        km.load_connection_info(record.connection)
        km._launch_args = {}
        km._attempted_start = True  # later shutdowns and restarts get fresh 'ready' futures
        km._ready = asyncio.get_running_loop().create_future()
        km._ready.set_result(None)
        self._register_adopted(kid, km)
        self.log.info("Kernel %s re-adopted (%s)", kid, status.describe())

    def _register_adopted(self, kid: str, km: Any) -> None:
        self._kernels[kid] = km
        self._kernel_connections[kid] = 0
        km.execution_state = "idle"
        km.reason = ""
        km.last_activity = utcnow()
        km._connect_control_socket()
        km.start_restarter()
        self.start_watching_activity(kid)
        self.add_restart_callback(kid, lambda: self._handle_kernel_died(kid), "dead")
        if not self._initialized_culler:
            self.initialize_culler()

    async def detach_remote_kernels(self) -> list[str]:
        """Let go of remote kernels without stopping them (the gateway is stopping)."""
        detached = [kid for kid, km in list(self._kernels.items()) if km.is_remote]
        for kid in detached:
            self.stop_watching_activity(kid)
            km = self._kernels.pop(kid)
            km.stop_restarter()
            km._close_control_socket()
            km.provisioner.poller.unregister(kid)
        return detached

    def _check_kernel_id(self, kernel_id: str) -> None:
        if kernel_id not in self:
            raise NotFound(f"no such kernel: {kernel_id}")

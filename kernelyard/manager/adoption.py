"""Adoption: take back stored remote kernels at start, let go of them at stop."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from jupyter_client.provisioning import KernelProvisionerFactory as KPF
from jupyter_server._tz import utcnow

from ..launch_plan import plan_of_adopted
from ..store import KernelRecord, StoreFactory
from .activity import ActivityWatching


class Adoption(ActivityWatching):
    """Remote kernels across gateway restarts: re-adopted from the store, detached at stop."""

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
        km.owner = record.owner
        km.plan = plan_of_adopted(record.owner, record.kernel_name)
        provisioner: Any = KPF.instance(parent=self.parent).create_provisioner_instance(
            kid, km.kernel_spec, parent=km
        )
        await provisioner.load_provisioner_info(
            {"kernel_id": kid, "state": record.state, "connection_info": record.connection}
        )
        if not record.connection:  # its gateway stopped before the launcher called back
            self.log.info("Kernel %s: its start was cut off by a gateway stop; cancelling "
                          "what it submitted", kid)
            await provisioner.discard_unfinished_start()
            return
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
        self.log.info("Kernel %s of %s re-adopted (%s)", kid, record.owner or "nobody",
                      status.describe())

    def _register_adopted(self, kid: str, km: Any) -> None:
        self._kernels[kid] = km
        self._remember_id(kid)
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

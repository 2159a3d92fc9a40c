"""The shared lifecycle of every remote kernel (jupyter_client's provisioner interface).

A backend writes ``submit(argv, env, secrets)`` here (per kernel: JSON-able checkpoints,
each persisted before the next step; secrets only by a declared ``command.Delivery``)
and a backend object (``backend.Backend``, picked by ``backend_class`` and
``backend_config()``) for what kernels share: batched ``status``, ``cancel``,
``release``. The contract: docs/writing-a-backend.md.
"""

from __future__ import annotations

import contextlib
import json
import secrets as secrets_mod
import signal as signals
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar, cast

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Bool, Float, List, Unicode

from ..callbacks import CallbackRegistry
from ..errors import KernelStartFailed
from ..launch_plan import LaunchPlan, plan_of
from ..store import StoreFactory
from . import start_steps as steps
from .backend import Backend, BackendConfig, BackendRegistry, registry_for
from .hooks import ProvisionerHooks
from .launcher_link import connection_info, control, launcher_state
from .resource_settings import ResourceSettings
from .status import BackendStatus, StatusPoller


class RemoteProvisionerBase(ProvisionerHooks, ResourceSettings,  # type: ignore[misc,metaclass]
                            KernelProvisionerBase):
    """Launch through a backend, wait for the launcher's callback, watch, stop."""

    launch_timeout = Float(
        120.0,
        config=True,
        help="Seconds from submit until the launcher calls back. A kernelspec may set "
        "metadata.kernel_provisioner.config.launch_timeout; a client may ask for more with "
        "KERNEL_LAUNCH_TIMEOUT, up to max_launch_timeout (a shorter KERNEL_LAUNCH_TIMEOUT "
        "ends the whole start at that deadline: GatewayMappingKernelManager.launch).",
    )
    max_launch_timeout = Float(
        600.0, config=True, help="The most a client's KERNEL_LAUNCH_TIMEOUT may ask for."
    )
    poll_interval = Float(
        2.0,
        config=True,
        help="Seconds between status queries to the backend (one query for all its kernels).",
    )
    shutdown_grace = Float(
        5.0, config=True, help="Seconds a kernel has to exit after SIGTERM before SIGKILL."
    )
    curve_encryption = Bool(
        False, config=True,
        help="Encrypt the kernel's ZMQ channels with CurveZMQ: the gateway makes a keypair "
        "per kernel start and sends it with the other secrets. Needs a kernel that reads "
        "curve_publickey/curve_secretkey from its connection file (ipykernel >= 7.4).",
    )
    inherited_envs = List(
        Unicode(),
        config=True,
        help="Names of the gateway's env variables passed to this provisioner's kernels "
        "(besides KernelyardApp.inherited_envs). KERNELYARD_* names and the gateway's "
        "secrets never pass.",
    )

    backend_class: ClassVar[type[Backend]] = Backend

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.state: dict[str, Any] = {}
        self.connection_info: KernelConnectionInfo = {}
        self._exit_code: int | None = None
        self._curve: dict[str, str] = {}
        self._registry: BackendRegistry | None = None

    def submit(
        self, argv: list[str], env: dict[str, str], secrets: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        raise NotImplementedError

    def backend_config(self) -> BackendConfig:
        """The settings of this kernelspec that make its backend object (the registry key)."""
        return BackendConfig(poll_interval=self.poll_interval)

    async def status(self, states: list[dict[str, Any]]) -> list[BackendStatus]:
        """The backend object's batched status (of any kernels sharing it)."""
        return await self.backend.status(states)

    async def cancel(self, state: dict[str, Any]) -> None:
        await self.backend.cancel(state)

    async def release(self, state: dict[str, Any]) -> None:
        await self.backend.release(state)

    async def signal(self, state: dict[str, Any], signum: int) -> bool:
        """Deliver a signal natively; False means 'use the launcher' (the default)."""
        return False

    @property
    def backends(self) -> BackendRegistry:
        """The gateway's registry (up the parent chain), else one of this kernel's own."""
        if self._registry is None:
            self._registry = registry_for(self) or BackendRegistry(self.log)
        return self._registry

    @property
    def backend(self) -> Backend:
        """This kernelspec's backend object, shared with kernelspecs of the same config."""
        return self.backends.backend_for(self)

    @property
    def km(self) -> Any:
        """The KernelManager of this kernel."""
        return self.parent

    @property
    def plan(self) -> LaunchPlan:
        """The launch plan (whom the kernel runs as, the host pin): the one the kernelyard
        manager handed its kernel manager, else ``plan_from_env`` of the kernel's env."""
        return plan_of(self.parent, self.kernel_spec.env if self.kernel_spec else None)

    @property
    def has_process(self) -> bool:
        return bool(self.state) and self._exit_code is None

    @property
    def poller(self) -> StatusPoller:
        """The status poller of this kernel's backend object."""
        return self.backend.poller

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        await self.backends.acquire(self)
        km = self.km
        km.session.key = secrets_mod.token_hex(32).encode()
        client_env = steps.remote_env(self.inherited_envs, kwargs.get("env") or {})
        kwargs = await super().pre_launch(**{**kwargs, "env": client_env})
        kwargs["cmd"] = steps.kernel_argv(self.kernel_spec, kwargs.pop("extra_arguments", []))
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        env = kwargs.get("env", {})
        registry = CallbackRegistry.instance()
        token, reported = registry.expect(self.kernel_id)
        self._curve = steps.curve_keypair(self.curve_encryption)  # kept until the callback
        secrets = {"key": self.km.session.key.decode(), "token": token,
                   "callback_url": registry.url_for(self.kernel_id), **self._curve}
        self._exit_code = None
        self.state = {}
        try:
            await self._record_new_kernel()
            async for checkpoint in self.submit(cmd, env, secrets):
                await self._checkpoint(checkpoint)
            self.poller.register(self)
            submitted = time.time()
            report = await steps.await_callback(
                reported, self._launch_timeout(env), self.poll_interval, self._last_status,
                self.kernel_spec.display_name)
            self.log.info("Kernel %s: the launcher on %s called back %.2f s after submit "
                          "(at %.3f)", self.kernel_id, report.get("hostname"),
                          time.time() - submitted, time.time())
        except BaseException as e:
            registry.forget(self.kernel_id)
            problem = await self._abandon_start()
            if problem and isinstance(e, KernelStartFailed):  # the client learns of both
                raise type(e)(f"{e.message}; {problem}") from e
            raise
        self.connection_info = self._connection_from(report)
        await self._store().update(self.kernel_id, state=self.state,
                                   connection=self.connection_info)
        return self.connection_info.copy()

    async def poll(self) -> int | None:
        if self._exit_code is not None or not self.state:
            return self._exit_code if self.state else 0
        status = self.poller.latest(self.kernel_id)
        if status is not None and status.ended:
            self._exit_code = status.exit_code if status.exit_code is not None else 1
        return self._exit_code

    async def wait(self) -> int | None:
        while await self.poll() is None:
            await self.poller.next_round()
        return self._exit_code

    async def send_signal(self, signum: int) -> None:
        if signum == 0:
            return
        if not await self.signal(self.state, signum):
            await self._control("signal", signum=int(signum))

    async def terminate(self, restart: bool = False) -> None:
        """Ask the launcher to stop the kernel; if it is gone, cancel through the backend."""
        try:
            await self._control("shutdown", grace=self.shutdown_grace)
        except KernelStartFailed as e:
            self.log.info("Kernel %s: %s; cancelling through the backend", self.kernel_id, e)
            await self.cancel(self.state)

    async def kill(self, restart: bool = False) -> None:
        with contextlib.suppress(Exception):
            await self._control("signal", signum=int(signals.SIGKILL))
        await self.cancel(self.state)
        self._exit_code = self._exit_code if self._exit_code is not None else -9

    async def cleanup(self, restart: bool = False) -> None:
        self.poller.unregister(self.kernel_id)
        CallbackRegistry.instance().forget(self.kernel_id)
        if self.state:
            await self.release(self.state)
        if not restart:
            await self._store().delete(self.kernel_id)
        self.state = {}
        self.connection_info = {}
        if not restart and self._registry is not None and registry_for(self) is None:
            await self._registry.teardown()  # a kernel's own registry (no gateway's)
            self._registry = None

    def log_tail(self) -> str:
        """What the backend last said about the kernel (its log tail, once it ended)."""
        status = self.poller.latest(self.kernel_id)
        return status.reason if status else ""

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, self.shutdown_grace + self.poll_interval)

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        public = {k: v for k, v in self.connection_info.items()
                  if k not in ("key", "curve_secretkey")}
        info.update(state=self.state, connection_info=public)
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        await self.backends.acquire(self)
        self.state = dict(provisioner_info.get("state") or {})
        self.connection_info = cast(KernelConnectionInfo,
                                    dict(provisioner_info.get("connection_info") or {}))
        if self.state:
            self.poller.register(self)

    def _last_status(self) -> BackendStatus:
        return self.poller.latest(self.kernel_id) or BackendStatus(
            "pending", host=str(self.state.get("host", "")), reason="no status yet"
        )

    async def discard_unfinished_start(self) -> None:
        """Cancel and forget a kernel whose start never finished (its gateway stopped
        before the callback): from the persisted state alone, as after a restart."""
        await self._abandon_start()

    async def _abandon_start(self) -> str:
        """Cancel whatever a failed start submitted, and forget it.

        The store record goes in any case; returns '' or what could not be cleaned up
        (the state is logged, so that an operator can finish by hand).
        """
        self.poller.unregister(self.kernel_id)
        problems = await steps.undo_start(self.state, self.cancel, self.release)
        await self._store().delete(self.kernel_id)
        self._exit_code = 1
        if not problems:
            return ""
        self.log.error("Kernel %s: cleaning up its start failed; the backend may still hold "
                       "it (state %s): %s", self.kernel_id, json.dumps(self.state), problems)
        return "cleaning it up failed too: " + problems

    async def _record_new_kernel(self) -> None:
        await self._store().put(steps.kernel_record(self.kernel_id, self.km, self.kernel_spec,
                                                    type(self).__name__))

    async def _checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.state.update(checkpoint)
        await self._store().update(self.kernel_id, state=self.state)

    def _store(self) -> Any:
        return StoreFactory.instance().store

    def launch_timeout_for(self, env: dict[str, str]) -> float:
        """Seconds a start with this env may take until the callback (and until ready)."""
        return steps.launch_timeout(self.launch_timeout, self.max_launch_timeout, env)

    _launch_timeout = launch_timeout_for

    def _connection_from(self, report: dict[str, Any]) -> KernelConnectionInfo:
        self.state.update(launcher_state(report))
        return connection_info(report, self.km.session.key, self.km.kernel_name, self._curve)

    async def _control(self, action: str, **fields: Any) -> dict[str, Any]:
        """A signed request to the launcher's control endpoint."""
        return await control(self.state, self.km.session.key, self.kernel_id, action, **fields)

"""The manager of one kernel: start means *ready*, not just *spawned*.

jupyter_client returns from a start as soon as the process exists. Here a
start returns only once the kernel has answered a ``kernel_info_request``,
so a kernel that dies while starting is reported at once, with the reason,
and a port taken by another process between picking and binding
(``Address already in use``) is retried on fresh ports.
"""

from __future__ import annotations

import asyncio
import queue
from typing import Any

from jupyter_client.manager import KernelManager
from jupyter_server.services.kernels.kernelmanager import (
    ServerKernelManager,
    emit_kernel_action_event,
)
from traitlets import Float, Integer

from .errors import KernelStartFailed
from .launch_plan import LaunchPlan
from .launcher import KERNEL_PORT_NAMES
from .provisioners.hooks import hooks_of

# KernelManager._async_start_kernel is wrapped by in_pending_state (functools.wraps).
_UNWRAPPED_START = KernelManager._async_start_kernel.__wrapped__  # type: ignore[attr-defined]
PORT_CLASH_MARKERS = ("Address already in use", "EADDRINUSE")
_POLL_SECONDS = 0.02
_DISCARD_SECONDS = 30.0
_SPARE_SECONDS = 10.0
# The default start_timeout of a kernel whose provisioner has no launch timeout.
LOCAL_START_TIMEOUT = 60.0


class StartFailure(Exception):
    """The kernel did not become ready; ``text`` says why (log tail included)."""

    def __init__(self, text: str, port_clash: bool = False):
        super().__init__(text)
        self.text = text
        self.port_clash = port_clash


class GatewayKernelManager(ServerKernelManager):
    """One kernel, started until ready, with port-clash retries."""

    #: The launch plan the manager decided (``policy.authorize``); its provisioner reads
    #: it as ``self.plan``. None for a kernel started without a plan (re-adopted ones).
    plan: LaunchPlan | None = None

    start_timeout = Float(
        None,
        allow_none=True,
        config=True,
        help="Seconds a kernel may take from launch to its first kernel_info_reply "
        "before the start fails and the kernel is killed. Default: for a remote kernel, "
        "its launch timeout (the provisioner's launch_timeout, or what the client asked "
        "for with KERNEL_LAUNCH_TIMEOUT), since a loaded host or cluster is as slow to "
        f"start the kernel as to start its launcher; for a local kernel, {LOCAL_START_TIMEOUT:g}.",
    )
    _spare_iopub: Any = None  # the IOPub stream subscribed at start (take_spare_iopub)
    _answered_at: float | None = None  # loop time of the first kernel_info_reply

    port_clash_retries = Integer(
        3,
        config=True,
        help="How many times a kernel start is retried on fresh ports when a port "
        "picked for it was taken by another process before the kernel bound it.",
    )

    @emit_kernel_action_event(success_msg="Kernel {kernel_id} was started.")
    async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
        """jupyter_client's start, without the 10 ms sleep its 'pending' wrapper adds.

        A start that fails (``KernelStartFailed``) frees what it launched here, as a
        restart does; one that is cancelled (the client left, or its deadline passed)
        is freed by the gateway's kernel manager, the one place for that
        (``Starting._clean_up_failed_start``).
        """
        if self._attempted_start or not self._ready:
            self._ready = asyncio.get_running_loop().create_future()
        try:
            await _UNWRAPPED_START(self, **kw)
        except asyncio.CancelledError:
            self._ready.cancel()
            raise
        except Exception as e:
            self._ready.set_exception(e)
            raise
        self._ready.set_result(None)

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        try:
            await super()._async_launch_kernel(kernel_cmd, **kw)
        except OSError as e:
            await self._async_cleanup_resources(restart=False)
            raise KernelStartFailed(
                f"Kernel '{self.kernel_name}' could not be started: {e.strerror or e}"
                + (f": {e.filename!r}" if getattr(e, "filename", None) else "")
            ) from None

    async def _async_post_start_kernel(self, **kw: Any) -> None:
        for attempt in range(self.port_clash_retries + 1):
            try:
                await self._wait_until_ready()
                break
            except StartFailure as failure:
                await self._discard_failed_launch()
                if not failure.port_clash or attempt == self.port_clash_retries:
                    raise KernelStartFailed(
                        f"Kernel '{self.kernel_name}' failed to start: {failure.text}"
                    ) from None
                self.log.warning(
                    "Kernel %s: port clash on start (attempt %d); retrying on new ports",
                    self.kernel_id,
                    attempt + 1,
                )
                kw = await self._relaunch_on_new_ports()
        await super()._async_post_start_kernel(**kw)
        self._keep_spare_iopub()

    def _keep_spare_iopub(self) -> None:
        """Subscribe to IOPub now, for the first websocket to take.

        A new SUB socket misses messages until its subscription reaches the kernel,
        so a fresh websocket has to nudge the kernel until IOPub speaks. A socket
        subscribed at start is ready by the time the client connects. It is closed
        if nobody takes it within ``_SPARE_SECONDS`` (so output is not queued).
        """
        self.take_spare_iopub()
        if self.context.closed:
            return
        spare = self.connect_iopub()
        self._spare_iopub = spare
        asyncio.get_running_loop().call_later(_SPARE_SECONDS, self._drop_spare, spare)

    def take_spare_iopub(self) -> Any:
        """The subscribed IOPub stream kept since start, or None; each is taken once."""
        spare, self._spare_iopub = self._spare_iopub, None
        return spare if spare is not None and not spare.closed() else None

    def _drop_spare(self, spare: Any) -> None:
        if self._spare_iopub is spare:
            self._spare_iopub = None
        if not spare.closed() and getattr(spare, "channel", None) is None:
            spare.close()

    async def _wait_until_ready(self) -> None:
        """Return once the kernel answers kernel_info; raise StartFailure if it dies."""
        client = self.client()
        client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)  # noqa: S604
        loop = asyncio.get_running_loop()
        timeout = self.ready_timeout()
        deadline = loop.time() + timeout
        try:
            msg_id = client.kernel_info()
            while True:
                exit_code = await self.provisioner.poll() if self.provisioner else None
                if exit_code is not None:
                    raise self._death_report(exit_code)
                if loop.time() > deadline:
                    raise StartFailure(
                        f"no reply within {timeout:g} s"
                        + self._log_suffix()
                    )
                try:
                    reply = await client.get_shell_msg(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                if reply.get("parent_header", {}).get("msg_id") == msg_id:
                    self._remember_kernel_info(reply.get("content", {}))
                    return
        finally:
            client.shell_channel.close()

    def ready_timeout(self) -> float:
        """Seconds the kernel has to answer its first kernel_info (``start_timeout``)."""
        if self.start_timeout is not None:
            return float(self.start_timeout)
        launch_args: dict[str, Any] = self._launch_args or {}
        env: dict[str, str] = launch_args.get("env") or {}
        launch_timeout = hooks_of(self.provisioner).launch_timeout_for(env)
        return LOCAL_START_TIMEOUT if launch_timeout is None else float(launch_timeout)

    def _remember_kernel_info(self, info: dict[str, Any]) -> None:
        """jupyter_server's websocket reuses this instead of asking the kernel again."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        future.set_result(info)
        self._kernel_info_future = future
        self._answered_at = loop.time()

    def answered_recently(self, seconds: float = _SPARE_SECONDS) -> bool:
        """Whether the kernel answered a kernel_info_request in the last ``seconds``."""
        answered = self._answered_at
        return answered is not None and asyncio.get_running_loop().time() - answered < seconds

    def _death_report(self, exit_code: int) -> StartFailure:
        tail = self._log_tail()
        how = f"killed by signal {-exit_code}" if exit_code < 0 else f"exit code {exit_code}"
        clash = any(marker in tail for marker in PORT_CLASH_MARKERS)
        return StartFailure(f"the kernel process ended ({how})" + self._log_suffix(tail), clash)

    def _log_tail(self) -> str:
        return hooks_of(self.provisioner).log_tail()

    def death_reason(self) -> str:
        """Why the kernel died, as its backend last said ('' when it said nothing)."""
        return self._log_tail()

    def _log_suffix(self, tail: str | None = None) -> str:
        tail = self._log_tail() if tail is None else tail
        return f"; last lines of its log:\n{tail}" if tail else ""

    async def _async_request_shutdown(self, restart: bool = False) -> None:
        """Give the provisioner a word (``before_shutdown_request``) before the kernel
        is asked to shut down."""
        await hooks_of(self.provisioner).before_shutdown_request(restart)
        await super()._async_request_shutdown(restart)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        spare = self.take_spare_iopub()
        if spare is not None:
            spare.close()
        await super()._async_cleanup_resources(restart=restart)

    async def _discard_failed_launch(self) -> None:
        """Kill what was started (the whole process group) and free its files."""
        if self.provisioner is not None and self.provisioner.has_process:
            try:
                await asyncio.wait_for(self.provisioner.kill(), _DISCARD_SECONDS)
                await asyncio.wait_for(self.provisioner.wait(), _DISCARD_SECONDS)
            except (ProcessLookupError, OSError, asyncio.TimeoutError) as e:
                self.log.warning("Kernel %s: could not kill a failed start: %s", self.kernel_id, e)
        await self._async_cleanup_resources(restart=False)

    @property
    def is_remote(self) -> bool:
        """Whether the kernel runs through a remote provisioner (and outlives the gateway)."""
        from .provisioners.base import RemoteProvisionerBase

        return isinstance(self.provisioner, RemoteProvisionerBase)

    def start_restarter(self) -> None:
        """Remote kernels are not restarted behind the client's back: a death is reported.

        The restarter then looks every poll interval, so the death is seen within it.
        """
        if self.is_remote:
            if self._restarter is None and self.autorestart and self.has_kernel:
                self._restarter = self.restarter_class(
                    kernel_manager=self, loop=self.loop, parent=self, log=self.log,
                    restart_limit=0, time_to_dead=hooks_of(self.provisioner).poll_interval,
                )
        super().start_restarter()

    async def _relaunch_on_new_ports(self) -> dict[str, Any]:
        self.provisioner = None
        for name in KERNEL_PORT_NAMES:
            setattr(self, name, 0)
        self._connection_file_written = False
        launch_args: dict[str, Any] = dict(self._launch_args or {})
        kernel_cmd, kw = await self._async_pre_start_kernel(**launch_args)
        await self._async_launch_kernel(kernel_cmd, **kw)
        return kw

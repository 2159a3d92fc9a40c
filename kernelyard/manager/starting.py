"""Starting a kernel: a failed, cancelled or timed-out start leaves nothing behind."""

from __future__ import annotations

import asyncio
from typing import Any

from .. import start_options
from ..errors import Conflict, KernelStartFailed, KernelyardError, StartDeadlineExceeded
from .table import KernelTable


class Starting(KernelTable):
    """jupyter_server's start, under a deadline, and a failed or cancelled one leaves nothing."""

    async def _start_within(self, deadline: float | None, **start: Any) -> str:
        """``start_kernel``, ended at ``deadline`` seconds (``StartDeadlineExceeded``).

        The start is cancelled at the deadline, as when the request is cancelled (the
        client closed its connection); either way ``_start_or_clean_up`` frees what it
        made, so nothing is left when this returns or raises.
        """
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            return await asyncio.wait_for(self.start_kernel(**start), deadline)
        except asyncio.TimeoutError:
            if deadline is None or loop.time() - began < deadline:
                raise
            raise StartDeadlineExceeded(
                f"Kernel '{start['kernel_name']}' was not ready within the client's "
                f"{start_options.LAUNCH_TIMEOUT} of {deadline:g} s; the start was cancelled "
                "and cleaned up") from None

    def pre_start_kernel(self, kernel_name: str | None, kwargs: Any) -> tuple[Any, str, str]:
        """jupyter_client's, and the new kernel manager gets its ``owner`` and launch
        ``plan`` right away (a backend reads ``plan.resources``)."""
        owner = kwargs.pop("owner", "")
        plan = kwargs.pop("plan", None)
        km: Any
        km, name, kernel_id = super().pre_start_kernel(kernel_name, kwargs)
        km.owner = owner
        km.plan = plan
        self._starting[kernel_id] = km  # for _clean_up_failed_start
        return km, name, kernel_id

    async def start_kernel(  # type: ignore[override]
        self,
        *,
        kernel_name: str | None = None,
        path: str | None = None,
        kernel_id: str | None = None,
        owner: str = "",
        **kwargs: Any,
    ) -> str:
        """Start a kernel owned by ``owner`` and return its id once it is ready.

        No policy here: ``launch`` is the way in for requests. Raises ``NotFound``
        for an unknown kernelspec, ``Conflict`` for a kernel id in use and
        ``KernelStartFailed`` when the kernel cannot start.
        """
        name, _ = await self.resolve_kernelspec(kernel_name or self.default_kernel_name)
        if kernel_id is not None and (kernel_id in self or kernel_id in self._pending_kernels):
            raise Conflict(f"a kernel with id {kernel_id} already exists")
        return await self._start_or_clean_up(name, path, kernel_id, {**kwargs, "owner": owner})

    async def restart_kernel(self, kernel_id: str, now: bool = False) -> Any:  # type: ignore[override]
        """jupyter_server's restart; a remote kernel's new store record keeps its owner."""
        result = await super().restart_kernel(kernel_id, now=now)
        await self._persist_owner(kernel_id)
        return result

    async def _start_or_clean_up(
        self, name: str, path: str | None, kernel_id: str | None, kwargs: dict[str, Any]
    ) -> str:
        """jupyter_server's start; a start that fails in ANY way leaves nothing behind.

        Whatever the exception (a ``KernelStartFailed``, one a provisioner did not
        expect, a cancellation), the kernel's process, files and ports are freed and
        no pending entry is left (a stale one breaks ``shutdown_all``, so the gateway
        would no longer exit on SIGTERM). An unexpected exception becomes a
        ``KernelStartFailed`` naming the kernelspec; cancellations are re-raised.
        """
        kernel_id = kernel_id or self.new_kernel_id()
        try:
            kid: str = await super().start_kernel(
                kernel_name=name, path=path, kernel_id=kernel_id, **kwargs  # type: ignore[arg-type]
            )
            # It has answered kernel_info: not 'starting' (clients would wait for it).
            self._kernels[kid].execution_state = "idle"
            return kid
        except BaseException as e:
            await self._clean_up_failed_start(kernel_id, e)
            if isinstance(e, KernelyardError) or not isinstance(e, Exception):
                raise
            self.log.error("Kernel %s (%s) failed to start", kernel_id, name, exc_info=e)
            raise KernelStartFailed(f"Kernel '{name}' could not be started: an unexpected "
                                    f"{type(e).__name__} (see the gateway's log)") from e
        finally:
            self._starting.pop(kernel_id, None)

    async def _clean_up_failed_start(self, kernel_id: str, error: BaseException) -> None:
        """The one cleanup of a start that did not finish, whatever ended it.

        A cancellation (the client left, or its ``KERNEL_LAUNCH_TIMEOUT`` passed) or
        an unexpected error: the kernel's process group is killed and its files,
        ports and provisioner resources freed, once, wherever the start was cut
        (``GatewayKernelManager._discard_failed_launch``). A ``KernelStartFailed``
        the kernel manager raised was freed by it already (its start and its
        restarts fail the same way), unless it failed with its connection file
        still written. The kernel also leaves jupyter_client's tables: the pending
        one (which keeps a failed start forever; a stale entry breaks
        ``shutdown_all``, so the gateway would no longer exit on SIGTERM) and, if it
        had answered before the start was cut, the kernels table.
        """
        self._pending_kernels.pop(kernel_id, None)
        km: Any = self._starting.get(kernel_id)
        if km is None:
            return
        if isinstance(error, asyncio.CancelledError):
            self.log.info("Kernel %s: start cancelled; cleaning up", kernel_id)
        if self._kernels.get(kernel_id) is km:
            self._kernels.pop(kernel_id, None)
            self._kernel_connections.pop(kernel_id, None)
        if isinstance(error, KernelStartFailed) and not km._connection_file_written:
            return
        try:
            await km._discard_failed_launch()
        except Exception as e:
            self.log.warning("Kernel %s: cleaning up a failed start failed: %s", kernel_id, e)

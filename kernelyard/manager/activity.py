"""Kernel activity: IOPub watching, died kernels, culling (audited)."""

from __future__ import annotations

import json
from typing import Any

from jupyter_server._tz import utcnow

from .. import wire
from ..audit import AuditEvent, result_of, where_of
from ..errors import KernelyardError
from .table import KernelTable


def _reason(error: BaseException) -> str:
    """The client-safe message of a kernelyard error, else only the error's type."""
    return error.message if isinstance(error, KernelyardError) else type(error).__name__


class ActivityWatching(KernelTable):
    """What a kernel does, from its IOPub stream; died kernels; culling with an audit line."""

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

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        """jupyter_server's culling, with an audit line (``cull``) for a kernel it shuts down."""
        km = self._kernels.get(kernel_id)
        if km is None:
            return
        event = AuditEvent("cull", via="culler", kernel_id=kernel_id,
                           kernelspec=km.kernel_name, owner=getattr(km, "owner", ""),
                           where=where_of(km))
        try:
            await super().cull_kernel_if_idle(kernel_id)
        except Exception as e:
            self.audit.write(event, "error", None, _reason(e))
            raise
        if kernel_id not in self._kernels:
            self.audit.write(event, result_of(200), None)

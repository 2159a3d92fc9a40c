"""The kernel websocket relay (jupyter_server's, with gateway defaults)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from jupyter_client import protocol_version
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from traitlets import Bool

from .. import wire

V1 = "v1.kernel.websocket.jupyter.org"
# Messages of the same major protocol version need no adaptation.
PROTOCOL_MAJOR = int(protocol_version.split(".")[0])


class GatewayChannelsConnection(ZMQChannelsWebsocketConnection):
    """Relays one websocket to a kernel's ZMQ channels.

    Output is not rate-limited by default: a gateway's clients are mostly
    other servers (Jupyter Server with ``--gateway-url``) and scripts, which
    must receive everything. To protect browsers that connect directly, set
    ``limit_rate = True`` and tune ``iopub_msg_rate_limit``,
    ``iopub_data_rate_limit`` and ``rate_limit_window``; when output is then
    dropped, the client receives a stderr stream message saying so and naming
    the setting.
    """

    limit_rate = Bool(
        False,
        config=True,
        help="Whether to limit the rate of IOPub messages sent to each client. When a "
        "limit is hit, output is dropped and the client is sent a stderr message saying so.",
    )

    def create_stream(self) -> None:
        """jupyter_server's streams, with the IOPub socket subscribed at kernel start."""
        super().create_stream()
        take = getattr(self.kernel_manager, "take_spare_iopub", None)
        spare = take() if take else None
        if spare is not None:
            self.channels["iopub"].close()
            spare.channel = "iopub"
            self.channels["iopub"] = spare

    def nudge(self) -> asyncio.Future[None]:
        """Resolve once the kernel answered a kernel_info and IOPub delivered a message.

        The same contract as jupyter_server's nudge, which retries every 0.5 s: the
        first IOPub messages are often lost while the new subscription propagates,
        so every new connection waited about half a second. Here the retries start
        at 5 ms and back off to 0.5 s.
        """
        if getattr(self.kernel_manager, "execution_state", None) == "busy":
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return asyncio.ensure_future(self._nudge_until_heard())

    async def _nudge_until_heard(self) -> None:
        loop = asyncio.get_running_loop()
        replied: asyncio.Future[None] = loop.create_future()
        heard: asyncio.Future[None] = loop.create_future()
        shell = self.kernel_manager.connect_shell()
        control = self.kernel_manager.connect_control()
        iopub = self.channels["iopub"]
        ports = list(self.kernel_manager.ports)

        def resolve(future: asyncio.Future[None]) -> None:
            if not future.done():
                future.set_result(None)

        shell.on_recv(lambda _: resolve(replied))
        control.on_recv(lambda _: resolve(replied))
        iopub.on_recv(lambda _: resolve(heard))
        started = loop.time()
        deadline = started + self.multi_kernel_manager.kernel_info_timeout
        # A kernel that has just answered kernel_info (its start) is known to be
        # responsive: then IOPub speaking is all that is left to check.
        recent = getattr(self.kernel_manager, "answered_recently", None)
        if recent is not None and recent():
            resolve(replied)
        delay = 0.005
        attempts = 0
        try:
            while not (replied.done() and heard.done()) and loop.time() < deadline:
                if self.kernel_id not in self.multi_kernel_manager:
                    return
                if list(self.kernel_manager.ports) != ports or shell.closed():
                    return
                # A kernel known to be responsive is first asked on control only, which
                # keeps its shell queue free for the client; not every kernel publishes
                # status for control requests, so later attempts use shell too.
                if not replied.done() or attempts:
                    self.session.send(shell, "kernel_info_request")
                self.session.send(control, "kernel_info_request")
                attempts += 1
                pending = [f for f in (replied, heard) if not f.done()]
                await asyncio.wait(pending, timeout=delay)
                delay = min(delay * 2, 0.5)
            self.log.debug("Nudge: kernel %s ready in %.1f ms, %d attempt(s)",
                           self.kernel_id, 1000 * (loop.time() - started), attempts)
        finally:
            for channel in (shell, control):
                if not channel.closed():
                    channel.close()
            if not iopub.closed():
                iopub.stop_on_recv()

    def handle_outgoing_message(self, stream: Any, outgoing_msg: list[Any]) -> None:
        """Relay a kernel message; in the legacy format, without decoding its content.

        Falls back to jupyter_server's path for what needs the decoded message:
        rate limiting, traceback hiding, protocol adaptation, binary buffers.
        """
        if isinstance(stream, str):
            stream = self.channels[stream]
        if not self._can_splice():
            super().handle_outgoing_message(stream, outgoing_msg)
            return
        parts = wire.message_parts(outgoing_msg)
        if len(parts) > wire.CONTENT + 1:
            super().handle_outgoing_message(stream, outgoing_msg)
            return
        if not self._signature_ok(parts):
            self.log.warning("Kernel %s: dropped a message with a bad signature", self.kernel_id)
            return
        channel = getattr(stream, "channel", "") or ""
        text = wire.legacy_json(parts, wire.header_of(parts), channel)
        if self._socket_open():
            self.websocket_handler.write_message(text, binary=False)

    def _can_splice(self) -> bool:
        return (
            self.subprotocol != V1
            and not self.limit_rate
            and self.session.adapt_version in (0, PROTOCOL_MAJOR)
            and self.multi_kernel_manager.allow_tracebacks
        )

    def _signature_ok(self, parts: list[bytes]) -> bool:
        if not self.session.auth:
            return True
        expected = self.session.sign(parts[wire.HEADER : wire.CONTENT + 1])
        return hmac.compare_digest(parts[wire.SIGNATURE], expected)

    def _socket_open(self) -> bool:
        ws = self.websocket_handler.ws_connection
        return ws is not None and not ws.is_closing()

    def _on_zmq_reply(self, stream: Any, msg_list: Any) -> None:
        """Drop output for a websocket that is already closed, quietly.

        This happens when a client reconnects with the same session id before the
        old socket is gone; jupyter_server would log an empty warning per message.
        """
        if not self._socket_open():
            self.log.debug("Kernel %s: output for a closed websocket dropped", self.kernel_id)
            return
        super()._on_zmq_reply(stream, msg_list)

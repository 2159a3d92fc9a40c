"""The kernel websocket relay (jupyter_server's, with gateway defaults and bounds).

What differs from jupyter_server's relay:

- client frames are parsed by ``kernelyard.api.ws_frames`` (bounded); a frame
  it refuses closes that socket only (code 1007, the reason), with one log line;
- output is back-pressured: IOPub output for a client that does not read it is
  dropped past ``max_write_buffer`` bytes of backlog (with one stderr message
  saying so), and the socket is closed past twice that;
- ``max_connections_per_user`` and ``max_connections_per_kernel`` bound the
  open websockets (checked before the handshake);
- a websocket whose credentials can be re-checked (an API token) is closed
  once they are revoked or expire (``credential_check_interval``);
- shutdown, restart and interrupt requests sent on the control channel are
  audited (``on_kernel_request``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_client import protocol_version
from jupyter_client.jsonutil import json_default
from jupyter_server.services.kernels.connection.base import serialize_msg_to_ws_v1
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from traitlets import Bool, Float, Integer

from .. import wire
from ..auth.provider import principal_of
from ..errors import LimitReached
from ..kernel import GatewayKernelManager
from . import ws_frames

LIVE_CONNECTIONS = "kernelyard_live_connections"  # the web app setting that holds them

V1 = "v1.kernel.websocket.jupyter.org"
# Messages of the same major protocol version need no adaptation.
PROTOCOL_MAJOR = int(protocol_version.split(".")[0])
MiB = 1024 * 1024
# Websocket close codes: a frame the gateway refuses; a policy (backlog, credentials).
CLOSE_BAD_FRAME, CLOSE_POLICY = 1007, 1008
# IOPub messages sent even to a client past its backlog limit: small, and what
# clients need to know a request finished.
KEPT_IOPUB = frozenset({"status"})


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
    max_write_buffer = Integer(
        32 * MiB,
        config=True,
        help="Bytes of output a client may leave unread (written to its websocket, not yet "
        "sent) before the gateway drops further IOPub output for it (status messages and "
        "replies still go), telling it once in a stderr message; past twice this the "
        "websocket is closed. Bounds the gateway's memory per client. 0: no limit.",
    )
    max_connections_per_user = Integer(
        64,
        config=True,
        help="Open kernel websockets one user (the caller) may hold at once, over all "
        "kernels; one more is refused (403) before the handshake. 0: no limit.",
    )
    max_connections_per_kernel = Integer(
        16,
        config=True,
        help="Open websockets to one kernel at once; one more is refused (403) before the "
        "handshake. 0: no limit.",
    )
    credential_check_interval = Float(
        5.0,
        config=True,
        help="Seconds between re-checks of a websocket's credentials, for authenticators "
        "that can re-check them (api-token: revoked or expired). A socket whose token is "
        "no longer valid is closed within this time, and no message it sends later than "
        "this after the last successful check is forwarded before a new check. 0: never.",
    )

    user_name = ""
    on_kernel_request: Callable[[ws_frames.ClientMessage], None] | None = None
    _dropping = False
    _credential: Callable[[], Awaitable[bool]] | None = None
    _checked_at = 0.0
    _check_task: asyncio.Task[None] | None = None

    # --- connection limits -------------------------------------------------------

    @property
    def _live(self) -> set[GatewayChannelsConnection]:
        """Every open connection of this gateway (registered in ``register``), to count them
        per user and kernel; kept in the web app's settings, so one set per web app."""
        live: set[GatewayChannelsConnection] = self.websocket_handler.settings.setdefault(
            LIVE_CONNECTIONS, set())
        return live

    async def prepare(self) -> None:
        """Refuse a connection over a limit before registering its session or asking the
        kernel anything (``ChannelsHandler`` checks again just before the handshake)."""
        self.check_limits(principal_of(self.websocket_handler).name)
        await super().prepare()

    def check_limits(self, user: str) -> None:
        """LimitReached, naming the setting, if ``user`` or this kernel has all its sockets.

        A socket this one replaces (a reconnect with the same session id) is not counted.
        """
        replaced = f"{self.kernel_id}:{self.session.session}"
        open_ = [c for c in self._live if c._socket_open() and c.session_key != replaced]
        for setting, limit, count in (
            ("max_connections_per_kernel", self.max_connections_per_kernel,
             sum(c.kernel_id == self.kernel_id for c in open_)),
            ("max_connections_per_user", self.max_connections_per_user,
             sum(c.user_name == user for c in open_)),
        ):
            if limit and count >= limit:
                where = "to this kernel" if "kernel" in setting else f"for user {user}"
                raise LimitReached(f"{count} websockets are open {where}, which is the limit "
                                   f"(GatewayChannelsConnection.{setting} = {limit})")

    def register(self, user: str) -> None:
        """Count this connection as open, for ``user`` (until ``disconnect``)."""
        self.user_name = user
        self._live.add(self)

    def disconnect(self) -> None:  # type: ignore[override]
        self._live.discard(self)
        if self._check_task is not None:
            self._check_task.cancel()
            self._check_task = None
        super().disconnect()

    def create_stream(self) -> None:
        """jupyter_server's streams, with the IOPub socket subscribed at kernel start."""
        super().create_stream()
        km = self.kernel_manager
        spare = km.take_spare_iopub() if isinstance(km, GatewayKernelManager) else None
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
        km = self.kernel_manager
        if isinstance(km, GatewayKernelManager) and km.answered_recently():
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

    # --- credentials ------------------------------------------------------------

    def watch_credential(self, still_valid: Callable[[], Awaitable[bool]]) -> None:
        """Re-check the socket's credentials every ``credential_check_interval`` seconds.

        ``still_valid`` is the authenticator's check of this request's credentials
        (the open just passed one). When it says no, the socket is closed.
        """
        if not self.credential_check_interval:
            return
        self._credential = still_valid
        self._checked_at = asyncio.get_running_loop().time()
        self._check_task = asyncio.ensure_future(self._recheck_periodically())

    async def _recheck_periodically(self) -> None:
        while self._socket_open():
            await asyncio.sleep(self.credential_check_interval)
            await self.credential_ok()

    def credential_fresh(self) -> bool:
        """Whether the credentials were found valid within the last interval (or need none)."""
        if self._credential is None:
            return True
        age = asyncio.get_running_loop().time() - self._checked_at
        return age < self.credential_check_interval

    async def credential_ok(self) -> bool:
        """Check the credentials now; close the socket (and say False) if they are gone."""
        if self._credential is None:
            return True
        try:
            valid = await self._credential()
        except Exception:  # a store error: keep the socket, check again next time
            self.log.warning("Kernel %s: could not re-check a websocket's credentials",
                             self.kernel_id, exc_info=True)
            return self._socket_open()
        if valid:
            self._checked_at = asyncio.get_running_loop().time()
            return True
        self.log.warning("Kernel %s: closed a websocket of %s: its credentials were revoked "
                         "or expired", self.kernel_id, self.user_name)
        self._close_socket(CLOSE_POLICY, "credentials revoked or expired")
        return False

    # --- client messages ---------------------------------------------------------

    async def handle_incoming_after_check(self, frame: str | bytes) -> None:
        """``handle_incoming_message`` once the credentials were re-checked."""
        if await self.credential_ok():
            self.handle_incoming_message(frame)

    def handle_incoming_message(self, incoming_msg: str | bytes) -> None:  # type: ignore[override]
        """Parse a client frame with bounds (``ws_frames``) and forward it to its channel.

        A refused frame closes this socket only, with code 1007 and the reason.
        """
        if not self.channels or not self._socket_open():
            return
        try:
            msg = ws_frames.parse_frame(incoming_msg, v1=self.subprotocol == V1)
        except ws_frames.BadFrame as e:
            self._refuse_frame(str(e))
            return
        allowed = self.multi_kernel_manager.allowed_message_types
        if allowed and msg.msg_type not in allowed:
            self.log.warning("Kernel %s: ignored a %r message, which is not allowed",
                             self.kernel_id, msg.msg_type[:64])
            return
        if msg.channel == "control" and self.on_kernel_request is not None:
            self.on_kernel_request(msg)
        stream = self.channels[msg.channel]
        if msg.raw_parts:
            self.session.send_raw(stream, msg.raw_parts)
            return
        try:
            self.session.send(stream, msg.as_dict())
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            # jupyter_client adapts a message of another protocol version (the header's
            # "version") and assumes the content fields that version requires.
            self._refuse_frame("its content does not fit its header's protocol version")

    def _refuse_frame(self, why: str) -> None:
        """Close this socket only, with code 1007 and the reason; one log line."""
        self.log.warning("Kernel %s: closed a websocket of %s: %s", self.kernel_id,
                         self.user_name or "?", why)
        self._close_socket(CLOSE_BAD_FRAME, f"refused a frame: {why}")

    def _close_socket(self, code: int, reason: str) -> None:
        if self._socket_open():
            self.websocket_handler.close(code, reason.encode()[:123].decode(errors="ignore"))

    # --- output ------------------------------------------------------------------

    def _backlog(self) -> int:
        """Bytes written to the websocket that the client has not taken yet."""
        ws = self.websocket_handler.ws_connection
        stream = getattr(ws, "stream", None)
        return int(getattr(stream, "_total_write_index", 0)
                   - getattr(stream, "_total_write_done_index", 0))

    def _held_back(self, stream: Any, outgoing_msg: list[Any]) -> bool:
        """Whether to drop this kernel message: the client is too far behind (see the class).

        Past ``max_write_buffer`` bytes of backlog, IOPub output (all but ``KEPT_IOPUB``)
        is dropped until the backlog is under half of it, and the client is told once
        per episode; past twice the limit the socket is closed.
        """
        limit = self.max_write_buffer
        if not limit:
            return False
        backlog = self._backlog()
        if backlog > 2 * limit:
            self.log.warning("Kernel %s: closed a websocket of %s: %d MiB of output unread "
                             "(GatewayChannelsConnection.max_write_buffer)",
                             self.kernel_id, self.user_name or "?", backlog // MiB)
            self._close_socket(CLOSE_POLICY, "output backlog over twice "
                               "GatewayChannelsConnection.max_write_buffer")
            return True
        threshold = limit // 2 if self._dropping else limit
        if backlog <= threshold:
            self._dropping = False
            return False
        if getattr(stream, "channel", "") != "iopub":
            return False
        parts = wire.message_parts(outgoing_msg)
        if wire.header_of(parts).get("msg_type") in KEPT_IOPUB:
            return False
        if not self._dropping:
            self._dropping = True
            self._tell_dropped(wire.parent_of(parts))
        return True

    def _tell_dropped(self, parent: dict[str, Any]) -> None:
        """One stderr stream message: output is being dropped, and why."""
        text = (f"kernelyard: output dropped: this client has more than "
                f"{self.max_write_buffer // MiB} MiB of output unread "
                "(GatewayChannelsConnection.max_write_buffer); output resumes once it "
                "catches up.\n")
        self.log.warning("Kernel %s: dropping output for a websocket of %s that is %d MiB "
                         "behind", self.kernel_id, self.user_name or "?", self._backlog() // MiB)
        msg = self.session.msg("stream", content={"name": "stderr", "text": text},
                               parent=parent)
        if self.subprotocol == V1:
            self.websocket_handler.write_message(
                serialize_msg_to_ws_v1(msg, "iopub", self.session.pack), binary=True)
        else:
            msg["channel"] = "iopub"
            self.websocket_handler.write_message(json.dumps(msg, default=json_default))

    def handle_outgoing_message(self, stream: Any, outgoing_msg: list[Any]) -> None:
        """Relay a kernel message; in the legacy format, without decoding its content.

        Falls back to jupyter_server's path for what needs the decoded message:
        rate limiting, traceback hiding, protocol adaptation, binary buffers.
        """
        if isinstance(stream, str):
            stream = self.channels[stream]
        if not self._socket_open() or self._held_back(stream, outgoing_msg):
            return
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

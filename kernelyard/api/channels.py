"""The kernel websocket relay (jupyter_server's, with gateway defaults)."""

from __future__ import annotations

from typing import Any

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from traitlets import Bool


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

    def _on_zmq_reply(self, stream: Any, msg_list: Any) -> None:
        """Drop output for a websocket that is already closed, quietly.

        This happens when a client reconnects with the same session id before the
        old socket is gone; jupyter_server would log an empty warning per message.
        """
        ws = self.websocket_handler.ws_connection
        if ws is None or ws.is_closing():
            self.log.debug("Kernel %s: output for a closed websocket dropped", self.kernel_id)
            return
        super()._on_zmq_reply(stream, msg_list)

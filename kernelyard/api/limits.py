"""Connection-level limits: the HTTP server, and accepting when out of descriptors.

``GatewayHTTPServer`` is tornado's ``HTTPServer`` with one change: when
``accept()`` fails for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) it
stops accepting for ``accept_pause`` seconds instead of raising. Tornado's own
accept handler lets the error escape to the event loop, which logs a traceback
and, the listening socket staying readable, does so again at once: a busy loop
that wrote 137,925 log lines in 15 s while idle connections held every
descriptor. Here the pause is logged once a minute at most (with how many
pauses happened since), and the idle connections are closed by tornado's
``idle_connection_timeout``, so accepting resumes by itself.

The timeouts and body limits are ``KernelyardApp`` settings
(``idle_connection_timeout``, ``body_timeout``, ``max_body_size``,
``max_buffer_size``); the body limit per request is checked in
``kernelyard.api.base.GatewayHandlerMixin`` after authentication and before
the body is read.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.log import gen_log
from tornado.netutil import _DEFAULT_BACKLOG

OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
LOG_EVERY = 60.0  # seconds between two "cannot accept" warnings


class GatewayHTTPServer(HTTPServer):
    """tornado's HTTP server; running out of descriptors pauses accepting (see module doc)."""

    accept_pause: float = 0.5

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = accept_connections(
                sock, self._handle_connection, self.accept_pause)


class _Acceptor:
    """Accepts connections on one listening socket, pausing when out of resources."""

    def __init__(self, sock: socket.socket, callback: Callable[[socket.socket, Any], None],
                 pause: float):
        self.sock, self.callback, self.pause = sock, callback, pause
        self.io_loop = IOLoop.current()
        self.removed = self.paused = False
        self.pauses_unlogged = 0
        self.logged_at = float("-inf")

    def start(self) -> None:
        self.io_loop.add_handler(self.sock, self.on_readable, IOLoop.READ)

    def on_readable(self, fd: Any, events: int) -> None:
        # As tornado does: at most a backlog's worth per call, not to starve other work.
        for _ in range(_DEFAULT_BACKLOG):
            if self.removed or self.paused:
                return
            try:
                connection, address = self.sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno not in OUT_OF_RESOURCES:
                    raise
                self.pause_accepting(e)
                return
            self.callback(connection, address)

    def pause_accepting(self, error: OSError) -> None:
        self.paused = True
        self.io_loop.remove_handler(self.sock)
        self.io_loop.call_later(self.pause, self.resume)
        self.pauses_unlogged += 1
        now = time.monotonic()
        if now - self.logged_at >= LOG_EVERY:
            gen_log.warning("Cannot accept connections (%s): pausing %.1fs at a time until "
                        "connections close (%d pause(s) since the last warning); see "
                        "KernelyardApp.idle_connection_timeout and the open files limit",
                        error.strerror, self.pause, self.pauses_unlogged)
            self.logged_at, self.pauses_unlogged = now, 0

    def resume(self) -> None:
        if self.removed:
            return
        self.paused = False
        self.start()

    def remove(self) -> None:
        if not self.paused and not self.removed:
            self.io_loop.remove_handler(self.sock)
        self.removed = True


def accept_connections(sock: socket.socket, callback: Callable[[socket.socket, Any], None],
                       pause: float) -> Callable[[], None]:
    """``tornado.netutil.add_accept_handler`` that pauses when out of resources.

    Returns the callable that stops accepting (as tornado's does).
    """
    acceptor = _Acceptor(sock, callback, pause)
    acceptor.start()
    return acceptor.remove

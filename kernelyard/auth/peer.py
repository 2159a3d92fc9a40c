"""The address a request really came from: the TCP peer, never a header.

``request.remote_ip`` is what tornado makes of ``X-Forwarded-For`` / ``X-Real-Ip``
when ``trust_xheaders`` is on, from any client: it may be logged, but a security
decision must use ``peer_ip``.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from tornado.httputil import HTTPServerRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def peer_ip(request: HTTPServerRequest) -> IPAddress | None:
    """The IP address of the socket peer of ``request``, or None (a Unix socket, no
    connection). An IPv4-mapped IPv6 peer (``::ffff:10.0.0.1``) is its IPv4 address."""
    address = _socket_address(request)
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _socket_address(request: HTTPServerRequest) -> str | None:
    """The host part of the peer's socket address, as tornado's HTTP server saw it
    when it accepted the connection (before any X-header rewriting)."""
    connection: Any = request.connection
    context = getattr(connection, "context", None)
    if context is not None and getattr(context, "address_family", None) in (
            socket.AF_INET, socket.AF_INET6):
        address = getattr(context, "address", None)
        if isinstance(address, tuple) and address and isinstance(address[0], str):
            return address[0]
        return None
    stream = getattr(connection, "stream", None)
    sock = getattr(stream, "socket", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return None

"""proxy-header's address rules: which trusted_proxies entries start, and the peer address.

tests/integration/test_auth_proxy_mtls.py runs the same rules on a real gateway; here
are the edges a loopback gateway can't reach (IPv6 peers, exact range limits).
"""

from __future__ import annotations

import ipaddress
import socket
from types import SimpleNamespace
from typing import Any

import pytest

from kernelyard.auth.peer import peer_ip
from kernelyard.auth.proxy_header import MAX_PROXY_ADDRESSES, ProxyHeaderAuthenticator
from kernelyard.errors import ConfigError


def _request(family: int, address: Any, remote_ip: str = "10.9.9.9") -> Any:
    """What tornado's HTTP server hands a handler: the accepted address on the
    connection's context, and remote_ip (rewritten by trust_xheaders) beside it."""
    context = SimpleNamespace(address_family=family, address=address, remote_ip=remote_ip)
    return SimpleNamespace(connection=SimpleNamespace(context=context), remote_ip=remote_ip)


@pytest.mark.parametrize(("family", "address", "expected"), [
    (socket.AF_INET, ("127.0.0.2", 5000), "127.0.0.2"),
    (socket.AF_INET6, ("::ffff:127.0.0.2", 5000, 0, 0), "127.0.0.2"),
    (socket.AF_INET6, ("fd00::5", 5000, 0, 0), "fd00::5"),
    (socket.AF_UNIX, "/run/kernelyard.sock", None),
    (socket.AF_INET, None, None),
])
def test_the_peer_is_the_accepted_address_never_remote_ip(family: int, address: Any,
                                                         expected: str | None) -> None:
    ip = peer_ip(_request(family, address))
    assert ip == (ipaddress.ip_address(expected) if expected else None)


def _auth(*proxies: str, secret: str = "s" * 32) -> ProxyHeaderAuthenticator:
    return ProxyHeaderAuthenticator(trusted_proxies=list(proxies), secret=secret)


@pytest.mark.parametrize("entry", ["10.1.2.0/24", "10.1.2.3", "fd00::/120", "fd00::1"])
def test_a_proxy_sized_entry_is_accepted(entry: str) -> None:
    assert _auth(entry).trusted_proxies == [entry]


@pytest.mark.parametrize("entry", ["10.1.2.0/23", "fd00::/119", "0.0.0.0/0", "::/0"])
def test_an_entry_wider_than_the_limit_is_refused(entry: str) -> None:
    with pytest.raises(ConfigError, match=f"at most {MAX_PROXY_ADDRESSES}"):
        _auth(entry)


@pytest.mark.parametrize("entry", ["127.0.0.1", "::1", "127.0.0.0/24"])
def test_loopback_needs_the_secret(entry: str) -> None:
    with pytest.raises(ConfigError, match=r"without ProxyHeaderAuthenticator\.secret"):
        _auth(entry, secret="")
    assert _auth(entry).trusted_proxies == [entry]


def test_a_v4_peer_matches_a_v4_entry_through_a_v6_socket() -> None:
    auth = _auth("10.1.2.3")
    forged = _request(socket.AF_INET, ("127.0.0.1", 5000), remote_ip="10.1.2.3")
    mapped = _request(socket.AF_INET6, ("::ffff:10.1.2.3", 5000, 0, 0), remote_ip="1.2.3.4")
    forged.headers = mapped.headers = {"X-Kernelyard-Proxy-Secret": "s" * 32}
    assert not auth._from_trusted_proxy(forged)
    assert auth._from_trusted_proxy(mapped)

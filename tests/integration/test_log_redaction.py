"""No secret reaches the gateway's log, tornado's lines included (issue 10, item 9).

tornado logs a malformed request at INFO with the offending header value: an
``Authorization`` header holding a control character used to put the token in
the log in clear. Each secret here is also registered with the end-of-session
sweep (tests/gateway.py SECRETS).
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.gateway import SECRETS, Gateway, start_gateway


def send_raw(gw: Gateway, data: bytes) -> bytes:
    url = urlsplit(gw.url)
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return answer


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    token, proxy_secret = "shared-" + uuid.uuid4().hex, "proxy-" + uuid.uuid4().hex
    SECRETS.add_secret(proxy_secret, "a gateway's KERNELYARD_PROXY_SECRET")
    return start_gateway(tmp_path, "--log-level=DEBUG", token=token,
                         env={"KERNELYARD_PROXY_SECRET": proxy_secret})


@pytest.mark.parametrize("scheme", ["token", "Bearer", "Negotiate", "Basic"])
def test_malformed_authorization_header_is_logged_without_the_credential(
        gw: Gateway, scheme: str) -> None:
    try:
        other = "other-" + uuid.uuid4().hex  # not a secret the gateway knows
        SECRETS.add_secret(other, "a credential sent in a malformed header")
        for secret in (gw.token, other):
            send_raw(gw, (f"GET /api HTTP/1.1\r\nHost: localhost\r\n"
                          f"Authorization: {scheme} {secret}\x01tail\r\n\r\n").encode())
        assert gw.log_shows("Malformed HTTP message", count=2)
        log = gw.log()
        assert gw.token not in log
        assert other not in log
    finally:
        gw.stop()


def test_known_secrets_never_logged(gw: Gateway) -> None:
    try:
        send_raw(gw, (f"GET /api?token={gw.token} HTTP/1.1\r\nHost: localhost\r\n"
                      f"X-Note: {gw.token}\x02\r\n\r\n").encode())
        send_raw(gw, (f"GET /nope?token={gw.token} HTTP/1.1\r\nHost: localhost\r\n"
                      "Connection: close\r\n\r\n").encode())
        assert gw.log_shows("Malformed HTTP message")
        assert gw.log_shows("/nope")
        assert gw.token not in gw.log()
    finally:
        gw.stop()

"""The kernel websocket: both wire formats, reconnects, interrupt, restart, rude clients."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from tests.gateway import Gateway


@pytest.fixture
def kernel(gateway: Gateway) -> Iterator[str]:
    kid = gateway.start_kernel()
    yield kid
    gateway.request("DELETE", f"/api/kernels/{kid}")


@pytest.mark.parametrize("v1", [False, True], ids=["legacy", "v1"])
def test_execute_in_both_protocols(gateway: Gateway, kernel: str, v1: bool) -> None:
    ks = gateway.connect(kernel, v1=v1)
    try:
        if v1:
            assert ks.ws.subprotocol == "v1.kernel.websocket.jupyter.org"
        out = ks.execute("print(6*7)\n6*7")
    finally:
        ks.close()
    assert out["stdout"] == "42\n" and out["results"] == ["42"]
    assert out["reply"]["status"] == "ok"


@pytest.mark.parametrize("v1", [False, True], ids=["legacy", "v1"])
def test_kernel_info_reply(gateway: Gateway, kernel: str, v1: bool) -> None:
    ks = gateway.connect(kernel, v1=v1)
    try:
        msg_id = ks.send("shell", "kernel_info_request", {})
        while True:
            msg = ks.recv()
            if msg["parent_header"].get("msg_id") == msg_id and msg["channel"] == "shell":
                break
    finally:
        ks.close()
    assert msg["msg_type"] == "kernel_info_reply"
    assert msg["content"]["language_info"]["name"] == "python"


def test_reconnect_with_same_session_replays_missed_output(gateway: Gateway, kernel: str) -> None:
    session = "replay-session"
    ks = gateway.connect(kernel, session_id=session)
    ks.execute("import time")
    ks.submit("time.sleep(1); print('while you were away')")
    ks.close()
    time.sleep(2.5)
    again = gateway.connect(kernel, session_id=session)
    try:
        seen = ""
        deadline = time.monotonic() + 20
        while "while you were away" not in seen and time.monotonic() < deadline:
            msg = again.recv(timeout=deadline - time.monotonic())
            if msg["msg_type"] == "stream":
                seen += msg["content"]["text"]
    finally:
        again.close()
    assert "while you were away" in seen


@pytest.mark.parametrize("v1", [False, True], ids=["legacy", "v1"])
def test_interrupt_keeps_variables(gateway: Gateway, kernel: str, v1: bool) -> None:
    ks = gateway.connect(kernel, v1=v1)
    try:
        ks.execute("x = 41")
        msg_id = ks.submit("import time; time.sleep(60)")
        _wait_for_busy(ks, msg_id)
        status, _, _ = gateway.request("POST", f"/api/kernels/{kernel}/interrupt", {})
        assert status == 204
        error = ks.wait_idle(msg_id)
        assert error["ename"] == "KeyboardInterrupt"
        assert ks.execute("print(x + 1)")["stdout"] == "42\n"
    finally:
        ks.close()


def test_restart_keeps_id_and_clears_state(gateway: Gateway, kernel: str) -> None:
    ks = gateway.connect(kernel)
    try:
        ks.execute("import os; y = 7")
        pid_before = ks.execute("print(os.getpid())")["stdout"]
    finally:
        ks.close()
    status, model, _ = gateway.request("POST", f"/api/kernels/{kernel}/restart", {})
    assert status == 200 and model["id"] == kernel
    ks = gateway.connect(kernel)
    try:
        out = ks.execute("import os; print(os.getpid()); y")
    finally:
        ks.close()
    assert out["error"]["ename"] == "NameError"
    assert out["stdout"] and out["stdout"] != pid_before


def test_client_dropping_mid_message_harms_nothing(gateway: Gateway, kernel: str) -> None:
    url = urlparse(gateway.url)
    with socket.create_connection((url.hostname, url.port)) as raw:
        raw.sendall(
            f"GET /api/kernels/{kernel}/channels HTTP/1.1\r\nHost: {url.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: token {gateway.token}\r\n\r\n".encode()
        )
        assert b"101" in raw.recv(4096).split(b"\r\n")[0]
        # A masked text frame announcing 1000 bytes, of which only 10 arrive.
        raw.sendall(bytes([0x81, 0x80 | 126]) + (1000).to_bytes(2, "big") + b"mask" + b"x" * 10)
    time.sleep(0.5)
    assert gateway.request("GET", "/api")[0] == 200
    ks = gateway.connect(kernel)
    try:
        assert ks.execute("print('still here')")["stdout"] == "still here\n"
    finally:
        ks.close()


def test_websocket_needs_the_token(gateway: Gateway, kernel: str) -> None:
    import websocket

    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(f"{gateway.ws_url}api/kernels/{kernel}/channels", timeout=10)
    assert err.value.status_code == 401


def test_websocket_to_unknown_kernel_is_404(gateway: Gateway) -> None:
    import websocket

    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(
            f"{gateway.ws_url}api/kernels/00000000-0000-4000-8000-000000000000/channels",
            header=[f"Authorization: token {gateway.token}"], timeout=10)
    assert err.value.status_code == 404


def _wait_for_busy(ks, msg_id: str) -> None:
    while True:
        msg = ks.recv()
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "busy"):
            time.sleep(0.3)
            return


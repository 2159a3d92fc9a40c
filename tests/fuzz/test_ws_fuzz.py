"""Fuzz the kernel websocket of a real gateway in both wire formats.

Hypothesis sends random and near-valid frames: raw bytes, text, v1 frames with
odd offset tables and channels, legacy JSON with wrong types, legacy binary
frames. After every frame the gateway must still answer ``GET /api``; a frame
it refuses closes that socket with 1007, never with an uncaught exception.
At the end the kernel still runs code. Message types that would run code or
stop the kernel are never generated (the kernel's own robustness is not under
test here, the gateway's is).
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyter_server.services.kernels.connection.base import (
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)

from tests.gateway import Gateway, start_gateway

V1 = "v1.kernel.websocket.jupyter.org"
FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
HARMLESS_TYPES = ["kernel_info_request", "comm_info_request", "is_complete_request",
                  "inspect_request", "complete_request", "nonsense", ""]
CHANNELS = ["shell", "control", "stdin", "iopub", "", "shell\x00"]


@pytest.fixture(scope="module")
def fuzz_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    gw = start_gateway(tmp_path_factory.mktemp("ws-fuzz"),
                       "--GatewayChannelsConnection.max_connections_per_kernel=0",
                       "--GatewayChannelsConnection.max_connections_per_user=0")
    kid = gw.start_kernel()
    yield gw, kid
    gw.request("DELETE", f"/api/kernels/{kid}")
    gw.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=12)
headers = st.fixed_dictionaries(
    {"msg_type": st.sampled_from(HARMLESS_TYPES) | json_values},
    optional={"msg_id": st.text(max_size=8) | json_values, "session": st.text(max_size=8)})


@st.composite
def v1_frames(draw: st.DrawFn) -> bytes:
    parts = [json.dumps(draw(headers)).encode(),
             *(draw(st.sampled_from([b"{}", b"[]", b"{", b"\xff", b"null"])) for _ in range(3))]
    parts += draw(st.lists(st.binary(max_size=16), max_size=2))
    frame = serialize_msg_to_ws_v1(parts, draw(st.sampled_from(CHANNELS)))
    if draw(st.booleans()):  # corrupt one 8-byte word of the offset table
        n = int.from_bytes(frame[:8], "little")
        i = draw(st.integers(0, n))
        value = draw(st.integers(0, 2**64 - 1) | st.integers(0, len(frame) + 8))
        frame = frame[:8 * i] + struct.pack("<Q", value) + frame[8 * i + 8:]
    return frame


@st.composite
def legacy_frames(draw: st.DrawFn) -> str | bytes:
    msg = draw(st.dictionaries(
        st.sampled_from(["header", "parent_header", "metadata", "content", "channel",
                         "buffers"]), json_values, max_size=6))
    if draw(st.booleans()):
        msg["header"] = draw(headers)
        msg["channel"] = draw(st.sampled_from(CHANNELS) | json_values)
    if draw(st.booleans()):
        return json.dumps(msg)
    frame = serialize_binary_message({**msg, "buffers": draw(st.lists(st.binary(max_size=8),
                                                                      max_size=2))})
    if draw(st.booleans()):
        frame = struct.pack(">I", draw(st.integers(0, 2**32 - 1))) + frame[4:]
    return frame


frames = st.one_of(
    st.tuples(st.just(True), v1_frames() | st.binary(max_size=64)),
    st.tuples(st.just(False), legacy_frames() | st.text(max_size=64)
              | st.binary(max_size=64)),
)


def _send(ws: websocket.WebSocket, frame: str | bytes) -> None:
    if isinstance(frame, bytes):
        ws.send_binary(frame)
    else:
        ws.send(frame)


def _closed_code(ws: websocket.WebSocket) -> int | None:
    """The close code, if the server closes the socket soon after the frame; else None."""
    ws.settimeout(0.5)
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return struct.unpack(">H", data[:2])[0] if len(data) >= 2 else 1005
    except websocket.WebSocketTimeoutException:
        return None
    except websocket.WebSocketConnectionClosedException:
        return 1006


@FUZZ
@given(example=frames)
def test_random_frames_never_harm_the_gateway(fuzz_gw: tuple[Gateway, str],
                                              example: tuple[bool, str | bytes]) -> None:
    gw, kid = fuzz_gw
    v1, frame = example
    ws = websocket.create_connection(
        f"{gw.ws_url.rstrip('/')}/api/kernels/{kid}/channels?session_id={uuid.uuid4().hex}",
        header=[f"Authorization: token {gw.token}"],
        subprotocols=[V1] if v1 else None, timeout=30)
    try:
        _send(ws, frame)
        code = _closed_code(ws)
        assert code in (None, 1007), code  # refused with a reason, or taken
    finally:
        ws.close()
    assert gw.request("GET", "/api", timeout=10)[0] == 200


def test_after_the_fuzz_the_kernel_runs_and_no_exception_escaped(
        fuzz_gw: tuple[Gateway, str]) -> None:
    gw, kid = fuzz_gw
    ks = gw.connect(kid)
    try:
        assert ks.execute("print('alive')")["stdout"] == "alive\n"
    finally:
        ks.close()
    log = Path(gw.log_path).read_text(errors="replace")
    assert "Uncaught exception" not in log and "Traceback" not in log

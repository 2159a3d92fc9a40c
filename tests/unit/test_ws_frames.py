"""kernelyard.api.ws_frames: the bounded parsers of client websocket frames.

Golden cases against jupyter_server's own serializers (what real clients send),
then every refusal, then hypothesis: any input gives a message or BadFrame.
"""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyter_server.services.kernels.connection.base import (
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)

from kernelyard.api import ws_frames
from kernelyard.api.ws_frames import BadFrame, parse_legacy, parse_v1

HEADER = {"msg_id": "m1", "msg_type": "execute_request", "session": "s", "username": "u",
          "version": "5.3", "date": "2026-01-01T00:00:00Z"}
CONTENT = {"code": "print(1)", "silent": False}
FUZZ = settings(max_examples=600, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def v1_frame(channel: str = "shell", header: dict = HEADER, content: dict = CONTENT,
             buffers: tuple[bytes, ...] = ()) -> bytes:
    parts = [json.dumps(p).encode() for p in (header, {}, {"m": 1}, content)]
    return serialize_msg_to_ws_v1([*parts, *buffers], channel)


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def legacy_text(**fields: object) -> str:
    msg = {"header": HEADER, "parent_header": {}, "metadata": {}, "content": CONTENT,
           "channel": "shell", "buffers": [], **fields}
    return json.dumps(msg)


def test_v1_frame_of_jupyter_server_parses() -> None:
    msg = parse_v1(v1_frame("control", buffers=(b"\x00\xff", b"")))
    assert (msg.channel, msg.msg_type, msg.content) == ("control", "execute_request", CONTENT)
    assert msg.metadata == {"m": 1} and msg.buffers == [b"\x00\xff", b""]
    assert len(msg.raw_parts) == 6 and json.loads(msg.raw_parts[0]) == HEADER


def test_legacy_text_and_binary_parse() -> None:
    msg = parse_legacy(legacy_text(channel="stdin"))
    assert (msg.channel, msg.content, msg.buffers) == ("stdin", CONTENT, [])
    binary = serialize_binary_message({"header": HEADER, "parent_header": {}, "metadata": {},
                                       "content": CONTENT, "channel": "control",
                                       "buffers": [b"abc", b"de"]})
    msg = parse_legacy(binary)
    assert (msg.channel, msg.buffers) == ("control", [b"abc", b"de"])


def test_legacy_defaults_channel_and_missing_parts() -> None:
    msg = parse_legacy(json.dumps({"header": HEADER}))
    assert (msg.channel, msg.parent_header, msg.metadata, msg.content) == ("shell", {}, {}, {})


def test_the_16_byte_frame_that_froze_jupyter_server_is_refused() -> None:
    with pytest.raises(BadFrame, match="offset count"):
        parse_v1(struct.pack("<Q", 2**63) + struct.pack("<Q", 16))


def _v1_with_offsets(offsets: list[int], tail: bytes) -> bytes:
    return struct.pack(f"<{len(offsets) + 1}Q", len(offsets), *offsets) + tail


@pytest.mark.parametrize(("frame", "match"), [
    (b"", "shorter"),
    ("a str", "binary frames only"),
    (struct.pack("<Q", 0), "offset count"),
    (struct.pack("<Q", ws_frames.MAX_PARTS + 3) + b"\0" * 8 * 400, "offset count"),
    (_v1_with_offsets([8 * 7, 8 * 7 + 5, 0, 0, 0, 0], b"shell"), "increasing"),
    (_v1_with_offsets([8 * 6, 8 * 6 + 5, 8 * 6 + 5, 8 * 6 + 5, 8 * 6 + 5, 8 * 6 + 5], b"shell"),
     "first offset"),
    (_v1_with_offsets([8 * 7] * 6, b"x" * 10), "last v1 offset"),
    (_v1_with_offsets([8 * 4, 8 * 4 + 5, 8 * 4 + 5], b"shell"), "needs a channel"),
    (v1_frame("iopub"), "channel"),
    (v1_frame("nope"), "channel"),
    (v1_frame(header={"msg_id": "x"}), "msg_type"),
    (v1_frame(header={"msg_type": "x", "msg_id": 7}), "msg_id"),
])
def test_bad_v1_frames(frame: bytes, match: str) -> None:
    with pytest.raises(BadFrame, match=match):
        parse_v1(frame)


def test_v1_json_parts_are_checked() -> None:
    good = [json.dumps(p).encode() for p in (HEADER, {}, {}, CONTENT)]
    for index, bad in [(0, b"\xff"), (1, b"[1]"), (2, b"{"), (3, b'{"a": Infinity}'),
                       (3, b'{"a": "\\udc00"}'), (3, b'{"a":' + b"[" * 70 + b"]" * 70 + b"}")]:
        parts = list(good)
        parts[index] = bad
        with pytest.raises(BadFrame):
            parse_v1(serialize_msg_to_ws_v1(parts, "shell"))


@pytest.mark.parametrize(("frame", "match"), [
    ("not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"channel": "shell"}), "'header'"),
    (legacy_text(channel="iopub"), "channel"),
    (legacy_text(channel=["shell"]), "'channel'"),
    (legacy_text(content=[1]), "'content'"),
    (legacy_text(parent_header="x"), "'parent_header'"),
    (legacy_text(header={"msg_type": ""}), "msg_type"),
    ('{"header": {"msg_type": "\\ud800"}}', "surrogate"),
    ('{"header": {"msg_type": "\ud800"}}', "UTF-8"),
    ('{"header": {"msg_type": "x"}, "content": {"a": NaN}}', "NaN"),
    ("[" * 200_000 + "]" * 200_000, "nested"),
    (legacy_text(content={"a": nested(70)}), "nested"),
    (struct.pack(">I", 2**31), "offset count"),
    (struct.pack(">II", 1, 4), "first offset"),
    (struct.pack(">III", 2, 12, 11) + b"{}", "increasing"),
    (struct.pack(">II", 1, 8) + b"\xff", "UTF-8"),
])
def test_bad_legacy_frames(frame: str | bytes, match: str) -> None:
    with pytest.raises(BadFrame, match=match):
        parse_legacy(frame)


def test_refusals_never_quote_the_frame() -> None:
    secret = "s3cr3t-value-in-a-frame"
    with pytest.raises(BadFrame) as err:
        parse_legacy(json.dumps({"header": {"msg_type": "x"}, "channel": secret}))
    assert secret not in str(err.value) and len(str(err.value)) < 120


def _outcome(parse, frame: str | bytes) -> None:
    """Any frame gives a ClientMessage or BadFrame; anything else fails the test."""
    try:
        msg = parse(frame)
    except BadFrame as e:
        assert len(str(e)) < 120  # fits a websocket close reason (123 bytes)
        return
    assert msg.channel in ws_frames.CLIENT_CHANNELS and msg.msg_type


@st.composite
def v1_like(draw: st.DrawFn) -> bytes:
    """Frames with a plausible offset table (counts and offsets near the valid ones)."""
    n = draw(st.integers(0, 12) | st.sampled_from([2**63, 2**64 - 1, 2**32]))
    body = draw(st.binary(max_size=200))
    table = 8 * (n + 1) if n < 100 else 16
    offsets = draw(st.lists(st.integers(0, table + len(body) + 2) | st.just(table),
                            min_size=min(n, 12), max_size=min(n, 12)))
    return struct.pack("<Q", n) + b"".join(struct.pack("<Q", o) for o in offsets) + body


@FUZZ
@given(st.binary(max_size=300) | v1_like()
       | st.builds(lambda c, p: v1_frame(c, content={"x": p}),
                   st.sampled_from(["shell", "control", "stdin", "iopub", ""]), st.text()))
def test_fuzz_v1_parser(frame: bytes) -> None:
    _outcome(parse_v1, frame)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=30)


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300)
       | st.builds(json.dumps, st.dictionaries(
           st.sampled_from(["header", "channel", "content", "metadata", "parent_header"]),
           json_values | st.fixed_dictionaries({"msg_type": json_values}))))
def test_fuzz_legacy_parser(frame: str | bytes) -> None:
    _outcome(parse_legacy, frame)

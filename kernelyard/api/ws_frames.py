"""Parsing what a client sends on a kernel websocket, with bounds (pure).

Two wire formats arrive on ``/api/kernels/{id}/channels``:

- ``v1.kernel.websocket.jupyter.org`` (binary frames): 8 bytes little-endian
  ``n``, then ``n`` little-endian 8-byte offsets from the frame start, then the
  channel name and the message parts (header, parent header, metadata,
  content, buffers...). Part ``i`` spans ``offsets[i]:offsets[i+1]``; the
  first offset is the end of the offset table, the last one the frame end.
- legacy: a JSON text frame ``{"header", "parent_header", "metadata",
  "content", "channel", ...}``, or a binary frame of 4 bytes big-endian
  ``nbufs``, ``nbufs`` 4-byte offsets, the JSON message, then its buffers.

jupyter_server trusts the counts in these headers (a 16-byte v1 frame claiming
``2**63`` offsets loops forever on the event loop). Here every count is
bounded by the frame's own length and by ``MAX_PARTS`` before anything is
allocated, offsets must be monotonic and inside the frame, the channel must be
one a client may send on, and the JSON parts must be objects of bounded depth
without lone surrogates or non-finite numbers. Every refusal is a
``BadFrame`` whose message is short and client-safe (it never quotes the
frame); nothing else escapes the parsers.
"""

from __future__ import annotations

import itertools
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

# Channels a client may send on: IOPub is the kernel's broadcast (a SUB socket here).
CLIENT_CHANNELS = ("shell", "control", "stdin")
_CHANNELS_BYTES = {name.encode(): name for name in CLIENT_CHANNELS}
# Header, parent header, metadata and content come first; buffers follow.
JSON_PARTS = 4
# At most this many buffers per message (widgets send a few).
MAX_BUFFERS = 256
MAX_PARTS = JSON_PARTS + MAX_BUFFERS
# JSON objects/arrays nested deeper than this are refused.
MAX_DEPTH = 64
_V1_WORD = 8
_LEGACY_WORD = 4
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class BadFrame(ValueError):
    """A client frame the gateway refuses. ``str(err)`` is short and client-safe."""


@dataclass(frozen=True)
class ClientMessage:
    """A client message, checked: its channel and its decoded JSON parts.

    ``raw_parts`` holds the v1 frame's parts as sent (the four JSON parts, then
    the buffers), so they can be forwarded without re-encoding; it is empty
    for the legacy format.
    """

    channel: str
    header: dict[str, Any]
    parent_header: dict[str, Any]
    metadata: dict[str, Any]
    content: dict[str, Any]
    buffers: list[bytes] = field(default_factory=list)
    raw_parts: list[bytes] = field(default_factory=list)

    @property
    def msg_type(self) -> str:
        return str(self.header["msg_type"])

    def as_dict(self) -> dict[str, Any]:
        """The message as ``jupyter_client.Session.send`` takes it."""
        return {"header": self.header, "parent_header": self.parent_header,
                "metadata": self.metadata, "content": self.content, "buffers": self.buffers}


def parse_frame(frame: str | bytes, v1: bool) -> ClientMessage:
    """A frame of the socket's format (``v1``: the v1 subprotocol); BadFrame if refused."""
    return parse_v1(frame) if v1 else parse_legacy(frame)


def parse_v1(frame: str | bytes) -> ClientMessage:
    """A v1 binary frame; BadFrame if it is not one, bounded as the module says."""
    if not isinstance(frame, bytes):
        raise BadFrame("the v1 protocol takes binary frames only")
    offsets = _offsets(frame, _V1_WORD, "<Q")
    if len(offsets) < 2 + JSON_PARTS:
        raise BadFrame(f"a v1 frame needs a channel and {JSON_PARTS} message parts")
    if offsets[-1] != len(frame):
        raise BadFrame("the last v1 offset is not the frame's end")
    channel = _channel(frame[offsets[0]:offsets[1]])
    parts = [frame[a:b] for a, b in itertools.pairwise(offsets[1:])]
    header, parent, metadata, content = (_json_object(p, what) for p, what in
                                         zip(parts, _PART_NAMES, strict=False))
    _check_header(header)
    return ClientMessage(channel, header, parent, metadata, content,
                         buffers=parts[JSON_PARTS:], raw_parts=parts)


def parse_legacy(frame: str | bytes) -> ClientMessage:
    """A legacy JSON text frame or binary frame; BadFrame if refused."""
    if isinstance(frame, bytes):
        offsets = _offsets(frame, _LEGACY_WORD, ">I")
        chunks = [frame[a:b] for a, b in zip(offsets, [*offsets[1:], len(frame)], strict=True)]
        msg = _json_object(chunks[0], "message")
        buffers = chunks[1:]
    else:
        msg = _json_object(frame, "message")
        buffers = []
    channel = msg.get("channel")
    channel = "shell" if channel is None else channel  # as jupyter_server assumes
    if not isinstance(channel, str):
        raise BadFrame("'channel' is not a string")
    header = msg.get("header")
    if not isinstance(header, dict):
        raise BadFrame("'header' is not an object")
    _check_header(header)
    parts = [msg.get(key, {}) for key in ("parent_header", "metadata", "content")]
    for value, what in zip(parts, _PART_NAMES[1:], strict=True):
        if not isinstance(value, dict):
            raise BadFrame(f"{what!r} is not an object")
    parent, metadata, content = parts
    if channel not in CLIENT_CHANNELS:
        raise BadFrame(_BAD_CHANNEL)
    return ClientMessage(channel, header, parent, metadata, content, buffers=buffers)


_PART_NAMES = ("header", "parent_header", "metadata", "content")
_BAD_CHANNEL = f"the channel is not one of {', '.join(CLIENT_CHANNELS)}"


def _offsets(frame: bytes, word: int, fmt: str) -> list[int]:
    """The offset table at the frame's start: bounded, monotonic, inside the frame.

    Both binary formats start with a count ``n`` then ``n`` offsets (words of
    ``word`` bytes, struct format ``fmt``), the first of which is the table's end.
    The count is checked against the frame's length before anything is unpacked.
    """
    if len(frame) < word:
        raise BadFrame("the frame is shorter than its offset count")
    (count,) = struct.unpack_from(fmt, frame)
    table_end = word * (count + 1)
    if count < 1 or count > MAX_PARTS + 2 or table_end > len(frame):
        raise BadFrame(f"the offset count is not between 1 and {MAX_PARTS + 2} "
                       "or does not fit in the frame")
    offsets = list(struct.unpack_from(fmt[0] + fmt[1] * count, frame, word))
    if offsets[0] != table_end:
        raise BadFrame("the first offset is not the end of the offset table")
    if any(b < a for a, b in itertools.pairwise(offsets)) or offsets[-1] > len(frame):
        raise BadFrame("the offsets are not increasing within the frame")
    return offsets


def _channel(name: bytes) -> str:
    channel = _CHANNELS_BYTES.get(name)
    if channel is None:
        raise BadFrame(_BAD_CHANNEL)
    return channel


def _check_header(header: dict[str, Any]) -> None:
    if not isinstance(header.get("msg_type"), str) or not header["msg_type"]:
        raise BadFrame("the header has no msg_type string")
    if not isinstance(header.get("msg_id", ""), str):
        raise BadFrame("the header's msg_id is not a string")


def _refuse_constant(name: str) -> Any:
    raise BadFrame(f"the JSON holds {name}, which is not JSON")


def _json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """``data`` as a JSON object: UTF-8, finite numbers, no lone surrogate, bounded depth."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        if not isinstance(data, bytes):
            data.encode("utf-8")  # a str may hold a raw surrogate; tornado's never does
    except UnicodeError:
        raise BadFrame(f"the {what} is not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadFrame(f"the {what} is nested deeper than {MAX_DEPTH}") from None
    except ValueError as e:
        if isinstance(e, BadFrame):
            raise
        raise BadFrame(f"the {what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadFrame(f"the {what} is not a JSON object")
    if text.count("[") + text.count("{") > MAX_DEPTH:  # cheap: few brackets, shallow
        _check_depth(value, what)
    if _SURROGATE_ESCAPE.search(text):  # valid UTF-8 holds no surrogate; an escape can
        _check_encodable(value, what)
    return value


def _check_depth(value: Any, what: str) -> None:
    """BadFrame if containers nest deeper than MAX_DEPTH (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadFrame(f"the {what} is nested deeper than {MAX_DEPTH}")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def _check_encodable(value: Any, what: str) -> None:
    """BadFrame if a string (key or value) holds a lone surrogate, which no UTF-8 can carry."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadFrame(f"the {what} holds a lone surrogate") from None
    except RecursionError:
        raise BadFrame(f"the {what} is nested deeper than {MAX_DEPTH}") from None

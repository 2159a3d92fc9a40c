"""Reading kernel messages without decoding all of them.

A gateway relays most messages untouched. These helpers find the parts of a
ZMQ kernel message and decode only what routing needs (the header, the parent
header), leaving dates as the strings the kernel sent.
"""

from __future__ import annotations

import json
from typing import Any

DELIMITER = b"<IDS|MSG>"
# Parts after the delimiter: signature, header, parent_header, metadata, content, buffers...
SIGNATURE, HEADER, PARENT, METADATA, CONTENT = range(5)


def message_parts(msg_list: list[Any]) -> list[bytes]:
    """The parts after the identities and the delimiter (signature first)."""
    for i, part in enumerate(msg_list):
        if bytes(part) == DELIMITER:
            return [bytes(p) for p in msg_list[i + 1 :]]
    raise ValueError("not a kernel message: no delimiter")


def header_of(parts: list[bytes]) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(parts[HEADER])
    return header


def parent_of(parts: list[bytes]) -> dict[str, Any]:
    parent: dict[str, Any] = json.loads(parts[PARENT])
    return parent


def legacy_json(parts: list[bytes], header: dict[str, Any], channel: str) -> bytes:
    """The legacy websocket JSON text of a message without buffers, spliced from its parts.

    Equivalent to deserializing and re-serializing, without decoding the content.
    """
    return b"".join((
        b'{"header":', parts[HEADER],
        b',"msg_id":', json.dumps(header.get("msg_id", "")).encode(),
        b',"msg_type":', json.dumps(header.get("msg_type", "")).encode(),
        b',"parent_header":', parts[PARENT],
        b',"metadata":', parts[METADATA],
        b',"content":', parts[CONTENT],
        b',"buffers":[],"channel":', json.dumps(channel).encode(), b"}",
    ))

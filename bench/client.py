"""A minimal Jupyter kernel-protocol client for the benchmarks.

Two transports with one interface (``send`` / ``recv`` / ``close``):

* ``WsChannel``: a gateway's ``/api/kernels/<id>/channels`` websocket, in the
  legacy JSON wire format or the ``v1.kernel.websocket.jupyter.org`` binary one.
* ``ZmqChannel``: a kernel's own shell + iopub ZMQ sockets (no gateway), the
  baseline.

On top of them, ``kernel_info`` and ``execute`` implement the request/reply
exchanges the benchmarks time. Sockets set TCP_NODELAY so that the client's
Nagle delay is not what gets measured.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
EXECUTE_DEFAULTS = {
    "silent": False,
    "store_history": False,
    "user_expressions": {},
    "allow_stdin": False,
    "stop_on_error": True,
}


@dataclass
class Message:
    """The parts of a received kernel message the benchmarks look at."""

    channel: str
    msg_type: str
    parent_id: str | None
    content: dict[str, Any]


class KernelChannel(Protocol):
    """What ``kernel_info`` and ``execute`` need from a transport."""

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str: ...

    def recv(self, timeout: float) -> Message: ...

    def close(self) -> None: ...


class ChannelClosed(ConnectionError):
    """The kernel connection closed while a reply was awaited."""


def new_header(msg_type: str, session: str) -> dict[str, Any]:
    return {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "session": session,
        "username": "bench",
        "version": "5.3",
        "date": "2026-01-01T00:00:00.000000Z",
    }


# --- wire formats -----------------------------------------------------------


def encode_v1(channel: str, parts: list[bytes]) -> bytes:
    """A v1 frame: u64 count, u64 offsets (LE), then channel name and message parts."""
    chunks = [channel.encode(), *parts]
    offsets = [8 * (len(chunks) + 2)]
    for chunk in chunks:
        offsets.append(offsets[-1] + len(chunk))
    table = struct.pack(f"<{len(offsets) + 1}Q", len(offsets), *offsets)
    return table + b"".join(chunks)


def decode_v1(frame: bytes) -> tuple[str, list[bytes]]:
    (count,) = struct.unpack_from("<Q", frame)
    offsets = struct.unpack_from(f"<{count}Q", frame, 8)
    chunks = [frame[a:b] for a, b in itertools.pairwise(offsets)]
    return chunks[0].decode(), chunks[1:]


def decode_legacy_binary(frame: bytes) -> dict[str, Any]:
    """The legacy format's binary frame (a message with buffers): JSON is the first part."""
    (count,) = struct.unpack_from("!I", frame)
    offsets = struct.unpack_from(f"!{count}I", frame, 4)
    end = offsets[1] if count > 1 else len(frame)
    return json.loads(frame[offsets[0] : end])


def parse_v1(frame: bytes) -> Message:
    channel, parts = decode_v1(frame)
    header, parent = json.loads(parts[0]), json.loads(parts[1])
    return Message(channel, header["msg_type"], parent.get("msg_id"), json.loads(parts[3]))


def parse_legacy(frame: str | bytes) -> Message:
    msg = json.loads(frame) if isinstance(frame, str) else decode_legacy_binary(frame)
    return Message(
        msg.get("channel", ""),
        msg["header"]["msg_type"],
        (msg.get("parent_header") or {}).get("msg_id"),
        msg.get("content") or {},
    )


# --- transports -------------------------------------------------------------


class WsChannel:
    """A gateway kernel websocket."""

    def __init__(self, url: str, headers: dict[str, str], *, v1: bool, timeout: float = 60):
        import websocket

        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            f"{url}?session_id={self.session}",
            header=[f"{k}: {v}" for k, v in headers.items()],
            subprotocols=[V1_PROTOCOL] if v1 else None,
            sockopt=NODELAY,
            timeout=timeout,
            enable_multithread=False,
        )
        self.v1 = v1 and self.ws.getsubprotocol() == V1_PROTOCOL

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        header = new_header(msg_type, self.session)
        if self.v1:
            parts = [json.dumps(p).encode() for p in (header, {}, {}, content)]
            self.ws.send_binary(encode_v1(channel, parts))
        else:
            self.ws.send(
                json.dumps(
                    {
                        "header": header,
                        "parent_header": {},
                        "metadata": {},
                        "content": content,
                        "channel": channel,
                        "buffers": [],
                    }
                )
            )
        return header["msg_id"]

    def recv(self, timeout: float) -> Message:
        import websocket

        self.ws.settimeout(max(timeout, 0.001))
        try:
            frame = self.ws.recv()
        except websocket.WebSocketConnectionClosedException as e:
            raise ChannelClosed(str(e)) from e
        except websocket.WebSocketTimeoutException as e:
            raise TimeoutError("no message from the websocket") from e
        if not frame:
            raise ChannelClosed("websocket closed")
        return parse_v1(frame) if self.v1 else parse_legacy(frame)

    def close(self) -> None:
        try:
            self.ws.close(timeout=2)
        except Exception:  # closing a broken socket is best effort
            self.ws.shutdown()


class ZmqChannel:
    """A kernel's shell + iopub sockets, from a jupyter_client KernelManager."""

    def __init__(self, km: Any):
        import zmq

        self._zmq = zmq
        self.session = km.session
        self.shell = km.connect_shell()
        self.iopub = km.connect_iopub()
        self.poller = zmq.Poller()
        self.poller.register(self.shell, zmq.POLLIN)
        self.poller.register(self.iopub, zmq.POLLIN)

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        assert channel == "shell", channel
        msg = self.session.msg(msg_type, content)
        self.session.send(self.shell, msg)
        return msg["header"]["msg_id"]

    def recv(self, timeout: float) -> Message:
        ready = dict(self.poller.poll(max(int(timeout * 1000), 1)))
        for sock, name in ((self.iopub, "iopub"), (self.shell, "shell")):
            if sock in ready:
                _, msg = self.session.recv(sock, mode=self._zmq.NOBLOCK)
                if msg is not None:
                    parent = msg.get("parent_header") or {}
                    return Message(name, msg["msg_type"], parent.get("msg_id"), msg["content"])
        raise TimeoutError("no message from the kernel")

    def close(self) -> None:
        self.shell.close(linger=0)
        self.iopub.close(linger=0)


# --- exchanges --------------------------------------------------------------


def kernel_info(ch: KernelChannel, timeout: float = 60) -> dict[str, Any]:
    """Send kernel_info_request; return the reply's content."""
    msg_id = ch.send("shell", "kernel_info_request", {})
    deadline = time.monotonic() + timeout
    while True:
        msg = ch.recv(deadline - time.monotonic())
        if msg.msg_type == "kernel_info_reply" and msg.parent_id == msg_id:
            return msg.content
        if time.monotonic() > deadline:
            raise TimeoutError("no kernel_info_reply")


def wait_iopub(ch: KernelChannel, timeout: float = 30) -> None:
    """Send kernel_info requests until iopub delivers (ZMQ subscriptions take a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg_id = ch.send("shell", "kernel_info_request", {})
        end = min(deadline, time.monotonic() + 0.5)
        while time.monotonic() < end:
            try:
                msg = ch.recv(end - time.monotonic())
            except TimeoutError:
                break
            if msg.channel == "iopub" and msg.parent_id == msg_id:
                drain(ch)
                return
    raise TimeoutError("iopub never delivered a message")


def drain(ch: KernelChannel, quiet: float = 0.2) -> int:
    """Read and drop messages until none arrives for ``quiet`` seconds."""
    count = 0
    while True:
        try:
            ch.recv(quiet)
        except TimeoutError:
            return count
        count += 1


@dataclass
class ExecResult:
    """What came back for one execute_request."""

    seconds: float
    status: str = ""
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    displays: int = 0
    results: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def stdout_text(self) -> str:
        return "".join(self.stdout)

    @property
    def stdout_lines(self) -> int:
        return sum(chunk.count("\n") for chunk in self.stdout)


def execute(ch: KernelChannel, code: str, timeout: float = 60) -> ExecResult:
    """Run ``code``; return once both its execute_reply and its status idle arrived."""
    start = time.perf_counter()
    msg_id = ch.send("shell", "execute_request", {"code": code, **EXECUTE_DEFAULTS})
    deadline = time.monotonic() + timeout
    res = ExecResult(0.0)
    replied = idle = False
    while not (replied and idle):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no reply to {code[:40]!r} within {timeout}s")
        msg = ch.recv(left)
        if msg.parent_id != msg_id:
            continue
        kind, content = msg.msg_type, msg.content
        if kind == "stream":
            getattr(res, content["name"]).append(content["text"])
        elif kind == "display_data":
            res.displays += 1
        elif kind == "execute_result":
            res.results.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            res.error = f"{content.get('ename')}: {content.get('evalue')}"
        elif kind == "execute_reply":
            replied, res.status = True, content.get("status", "")
        elif kind == "status" and content.get("execution_state") == "idle":
            idle = True
    res.seconds = time.perf_counter() - start
    return res


# --- REST -------------------------------------------------------------------


class HttpError(RuntimeError):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


def http_json(
    method: str, url: str, headers: dict[str, str], body: Any = None, timeout: float = 60
) -> Any:
    """One JSON request; raises HttpError on a non-2xx status."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raise HttpError(e.code, e.read().decode(errors="replace")) from e
    return json.loads(raw) if raw else None

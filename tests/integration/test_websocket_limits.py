"""The kernel websocket under attack, against real gateways (issue 10, items 5, 8, 12, 13).

- a v1 frame whose offset count claims 2**63 closes that socket only; the
  gateway and the kernel keep working (it used to freeze the event loop);
- a client that never reads gets its IOPub output dropped past
  ``max_write_buffer``: the gateway's memory stays bounded and the client is told;
- websockets per user and per kernel are bounded, refused with a JSON 403;
- revoking an API token closes the websockets opened with it;
- shutdown and restart requests sent on the control channel are audited.

Callers use per-user API tokens from ``kernelyard token issue``; kernels are local.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import websocket

from tests.gateway import Gateway, KernelSocket, start_gateway, token_cli, wait_for_audit

V1 = "v1.kernel.websocket.jupyter.org"
MiB = 1024 * 1024
CHAIN = ("--KernelyardApp.authenticators=api-token", "--KernelyardApp.authenticators=token")


def open_ws(gw: Gateway, kernel_id: str, *, v1: bool = False,
            session: str = "") -> websocket.WebSocket:
    query = f"?session_id={session}" if session else ""
    return websocket.create_connection(
        f"{gw.ws_url.rstrip('/')}/api/kernels/{kernel_id}/channels{query}",
        header=[f"Authorization: token {gw.token}"],
        subprotocols=[V1] if v1 else None, timeout=60)


def wait_closed(ws: websocket.WebSocket, timeout: float = 30) -> tuple[int, str]:
    """Read frames until the server's close frame; its (code, reason)."""
    deadline = time.monotonic() + timeout
    while True:
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else 1005
            return code, data[2:].decode(errors="replace")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@dataclasses.dataclass
class Setup:
    gw: Gateway  # the shared token (a service, admin)
    alice: Gateway
    alice_token: str
    data: Path
    audit: Path


@pytest.fixture(scope="module")
def s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("ws-limits")
    audit = tmp / "audit.log"
    gw = start_gateway(tmp, *CHAIN, f"--KernelyardApp.audit_log={audit}",
                       "--GatewayChannelsConnection.credential_check_interval=1")
    token = token_cli(tmp / "data", "issue", "alice")
    yield Setup(gw, gw.as_caller(token), token, tmp / "data", audit)
    gw.stop()


@pytest.fixture
def kernel(s: Setup) -> Iterator[str]:
    kid = s.alice.start_kernel()
    yield kid
    s.gw.request("DELETE", f"/api/kernels/{kid}")


# --- item 5: a v1 frame that claims 2**63 offsets -------------------------------------


def test_v1_frame_claiming_2_63_offsets_closes_only_its_socket(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path)
    try:
        kid = gw.start_kernel()
        other = gw.connect(kid)
        # A guard for this machine: a gateway that builds the 2**63-long list dies of
        # MemoryError at +2 GiB instead of taking every byte of RAM.
        _soft, hard = resource.prlimit(gw.proc.pid, resource.RLIMIT_AS)
        vm = int(next(line.split()[1] for line in
                      Path(f"/proc/{gw.proc.pid}/status").read_text().splitlines()
                      if line.startswith("VmSize:"))) * 1024
        resource.prlimit(gw.proc.pid, resource.RLIMIT_AS, (vm + 2048 * MiB, hard))
        ws = open_ws(gw, kid, v1=True)
        assert ws.subprotocol == V1
        ws.send_binary(struct.pack("<Q", 2**63) + struct.pack("<Q", 16))
        code, reason = wait_closed(ws)
        assert code == 1007 and "offset count" in reason
        assert gw.request("GET", "/api", timeout=10)[0] == 200
        assert other.execute("print('still here')")["stdout"] == "still here\n"
        fresh = gw.connect(kid, v1=True)
        assert fresh.execute("print(6*7)")["stdout"] == "42\n"
        fresh.close()
        other.close()
        assert gw.log_shows("offset count")
    finally:
        gw.stop()


@pytest.mark.parametrize("frame", [
    "not json",
    json.dumps({"header": {"msg_type": "execute_request"}, "channel": "iopub"}),
    json.dumps({"header": "x", "channel": "shell"}),
    "[" * 100_000,
    struct.pack(">I", 2**31 - 1) + b"\0" * 12,  # a legacy binary frame claiming 2**31 parts
    # A protocol-4 header makes jupyter_client adapt the message, which needs content fields.
    json.dumps({"header": {"msg_type": "complete_request", "msg_id": "m", "version": "4.1",
                           "session": "s", "username": "u"},
                "parent_header": {}, "metadata": {}, "content": {}, "channel": "shell"}),
], ids=["not-json", "iopub", "header-not-object", "deep", "legacy-binary-count",
        "unadaptable-v4-content"])
def test_a_bad_legacy_frame_closes_only_its_socket(s: Setup, kernel: str,
                                                   frame: str | bytes) -> None:
    ws = open_ws(s.alice, kernel)
    if isinstance(frame, bytes):
        ws.send_binary(frame)
    else:
        ws.send(frame)
    code, reason = wait_closed(ws)
    assert code == 1007 and reason.startswith("refused a frame")
    ks = s.alice.connect(kernel)
    try:
        assert ks.execute("print(1)")["stdout"] == "1\n"
    finally:
        ks.close()


# --- item 8: back-pressure and connection limits ---------------------------------------


class RawClient:
    """A websocket client on a bare socket, so the test decides when (if ever) it reads."""

    def __init__(self, gw: Gateway, kernel_id: str):
        url = urlparse(gw.url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=60)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.sendall(
            f"GET /api/kernels/{kernel_id}/channels HTTP/1.1\r\nHost: {url.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: token {gw.token}\r\n\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(1)
        assert self.buf.split(b"\r\n")[0].split()[1] == b"101", self.buf
        self.buf = b""
        self.session = uuid.uuid4().hex

    def send_execute(self, code: str, user_expressions: dict[str, str] | None = None) -> str:
        msg_id = uuid.uuid4().hex
        msg = {"header": {"msg_id": msg_id, "msg_type": "execute_request",
                          "session": self.session, "username": "t", "version": "5.3"},
               "parent_header": {}, "metadata": {}, "channel": "shell",
               "content": {"code": code, "silent": False, "store_history": False,
                           "user_expressions": user_expressions or {},
                           "allow_stdin": False}}
        payload = json.dumps(msg).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        header = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big")
        self.sock.sendall(header + mask + masked)
        return msg_id

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def recv(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload); servers never mask."""
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(self._take(2), "big")
        elif length == 127:
            length = int.from_bytes(self._take(8), "big")
        return first & 0x0F, self._take(length)

    def close(self) -> None:
        self.sock.close()


PRINT_200_MB = """
import sys
chunk = "x" * (1 << 20)
for _ in range(200):
    sys.stdout.write(chunk)
    sys.stdout.flush()
open({marker!r}, "w").write("done")
"""


def test_a_client_that_never_reads_costs_the_gateway_bounded_memory(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path)
    try:
        kid = gw.start_kernel()
        client = RawClient(gw, kid)
        marker = tmp_path / f"printed-{uuid.uuid4().hex}"
        time.sleep(1)  # the connection's nudge and kernel_info settle
        before = rss_bytes(gw.proc.pid)
        msg_id = client.send_execute(PRINT_200_MB.format(marker=str(marker)))
        deadline = time.monotonic() + 600
        peak = before
        while not marker.exists():
            assert time.monotonic() < deadline, "the kernel did not finish printing"
            peak = max(peak, rss_bytes(gw.proc.pid))
            time.sleep(0.2)
        time.sleep(2)  # the last of the output reaches the gateway
        peak = max(peak, rss_bytes(gw.proc.pid))
        print(f"gateway RSS: {before // MiB} MiB before, peak {peak // MiB} MiB while 200 MB "
              "were printed to a client that never read")
        assert peak - before < 150 * MiB, f"gateway RSS grew {(peak - before) // MiB} MiB"
        # The client reads at last: some output, the notice, then the reply and idle status.
        seen: dict[str, Any] = {"notice": "", "reply": None, "idle": False, "stdout": 0}
        while not (seen["reply"] and seen["idle"]):
            opcode, payload = client.recv()
            assert opcode == 1, (opcode, payload[:200])
            msg = json.loads(payload)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["header"]["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stderr":
                seen["notice"] += content["text"]
            elif kind == "stream":
                seen["stdout"] += len(content["text"])
            elif kind == "execute_reply":
                seen["reply"] = content
            elif kind == "status" and content["execution_state"] == "idle":
                seen["idle"] = True
        client.close()
        assert "GatewayChannelsConnection.max_write_buffer" in seen["notice"]
        assert seen["reply"]["status"] == "ok"
        assert 0 < seen["stdout"] < 200 * MiB
        assert gw.log_shows("dropping output for a websocket")
        ks = gw.connect(kid)
        assert ks.execute("print('after')")["stdout"] == "after\n"
        ks.close()
    finally:
        gw.stop()


def test_a_client_far_behind_on_replies_is_disconnected(tmp_path: Path) -> None:
    """Replies are never dropped; past twice max_write_buffer the socket is closed."""
    gw = start_gateway(tmp_path, f"--GatewayChannelsConnection.max_write_buffer={MiB}")
    try:
        kid = gw.start_kernel()
        client = RawClient(gw, kid)
        for _ in range(40):  # each execute_reply carries a 1 MB user expression
            client.send_execute("", {"big": "'a' * (1 << 20)"})
        assert gw.log_shows("MiB of output unread", timeout=120)
        try:
            while True:
                opcode, payload = client.recv()
                if opcode == 8:
                    code = int.from_bytes(payload[:2], "big")
                    assert code == 1008 and b"max_write_buffer" in payload
                    break
        except (ConnectionError, OSError):
            pass  # tornado drops a socket that does not answer its close within 5 s
        client.close()
        assert gw.request("GET", "/api", timeout=10)[0] == 200
        ks = gw.connect(kid)
        assert ks.execute("print('fine')")["stdout"] == "fine\n"
        ks.close()
    finally:
        gw.stop()


def _refused(gw: Gateway, kernel_id: str) -> tuple[int, dict[str, Any]]:
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        open_ws(gw, kernel_id)
    return err.value.status_code, json.loads(err.value.resp_body)


def test_websockets_per_kernel_and_per_user_are_limited(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, *CHAIN,
                       "--GatewayChannelsConnection.max_connections_per_kernel=2",
                       "--GatewayChannelsConnection.max_connections_per_user=3")
    try:
        alice = gw.as_caller(token_cli(tmp_path / "data", "issue", "alice"))
        bob = gw.as_caller(token_cli(tmp_path / "data", "issue", "bob"))
        a, b = alice.start_kernel(), alice.start_kernel()
        held = [open_ws(alice, a, session="s-1"), open_ws(alice, a)]
        status, body = _refused(alice, a)
        assert status == 403 and "max_connections_per_kernel" in body["message"]
        # A reconnect with the same session id replaces its old socket: not refused.
        held.append(open_ws(alice, a, session="s-1"))
        wait_closed(held.pop(0))  # jupyter_server closes the stale one (no code: 1005)
        held.append(open_ws(alice, b))
        status, body = _refused(alice, b)
        assert status == 403 and "max_connections_per_user" in body["message"]
        bobs = bob.start_kernel()
        held.append(open_ws(bob, bobs))  # bob has his own count
        held.pop(0).close()
        deadline = time.monotonic() + 20
        while True:  # the gateway learns of the close asynchronously
            try:
                held.append(open_ws(alice, b))
                break
            except websocket.WebSocketBadStatusException:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        for ws in held:
            ws.close()
    finally:
        gw.stop()


# --- item 12: revoking a token closes its websockets ------------------------------------


def test_revoking_a_token_closes_its_websockets(s: Setup) -> None:
    alice = s.gw.as_caller(token_cli(s.data, "issue", "alice"))
    kid = alice.start_kernel()
    try:
        ks = alice.connect(kid)
        assert ks.execute("print(1)")["stdout"] == "1\n"
        token_id = alice.token.split("_")[1]
        assert token_id in token_cli(s.data, "revoke", token_id)
        code, reason = wait_closed(ks.ws)
        assert code == 1008 and "revoked" in reason
        # Sent on the socket after the gateway closed it: must not run.
        marker = s.data.parent / f"ran-{uuid.uuid4().hex}"
        late = KernelSocket(ks.ws, v1=False, session_id=ks.session_id)
        try:
            late.submit(f"open({str(marker)!r}, 'w').write('ran')")
        except (websocket.WebSocketException, OSError):
            pass  # the client library may refuse to send on a closing socket
        admin = s.gw.connect(kid)
        try:
            out = admin.execute(f"import os; print(os.path.exists({str(marker)!r}))")
        finally:
            admin.close()
        assert out["stdout"] == "False\n"
        assert s.gw.log_shows("credentials were revoked or expired")
        assert alice.request("GET", "/api")[0] == 401
    finally:
        s.gw.request("DELETE", f"/api/kernels/{kid}")


# --- item 13: shutdown and restart over the websocket are audited -----------------------


@pytest.mark.parametrize("restart", [True, False], ids=["restart", "shutdown"])
def test_shutdown_request_over_the_websocket_is_audited(s: Setup, kernel: str,
                                                        restart: bool) -> None:
    ks = s.alice.connect(kernel)
    try:
        ks.send("control", "shutdown_request", {"restart": restart})
        line = wait_for_audit(s.audit, action="restart" if restart else "shutdown",
                              kernel_id=kernel, transport="websocket")
    finally:
        ks.close()
    assert line["who"] == "alice" and line["via"] == "api-token" and line["owner"] == "alice"
    assert line["result"] == "ok" and line["kernelspec"] == "python3"

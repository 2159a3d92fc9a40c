"""Talking to the run-as helper (``python -m kernelyard.runas``) of the local provisioner.

A launch sends one JSON request over a socket on the helper's stdin and reads its
one-line answer (``exchange``); a signal or remove request runs the helper once
through the command layer (``ask_helper``). Requests hold the kernel's key: they
never go on a command line.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from typing import Any

from . import command

HELPER_ENV_NAMES = ("LANG", "LC_ALL")
MAX_REPLY = 65536


def helper_env() -> dict[str, str]:
    """The helper's whole environment: PATH and the locale."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env.update({k: os.environ[k] for k in HELPER_ENV_NAMES if k in os.environ})
    return env


async def exchange(sock: socket.socket, request: bytes, timeout: float) -> dict[str, Any]:
    """Send the request; read the helper's one-line answer ({} if it said nothing)."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)

    async def talk() -> bytes:
        await loop.sock_sendall(sock, request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while b"\n" not in data and len(data) < MAX_REPLY:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                break
            data += chunk
        return data

    try:
        data = await asyncio.wait_for(talk(), timeout)
    except (OSError, asyncio.TimeoutError):
        data = b""
    return _first_line_json(data)


async def ask_helper(argv: list[str], request: dict[str, Any],
                     timeout: float) -> dict[str, Any]:
    """Run the helper once with ``request`` on its stdin; its answer, or {"error": ...}."""
    try:
        result = await command.run(argv, env=helper_env(), cwd="/", timeout=timeout,
                                   stdin=json.dumps(request).encode() + b"\n",
                                   max_output=MAX_REPLY)
    except command.CommandTimeout:
        return {"error": "the run-as helper did not answer"}
    reply = _first_line_json(result.stdout)
    if not reply:
        return {"error": result.stderr.decode(errors="replace").strip()[-500:] or "no answer"}
    return reply


def _first_line_json(data: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(data.split(b"\n", 1)[0] or b"{}")
    except ValueError:
        reply = {}
    return reply if isinstance(reply, dict) else {}

"""The gateway's side of the launcher protocol (docs/launcher-protocol.md): the launcher's
command line, the connection info from its callback, and its signed control endpoint."""

from __future__ import annotations

import json
from typing import Any, cast

from jupyter_client.connect import KernelConnectionInfo
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from ..errors import KernelStartFailed
from ..launcher import (
    CONTROL_PATH,
    KERNEL_PORT_NAMES,
    LAUNCHER_PORT,
    SIGNATURE_HEADER,
    control_request_body,
    sign,
)

LAUNCHER_NAME = "kernelyard-launcher"
CONTROL_TIMEOUT = 10.0


def launcher_args(argv: list[str]) -> list[str]:
    """The launcher's arguments for a kernelspec argv, to follow the backend's own options.

    An argv that starts with ``kernelyard-launcher`` carries launcher options of its
    own (``kernelyard-launcher --spark-session lazy -- python -m ...``); any other
    argv is the kernel command itself.
    """
    if argv and argv[0] == LAUNCHER_NAME:
        return argv[1:]
    return ["--", *argv]


def connection_info(report: dict[str, Any], key: bytes, kernel_name: str,
                    curve: dict[str, str]) -> KernelConnectionInfo:
    """The kernel's connection info from the launcher's callback ``report``."""
    info: dict[str, Any] = {name: report[name] for name in KERNEL_PORT_NAMES}
    info.update(ip=report["ip"], key=key, transport="tcp", signature_scheme="hmac-sha256",
                kernel_name=kernel_name, **curve)
    return cast(KernelConnectionInfo, info)


def launcher_state(report: dict[str, Any]) -> dict[str, Any]:
    """What the backend state keeps of the callback (where the launcher and kernel are)."""
    return {"hostname": report["hostname"], "ip": report["ip"], "pid": report["pid"],
            "pgid": report["pgid"], "launcher_port": report[LAUNCHER_PORT]}


async def control(state: dict[str, Any], key: bytes, kernel_id: str, action: str,
                  **fields: Any) -> dict[str, Any]:
    """A signed request to the control endpoint of the launcher ``state`` names."""
    ip, port = state.get("ip"), state.get("launcher_port")
    if not ip or not port:
        raise KernelStartFailed(f"kernel {kernel_id} has no launcher to control")
    body = control_request_body(action, **fields)
    try:
        response = await AsyncHTTPClient().fetch(
            f"http://{ip}:{port}{CONTROL_PATH}", method="POST", body=body,
            headers={SIGNATURE_HEADER: sign(key, body),
                     "Content-Type": "application/json"},
            request_timeout=CONTROL_TIMEOUT,
        )
    except HTTPClientError as e:
        raise KernelStartFailed(f"launcher of kernel {kernel_id} refused {action}: {e}") from None
    except OSError as e:
        raise KernelStartFailed(f"launcher of kernel {kernel_id} unreachable: {e}") from None
    return cast(dict[str, Any], json.loads(response.body or b"{}"))

"""One-time callback tokens: how a launcher proves it is the kernel we started.

The gateway mints a token per kernel start and hands it to the launcher over
the backend's protected channel. The launcher POSTs its ports with the token;
the token works once and expires. Nothing here logs a token.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from traitlets import Float, Unicode
from traitlets.config import SingletonConfigurable

from .errors import Forbidden, InvalidRequest

CALLBACK_PATH = "kernelyard/callback"


@dataclass
class _Expected:
    token: str
    expires: float
    future: asyncio.Future[dict[str, Any]]


class CallbackRegistry(SingletonConfigurable):
    """The kernel starts waiting for their launcher's callback."""

    callback_url = Unicode(
        "",
        config=True,
        help="The base URL launchers POST their ports to, e.g. 'http://10.0.0.1:8888/'. "
        "Default: the gateway's own URL. Set it when kernels run where that address is "
        "not reachable (other hosts, containers, network namespaces).",
    )
    token_ttl = Float(
        900.0,
        config=True,
        help="Seconds a callback token stays valid (it is also revoked once used).",
    )

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._expected: dict[str, _Expected] = {}
        self.default_url = ""

    def url_for(self, kernel_id: str) -> str:
        base = self.callback_url or self.default_url
        if not base:
            raise Forbidden("no callback URL: set CallbackRegistry.callback_url")
        return f"{base.rstrip('/')}/{CALLBACK_PATH}/{kernel_id}"

    def expect(self, kernel_id: str) -> tuple[str, asyncio.Future[dict[str, Any]]]:
        """Mint a token for ``kernel_id``; the future resolves with the launcher's report."""
        token = secrets.token_urlsafe(32)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._expected[kernel_id] = _Expected(token, time.monotonic() + self.token_ttl, future)
        return token, future

    def forget(self, kernel_id: str) -> None:
        """Revoke the token of a start that ended (or failed)."""
        expected = self._expected.pop(kernel_id, None)
        if expected and not expected.future.done():
            expected.future.cancel()

    def check_token(self, kernel_id: str, token: str) -> _Expected:
        """The start waiting for this callback, if ``token`` is its live token; else
        Forbidden. Leaves the token valid: the endpoint checks it before the body."""
        expected = self._expected.get(kernel_id)
        if (
            expected is None
            or not token
            or not hmac.compare_digest(token.encode(), expected.token.encode())
        ):
            raise Forbidden("invalid callback token")
        if time.monotonic() > expected.expires:
            self.forget(kernel_id)
            raise Forbidden("invalid callback token")
        return expected

    def fulfil(self, kernel_id: str, token: str, payload: Any) -> None:
        """Accept a callback. Raises Forbidden (token) or InvalidRequest (payload)."""
        expected = self.check_token(kernel_id, token)
        report = check_report(kernel_id, payload)
        del self._expected[kernel_id]
        if not expected.future.done():
            expected.future.set_result(report)


def check_report(kernel_id: str, payload: Any) -> dict[str, Any]:
    """The launcher's report, if it has exactly the declared fields with their types."""
    from .launcher import CALLBACK_FIELDS, CALLBACK_PORT_NAMES

    if not isinstance(payload, dict):
        raise InvalidRequest("the callback body must be a JSON object")
    missing = set(CALLBACK_FIELDS) - set(payload)
    extra = set(payload) - set(CALLBACK_FIELDS)
    if missing or extra:
        raise InvalidRequest(
            f"callback fields: missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
    for name, kind in CALLBACK_FIELDS.items():
        value = payload[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InvalidRequest(f"callback field {name!r} must be {kind.__name__}")
    if payload["kernel_id"] != kernel_id:
        raise InvalidRequest("callback kernel_id does not match the URL")
    for name in CALLBACK_PORT_NAMES:
        if not 0 < payload[name] < 65536:
            raise InvalidRequest(f"callback field {name!r} is not a port")
    return dict(payload)

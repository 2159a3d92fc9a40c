"""The handler base every kernelyard handler mixes in: ``GatewayHandlerMixin``.

Authentication (401 without a user), JSON errors (mapped in
``kernelyard.api.errors``, the one place), no cookies (hence no XSRF check), a
request body that is not UTF-8 JSON refused with 400 (``get_json_body``), and
each request's audit line written when it ends (``kernelyard.audit``): always
for kernel operations, and for any other request that was refused. Every
handler streams its body (``_stream_request_body``), so authentication and the
``KernelyardApp.max_body_size`` check (413) happen before a byte of it is read;
a request refused then ends its connection (``Connection: close``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from tornado import web

from .. import errors
from ..audit import AuditEvent, result_of, should_write
from ..auth.provider import PrincipalUser, add_auth_headers
from .errors import error_body, public_error, status_and_message


class GatewayHandlerMixin:
    """Authentication with 401, JSON errors, no cookies (hence no XSRF check), audit lines.

    ``audit_actions`` maps an HTTP method to the audit action of the request
    (``kernelyard.audit.ACTIONS``; default ``api``); handlers fill in
    ``audit_event`` as they learn the kernel, its kernelspec and owner.
    """

    audit_actions: ClassVar[Mapping[str, str]] = MappingProxyType({})
    # tornado reads a body before prepare() unless the handler streams it: streamed,
    # prepare() authenticates and checks the declared size before a byte is read.
    _stream_request_body = True

    def audit_action(self) -> str:
        handler: Any = self
        return self.audit_actions.get(handler.request.method, "api")

    @property
    def audit_event(self) -> AuditEvent:
        """This request's audit event (created on first use)."""
        handler: Any = self
        event: AuditEvent | None = getattr(handler, "_audit_event", None)
        if event is None:
            event = AuditEvent(self.audit_action(), client=handler.request.remote_ip or "")
            handler._audit_event = event
        return event

    async def prepare(self, **kwargs: Any) -> Awaitable[None] | None:
        handler: Any = self
        if handler.identity_provider.get_user(handler) is None:
            raise web.HTTPError(401, "authentication required: send 'Authorization: token ...'")
        result = await super().prepare(**kwargs)  # type: ignore[misc]  # authenticates
        self.limit_body()
        return result  # type: ignore[no-any-return]

    def limit_body(self) -> None:
        """413 for a declared body above ``KernelyardApp.max_body_size``, before it is
        read; a chunked body is cut by the connection at the same size."""
        handler: Any = self
        app = handler.settings.get("kernelyard_app")
        limit = getattr(app, "max_body_size", None)
        if not limit:
            return
        if content_length(handler.request.headers) > limit:
            raise web.HTTPError(413, f"a request body is at most {limit} bytes "
                                "(KernelyardApp.max_body_size)")
        handler.request.connection.set_max_body_size(limit)

    def data_received(self, chunk: bytes) -> None:
        """A piece of the (streamed) body, kept in ``request.body``."""
        handler: Any = self
        body = handler.request.body
        if not isinstance(body, bytearray):
            body = handler.request.body = bytearray(body)
        body.extend(chunk)

    def get_json_body(self) -> Any:
        """The request body as JSON (``None`` if empty); ``InvalidRequest`` if it is not
        UTF-8 JSON. jupyter_server's version lets a non-UTF-8 body escape as a 500, and
        logs the body (which may carry env values)."""
        handler: Any = self
        body = handler.request.body
        if not body:
            return None
        try:
            return json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise errors.InvalidRequest("the request body is not UTF-8") from None
        except (ValueError, RecursionError):
            raise errors.InvalidRequest("the request body is not valid JSON") from None

    def check_xsrf_cookie(self) -> None:
        """No cookie ever authenticates a request here, so there is nothing to forge."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        handler: Any = self
        if _body_unread(handler.request):
            _drop_body_and_close(handler)
        exc = kwargs.get("exc_info", (None, None, None))[1]
        status, message = status_and_message(exc, status_code)
        handler._audit_reason = message
        handler.set_status(status)
        add_auth_headers(handler, status)
        handler.set_header("Content-Type", "application/json")
        handler.finish(error_body(status, message))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        handler: Any = self
        if public_error(value) is None and not isinstance(value, web.HTTPError):
            super().log_exception(typ, value, tb)  # type: ignore[misc]
            return
        status, message = status_and_message(value, 500)
        log = handler.log.error if status >= 500 else handler.log.warning
        log("%s %s -> %d: %s", handler.request.method, handler.request.path, status, message)

    def on_finish(self) -> None:
        self._write_audit()
        super().on_finish()  # type: ignore[misc]

    def _write_audit(self) -> None:
        handler: Any = self
        app = handler.settings.get("kernelyard_app")
        audit = getattr(app, "audit", None)
        if audit is None or not audit.enabled:
            return
        event, status = self.audit_event, handler.get_status()
        result = result_of(status, event.ownership_denied)
        if not should_write(event.action, result):
            return
        user = getattr(handler, "_current_user", None)
        if isinstance(user, PrincipalUser):
            event.who, event.via = user.principal.name, user.principal.via
        audit.write(event, result, status, getattr(handler, "_audit_reason", ""))


def content_length(headers: Mapping[str, str]) -> int:
    """The declared body size (0 if none; tornado refuses a malformed one)."""
    try:
        return int(headers.get("Content-Length", "0"))
    except ValueError:
        return 0


# Larger than any body: a refused request's body is dropped unread, not refused again.
_UNLIMITED = 1 << 62


def _body_unread(request: Any) -> bool:
    """Whether the request was refused before its body was read (in ``prepare``)."""
    future = getattr(request, "_body_future", None)  # tornado's, for a streamed body
    return future is not None and not future.done()


def _drop_body_and_close(handler: Any) -> None:
    """A response sent before the request's body was read ends the connection (tornado
    closes it: the only way not to read the body). Say so in ``Connection: close``, so a
    client does not send its next request on it, and let tornado drop the rest of the
    body instead of answering a second time (its own 400 for a body above the limit)."""
    handler.set_header("Connection", "close")
    setter = getattr(handler.request.connection, "set_max_body_size", None)
    if setter is not None:
        setter(_UNLIMITED)

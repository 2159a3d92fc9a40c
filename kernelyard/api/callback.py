"""The kernel callback endpoint: ``POST /kernelyard/callback/{id}``, the launcher's report.

A launcher started by a remote provisioner posts its kernel's ports here, once,
with the one-time token of that start (``kernelyard.callbacks.CallbackRegistry``
checks it and hands the report to the waiting start).
"""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..callbacks import CallbackRegistry
from .base import GatewayHandlerMixin, content_length

# A launcher's report is < 1 KiB; the launcher's control endpoint has the same limit.
MAX_CALLBACK_BODY = 64 * 1024


@web.stream_request_body
class CallbackHandler(GatewayHandlerMixin, APIHandler):
    """``POST /kernelyard/callback/{id}``: a launcher reports its ports.

    Authenticated by the one-time token of that kernel start, not by a user. The
    endpoint needs no login, so the body is read only once its size and the token
    passed (``prepare``): a body over ``MAX_CALLBACK_BODY`` is a 413 at once, a bad
    token a 403, and neither is read.
    """

    async def prepare(self, **kwargs: Any) -> None:
        """The size and the token, before the body: no user authentication here."""
        self._chunks: list[bytes] = []
        if content_length(self.request.headers) > MAX_CALLBACK_BODY:
            raise web.HTTPError(413, f"a callback body is at most {MAX_CALLBACK_BODY} bytes")
        connection: Any = self.request.connection
        connection.set_max_body_size(MAX_CALLBACK_BODY)  # a chunked body too
        if self.request.method == "POST":
            CallbackRegistry.instance().check_token(self.path_kwargs["kernel_id"], self._token())

    def data_received(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def _token(self) -> str:
        header = self.request.headers.get("Authorization", "")
        return header[len("Bearer "):] if header.startswith("Bearer ") else ""

    @allow_unauthenticated
    async def post(self, kernel_id: str) -> None:
        try:
            payload = json.loads(b"".join(self._chunks) or b"null")
        except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep
            payload = None
        CallbackRegistry.instance().fulfil(kernel_id, self._token(), payload)
        self.finish({})

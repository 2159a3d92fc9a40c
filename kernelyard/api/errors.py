"""The one place where errors become HTTP statuses and JSON bodies.

A ``kernelyard.errors`` type raised anywhere below (or wrapped by a
jupyter_server handler into a 500) comes out as its own status with
``{"reason", "message"}`` (``status_and_message``, ``error_body``); every
handler writes its errors through these (``kernelyard.api.base``).
"""

from __future__ import annotations

import json
from http.client import responses

from tornado import web

from .. import errors

STATUS_FOR_ERROR: list[tuple[type[errors.KernelyardError], int]] = [
    (errors.InvalidRequest, 400),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),  # LimitReached is a Forbidden
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.BackendUnavailable, 503),
    (errors.StartDeadlineExceeded, 504),
    (errors.ClientLeft, 499),
    (errors.KernelStartFailed, 500),
    (errors.ConfigError, 500),
]


def status_and_message(exc: BaseException | None, status: int) -> tuple[int, str]:
    """Map an exception (or a bare status) to the status and message a client sees."""
    public = public_error(exc)
    if public is not None:
        for kind, code in STATUS_FOR_ERROR:
            if isinstance(public, kind):
                return code, public.message
        return 500, public.message
    if isinstance(exc, web.HTTPError):
        return exc.status_code, _http_error_message(exc)
    if exc is None:
        return status, responses.get(status, "Error")
    return 500, "Unhandled error"


def _http_error_message(exc: web.HTTPError) -> str:
    """A tornado ``HTTPError``'s message with its arguments filled in."""
    message = exc.log_message or responses.get(exc.status_code, "Error")
    if exc.args:
        try:
            return message % exc.args
        except (TypeError, ValueError):
            return responses.get(exc.status_code, "Error")
    return message


def error_body(status: int, message: str) -> str:
    """The JSON body of an error answer: ``{"reason", "message"}``."""
    return json.dumps({"reason": responses.get(status, "Error"), "message": message})


def public_error(exc: BaseException | None) -> errors.KernelyardError | None:
    """The KernelyardError itself, or one that a jupyter_server handler wrapped."""
    seen = 0
    while exc is not None and seen < 3:
        if isinstance(exc, errors.KernelyardError):
            return exc
        exc = exc.__cause__
        seen += 1
    return None

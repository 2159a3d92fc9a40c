"""The contract every authenticator implements."""

from __future__ import annotations

from tornado.httputil import HTTPServerRequest
from traitlets.config import LoggingConfigurable

from .principal import Principal


class Authenticator(LoggingConfigurable):  # type: ignore[misc]
    """Maps a request to a ``Principal``.

    ``authenticate`` returns None when the request carries no credentials of
    this kind (the next authenticator is tried), and raises
    ``kernelyard.errors.Unauthorized`` when it carries credentials of this kind
    that are wrong (expired, forged, unknown user): those must not fall through.
    It must never log a credential.
    """

    #: The name config uses to pick this authenticator (``KernelyardApp.authenticators``).
    name = ""

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        raise NotImplementedError

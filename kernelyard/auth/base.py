"""The contract every authenticator implements."""

from __future__ import annotations

from tornado.httputil import HTTPServerRequest
from traitlets.config import LoggingConfigurable

from ..identity import Principal


class Authenticator(LoggingConfigurable):  # type: ignore[misc]
    """Maps a request to a ``Principal``.

    ``authenticate`` returns None when the request carries no credentials of
    this kind (the next authenticator is tried), and raises
    ``kernelyard.errors.Unauthorized`` when it carries credentials of this kind
    that are wrong (expired, forged, unknown user): those must not fall through.
    It must never log a credential.

    HTTP challenges (RFC 7235): ``challenge`` is the ``WWW-Authenticate`` value
    every 401 of the gateway offers for this kind of credential (``""``: none,
    for credentials no HTTP scheme carries, such as client certificates), and
    ``reply_headers`` gives the headers an accepted request's response must
    carry (SPNEGO's mutual-authentication token).
    """

    #: The name config uses to pick this authenticator (``KernelyardApp.authenticators``).
    name = ""
    #: The ``WWW-Authenticate`` challenge of a 401 for this credential ("" for none).
    challenge = ""

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        raise NotImplementedError

    def reply_headers(self, request: HTTPServerRequest) -> dict[str, str]:
        """Headers for the response to ``request``, which this authenticator accepted."""
        return {}

"""Client certificates (mutual TLS): the certificate's subject names the user.

The gateway must run with TLS and a client CA (``--certfile``, ``--keyfile``,
``--client-ca``): the TLS layer then verifies the certificate chain before any
request arrives, and this authenticator maps the verified subject to a user.
"""

from __future__ import annotations

from typing import Any

from tornado.httputil import HTTPServerRequest
from traitlets import List, Unicode

from ..errors import Unauthorized
from ..identity import Principal, is_valid_username
from .base import Authenticator


class MutualTLSAuthenticator(Authenticator):
    """The user is a field of the verified client certificate's subject."""

    name = "mtls"
    #: A browser presents a client certificate on its own, like a cookie.
    explicit_credentials = False

    user_field = Unicode(
        "commonName", config=True,
        help="The subject field that names the user (commonName, emailAddress, ...; an "
        "email address maps to the part before '@').",
    )
    groups_field = Unicode(
        "organizationalUnitName", config=True,
        help="Subject fields of this name become the user's groups ('' for none).",
    )
    allowed_issuers = List(
        Unicode(), config=True,
        help="Issuer commonNames accepted (default: any the client CA file trusts).",
    )

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        cert = _peer_certificate(request)
        if not cert:
            return None
        subject = _fields(cert.get("subject", ()))
        if self.allowed_issuers:
            issuer = _fields(cert.get("issuer", ())).get("commonName", [""])[0]
            if issuer not in self.allowed_issuers:
                raise Unauthorized("the client certificate's issuer is not accepted")
        names = subject.get(self.user_field, [])
        user = names[0].split("@", 1)[0] if names else ""
        if not is_valid_username(user):
            raise Unauthorized(f"the client certificate's {self.user_field} is not a user name")
        groups = frozenset(subject.get(self.groups_field, [])) if self.groups_field else frozenset()
        return Principal(name=user, groups=groups, via=self.name)


def _peer_certificate(request: HTTPServerRequest) -> dict[str, Any] | None:
    try:
        cert = request.get_ssl_certificate()
    except (AttributeError, ValueError):
        return None
    return cert if isinstance(cert, dict) else None


def _fields(rdns: Any) -> dict[str, list[str]]:
    """``(( ('commonName', 'alice'), ), ...)`` as ``{'commonName': ['alice']}``."""
    found: dict[str, list[str]] = {}
    for rdn in rdns:
        for key, value in rdn:
            found.setdefault(str(key), []).append(str(value))
    return found

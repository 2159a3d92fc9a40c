"""Kerberos (SPNEGO, ``Authorization: Negotiate``) authentication of API callers.

A request carrying ``Authorization: Negotiate <token>`` is checked against the
gateway's keytab (``HTTP/<gateway host>``); the client's principal ``alice@REALM``
becomes the user ``alice`` when REALM is one of ``realms``. Service principals
(``name/instance@REALM``) are refused. See docs/kerberos.md.

HTTP (RFC 4559): every 401 of the gateway offers ``WWW-Authenticate: Negotiate``
(``challenge``), which is what makes browsers, curl and requests-gssapi send a
ticket. The acceptor's output token (mutual authentication) is kept per request
and goes out as ``WWW-Authenticate: Negotiate <token>`` on the response
(``reply_headers``; the identity provider sets it, also on a websocket's 101).
"""

from __future__ import annotations

import asyncio
from weakref import WeakKeyDictionary

from tornado.httputil import HTTPServerRequest
from traitlets import List, Unicode

from ..errors import Unauthorized
from ..identity import Principal
from .base import Authenticator
from .spnego import accept_negotiate, default_realm, principal_to_user

# Output tokens of accepted requests, dropped with the request object.
_OUTPUT_TOKENS: WeakKeyDictionary[HTTPServerRequest, str] = WeakKeyDictionary()


def www_authenticate(request: HTTPServerRequest) -> str | None:
    """The ``WWW-Authenticate`` value (``Negotiate <token>``) to answer an accepted
    Kerberos request with, for mutual authentication; None when there is none."""
    token = _OUTPUT_TOKENS.get(request)
    return f"Negotiate {token}" if token else None


class KerberosAuthenticator(Authenticator):
    """Authenticates ``Authorization: Negotiate`` (SPNEGO/Kerberos) requests."""

    name = "kerberos"
    #: Browsers send Negotiate on their own (like cookies) for trusted domains, so a
    #: Kerberos request keeps jupyter_server's cross-origin checks.
    explicit_credentials = False
    challenge = "Negotiate"

    keytab = Unicode(
        "", config=True,
        help="Keytab with the gateway's service keys (HTTP/<host>@REALM for each name "
        "clients use to reach it), readable by the gateway's user only. Empty: the "
        "Kerberos library's default (KRB5_KTNAME, else /etc/krb5.keytab).",
    )
    service = Unicode(
        "HTTP", config=True,
        help="Service name of the gateway's principals (HTTP for SPNEGO over HTTP): a "
        "ticket for another service in the keytab is refused.",
    )
    realms = List(
        Unicode(), config=True,
        help="Realms whose users may sign in; alice@REALM runs kernels as 'alice'. "
        "Empty: only the default realm of krb5.conf.",
    )

    _default_realm: str | None = None

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        """None without a Negotiate header; else the ticket's user, or Unauthorized."""
        header = request.headers.get("Authorization", "")
        if header.strip().partition(" ")[0].lower() != "negotiate":
            return None
        user, token = await asyncio.to_thread(self._accept, header)
        if token:
            _OUTPUT_TOKENS[request] = token
        return Principal(name=user, via="kerberos")

    def reply_headers(self, request: HTTPServerRequest) -> dict[str, str]:
        """``WWW-Authenticate: Negotiate <token>`` when the acceptor produced a token."""
        value = www_authenticate(request)
        return {"WWW-Authenticate": value} if value else {}

    def _accept(self, header: str) -> tuple[str, str | None]:
        """Blocking: the ticket's user name and the output token (runs in a thread)."""
        try:
            principal, token = accept_negotiate(header, self.keytab, self.service)
            user = principal_to_user(principal, self._allowed_realms())
        except Unauthorized as err:
            # The GSSAPI reason (on __cause__) names principals, never secrets.
            self.log.info("Kerberos authentication refused: %s (%s)", err, err.__cause__)
            raise
        self.log.debug("Kerberos principal %s signed in as %s", principal, user)
        return user, token

    def _allowed_realms(self) -> set[str]:
        if self.realms:
            return set(self.realms)
        if self._default_realm is None:
            self._default_realm = default_realm()
        return {self._default_realm}

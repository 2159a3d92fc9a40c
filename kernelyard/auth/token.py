"""The shared token (authenticator ``token``): one secret for the whole gateway.

A request carries it as ``Authorization: token <T>`` (or ``bearer <T>``) or as
``?token=<T>``. It identifies no user: whoever holds it is the gateway's one
configured principal (``SharedTokenAuthenticator.user``), an admin that may
act for others, so Enterprise-Gateway-style clients that send
``KERNEL_USERNAME`` keep working. With no token configured this authenticator
is disabled; see ``kernelyard.auth.provider`` for what happens then.
"""

from __future__ import annotations

import hmac

from tornado.httputil import HTTPServerRequest
from traitlets import Unicode, default

from ..identity import Principal, gateway_user
from .base import Authenticator

TOKEN_SCHEMES = frozenset({"token", "bearer"})


def header_token(request: HTTPServerRequest) -> str | None:
    """The credential in ``Authorization: token|bearer <T>``, or None."""
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() in TOKEN_SCHEMES and value:
        return value
    return None


def query_token(request: HTTPServerRequest) -> str | None:
    """The credential in ``?token=<T>`` (the last one, as tornado reads arguments), or None."""
    values = request.query_arguments.get("token")
    if not values:
        return None
    return values[-1].decode("utf-8", errors="replace") or None


class SharedTokenAuthenticator(Authenticator):
    """Accepts the gateway's shared token (``KernelyardApp.auth_token``).

    Returns None for a request without that token or with a different one: a
    different token may belong to another authenticator later in the chain,
    and if none accepts it the request gets a 401 anyway.
    """

    name = "token"
    #: A token is never sent by a browser on its own, so (as in jupyter_server)
    #: a request carrying it may skip the cross-origin checks.
    explicit_credentials = True
    #: RFC 6750's scheme; ``Authorization: token <T>`` (Jupyter's) is accepted too.
    challenge = "Bearer"

    token = Unicode(
        help="The shared token; set through KernelyardApp.auth_token or "
        "KERNELYARD_AUTH_TOKEN, not here. Empty disables this authenticator.",
    )
    user = Unicode(
        config=True,
        help="The user whoever holds the shared token is (kernels run as this user unless "
        "the client sends KERNEL_USERNAME). Default: the OS user the gateway runs as.",
    )

    @default("token")
    def _token_default(self) -> str:
        return str(getattr(self.parent, "token", "") or "")

    @default("user")
    def _user_default(self) -> str:
        return gateway_user()

    @property
    def enabled(self) -> bool:
        """Whether a token is configured at all."""
        return bool(self.token)

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        if not self.token:
            return None
        offered = header_token(request) or query_token(request)
        if offered and hmac.compare_digest(offered.encode(), self.token.encode()):
            return Principal(name=self.user, admin=True, via=self.name,
                             may_act_for_others=True)
        return None

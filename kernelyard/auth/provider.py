"""The gateway's identity provider: an ordered chain of authenticators.

``KernelyardApp.authenticators`` lists authenticator names, for example
``["api-token", "token"]``. Each name is looked up in the entry-point group
``kernelyard.authenticators``, so another package can add one. For each request
the authenticators run in order:

- the first that returns a ``Principal`` decides who the caller is;
- one that raises ``Unauthorized`` ends the chain: the request gets a 401;
- when all return None, the request gets a 401, unless no authenticator is
  enabled at all (the default: only the shared token, and it is empty). Then
  every request is the anonymous principal, which ``KernelyardApp`` allows
  only on a loopback address.

Besides the ``Authenticator`` contract, the chain reads two optional class
attributes: ``enabled`` (default True; False means "not configured", as the
shared token without a token) and ``explicit_credentials`` (default False;
True for credentials a browser never sends on its own, such as a token
header, which lets the request skip jupyter_server's cross-origin checks, as
jupyter_server does for its token).

HTTP challenges: ``add_auth_headers`` (called where errors become responses) puts
one ``WWW-Authenticate`` header per enabled authenticator's ``challenge`` on every
401, and re-adds the accepted authenticator's ``reply_headers`` (SPNEGO's mutual
authentication token), which ``_user`` already set on the handler, after an error
response cleared the headers.

Handlers get a ``PrincipalUser``: a jupyter_server ``User`` that carries the
``Principal``. Code below the handlers asks ``principal_of(handler)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field, fields
from importlib.metadata import entry_points
from typing import Any

from jupyter_server.auth.identity import IdentityProvider, User
from tornado import web
from tornado.httputil import HTTPServerRequest
from traitlets import default

from ..errors import ConfigError, Unauthorized
from ..identity import Principal, gateway_user
from .base import Authenticator

GROUP = "kernelyard.authenticators"
SETTING = "KernelyardApp.authenticators"
MISSING = "authentication required: send 'Authorization: token ...'"
_PENDING = "_kernelyard_identity"  # the handler attribute that memoizes one request's user
_REPLY = "_kernelyard_auth_reply"  # the accepted authenticator's response headers


@dataclass
class PrincipalUser(User):
    """A jupyter_server ``User`` that carries who the caller is for kernelyard."""

    principal: Principal = field(kw_only=True)


def user_for(principal: Principal) -> PrincipalUser:
    """The jupyter_server user handed to handlers for ``principal``."""
    return PrincipalUser(username=principal.name, principal=principal)


def principal_of(handler_or_user: Any) -> Principal:
    """The Principal of a request handler (after ``prepare``) or of its user.

    Raises Unauthorized when there is no authenticated kernelyard user, so an
    ownership check can never run against a missing identity.
    """
    user = (handler_or_user if isinstance(handler_or_user, User)
            else getattr(handler_or_user, "current_user", None))
    if isinstance(user, PrincipalUser):
        return user.principal
    raise Unauthorized(MISSING)


def authenticator_class(name: str) -> type[Authenticator]:
    """The authenticator registered under ``name``; ConfigError naming the setting if none."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        known = ", ".join(sorted({ep.name for ep in entry_points(group=GROUP)})) or "none"
        raise ConfigError(f"{SETTING} names {name!r}, which is not an installed "
                          f"authenticator (installed: {known})")
    try:
        cls = found[0].load()
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{SETTING}: the authenticator {name!r} cannot be loaded: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, Authenticator)):
        raise ConfigError(f"{SETTING}: {name!r} is not a kernelyard Authenticator")
    return cls


def _unique(names: Sequence[str]) -> list[str]:
    """``names`` in order; ConfigError when one is listed twice."""
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{SETTING} lists {name!r} twice")
    return list(names)


class GatewayIdentityProvider(IdentityProvider):  # type: ignore[misc]
    """Identifies callers with the configured authenticator chain; no cookies, no login page.

    ``load_authenticators`` must be called once at startup (``KernelyardApp``
    does); until then every request is refused.
    """

    @default("token")
    def _token_default(self) -> str:
        return getattr(self.parent, "auth_token", "") or ""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._chain: list[Authenticator] | None = None

    def load_authenticators(self, names: Sequence[str]) -> None:
        """Build the chain from authenticator names (blocking: call at startup).

        Raises ConfigError, naming ``KernelyardApp.authenticators``, for a name
        that is unknown, listed twice or whose authenticator cannot be set up.
        """
        self._chain = [authenticator_class(name)(parent=self) for name in _unique(names)]
        self.log.info("Authenticators, in order: %s", ", ".join(names) or "none")

    @property
    def authenticators(self) -> list[Authenticator]:
        """The chain, in order."""
        if self._chain is None:
            raise RuntimeError("GatewayIdentityProvider.load_authenticators() was not called")
        return list(self._chain)

    @property
    def auth_enabled(self) -> bool:
        """Whether any authenticator is enabled (True before the chain is loaded)."""
        if self._chain is None:
            return True
        return any(getattr(auth, "enabled", True) for auth in self._chain)

    @property
    def challenges(self) -> list[str]:
        """The ``WWW-Authenticate`` challenges of a 401: one per enabled authenticator
        that has one, in chain order, without repeats."""
        found: list[str] = []
        for auth in self._chain or []:
            value = getattr(auth, "challenge", "")
            if value and getattr(auth, "enabled", True) and value not in found:
                found.append(value)
        return found

    @property
    def login_available(self) -> bool:
        return False

    @property
    def logout_available(self) -> bool:
        return False

    def get_handlers(self) -> list[Any]:
        return []

    def validate_security(self, app: Any, ssl_options: dict[str, Any] | None = None) -> None:
        """The application checks its own security at start (see ``KernelyardApp``)."""

    def identity_model(self, user: User) -> dict[str, Any]:
        """jupyter_server's identity model: the ``User`` fields, without the principal."""
        return {f.name: getattr(user, f.name) for f in fields(User)}

    @property
    def anonymous(self) -> Principal:
        """Who every caller is when no authenticator is enabled: the gateway's own user,
        with no admin rights and no right to act for others."""
        return Principal(name=gateway_user(), via="anonymous")

    async def identify(self, request: HTTPServerRequest) -> tuple[Principal, Authenticator] | None:
        """Run the chain: the first principal found and who vouched for it, or None.

        ``Unauthorized`` from an authenticator propagates: it ends the chain.
        """
        for auth in self.authenticators:
            principal = await auth.authenticate(request)
            if principal is not None:
                return principal, auth
        return None

    def get_user(self, handler: web.RequestHandler) -> Awaitable[User | None]:
        """The caller of ``handler``'s request, as an awaitable computed once per request.

        The result is a ``PrincipalUser``. Unlike jupyter_server's contract (None
        for "not authenticated", which its handlers answer with 403), a request
        that no authenticator accepts raises ``Unauthorized``, which the API
        layer answers with 401 and a JSON body, for REST and websocket alike.
        """
        pending = getattr(handler, _PENDING, None)
        if pending is None:
            pending = asyncio.ensure_future(self._user(handler))
            pending.add_done_callback(_retrieve)
            setattr(handler, _PENDING, pending)
        return pending

    async def _user(self, handler: web.RequestHandler) -> User:
        found = await self.identify(handler.request)
        if found is not None:
            principal, auth = found
            if getattr(auth, "explicit_credentials", False):
                handler._token_authenticated = True  # type: ignore[attr-defined]
            reply = auth.reply_headers(handler.request)
            setattr(handler, _REPLY, reply)
            for name, value in reply.items():
                handler.set_header(name, value)
            return user_for(principal)
        if not self.auth_enabled:
            return user_for(self.anonymous)
        raise Unauthorized(MISSING)


def add_auth_headers(handler: web.RequestHandler, status: int) -> None:
    """Put the authentication headers on an error response being written: the
    challenges on a 401 (RFC 7235 requires at least one), and the accepted
    authenticator's reply headers (which ``clear()`` removed) on anything else."""
    if status == 401:
        provider = getattr(handler, "identity_provider", None)
        if isinstance(provider, GatewayIdentityProvider):
            for challenge in provider.challenges:
                handler.add_header("WWW-Authenticate", challenge)
        return
    for name, value in getattr(handler, _REPLY, {}).items():
        handler.set_header(name, value)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a request's authentication outcome as seen, even if the request ended early."""
    if not task.cancelled():
        task.exception()

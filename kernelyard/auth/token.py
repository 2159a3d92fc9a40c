"""Shared-token authentication, with no cookies and no login page.

A request is authenticated by ``Authorization: token <T>`` (or ``bearer``) or
by ``?token=<T>``. With no token configured, every request is accepted as the
anonymous user; the application allows that only on a loopback address
unless ``KernelyardApp.allow_unauthenticated`` waives it.
"""

from __future__ import annotations

import hmac
from typing import Any

from jupyter_server.auth.identity import IdentityProvider, User
from tornado import web
from traitlets import default

ANONYMOUS = User(username="anonymous", name="anonymous", display_name="Anonymous")
TOKEN_USER = User(username="token", name="token", display_name="Token user")


class TokenIdentityProvider(IdentityProvider):  # type: ignore[misc]
    """Identifies callers by the gateway's shared token."""

    @default("token")
    def _token_default(self) -> str:
        return getattr(self.parent, "auth_token", "") or ""

    @property
    def auth_enabled(self) -> bool:
        return bool(self.token)

    @property
    def login_available(self) -> bool:
        return False

    @property
    def logout_available(self) -> bool:
        return False

    def get_handlers(self) -> list[Any]:
        return []

    def get_user(self, handler: web.RequestHandler) -> User | None:
        if not self.token:
            return ANONYMOUS
        offered = self.get_token(handler) or ""
        if offered and hmac.compare_digest(offered.encode(), self.token.encode()):
            handler._token_authenticated = True  # type: ignore[attr-defined]
            return TOKEN_USER
        return None

    def validate_security(self, app: Any, ssl_options: dict[str, Any] | None = None) -> None:
        """The application checks its own security at start (see ``KernelyardApp``)."""

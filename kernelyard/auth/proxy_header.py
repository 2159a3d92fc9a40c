"""A trusted reverse proxy names the user in a header.

The header is believed only from a proxy that proves itself: with a shared
secret in another header (compared in constant time), or by connecting from one
of the configured proxy addresses. A user header from anyone else is refused
(401), never ignored, so a misrouted request can't fall through to another
authenticator with a forged name.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from tornado.httputil import HTTPServerRequest
from traitlets import Bool, List, Unicode, default, validate

from ..errors import ConfigError, Unauthorized
from ..policy import is_valid_username
from .base import Authenticator
from .principal import Principal


class ProxyHeaderAuthenticator(Authenticator):
    """The user (and groups) set by a reverse proxy that authenticated them."""

    name = "proxy-header"
    #: Browsers never send these headers on their own.
    explicit_credentials = True

    user_header = Unicode("X-Kernelyard-User", config=True,
                          help="The header that names the authenticated user.")
    groups_header = Unicode("", config=True,
                            help="A header with the user's groups, comma-separated (optional).")
    secret_header = Unicode("X-Kernelyard-Proxy-Secret", config=True,
                            help="The header that carries the proxy's shared secret.")
    secret = Unicode(
        config=True,
        help="The proxy's shared secret (default: $KERNELYARD_PROXY_SECRET). Empty: only "
        "trusted_proxies decide.",
    )
    trusted_proxies = List(
        Unicode(), config=True,
        help="Addresses or networks (CIDR) the proxy connects from. With a secret too, "
        "both must match.",
    )
    acts_for_others = Bool(
        False, config=True,
        help="Whether users named by the proxy may set KERNEL_USERNAME for other users "
        "(only for a proxy that is itself a service).",
    )

    @default("secret")
    def _secret_default(self) -> str:
        return os.environ.get("KERNELYARD_PROXY_SECRET", "")

    @validate("trusted_proxies")
    def _check_networks(self, proposal: dict[str, list[str]]) -> list[str]:
        for entry in proposal["value"]:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ConfigError(f"ProxyHeaderAuthenticator.trusted_proxies: {entry!r} "
                                  "is not an address or network") from None
        return proposal["value"]

    @property
    def enabled(self) -> bool:
        return bool(self.secret or self.trusted_proxies)

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        user = request.headers.get(self.user_header)
        if user is None:
            return None
        if not self.enabled:
            raise ConfigError("ProxyHeaderAuthenticator needs a secret or trusted_proxies")
        if not self._from_trusted_proxy(request):
            raise Unauthorized(f"{self.user_header} is only accepted from the trusted proxy")
        if not is_valid_username(user):
            raise Unauthorized(f"{self.user_header} does not name a valid user")
        groups = request.headers.get(self.groups_header, "") if self.groups_header else ""
        return Principal(name=user, groups=frozenset(g.strip() for g in groups.split(",")
                                                     if g.strip()),
                         via=self.name, may_act_for_others=self.acts_for_others)

    def _from_trusted_proxy(self, request: HTTPServerRequest) -> bool:
        if self.secret:
            offered = request.headers.get(self.secret_header, "")
            if not hmac.compare_digest(offered.encode(), self.secret.encode()):
                return False
        if self.trusted_proxies:
            return _address_in(request.remote_ip or "", self.trusted_proxies)
        return True


def _address_in(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)

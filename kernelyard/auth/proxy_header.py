"""A trusted reverse proxy names the user in a header.

The header is believed only from a proxy that proves itself: with a shared
secret in another header (compared in constant time), or by connecting from one
of the configured proxy addresses, or both (then both must match). A user header
from anyone else is refused (401), never ignored, so a misrouted request can't
fall through to another authenticator with a forged name.

The address is the TCP peer of the connection (``kernelyard.auth.peer``), never
``X-Forwarded-For`` / ``X-Real-Ip``, whatever ``trust_xheaders`` says. The gateway
refuses to start with proxy addresses anyone else could connect from:

- a network of more than ``MAX_PROXY_ADDRESSES`` addresses (``0.0.0.0/0``,
  ``10.0.0.0/8``): a proxy is one host or a few, and a wide range holds clients;
- a loopback address without the shared secret: every local process, every
  kernel on the gateway host among them, connects from loopback;
- the unspecified address, and IPv4-mapped IPv6 forms (write the IPv4 address).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from typing import Any

from tornado.httputil import HTTPServerRequest
from traitlets import Bool, List, Unicode, default, validate

from ..errors import ConfigError, Unauthorized
from ..identity import Principal, is_valid_username
from .base import Authenticator
from .peer import IPAddress, peer_ip

#: The most addresses one ``trusted_proxies`` entry may cover (an IPv4 /24).
MAX_PROXY_ADDRESSES = 256
_SETTING = "ProxyHeaderAuthenticator.trusted_proxies"
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
        help="Addresses or networks (CIDR, at most 256 addresses each) the proxy connects "
        "from, checked against the connection's peer address (never X-Forwarded-For). "
        "With a secret too, both must match. A loopback address needs the secret as well.",
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
            _proxy_network(entry)
        return proposal["value"]

    def __init__(self, **kwargs: Any):
        """Refuse (ConfigError, at startup) a configuration a client could pass."""
        super().__init__(**kwargs)
        self._networks = [_proxy_network(entry) for entry in self.trusted_proxies]
        if not self.enabled:
            raise ConfigError(
                "proxy-header is listed in KernelyardApp.authenticators but has no way to "
                "recognise the proxy: set ProxyHeaderAuthenticator.secret (or "
                f"KERNELYARD_PROXY_SECRET) and/or {_SETTING}")
        loopback = [e for e, net in zip(self.trusted_proxies, self._networks, strict=True)
                    if any(net.overlaps(lo) for lo in _LOOPBACK if lo.version == net.version)]
        if loopback and not self.secret:
            raise ConfigError(
                f"{_SETTING} lists the loopback address {loopback[0]!r} without "
                "ProxyHeaderAuthenticator.secret: every local process, kernels included, "
                "connects from loopback and could name any user. Set the secret (or "
                "KERNELYARD_PROXY_SECRET) and make the proxy send it")

    @property
    def enabled(self) -> bool:
        return bool(self.secret or self.trusted_proxies)

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        user = request.headers.get(self.user_header)
        if user is None:
            return None
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
        if self._networks:
            return _address_in(peer_ip(request), self._networks)
        return True


def _proxy_network(entry: str) -> Network:
    """One ``trusted_proxies`` entry as a network; ConfigError (naming the setting) for
    one that is not an address, is too wide to be a proxy, or is ambiguous."""
    try:
        net = ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        raise ConfigError(f"{_SETTING}: {entry!r} is not an address or network") from None
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None:
        raise ConfigError(f"{_SETTING}: write {entry!r} as its IPv4 address (IPv4 peers are "
                          "compared as IPv4)")
    if net.num_addresses > MAX_PROXY_ADDRESSES:
        raise ConfigError(
            f"{_SETTING}: {entry!r} covers {net.num_addresses} addresses; a proxy entry may "
            f"cover at most {MAX_PROXY_ADDRESSES}, since any client on such a range could "
            "pass for the proxy. List the proxy's own addresses")
    if net.network_address.is_unspecified:
        raise ConfigError(f"{_SETTING}: {entry!r} is the unspecified address, not a proxy's")
    return net


def _address_in(ip: IPAddress | None, networks: list[Network]) -> bool:
    return ip is not None and any(ip in net for net in networks)

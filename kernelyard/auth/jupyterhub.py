"""JupyterHub tokens (authenticator ``jupyterhub``), checked with the hub's REST API.

A single-user server started by JupyterHub with ``--gateway-url`` sends its own hub
token (``JUPYTERHUB_API_TOKEN``, given to the gateway client as
``JUPYTER_GATEWAY_AUTH_TOKEN``) as ``Authorization: token <T>``; a user may also send
a token they created at the hub. kernelyard asks the hub who owns it with
``GET {hub_api_url}/user`` and the token itself. The hub answers any token with its
owner's name, groups and admin flag, and with the token's scopes, so kernelyard needs
no credentials of its own for this.

What is accepted, refused or passed on:

- a token the hub does not know (401/403/404 from the hub): None, so a later
  authenticator may try it; when none accepts it, the request gets a 401 anyway;
- a token of a hub user that carries one of ``access_scopes`` (by default
  ``access:services!service=kernelyard``, JupyterHub's own convention for access to
  a service): that user, with their hub groups and admin flag;
- a hub token without such a scope, or a service's token: Forbidden (403), since the
  hub vouches for it but does not let it use kernelyard;
- a hub that can't be reached, times out or fails (5xx): BackendUnavailable (503).

Answers are cached for ``cache_seconds`` under a SHA-256 digest of the token, so a
revoked token keeps working for at most that long. No token is ever logged: log
lines carry a short prefix of the digest at most.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httputil import HTTPServerRequest
from traitlets import Float, Int, List, Unicode, default

from ..errors import BackendUnavailable, ConfigError, Forbidden
from ..identity import Principal
from .api_tokens import is_api_token
from .base import Authenticator
from .token import header_token

UNKNOWN_TOKEN = (401, 403, 404)  # what the hub answers for a token it doesn't know
NO_USER = "a JupyterHub service token identifies no user"


@dataclass(frozen=True)
class Verdict:
    """What the hub's answer about one token means for kernelyard.

    ``principal`` is set for an accepted token; ``refusal`` (client-safe) for a
    token the hub knows but kernelyard refuses; neither for an unknown token.
    """

    principal: Principal | None = None
    refusal: str = ""

    def outcome(self) -> Principal | None:
        """The principal, None for an unknown token, or Forbidden."""
        if self.refusal:
            raise Forbidden(self.refusal)
        return self.principal


def fingerprint(token: str) -> str:
    """The cache key of a token: its SHA-256 digest (hex). Log only a prefix of it."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def grants(scopes: Collection[str], required: str) -> bool:
    """Whether a token's (expanded) scopes include ``required``.

    ``access:services!service=x`` is granted by itself or by the unfiltered
    ``access:services``; an unfiltered scope only by itself.
    """
    return required in scopes or ("!" in required and required.split("!", 1)[0] in scopes)


def verdict_for(model: Any, access_scopes: Collection[str], via: str) -> Verdict:
    """Judge the hub's model of a token's owner (the JSON of ``GET /hub/api/user``).

    Raises ValueError for an answer that is not such a model.
    """
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise ValueError("not a JupyterHub user model")
    if model.get("kind", "user") != "user":
        return Verdict(refusal=NO_USER)
    name = model["name"]
    scopes = model.get("scopes")
    if access_scopes and not (
        isinstance(scopes, list) and any(grants(scopes, s) for s in access_scopes)
    ):
        wanted = " or ".join(sorted(access_scopes))
        return Verdict(refusal=f"the JupyterHub token of {name} lacks the scope {wanted}")
    groups = model.get("groups") or []
    if not (name and isinstance(groups, list) and all(isinstance(g, str) for g in groups)):
        raise ValueError("not a JupyterHub user model")
    return Verdict(Principal(name=name, groups=frozenset(groups),
                             admin=model.get("admin") is True, via=via))


class JupyterHubAuthenticator(Authenticator):
    """Accepts JupyterHub API tokens, validated by the hub (``GET {hub_api_url}/user``).

    Reads ``Authorization: token|bearer <T>`` only, never ``?token=``. kernelyard's
    own API tokens (``ky_...``) are never sent to the hub. List it after ``token``
    and ``api-token`` in ``KernelyardApp.authenticators``, so their tokens are not
    sent to the hub either.
    """

    name = "jupyterhub"
    explicit_credentials = True
    challenge = "Bearer"

    hub_api_url = Unicode(
        "", config=True,
        help="The hub's REST API, e.g. http://127.0.0.1:8081/hub/api (what JupyterHub "
        "gives its services as JUPYTERHUB_API_URL). Required when 'jupyterhub' is "
        "listed in KernelyardApp.authenticators.",
    )
    service_name = Unicode(
        "kernelyard", config=True,
        help="The name kernelyard is registered under in the hub's "
        "c.JupyterHub.services; the default access_scopes name it.",
    )
    access_scopes = List(
        Unicode(), config=True,
        help="A token must carry one of these scopes to be accepted (otherwise 403). "
        "Default: access:services!service=<service_name>, which the hub grants through "
        "a role (and which the single-user servers' tokens get through "
        "c.Spawner.server_token_scopes). Empty: any token of a hub user is accepted, "
        "including ones its owner made for other purposes.",
    )
    cache_seconds = Float(
        60.0, config=True,
        help="How long the hub's answer about a token is reused (0: ask the hub on every "
        "request). A token revoked at the hub keeps working at most this long.",
    )
    cache_size = Int(
        10000, config=True,
        help="At most this many tokens' answers are cached; the oldest go first.",
    )
    timeout = Float(
        10.0, config=True,
        help="Seconds to wait for the hub (connect and answer); after that the request "
        "gets a 503.",
    )
    ca_file = Unicode(
        "", config=True,
        help="CA bundle to verify an https hub_api_url with. Empty: the system's CAs.",
    )

    @default("access_scopes")
    def _access_scopes_default(self) -> list[str]:
        return [f"access:services!service={self.service_name}"]

    def __init__(self, **kwargs: Any):
        """Check the settings (blocking: called once at startup)."""
        super().__init__(**kwargs)
        url = self.hub_api_url.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                "JupyterHubAuthenticator.hub_api_url must be the hub's API URL, such as "
                f"http://127.0.0.1:8081/hub/api (it is {self.hub_api_url!r})")
        if self.ca_file and not os.path.isfile(self.ca_file):
            raise ConfigError(f"JupyterHubAuthenticator.ca_file: no such file {self.ca_file!r}")
        self._user_url = url + "/user"
        self._cache: OrderedDict[str, tuple[float, Verdict]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[Verdict]] = {}

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        token = header_token(request)
        if token is None or is_api_token(token):
            return None
        key = fingerprint(token)
        verdict = self._cached(key)
        if verdict is None:
            verdict = await self._shared_lookup(key, token)
        if verdict.refusal:
            self.log.warning("Refused JupyterHub token %s from %s: %s", key[:12],
                             request.remote_ip, verdict.refusal)
        return verdict.outcome()

    def _cached(self, key: str) -> Verdict | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._cache[key]
            return None
        return entry[1]

    def _remember(self, key: str, verdict: Verdict) -> None:
        if self.cache_seconds <= 0:
            return
        self._cache[key] = (time.monotonic() + self.cache_seconds, verdict)
        self._cache.move_to_end(key)
        while len(self._cache) > max(self.cache_size, 1):
            self._cache.popitem(last=False)

    async def _shared_lookup(self, key: str, token: str) -> Verdict:
        """One hub request per token at a time: concurrent requests share its answer."""
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(key, token))
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._settled(key, done))
        return await asyncio.shield(pending)

    def _settled(self, key: str, done: asyncio.Future[Verdict]) -> None:
        """Forget a finished lookup; mark its error seen even if every waiter left."""
        self._pending.pop(key, None)
        if not done.cancelled():
            done.exception()

    async def _lookup(self, key: str, token: str) -> Verdict:
        """Ask the hub about ``token``; cache and return the verdict."""
        response = await self._fetch(token)
        if response.code in UNKNOWN_TOKEN:
            self.log.debug("JupyterHub does not know token %s", key[:12])
            verdict = Verdict()
        elif response.code == 200:
            try:
                model = json.loads(response.body or b"null")
                verdict = verdict_for(model, self.access_scopes, self.name)
            except ValueError as e:
                raise self._unavailable(f"unexpected answer ({e})") from None
        else:
            raise self._unavailable(f"HTTP {response.code}")
        self._remember(key, verdict)
        if verdict.principal is not None:
            self.log.debug("JupyterHub token %s is %s", key[:12], verdict.principal.name)
        return verdict

    async def _fetch(self, token: str) -> HTTPResponse:
        request = HTTPRequest(
            self._user_url,
            headers={"Authorization": f"token {token}", "Accept": "application/json"},
            connect_timeout=self.timeout, request_timeout=self.timeout,
            follow_redirects=False, ca_certs=self.ca_file or None,
        )
        try:
            return await AsyncHTTPClient().fetch(request, raise_error=False)
        except HTTPClientError as e:  # no HTTP answer: a timeout (599)
            raise self._unavailable(e.message or "no answer") from None
        except OSError as e:  # refused, unreachable, TLS failure
            raise self._unavailable(e.strerror or type(e).__name__) from None

    def _unavailable(self, why: str) -> BackendUnavailable:
        """The 503 for a hub that can't answer now; logged without any token."""
        self.log.warning("JupyterHub at %s cannot check tokens: %s", self._user_url, why)
        return BackendUnavailable(
            f"JupyterHub is unavailable, so the token cannot be checked ({why}); try again later")

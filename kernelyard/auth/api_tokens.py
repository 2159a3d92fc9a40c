"""Per-user API tokens (authenticator ``api-token``), stored only as keyed hashes.

A token reads ``ky_<id>_<secret>``: ``id`` is 12 hex digits, public (``kernelyard
token list`` shows it) and the lookup key, so checking a token is one indexed
read; ``secret`` is 32 random bytes (url-safe base64), shown once when issued
and never stored. The store keeps ``HMAC-SHA256(pepper, id ":" secret)``: the id
salts it. The pepper is a store secret, sealed under the store's key ring
(``StoreFactory.key_file`` / ``KERNELYARD_STORE_KEY``), which is not in the
database, so a copy of the database alone cannot check guesses offline. A
store key rotation re-encrypts the pepper and leaves it unchanged, so every
token stays valid (``kernelyard.store.tokens`` says how the pepper is made).

Nothing here logs a token or a secret; log lines name the token id at most.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tornado.httputil import HTTPServerRequest

from ..errors import Unauthorized
from ..identity import Principal
from ..store import StoreFactory
from ..store.tokens import TokenRecord, TokenStore, pepper_from_key
from .base import Authenticator
from .token import header_token

PREFIX = "ky_"
_TOKEN = re.compile(r"ky_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
REJECTED = "invalid API token: unknown, revoked or expired"


@dataclass(frozen=True)
class IssuedToken:
    """A token just issued: ``text`` is the only copy of the secret there will ever be."""

    record: TokenRecord
    text: str = field(repr=False)


def derive_pepper(store_key: bytes) -> bytes:
    """The pepper a store key yields (the store makes and keeps the real one once)."""
    return pepper_from_key(store_key)


def token_digest(pepper: bytes, token_id: str, secret: str) -> str:
    """The keyed hash the store keeps for a token (hex)."""
    return hmac.new(pepper, f"{token_id}:{secret}".encode(), hashlib.sha256).hexdigest()


def is_api_token(text: str) -> bool:
    """Whether ``text`` claims to be an API token (has the prefix), well-formed or not."""
    return text.startswith(PREFIX)


def parse_token(text: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, or None."""
    m = _TOKEN.fullmatch(text)
    return (m.group(1), m.group(2)) if m else None


def mint() -> tuple[str, str, str]:
    """A fresh ``(id, secret, token text)``."""
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    return token_id, secret, f"{PREFIX}{token_id}_{secret}"


async def issue(
    store: TokenStore,
    pepper: bytes,
    username: str,
    *,
    groups: Iterable[str] = (),
    admin: bool = False,
    expires_in: float | None = None,
    now: float | None = None,
) -> IssuedToken:
    """Create and store a token for ``username``; the caller shows ``text`` once."""
    if not username:
        raise ValueError("an API token needs a user name")
    if expires_in is not None and expires_in <= 0:
        raise ValueError("an API token's lifetime must be positive")
    created = time.time() if now is None else now
    token_id, secret, text = mint()
    record = TokenRecord(
        token_id=token_id, username=username, digest=token_digest(pepper, token_id, secret),
        groups=tuple(sorted(set(groups))), admin=admin, created=created,
        expires=None if expires_in is None else created + expires_in,
    )
    await store.add(record)
    return IssuedToken(record, text)


async def check(store: TokenStore, pepper: bytes, text: str, now: float) -> TokenRecord:
    """The record of a valid, active token; Unauthorized for anything else.

    The hash is compared in constant time. The client-safe message is the same for
    every failure, so it tells nothing about which ids exist.
    """
    parsed = parse_token(text)
    if parsed is None:
        raise Unauthorized(REJECTED)
    token_id, secret = parsed
    record = await store.get(token_id)
    expected = record.digest if record else token_digest(pepper, token_id, "")
    offered = token_digest(pepper, token_id, secret)
    if record is None or not hmac.compare_digest(offered, expected):
        raise Unauthorized(REJECTED)
    if record.status(now) != "active":
        raise Unauthorized(REJECTED)
    return record


def principal_for(record: TokenRecord, via: str) -> Principal:
    """The principal an API token stands for: never one that may act for others."""
    return Principal(name=record.username, groups=frozenset(record.groups),
                     admin=record.admin, via=via)


class ApiTokenAuthenticator(Authenticator):
    """Accepts per-user tokens issued by ``kernelyard token issue``.

    Only ``Authorization: token|bearer ky_...`` is read (not ``?token=``, which
    would put a long-lived personal token into URLs and access logs). A token
    without the ``ky_`` prefix is not this authenticator's: it returns None and
    the next authenticator is tried. One with the prefix that is malformed,
    unknown, revoked or expired raises Unauthorized, ending the chain with a 401.
    Revocation takes effect on the next request: records are read per request.
    Open websockets are re-checked with ``still_valid`` (see
    ``GatewayChannelsConnection.credential_check_interval``) and closed once their
    token is revoked or expired.
    """

    name = "api-token"
    explicit_credentials = True
    challenge = "Bearer"

    def __init__(self, tokens: TokenStore | None = None, pepper: bytes | None = None,
                 **kwargs: Any):
        """Open the token table and read the pepper (blocking: call at startup).

        ``tokens`` and ``pepper`` default to those of the process's ``StoreFactory``.
        """
        super().__init__(**kwargs)
        if tokens is None or pepper is None:
            factory = StoreFactory.instance()
            tokens = factory.tokens if tokens is None else tokens
            pepper = factory.token_pepper() if pepper is None else pepper
        self._tokens, self._pepper = tokens, pepper

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        offered = header_token(request)
        if offered is None or not is_api_token(offered):
            return None
        try:
            record = await check(self._tokens, self._pepper, offered, time.time())
        except Unauthorized:
            self.log.warning("Refused an API token (id %s) from %s", _safe_id(offered),
                             request.remote_ip)
            raise
        self.log.debug("API token %s authenticated %s", record.token_id, record.username)
        return principal_for(record, self.name)

    async def still_valid(self, request: HTTPServerRequest) -> bool:
        """Whether the API token ``request`` was accepted with is still active now
        (one store read). For long-lived connections (websockets)."""
        offered = header_token(request)
        if offered is None or not is_api_token(offered):
            return False
        try:
            await check(self._tokens, self._pepper, offered, time.time())
        except Unauthorized:
            return False
        return True


def _safe_id(text: str) -> str:
    """The id part of a well-formed token, for logs; never any of the secret."""
    parsed = parse_token(text)
    return parsed[0] if parsed else "malformed"

"""Per-user API token records: who a token stands for, when it ends, its hash.

The store never sees a token itself, only its id (the public part, used as
the lookup key) and a keyed hash of the secret part; ``kernelyard.auth.api_tokens``
mints, hashes and checks tokens. Records are never deleted, only revoked, so
``kernelyard token list`` keeps showing what was issued.

The hashing key (the *pepper*) is the store secret ``PEPPER_NAME``, kept
sealed under the store's key ring, so rotating the store key re-encrypts it
and leaves every token's hash valid. It is made once, on the first opening of
the store, by ``pepper_from_key`` from the store key in use then: a store whose
tokens were hashed before the pepper was kept apart (when it was derived from
the store key on every start) thus keeps them valid.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS api_tokens (
        token_id TEXT PRIMARY KEY,
        digest   TEXT NOT NULL,
        username TEXT NOT NULL,
        groups   TEXT NOT NULL DEFAULT '[]',
        admin    INTEGER NOT NULL DEFAULT 0,
        created  REAL NOT NULL,
        expires  REAL,
        revoked  REAL
    )
    """,
    "CREATE INDEX IF NOT EXISTS api_tokens_username ON api_tokens(username)",
)
_COLUMNS = ("token_id", "digest", "username", "groups", "admin", "created", "expires",
            "revoked")
# Column names are constants of this module; values always go through '?' parameters.
_SELECT = f"SELECT {','.join(_COLUMNS)} FROM api_tokens"  # noqa: S608
_INSERT = (f"INSERT INTO api_tokens ({','.join(_COLUMNS)}) "  # noqa: S608
           f"VALUES ({','.join('?' * len(_COLUMNS))})")
# The name of the store secret that holds the pepper (hex), and the label it is derived with.
PEPPER_NAME = "api_token_pepper"
_PEPPER_LABEL = b"kernelyard api-token pepper v1"


def pepper_from_key(store_key: bytes) -> bytes:
    """The pepper a store key yields: HMAC-SHA256(key, label), as random as the key."""
    return hmac.new(store_key, _PEPPER_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True)
class TokenRecord:
    """One issued API token, without its secret.

    ``digest`` is the keyed hash of the secret (see ``kernelyard.auth.api_tokens``);
    ``expires`` and ``revoked`` are epoch seconds, or None for never / not revoked.
    """

    token_id: str
    username: str
    digest: str = field(repr=False)
    groups: tuple[str, ...] = ()
    admin: bool = False
    created: float = field(default_factory=time.time)
    expires: float | None = None
    revoked: float | None = None

    def status(self, now: float) -> str:
        """``active``, ``expired`` or ``revoked`` at time ``now``."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"


class TokenStore:
    """The interface every token store implements. All methods are coroutines."""

    async def add(self, record: TokenRecord) -> None:
        """Insert a new record; an id already in use is an error (ValueError)."""
        raise NotImplementedError

    async def get(self, token_id: str) -> TokenRecord | None:
        raise NotImplementedError

    async def all(self) -> list[TokenRecord]:
        """Every record, oldest first."""
        raise NotImplementedError

    async def revoke(self, token_id: str, when: float) -> bool:
        """Mark one token revoked; False when no such token or already revoked."""
        raise NotImplementedError

    async def revoke_user(self, username: str, when: float) -> list[str]:
        """Revoke every unrevoked token of ``username``; the ids revoked."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections."""
        self.close_blocking()

    def close_blocking(self) -> None:
        """Release connections, outside the event loop."""


class SQLiteTokenStore(TokenStore):
    """Token records in a table of the gateway's SQLite file; calls run in a thread."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        path.chmod(0o600)
        self._lock = threading.Lock()

    async def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        def work() -> list[tuple[Any, ...]]:
            with self._lock:
                return self._db.execute(sql, args).fetchall()

        return await asyncio.to_thread(work)

    async def add(self, record: TokenRecord) -> None:
        try:
            await self._run(_INSERT, _to_row(record))
        except sqlite3.IntegrityError:
            raise ValueError(f"token id {record.token_id} is already in use") from None

    async def get(self, token_id: str) -> TokenRecord | None:
        rows = await self._run(f"{_SELECT} WHERE token_id=?", (token_id,))
        return _from_row(rows[0]) if rows else None

    async def all(self) -> list[TokenRecord]:
        return [_from_row(row) for row in await self._run(f"{_SELECT} ORDER BY created")]

    async def revoke(self, token_id: str, when: float) -> bool:
        return bool(await self._revoke_where("token_id", token_id, when))

    async def revoke_user(self, username: str, when: float) -> list[str]:
        return await self._revoke_where("username", username, when)

    async def _revoke_where(self, column: str, value: str, when: float) -> list[str]:
        """Revoke the unrevoked tokens whose ``column`` is ``value``, in one transaction."""
        where = f"WHERE {column}=? AND revoked IS NULL"  # column: one of two constants above

        def work() -> list[str]:
            with self._lock, self._db:
                self._db.execute("BEGIN IMMEDIATE")
                ids = [r[0] for r in self._db.execute(
                    f"SELECT token_id FROM api_tokens {where}", (value,))]  # noqa: S608
                self._db.execute(f"UPDATE api_tokens SET revoked=? {where}",  # noqa: S608
                                 (when, value))
                return sorted(ids)

        return await asyncio.to_thread(work)

    def close_blocking(self) -> None:
        with self._lock:
            self._db.close()


def _to_row(record: TokenRecord) -> tuple[Any, ...]:
    return (record.token_id, record.digest, record.username, json.dumps(list(record.groups)),
            int(record.admin), record.created, record.expires, record.revoked)


def _from_row(row: tuple[Any, ...]) -> TokenRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["groups"] = tuple(json.loads(values["groups"]))
    values["admin"] = bool(values["admin"])
    return TokenRecord(**values)

"""The default store: SQLite in the Jupyter data dir, no server needed.

Two tables hold secrets sealed under the store's key ring (``secrets.SecretBox``):
the ``_SECRET_FIELDS`` of each kernel's connection info, and ``store_secrets``,
the store's own named secrets (the API token pepper). ``sealed_values`` and
``reseal_all`` know both, so a key rotation misses none.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .base import KernelRecord, KernelStore
from .secrets import SecretBox

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS kernels (
        kernel_id   TEXT PRIMARY KEY,
        kernel_name TEXT NOT NULL,
        provisioner TEXT NOT NULL,
        owner       TEXT NOT NULL DEFAULT '',
        state       TEXT NOT NULL DEFAULT '{}',
        connection  TEXT NOT NULL DEFAULT '{}',
        created     REAL NOT NULL,
        updated     REAL NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS store_secrets (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
)
_COLUMNS = ("kernel_id", "kernel_name", "provisioner", "owner", "state", "connection",
            "created", "updated")
# The connection-info fields that are encrypted at rest.
_SECRET_FIELDS = ("key", "curve_secretkey")
# Column names are constants of this module; values always go through '?' parameters.
_SELECT = f"SELECT {','.join(_COLUMNS)} FROM kernels"  # noqa: S608
_INSERT = (f"INSERT OR REPLACE INTO kernels ({','.join(_COLUMNS)}) "  # noqa: S608
           f"VALUES ({','.join('?' * len(_COLUMNS))})")
_UPDATABLE = {"state", "connection", "owner"}

T = TypeVar("T")


def connect(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    """A connection to the store file (created mode 0600, with its tables), in autocommit.

    ``timeout``: seconds to wait for another connection's write lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                         timeout=timeout)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in _SCHEMA:
        db.execute(statement)
    path.chmod(0o600)
    return db


@dataclass(frozen=True)
class Sealed:
    """One sealed value: where it is (a kernel's connection field, or a store secret)."""

    where: str  # "kernel <id> <field>" or "store secret <name>"
    token: str = field(repr=False)


def sealed_values(db: sqlite3.Connection) -> list[Sealed]:
    """Every value in the store that is sealed under the key ring."""
    found = []
    for kernel_id, connection in db.execute("SELECT kernel_id, connection FROM kernels"):
        info = json.loads(connection)
        found += [Sealed(f"kernel {kernel_id} {name}", info[name])
                  for name in _SECRET_FIELDS if info.get(name)]
    found += [Sealed(f"store secret {name}", value)
              for name, value in db.execute("SELECT name, value FROM store_secrets")]
    return found


def holds_secrets(path: Path) -> bool:
    """Whether the store file at ``path`` exists and holds any sealed value (no changes)."""
    if not path.exists():
        return False
    db = sqlite3.connect(str(path))
    try:
        return bool(sealed_values(db))
    except sqlite3.OperationalError:  # no such table: a store from before, or not ours
        return False
    finally:
        db.close()


def reseal_all(db: sqlite3.Connection, box: SecretBox) -> tuple[int, int]:
    """Re-encrypt every sealed value under the ring's newest key: (kernels, store secrets).

    The caller holds a write transaction (``BEGIN IMMEDIATE``), so this is all or
    nothing and no writer interleaves. A value no key opens raises ConfigError.
    """
    kernels = 0
    for kernel_id, connection in db.execute("SELECT kernel_id, connection FROM kernels"):
        info = json.loads(connection)
        names = [name for name in _SECRET_FIELDS if info.get(name)]
        if names:
            info.update({name: box.reseal(info[name]) for name in names})
            db.execute("UPDATE kernels SET connection=? WHERE kernel_id=?",
                       (json.dumps(info), kernel_id))
            kernels += 1
    secrets = db.execute("SELECT name, value FROM store_secrets").fetchall()
    for name, value in secrets:
        db.execute("UPDATE store_secrets SET value=? WHERE name=?", (box.reseal(value), name))
    return kernels, len(secrets)


class SQLiteKernelStore(KernelStore):
    """Kernel records in one SQLite file; calls run in a worker thread.

    Opening checks that the key ring opens every sealed value in the file, so a
    wrong or missing key stops the gateway at start with a ConfigError naming
    the key setting. Before each call the ring is refreshed from its key file,
    so records sealed under a key from a rotation made meanwhile still open.
    """

    def __init__(self, path: Path, box: SecretBox):
        self._db = connect(path)
        self._lock = threading.Lock()
        self._box = box
        for sealed in sealed_values(self._db):
            box.open(sealed.token)

    async def _call(self, work: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                self._box.refresh()
                return work()

        return await asyncio.to_thread(locked)

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, args).fetchall()

    async def put(self, record: KernelRecord) -> None:
        await self._call(lambda: self._rows(_INSERT, self._to_row(record)))

    async def update(self, kernel_id: str, **fields: Any) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        names = [*fields, "updated"]
        sql = f"UPDATE kernels SET {', '.join(f'{n}=?' for n in names)} WHERE kernel_id=?"  # noqa: S608

        def work() -> None:
            args = [self._encode(name, value) for name, value in fields.items()]
            self._rows(sql, (*args, time.time(), kernel_id))

        await self._call(work)

    async def get(self, kernel_id: str) -> KernelRecord | None:
        def work() -> KernelRecord | None:
            rows = self._rows(f"{_SELECT} WHERE kernel_id=?", (kernel_id,))
            return self._from_row(rows[0]) if rows else None

        return await self._call(work)

    async def all(self) -> list[KernelRecord]:
        return await self._call(
            lambda: [self._from_row(row) for row in self._rows(f"{_SELECT} ORDER BY created")])

    async def delete(self, kernel_id: str) -> None:
        await self._call(lambda: self._rows("DELETE FROM kernels WHERE kernel_id=?", (kernel_id,)))

    def secret(self, name: str, make: Callable[[], str]) -> str:
        """The store secret ``name``; made by ``make`` and sealed on first use.

        Blocking (for startup and the CLI). Processes racing to make it agree on
        one value: the first to commit wins and the others read it.
        """
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT value FROM store_secrets WHERE name=?",
                                   (name,)).fetchone()
            if row:
                return self._box.open(row[0])
            value = make()
            self._db.execute("INSERT INTO store_secrets (name, value) VALUES (?, ?)",
                             (name, self._box.seal(value)))
            return value

    def close_blocking(self) -> None:
        with self._lock:
            self._db.close()

    def _encode(self, name: str, value: Any) -> Any:
        if name == "connection":
            value = dict(value)
            for field_name in _SECRET_FIELDS:
                if value.get(field_name):
                    value[field_name] = self._box.seal(_as_text(value[field_name]))
        return json.dumps(value) if name in ("state", "connection") else value

    def _to_row(self, record: KernelRecord) -> tuple[Any, ...]:
        return tuple(self._encode(name, getattr(record, name)) for name in _COLUMNS)

    def _from_row(self, row: tuple[Any, ...]) -> KernelRecord:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["state"] = json.loads(values["state"])
        connection = json.loads(values["connection"])
        for field_name in _SECRET_FIELDS:
            if connection.get(field_name):
                connection[field_name] = self._box.open(connection[field_name])
        values["connection"] = connection
        return KernelRecord(**values)


def _as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

"""The default store: SQLite in the Jupyter data dir, no server needed."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .base import KernelRecord, KernelStore
from .secrets import SecretBox

_SCHEMA = """
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
"""
_COLUMNS = ("kernel_id", "kernel_name", "provisioner", "owner", "state", "connection",
            "created", "updated")
# The connection-info fields that are encrypted at rest.
_SECRET_FIELDS = ("key", "curve_secretkey")
# Column names are constants of this module; values always go through '?' parameters.
_SELECT = f"SELECT {','.join(_COLUMNS)} FROM kernels"  # noqa: S608
_INSERT = (f"INSERT OR REPLACE INTO kernels ({','.join(_COLUMNS)}) "  # noqa: S608
           f"VALUES ({','.join('?' * len(_COLUMNS))})")
_UPDATABLE = {"state", "connection", "owner"}


class SQLiteKernelStore(KernelStore):
    """Kernel records in one SQLite file; calls run in a worker thread."""

    def __init__(self, path: Path, box: SecretBox):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        path.chmod(0o600)
        self._lock = threading.Lock()
        self._box = box

    async def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        def work() -> list[tuple[Any, ...]]:
            with self._lock:
                return self._db.execute(sql, args).fetchall()

        return await asyncio.to_thread(work)

    async def put(self, record: KernelRecord) -> None:
        await self._run(_INSERT, self._to_row(record))

    async def update(self, kernel_id: str, **fields: Any) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        sets, args = [], []
        for name, value in fields.items():
            sets.append(f"{name}=?")
            args.append(self._encode(name, value))
        sets.append("updated=?")
        args.append(time.time())
        sql = f"UPDATE kernels SET {', '.join(sets)} WHERE kernel_id=?"  # noqa: S608
        await self._run(sql, (*args, kernel_id))

    async def get(self, kernel_id: str) -> KernelRecord | None:
        rows = await self._run(f"{_SELECT} WHERE kernel_id=?", (kernel_id,))
        return self._from_row(rows[0]) if rows else None

    async def all(self) -> list[KernelRecord]:
        rows = await self._run(f"{_SELECT} ORDER BY created")
        return [self._from_row(row) for row in rows]

    async def delete(self, kernel_id: str) -> None:
        await self._run("DELETE FROM kernels WHERE kernel_id=?", (kernel_id,))

    async def close(self) -> None:
        with self._lock:
            self._db.close()

    def _encode(self, name: str, value: Any) -> Any:
        if name == "connection":
            value = dict(value)
            for field in _SECRET_FIELDS:
                if value.get(field):
                    value[field] = self._box.seal(_as_text(value[field]))
        return json.dumps(value) if name in ("state", "connection") else value

    def _to_row(self, record: KernelRecord) -> tuple[Any, ...]:
        return tuple(self._encode(name, getattr(record, name)) for name in _COLUMNS)

    def _from_row(self, row: tuple[Any, ...]) -> KernelRecord:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["state"] = json.loads(values["state"])
        connection = json.loads(values["connection"])
        for field in _SECRET_FIELDS:
            if connection.get(field):
                connection[field] = self._box.open(connection[field])
        values["connection"] = connection
        return KernelRecord(**values)


def _as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

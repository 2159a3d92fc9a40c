"""The SQLite kernel store: records round-trip, keys are encrypted at rest."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path

import pytest

from kernelyard.errors import ConfigError
from kernelyard.store.base import KernelRecord
from kernelyard.store.secrets import SecretBox, load_or_create_key
from kernelyard.store.sqlite import SQLiteKernelStore


def _store(tmp_path: Path) -> SQLiteKernelStore:
    key = load_or_create_key(tmp_path / "store.key")
    return SQLiteKernelStore(tmp_path / "k.db", SecretBox(key, "StoreFactory.key_file"))


def test_round_trip_and_encryption_at_rest(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = _store(tmp_path)
        rec = KernelRecord("k1", "python3", "kernelyard-ssh", owner="alice",
                           state={"host": "h1"}, connection={"key": "s3cret-key", "shell_port": 5})
        await store.put(rec)
        await store.update("k1", state={"host": "h1", "pid": 42})
        got = await store.get("k1")
        assert got is not None
        assert got.connection == {"key": "s3cret-key", "shell_port": 5}
        assert got.state == {"host": "h1", "pid": 42} and got.owner == "alice"
        assert [r.kernel_id for r in await store.all()] == ["k1"]
        await store.delete("k1")
        await store.delete("k1")
        assert await store.get("k1") is None
        await store.close()

    asyncio.run(scenario())
    assert b"s3cret-key" not in (tmp_path / "k.db").read_bytes()
    assert stat.S_IMODE((tmp_path / "store.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k.db").stat().st_mode) == 0o600


def test_key_is_stored_encrypted(tmp_path: Path) -> None:
    async def put() -> None:
        store = _store(tmp_path)
        await store.put(KernelRecord("k2", "py", "p", connection={"key": "abc"}))
        await store.close()

    asyncio.run(put())
    raw = sqlite3.connect(tmp_path / "k.db").execute("SELECT connection FROM kernels").fetchone()
    assert '"abc"' not in raw[0] and '"key"' in raw[0]


def test_wrong_key_gives_a_config_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = _store(tmp_path)
        await store.put(KernelRecord("k3", "py", "p", connection={"key": "abc"}))
        await store.close()
        (tmp_path / "store.key").unlink()
        other = _store(tmp_path)
        with pytest.raises(ConfigError, match="was the store key changed"):
            await other.get("k3")
        await other.close()

    asyncio.run(scenario())


def test_bad_configured_key_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="KERNELYARD_STORE_KEY"):
        SecretBox(b"short", "KERNELYARD_STORE_KEY")

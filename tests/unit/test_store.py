"""The SQLite kernel store: records round-trip, keys and store secrets are encrypted at rest."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path

import pytest

from kernelyard.errors import ConfigError
from kernelyard.store.base import KernelRecord
from kernelyard.store.secrets import SecretBox, load_or_create_keys
from kernelyard.store.sqlite import SQLiteKernelStore, holds_secrets


def _store(tmp_path: Path) -> SQLiteKernelStore:
    load_or_create_keys(tmp_path / "store.key")
    return SQLiteKernelStore(tmp_path / "k.db", SecretBox.from_file(tmp_path / "store.key"))


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
        # Opening checks every sealed value, so a wrong key stops a gateway at start.
        with pytest.raises(ConfigError, match=r"StoreFactory.key_file .*was the store key "
                           "changed"):
            _store(tmp_path)

    asyncio.run(scenario())


def test_bad_configured_key_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="KERNELYARD_STORE_KEY"):
        SecretBox(b"short", "KERNELYARD_STORE_KEY")


def test_curve_secret_key_is_sealed_too(tmp_path: Path) -> None:
    async def put() -> None:
        store = _store(tmp_path)
        await store.put(KernelRecord("k4", "py", "p", connection={
            "key": "hmac-abcdef", "curve_secretkey": "curve-secret-xyz", "curve_publickey": "pk"}))
        got = await store.get("k4")
        assert got is not None and got.connection["curve_secretkey"] == "curve-secret-xyz"
        await store.close()

    asyncio.run(put())
    raw = (tmp_path / "k.db").read_bytes()
    assert b"curve-secret-xyz" not in raw and b"hmac-abcdef" not in raw and b'"pk"' in raw
    assert holds_secrets(tmp_path / "k.db")
    assert not holds_secrets(tmp_path / "missing.db")


def test_a_store_secret_is_made_once_and_kept_sealed(tmp_path: Path) -> None:
    made: list[str] = []

    def make() -> str:
        made.append("a-store-secret-0123")
        return made[-1]

    first = _store(tmp_path)
    assert first.secret("s", make) == "a-store-secret-0123"
    second = _store(tmp_path)  # another process on the same file
    assert second.secret("s", make) == "a-store-secret-0123"
    assert made == ["a-store-secret-0123"]
    first.close_blocking()
    second.close_blocking()
    assert b"a-store-secret-0123" not in (tmp_path / "k.db").read_bytes()


def test_the_key_file_is_created_once(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "store.key"
    keys = load_or_create_keys(path)
    assert len(keys) == 1 and load_or_create_keys(path) == keys
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["store.key"]

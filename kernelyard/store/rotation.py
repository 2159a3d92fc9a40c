"""Store key rotation: a new key first, every sealed secret re-encrypted under it.

``rotate_key`` writes the key file as ``new, old...`` (old keys stay for reading)
and then re-encrypts every sealed value in one transaction; ``drop_old_keys``
re-encrypts again (catching anything a gateway sealed under an old key while
the rotation ran), checks that the newest key alone opens everything, and only
then rewrites the key file with the newest key alone. ``re_encrypt`` is the
middle step alone, for keys that come from ``KERNELYARD_STORE_KEY``, which no
command can change. ``census`` says which key seals how many secrets.

Each operation holds an exclusive lock beside the store file for its whole
length, so two operators cannot interleave a rotation and a drop. Running
gateways need no pause: SQLite serialises the writes (they wait for the
transaction, up to their busy timeout), readers keep reading, and every
gateway re-reads a replaced key file before its next store access.

Nothing here returns, logs or prints a key: results carry key ids only.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from . import StoreFactory
from .secrets import (
    ENV_VAR,
    FILE_SETTING,
    SecretBox,
    generate_key,
    key_id,
    read_key_file,
    write_key_file,
)
from .sqlite import connect, reseal_all, sealed_values

# Seconds a rotation waits for a gateway's write transaction to end.
LOCK_TIMEOUT = 30.0


@dataclass(frozen=True)
class Resealed:
    """What an operation did: the ring after it and the values it re-encrypted."""

    key_ids: list[str]  # newest first
    kernels: int = 0  # kernels whose secret fields were re-encrypted
    store_secrets: int = 0
    dropped: list[str] = field(default_factory=list)  # ids of keys removed from the ring


@dataclass(frozen=True)
class Census:
    """How many sealed values each key of the ring opens (the first that does)."""

    key_ids: list[str]
    counts: list[int]
    unreadable: list[str]  # where the values are that no key opens


def rotate_key(factory: StoreFactory) -> Resealed:
    """Put a new random key first in the key file and re-encrypt everything under it."""
    path = _key_file(factory, "rotate-key")
    with _exclusive(factory):
        factory.store  # noqa: B018 - checks the ring opens everything, keeps the pepper
        keys = read_key_file(path)
        write_key_file(path, [generate_key(), *keys])  # first: a crash leaves both keys
        box = SecretBox.from_file(path)
        kernels, secrets = _reseal(factory, box)
    return Resealed(box.key_ids, kernels, secrets)


def drop_old_keys(factory: StoreFactory) -> Resealed:
    """Re-encrypt under the newest key, check it alone opens everything, drop the others."""
    path = _key_file(factory, "drop-old-keys")
    with _exclusive(factory):
        factory.store  # noqa: B018
        box = SecretBox.from_file(path)
        kernels, secrets = _reseal(factory, box)
        keys = box.keys
        if len(keys) > 1:
            write_key_file(path, keys[:1])  # after the commit: everything opens with it
    return Resealed([key_id(keys[0])], kernels, secrets, [key_id(k) for k in keys[1:]])


def re_encrypt(factory: StoreFactory) -> Resealed:
    """Re-encrypt every sealed value under the ring's newest key; the ring is unchanged."""
    box = factory.secret_box()
    with _exclusive(factory):
        factory.store  # noqa: B018
        box.refresh()
        kernels, secrets = _reseal(factory, box)
    return Resealed(box.key_ids, kernels, secrets)


def census(factory: StoreFactory) -> Census:
    """Which key of the ring seals how many values (read only; no ConfigError for a
    value no key opens: it is listed in ``unreadable``)."""
    box = factory.secret_box()
    counts = [0] * len(box.keys)
    unreadable = []
    db = connect(factory.sqlite_path())
    try:
        for sealed in sealed_values(db):
            n = box.which_key(sealed.token)
            if n is None:
                unreadable.append(sealed.where)
            else:
                counts[n] += 1
    finally:
        db.close()
    return Census(box.key_ids, counts, unreadable)


def _reseal(factory: StoreFactory, box: SecretBox) -> tuple[int, int]:
    """One transaction: re-encrypt everything, then check the newest key opens all of it."""
    db = connect(factory.sqlite_path(), timeout=LOCK_TIMEOUT)
    try:
        with db:
            db.execute("BEGIN IMMEDIATE")
            counts = reseal_all(db, box)
            stale = [s.where for s in sealed_values(db) if box.which_key(s.token) != 0]
            if stale:  # cannot happen unless the ring changed under us: roll back
                raise ConfigError(f"re-encryption left {len(stale)} value(s) under an older "
                                  "key; nothing was changed")
        return counts
    finally:
        db.close()


def _key_file(factory: StoreFactory, command: str) -> Path:
    """The key file this command may rewrite; ConfigError when it may not."""
    path = factory.key_path()
    if path is None:
        raise ConfigError(
            f"the store keys come from {ENV_VAR}, which `kernelyard store {command}` cannot "
            "change: edit the variable, restart the gateways, then run `kernelyard store "
            "re-encrypt` (see docs/store.md)"
        )
    _check_owner(path, FILE_SETTING)
    _check_owner(factory.sqlite_path(), "StoreFactory.url")
    return path


def _check_owner(path: Path, setting: str) -> None:
    """Refuse to rewrite a file the gateway's user would then no longer own or read."""
    try:
        owner = path.stat().st_uid
    except FileNotFoundError:
        return
    if owner != os.geteuid():
        raise ConfigError(f"{setting} {path} belongs to user id {owner}: run `kernelyard "
                          "store` as that user (the one the gateway runs as)")


@contextmanager
def _exclusive(factory: StoreFactory) -> Iterator[None]:
    """Hold the store's key-maintenance lock (a 0600 file beside the store file)."""
    db_path = factory.sqlite_path()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    lock = db_path.with_name(db_path.name + ".keys.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

"""Encryption at rest for the secrets in the store (Fernet: AES-128-CBC + HMAC).

The store has a *key ring*: one or more Fernet keys, newest first. The newest
seals every new secret; every key in the ring may open one. That is what lets
``kernelyard store rotate-key`` put a new key first while the old one still
opens whatever is not re-encrypted yet (see docs/store.md).

The ring comes from ``StoreFactory.key_file`` (one key a line, newest first;
re-read whenever the file is replaced, so a running gateway follows a rotation)
or from ``KERNELYARD_STORE_KEY`` (keys separated by commas, read once).

No function here logs, prints or puts into an error message any key or any
plain secret; a key is named by its :func:`key_id` at most.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ..errors import ConfigError

ENV_VAR = "KERNELYARD_STORE_KEY"
FILE_SETTING = "StoreFactory.key_file"
_SEPARATORS = re.compile(r"[\s,]+")
_KEY_ID_LABEL = b"kernelyard store key id"

module_log = logging.getLogger("kernelyard.store")


def generate_key() -> bytes:
    """A fresh random Fernet key (32 bytes, url-safe base64)."""
    return Fernet.generate_key()


def key_id(key: bytes) -> str:
    """A short public name for a key: a one-way HMAC of it, safe to show and log."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:8]


def parse_keys(text: str, setting: str) -> list[bytes]:
    """The keys in ``text``, newest first: separated by newlines, commas or spaces.

    ``#`` starts a comment (no key contains one). ConfigError, naming ``setting``
    and the key's position but never its value, when there is none or one is not
    a Fernet key. A key listed twice is kept once, at its first place.
    """
    keys: list[bytes] = []
    for line in text.splitlines():
        for word in _SEPARATORS.split(line.split("#", 1)[0]):
            if word and word.encode() not in keys:
                keys.append(word.encode())
    if not keys:
        raise ConfigError(f"{setting} holds no key")
    for n, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(f"{setting}: key {n} is not a valid key "
                              "(32 url-safe base64 bytes)") from None
    return keys


def read_key_file(path: Path) -> list[bytes]:
    """The key ring in ``path``; ConfigError naming ``StoreFactory.key_file`` otherwise."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{FILE_SETTING} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not text"
        raise ConfigError(f"{FILE_SETTING} {path} cannot be read: {reason}") from None
    return parse_keys(text, f"{FILE_SETTING} {path}")


def write_key_file(path: Path, keys: Sequence[bytes], *, replace: bool = True) -> bool:
    """Write ``keys`` (newest first) to ``path`` atomically, mode 0600.

    The keys go to a new file created 0600 in the same directory, which is
    synced and then renamed over ``path`` (``replace``) or linked to it only if
    ``path`` does not exist yet (not ``replace``; returns False if it did). A
    reader sees the old ring or the new one, never a mix, and a crash leaves
    one of the two.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(key + b"\n" for key in keys))
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    _sync_dir(path.parent)
    return True


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_keys(path: Path) -> list[bytes]:
    """The key ring in ``path``; a new file with one fresh key (mode 0600) if none exists.

    Two processes starting at once agree: only one file is ever created.
    """
    if not path.exists():
        write_key_file(path, [generate_key()], replace=False)
    return read_key_file(path)


class SecretBox:
    """Seals short strings with the newest key of a ring and opens them with any key.

    ``source`` is the key file the ring came from, if any: :meth:`refresh` re-reads
    it when it was replaced, and says so on ``log`` (the gateway's). Thread-safe.
    """

    def __init__(self, keys: Sequence[bytes] | bytes, setting: str, source: Path | None = None,
                 log: logging.Logger | logging.LoggerAdapter[Any] | None = None):
        self._setting, self._source = setting, source
        self._log = log or module_log
        self._lock = threading.Lock()
        self._stamp = self._stat()
        text = keys.decode() if isinstance(keys, bytes) else "\n".join(k.decode() for k in keys)
        self._use(parse_keys(text, setting))

    @classmethod
    def from_file(cls, path: Path,
                  log: logging.Logger | logging.LoggerAdapter[Any] | None = None) -> SecretBox:
        return cls(read_key_file(path), FILE_SETTING, source=path, log=log)

    @property
    def setting(self) -> str:
        """The setting the keys come from, for messages."""
        return self._setting

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def keys(self) -> list[bytes]:
        """The ring, newest first (never log or print these)."""
        return list(self._ring[0])

    @property
    def key_ids(self) -> list[str]:
        return [key_id(k) for k in self._ring[0]]

    def seal(self, plain: str) -> str:
        return self._ring[2].encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> str:
        """The plain text; ConfigError naming the setting when no key of the ring opens it."""
        try:
            return self._ring[2].decrypt(sealed.encode()).decode()
        except InvalidToken:
            pass
        if self.refresh():  # sealed under a key this process has not read yet
            try:
                return self._ring[2].decrypt(sealed.encode()).decode()
            except InvalidToken:
                pass
        where = f"{self._setting} ({self._source})" if self._source else self._setting
        raise ConfigError(
            f"a secret in the store cannot be decrypted with {where}: was the store key "
            "changed, or an old key dropped before everything was re-encrypted?"
        )

    def reseal(self, sealed: str) -> str:
        """``sealed`` re-encrypted under the newest key (ConfigError if no key opens it)."""
        try:
            return self._ring[2].rotate(sealed.encode()).decode()
        except InvalidToken:
            self.open(sealed)  # refreshes, or raises the ConfigError
            return self._ring[2].rotate(sealed.encode()).decode()

    def which_key(self, sealed: str) -> int | None:
        """The position in the ring of the key that opens ``sealed``, or None."""
        for n, fernet in enumerate(self._ring[1]):
            try:
                fernet.decrypt(sealed.encode())
            except InvalidToken:
                continue
            return n
        return None

    def refresh(self) -> bool:
        """Re-read the key file if it was replaced; whether the ring changed.

        A file that cannot be read or parsed now is logged (without its content)
        and the ring in memory is kept, so a typo does not stop a running gateway.
        """
        if self._source is None:
            return False
        with self._lock:
            stamp = self._stat()
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                keys = read_key_file(self._source)
            except ConfigError as e:
                self._log.error("Keeping the store keys in memory: %s", e.message)
                return False
            if keys == self._ring[0]:
                return False
            self._use(keys)
        self._log.info("Re-read %s %s: sealing with key %s, %d older key(s) for reading",
                       FILE_SETTING, self._source, key_id(keys[0]), len(keys) - 1)
        return True

    def _use(self, keys: list[bytes]) -> None:
        fernets = [Fernet(k) for k in keys]
        # One tuple, swapped in one assignment: a reader never sees half of a new ring.
        self._ring = (keys, fernets, MultiFernet(fernets))

    def _stat(self) -> tuple[int, int, int] | None:
        if self._source is None:
            return None
        try:
            st = self._source.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

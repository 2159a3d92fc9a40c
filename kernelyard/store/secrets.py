"""Encryption at rest for the secrets in kernel records (Fernet: AES-128-CBC + HMAC)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ..errors import ConfigError


def load_or_create_key(path: Path) -> bytes:
    """The Fernet key in ``path``, created with mode 0600 on first use."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class SecretBox:
    """Encrypts and decrypts short strings with one key."""

    def __init__(self, key: bytes, setting: str):
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(f"{setting} is not a valid key (32 url-safe base64 bytes)") from None
        self._setting = setting

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ConfigError(
                f"a stored kernel key cannot be decrypted with {self._setting}: "
                "was the store key changed?"
            ) from None

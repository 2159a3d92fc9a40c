"""Where kernel records live: SQLite by default, one file in the data dir."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from traitlets import Unicode, default
from traitlets.config import SingletonConfigurable

from ..errors import ConfigError
from .base import KernelRecord, KernelStore
from .secrets import ENV_VAR, FILE_SETTING, SecretBox, load_or_create_keys, parse_keys
from .sqlite import SQLiteKernelStore, holds_secrets
from .tokens import PEPPER_NAME, SQLiteTokenStore, TokenStore, pepper_from_key

__all__ = ["KernelRecord", "KernelStore", "StoreFactory"]


class StoreFactory(SingletonConfigurable):
    """Opens the configured kernel store once per process."""

    url = Unicode(
        config=True,
        help="Where kernel records are kept: 'sqlite:///ABSOLUTE/PATH.db'. Default: "
        "kernelyard.db in the Jupyter data dir.",
    )
    key_file = Unicode(
        config=True,
        help="File holding the keys that encrypt the store's secrets at rest (kernel keys, "
        "the API token pepper): one key a line, newest first. The first seals new secrets; "
        "every one opens them, so a rotation (`kernelyard store rotate-key`) can keep the "
        "previous key until everything is re-encrypted. Created (mode 0600, one key) on "
        "first start; re-read whenever it is replaced, so a running gateway follows a "
        "rotation. Default: kernelyard_store.key beside the SQLite file. The env var "
        "KERNELYARD_STORE_KEY (keys separated by commas, newest first), if set, is used "
        "instead and is read once, at start.",
    )

    @default("url")
    def _default_url(self) -> str:
        return f"sqlite:///{Path(jupyter_data_dir()) / 'kernelyard.db'}"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._store: KernelStore | None = None
        self._tokens: TokenStore | None = None
        self._box: SecretBox | None = None
        self._pepper: bytes | None = None

    @property
    def store(self) -> KernelStore:
        """The kernel store, opened on first use (blocking: at startup, or in the CLI).

        Opening checks the key ring against every sealed value and keeps the API
        token pepper: a wrong or missing key is a ConfigError naming the setting.
        """
        if self._store is None:
            self._store = self._open()
        return self._store

    @property
    def tokens(self) -> TokenStore:
        """The API token records, in the same database as the kernel records."""
        if self._tokens is None:
            self._tokens = SQLiteTokenStore(self.sqlite_path())
        return self._tokens

    def sqlite_path(self) -> Path:
        """The SQLite file ``url`` names; ConfigError for any other kind of url."""
        if not self.url.startswith("sqlite:///"):
            raise ConfigError(
                f"StoreFactory.url {self.url!r} is not supported: use 'sqlite:///PATH'"
            )
        return Path("/" + self.url[len("sqlite:///") :].lstrip("/"))

    def key_path(self) -> Path | None:
        """The key file, or None when the keys come from ``KERNELYARD_STORE_KEY``."""
        if os.environ.get(ENV_VAR):
            return None
        if self.key_file:
            return Path(self.key_file)
        return self.sqlite_path().with_name("kernelyard_store.key")

    def secret_box(self) -> SecretBox:
        """The store's key ring; the key file is created on first use of a new store.

        A missing key file is not recreated for a store that holds sealed secrets
        (a new key would open none of them): that is a ConfigError.
        """
        if self._box is None:
            self._box = self._load_box()
        return self._box

    def token_pepper(self) -> bytes:
        """The key that hashes API tokens, kept sealed in the store (blocking)."""
        self.store  # noqa: B018 - opening the store makes or reads the pepper
        assert self._pepper is not None
        return self._pepper

    def _load_box(self) -> SecretBox:
        env_keys = os.environ.get(ENV_VAR)
        if env_keys:
            return SecretBox(parse_keys(env_keys, ENV_VAR), ENV_VAR, log=self.log)
        path = self.key_path()
        assert path is not None
        if not path.exists() and holds_secrets(self.sqlite_path()):
            raise ConfigError(
                f"{FILE_SETTING} {path} does not exist, but the store {self.sqlite_path()} "
                "holds secrets sealed under a key: restore that key file (a new key "
                "would open none of them), or set KERNELYARD_STORE_KEY"
            )
        load_or_create_keys(path)
        return SecretBox.from_file(path, log=self.log)

    def _open(self) -> KernelStore:
        box = self.secret_box()
        store = SQLiteKernelStore(self.sqlite_path(), box)
        try:
            # The oldest key: before this secret existed, tokens were hashed with the
            # pepper of the one key there was, which a first rotation keeps last.
            oldest = box.keys[-1]
            self._pepper = bytes.fromhex(
                store.secret(PEPPER_NAME, lambda: pepper_from_key(oldest).hex()))
        except BaseException:
            store.close_blocking()
            raise
        return store

    async def close(self) -> None:
        self.close_blocking()

    def close_blocking(self) -> None:
        """Close what was opened; the next use opens (and checks) everything again."""
        if self._store is not None:
            self._store.close_blocking()
            self._store = None
        if self._tokens is not None:
            self._tokens.close_blocking()
            self._tokens = None
        self._box = None
        self._pepper = None

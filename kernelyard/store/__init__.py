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
from .tokens import SQLiteTokenStore, TokenStore

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
        help="File holding the key that encrypts kernel keys at rest; created (mode 0600) "
        "on first start. Default: kernelyard_store.key beside the SQLite file. The env var "
        "KERNELYARD_STORE_KEY, if set, is used instead.",
    )

    @default("url")
    def _default_url(self) -> str:
        return f"sqlite:///{Path(jupyter_data_dir()) / 'kernelyard.db'}"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._store: KernelStore | None = None
        self._tokens: TokenStore | None = None

    @property
    def store(self) -> KernelStore:
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
        return Path(self.url[len("sqlite:///") - 1 :])

    def secret_key(self) -> tuple[bytes, str]:
        """The store's secret key (created on first use) and the setting it comes from."""
        from .secrets import load_or_create_key

        env_key = os.environ.get("KERNELYARD_STORE_KEY")
        if env_key:
            return env_key.encode(), "KERNELYARD_STORE_KEY"
        key_path = Path(self.key_file) if self.key_file else self.sqlite_path().with_name(
            "kernelyard_store.key")
        return load_or_create_key(key_path), "StoreFactory.key_file"

    def _open(self) -> KernelStore:
        from .secrets import SecretBox
        from .sqlite import SQLiteKernelStore

        return SQLiteKernelStore(self.sqlite_path(), SecretBox(*self.secret_key()))

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._tokens is not None:
            await self._tokens.close()
            self._tokens = None

"""Shipping the launcher by SFTP: concurrent first starts on a host, and other gateways.

The SFTP server is a fake with SFTP v3's rename (it never replaces a file) that
yields to the event loop at every call, so concurrent starts interleave as they
do over a network.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import asyncssh

from kernelyard.launcher import spark_startup_path, spark_startup_source
from kernelyard.provisioners.ssh import SSHProvisioner, launcher_source


class FakeSFTP:
    def __init__(self, files: dict[str, bytes], before_rename: Callable[[], None]):
        self.files = files
        self.before_rename = before_rename

    async def __aenter__(self) -> FakeSFTP:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def makedirs(self, path: str, exist_ok: bool = False) -> None:
        await asyncio.sleep(0)

    async def exists(self, path: str) -> bool:
        await asyncio.sleep(0)
        return path in self.files

    def open(self, path: str, mode: str) -> FakeFile:
        return FakeFile(self.files, path)

    async def rename(self, old: str, new: str) -> None:
        await asyncio.sleep(0)
        self.before_rename()
        if new in self.files:
            raise asyncssh.SFTPFailure("File already exists")
        self.files[new] = self.files.pop(old)

    async def remove(self, path: str) -> None:
        await asyncio.sleep(0)
        del self.files[path]


class FakeFile:
    def __init__(self, files: dict[str, bytes], path: str):
        self.files, self.path = files, path

    async def __aenter__(self) -> FakeFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def write(self, data: bytes) -> None:
        await asyncio.sleep(0)
        self.files[self.path] = data

    async def read(self) -> bytes:
        await asyncio.sleep(0)
        return self.files[self.path]


class FakeConn:
    def __init__(self, before_rename: Callable[[], None] = lambda: None):
        self.files: dict[str, bytes] = {}
        self.before_rename = before_rename

    def start_sftp_client(self) -> FakeSFTP:
        return FakeSFTP(self.files, self.before_rename)


def _provisioner(remote_dir: str = "ky") -> SSHProvisioner:
    return SSHProvisioner(kernel_id=str(uuid.uuid4()), kernel_spec=None, remote_dir=remote_dir)


def _shipped(path: str) -> dict[str, bytes]:
    """What a host holds once the launcher at ``path`` is shipped: it and its Spark file."""
    return {spark_startup_path(path): spark_startup_source(), path: launcher_source()}


def _ship(conn: FakeConn, host: str, n: int) -> list[Any]:
    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(_provisioner()._ship_launcher(conn, host)
                                      for _ in range(n)), return_exceptions=True)

    return asyncio.run(all_at_once())


def test_concurrent_first_starts_on_a_host_ship_once_and_all_succeed() -> None:
    conn = FakeConn()
    paths = _ship(conn, f"host-{uuid.uuid4()}", 4)
    assert len(set(paths)) == 1 and isinstance(paths[0], str), paths
    assert conn.files == _shipped(paths[0])  # no temporary file left
    assert paths[0].startswith("ky/launcher-") and paths[0].endswith(".py")


def test_a_copy_another_gateway_just_put_there_is_kept() -> None:
    conn = FakeConn()
    contents = {"_spark.py": spark_startup_source(), ".py": launcher_source()}

    def other_gateway() -> None:  # renames its own copy in place first
        path = next(p for p in conn.files if p.endswith(".tmp")).rsplit(".", 2)[0]
        conn.files.setdefault(path, next(c for end, c in contents.items() if path.endswith(end)))

    conn.before_rename = other_gateway
    [path] = _ship(conn, f"host-{uuid.uuid4()}", 1)
    assert conn.files == _shipped(path)


def test_a_different_file_in_the_way_is_an_error() -> None:
    conn = FakeConn()

    def squatter() -> None:
        path = next(p for p in conn.files if p.endswith(".tmp")).rsplit(".", 2)[0]
        conn.files.setdefault(path, b"not the launcher")

    conn.before_rename = squatter
    [error] = _ship(conn, f"host-{uuid.uuid4()}", 1)
    assert isinstance(error, asyncssh.SFTPFailure), error
    assert list(conn.files.values()) == [b"not the launcher"]  # no temporary file left


def test_each_remote_dir_of_a_host_gets_the_launcher() -> None:
    """Two kernelspecs with their own remote_dir on one host: both folders get a copy."""
    conn, host = FakeConn(), f"host-{uuid.uuid4()}"

    async def one_then_the_other() -> list[str]:
        return [await _provisioner(d)._ship_launcher(conn, host) for d in ("a", "b")]

    paths = asyncio.run(one_then_the_other())
    assert [p.split("/")[0] for p in paths] == ["a", "b"]
    assert conn.files == {**_shipped(paths[0]), **_shipped(paths[1])}

"""Shipping the launcher: concurrent first starts on a host, and other gateways.

The install script really runs (here, in a temporary folder standing for the
remote user's home); only the ssh transport is a stand-in that runs the command
with ``sh -c`` and counts the runs.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelyard.launcher import spark_startup_path, spark_startup_source
from kernelyard.provisioners.command import launcher_source
from kernelyard.provisioners.ssh_backend import SSHBackend, SSHConfig, SSHHostError


@dataclass
class Result:
    exit_status: int
    stdout: bytes
    stderr: bytes


class LocalConn:
    """Runs what the backend would run on the host, in ``home``."""

    def __init__(self, home: Path):
        self.home = home
        self.runs = 0

    async def run(self, command: str, input: bytes = b"", encoding: Any = None,
                  timeout: float = 30) -> Result:
        self.runs += 1
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", command, cwd=self.home, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        return Result(proc.returncode or 0, out, err)


def _backend(remote_dir: str = "ky") -> SSHBackend:
    """The backend object the kernelspecs of one SSH configuration share."""
    return SSHBackend(SSHConfig(remote_dir=remote_dir, remote_python="python3"))


def _shipped(path: str) -> dict[str, bytes]:
    """What a host holds once the launcher at ``path`` is shipped: it and its Spark file."""
    return {spark_startup_path(path): spark_startup_source(), path: launcher_source()}


def _files(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()}


def _ship(backends: list[SSHBackend], conn: LocalConn, n: int) -> list[Any]:
    async def all_at_once() -> list[Any]:
        host = f"host-{uuid.uuid4()}"
        return await asyncio.gather(*(backends[i % len(backends)].ship_launcher(conn, host)
                                      for i in range(n)), return_exceptions=True)

    return asyncio.run(all_at_once())


def test_concurrent_first_starts_on_a_host_ship_once_and_all_succeed(tmp_path: Path) -> None:
    conn = LocalConn(tmp_path)
    paths = _ship([_backend()], conn, 4)
    assert len(set(paths)) == 1 and isinstance(paths[0], str), paths
    assert conn.runs == 2  # the launcher and its Spark file, once
    assert _files(tmp_path) == _shipped(paths[0])  # no temporary file left


def test_two_gateways_installing_at_once_both_succeed(tmp_path: Path) -> None:
    conn = LocalConn(tmp_path)
    paths = _ship([_backend(), _backend()], conn, 6)
    assert len(set(paths)) == 1 and isinstance(paths[0], str), paths
    assert _files(tmp_path) == _shipped(paths[0])


def test_a_copy_another_gateway_put_there_is_kept(tmp_path: Path) -> None:
    conn = LocalConn(tmp_path)
    first = _ship([_backend()], conn, 1)[0]
    inode = os.stat(tmp_path / first).st_ino
    again = _ship([_backend()], conn, 1)[0]  # another gateway: its own backend object
    assert again == first and os.stat(tmp_path / first).st_ino == inode
    assert _files(tmp_path) == _shipped(first)


def test_a_different_file_in_the_way_is_an_error(tmp_path: Path) -> None:
    conn = LocalConn(tmp_path)
    path = _ship([_backend()], conn, 1)[0]
    (tmp_path / path).write_bytes(b"not the launcher")
    [error] = _ship([_backend()], conn, 1)
    assert isinstance(error, SSHHostError) and "in the way" in str(error), error
    assert _files(tmp_path) == {**_shipped(path), path: b"not the launcher"}


def test_each_remote_dir_of_a_host_gets_the_launcher(tmp_path: Path) -> None:
    """Two kernelspecs with their own remote_dir on one host: both folders get a copy."""
    conn = LocalConn(tmp_path)

    async def one_then_the_other() -> list[str]:
        return [await _backend(d).ship_launcher(conn, "h") for d in ("a", "b")]

    paths = asyncio.run(one_then_the_other())
    assert [p.split("/")[0] for p in paths] == ["a", "b"]
    assert _files(tmp_path) == {**_shipped(paths[0]), **_shipped(paths[1])}


def test_the_remote_dir_is_private(tmp_path: Path) -> None:
    _ship([_backend("fresh")], LocalConn(tmp_path), 1)
    assert (tmp_path / "fresh").stat().st_mode & 0o777 == 0o700

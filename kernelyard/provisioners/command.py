"""The command layer of CLI-driven backends: run a program, deliver the launcher and secrets.

``run`` is the one way the gateway runs a backend's program (``spark-submit``, the
run-as helper; ``sbatch``/``squeue``/``scancel`` next): an argv list (never a
shell string), an env, optional stdin bytes, a cwd and a timeout. The program
runs in a process group of its own, which is killed (SIGKILL) when the timeout
passes or the caller is cancelled; its output is captured up to ``max_output``
bytes (the end is kept: that is where programs say what failed). ``run_as`` is the
same through ``sudo -n -u USER --``.

The launcher itself has its own small runner for the kernel: it runs on the node,
stdlib-only, and cannot import this module.

How the launcher and its secrets (session key, callback token and URL, the
client's env) reach a kernel's node is declared per backend (``Delivery``):

- ``STDIN``: the secrets as one JSON line on the launcher's stdin (SSH); the
  launcher is installed by a program reading its source on stdin.
- ``FILE``: a 0600 file (``write_secrets_file``) that the resource manager ships
  into the kernel's private staging dir (YARN ``--files``).
- ``PRIMARY_RESOURCE``: the launcher file is the job's primary resource (YARN).
- ``KUBERNETES_SECRET``: later, a Secret mounted into the pod.

Secrets never go onto a command line nor into a plain env var that a resource
manager shows to other users: ``run`` refuses an argv or env that holds one of the
``secrets`` it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import json
import os
import shutil
import signal
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path

DEFAULT_MAX_OUTPUT = 1 << 20
SUDO = ("sudo", "-n")


class Delivery(enum.Enum):
    """How a backend gets the launcher and its secrets to the kernel's node."""

    STDIN = "stdin"
    FILE = "file"
    PRIMARY_RESOURCE = "primary-resource"
    KUBERNETES_SECRET = "kubernetes-secret"  # noqa: S105 - a name; for the Kubernetes backend


class CommandTimeout(Exception):
    """The program did not finish within its timeout (its process group was killed)."""


@dataclass(frozen=True)
class CommandResult:
    """What a program did: its exit code and (the ends of) its output."""

    returncode: int
    stdout: bytes
    stderr: bytes
    truncated: bool = False

    @property
    def text(self) -> str:
        """stdout (with stderr, when it was merged into it), decoded."""
        return self.stdout.decode(errors="replace")


async def run(argv: list[str], *, env: Mapping[str, str] | None = None,
              stdin: bytes | None = None, cwd: str | None = None, timeout: float,
              max_output: int = DEFAULT_MAX_OUTPUT, merge_stderr: bool = False,
              secrets: Collection[str] = (), dies_with_gateway: bool = False) -> CommandResult:
    """Run ``argv``; kill its process group on timeout (``CommandTimeout``) or cancellation.

    ``env`` None means an empty environment; an ``OSError`` (no such program) is raised
    as it is. ``secrets``: values that must not appear in ``argv`` or ``env``.
    ``dies_with_gateway``: the program gets SIGKILL when the gateway dies, even by
    SIGKILL (``dying_with_gateway``), so that a submit cut off by a crash can't create
    a job after the next gateway has cleaned the start up.
    """
    _refuse_secrets(argv, env or {}, secrets)
    if dies_with_gateway:
        argv = dying_with_gateway(argv)
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=dict(env or {}),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
        start_new_session=True)
    try:
        out, err, cut = await asyncio.wait_for(_communicate(proc, stdin, max_output), timeout)
    except asyncio.TimeoutError:
        await _kill_group(proc)
        raise CommandTimeout(f"{argv[0]} did not finish within {timeout:g} s") from None
    except BaseException:
        await _kill_group(proc)
        raise
    return CommandResult(proc.returncode if proc.returncode is not None else -1, out, err, cut)


def dying_with_gateway(argv: list[str]) -> list[str]:
    """``argv`` under util-linux's ``setpriv --pdeathsig KILL`` (the kernel kills it when
    the gateway's thread that started it ends), or as it is where there is no setpriv.
    A missing program is the ``FileNotFoundError`` exec would raise."""
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


async def run_as(user: str, argv: list[str], *, sudo: Collection[str] = SUDO,
                 **kwargs: object) -> CommandResult:
    """``run`` as ``user`` through ``sudo -n -u USER --`` (``sudo``: the command before -u)."""
    return await run([*sudo, "-u", user, "--", *argv], **kwargs)  # type: ignore[arg-type]


def secrets_payload(secrets: Mapping[str, str], env: Mapping[str, str]) -> bytes:
    """What the launcher reads (``--secrets-from-stdin``/``--secrets-file``): one JSON line."""
    return json.dumps({**secrets, "env": dict(env)}).encode() + b"\n"


def write_secrets_file(folder: str | Path, name: str, secrets: Mapping[str, str],
                       env: Mapping[str, str]) -> Path:
    """The secrets in a new 0600 file ``folder/name`` (``Delivery.FILE``)."""
    path = Path(folder, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets_payload(secrets, env))
    return path


def launcher_source() -> bytes:
    """The launcher's source, to install on a node (``Delivery.STDIN``)."""
    return files("kernelyard").joinpath("launcher.py").read_bytes()


@contextlib.contextmanager
def launcher_file() -> Iterator[Path]:
    """The launcher as a file, e.g. a job's primary resource (``Delivery.PRIMARY_RESOURCE``)."""
    with as_file(files("kernelyard").joinpath("launcher.py")) as path:
        yield path


def _refuse_secrets(argv: list[str], env: Mapping[str, str], secrets: Collection[str]) -> None:
    for secret in (s for s in secrets if s):
        if any(secret in arg for arg in argv) or any(secret in v for v in env.values()):
            raise ValueError("refusing to put a secret on a command line or in an env")


async def _communicate(proc: asyncio.subprocess.Process, stdin: bytes | None,
                       max_output: int) -> tuple[bytes, bytes, bool]:
    async def feed() -> None:
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(stdin or b"")
                await proc.stdin.drain()
            proc.stdin.close()

    results = await asyncio.gather(feed(), _read(proc.stdout, max_output),
                                   _read(proc.stderr, max_output))
    await proc.wait()
    (out, cut_out), (err, cut_err) = results[1], results[2]
    return out, err, cut_out or cut_err


async def _read(stream: asyncio.StreamReader | None, limit: int) -> tuple[bytes, bool]:
    """The last ``limit`` bytes of a stream, read to its end; and whether some were dropped."""
    if stream is None:
        return b"", False
    kept, cut = bytearray(), False
    while chunk := await stream.read(65536):
        kept += chunk
        if len(kept) > limit:
            del kept[:len(kept) - limit]
            cut = True
    return bytes(kept), cut


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()

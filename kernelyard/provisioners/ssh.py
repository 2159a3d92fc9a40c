"""``kernelyard-ssh``: kernels on a pool of SSH hosts.

The launcher file is copied to each host once (by SFTP, keyed by its hash), so
hosts need only a Python 3.8+. Secrets and the client's env go over the ssh
session's stdin; every command line is built from settings and validated ids
and quoted with ``shlex.quote``. Known-hosts checking is on by default.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
import time
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

from traitlets import Bool, Enum, Float, Integer, List, Unicode

from ..errors import InvalidRequest, KernelStartFailed
from ..policy import check_kernel_id
from .base import RemoteProvisionerBase, launcher_args
from .ssh_scripts import CANCEL_SCRIPT, STATUS_SCRIPT
from .status import EXITED, PENDING, RUNNING, BackendStatus


def launcher_source() -> bytes:
    return files("kernelyard").joinpath("launcher.py").read_bytes()


class SSHHostError(KernelStartFailed):
    """A host could not be reached or refused us; names the host."""


class SSHProvisioner(RemoteProvisionerBase):
    """Starts each kernel on one host of ``hosts``."""

    hosts = List(Unicode(), config=True, help="The hosts kernels may run on.")
    placement = Enum(
        ["round-robin", "least-loaded"], "round-robin", config=True,
        help="How a host is chosen: in turn, or the one running the fewest kernels "
        "(counted from the kernel store, so it survives a gateway restart). A client may "
        "pin a host of the list with KERNEL_REMOTE_HOST.",
    )
    username = Unicode("", config=True, help="The remote user (default: the gateway's user).")
    port = Integer(22, config=True, help="The sshd port of the hosts.")
    client_keys = List(Unicode(), config=True, help="Private key files to log in with.")
    known_hosts = Unicode(
        "", config=True, help="known_hosts file (default: ~/.ssh/known_hosts)."
    )
    check_host_keys = Bool(
        True, config=True, help="Verify host keys against known_hosts. Turn off only in labs."
    )
    remote_python = Unicode(
        "/usr/bin/python3", config=True, help="The Python (3.8+) that runs the launcher."
    )
    remote_dir = Unicode(
        ".kernelyard", config=True,
        help="Folder on the hosts (relative to the remote user's home) for the launcher "
        "and each kernel's run dir (connection file, log).",
    )
    port_range = Unicode("", config=True, help="Kernel ports on the hosts, as 'LO..HI'.")
    connect_timeout = Float(10.0, config=True, help="Seconds to wait for an ssh connection.")
    host_retry_after = Float(
        60.0, config=True,
        help="Seconds a host that could not be reached is passed over by placement "
        "(unless every host is down).",
    )

    _connections: dict[tuple[str, int, str], Any] = {}
    _shipped: set[tuple[str, str]] = set()
    _last_host: dict[tuple[str, ...], str] = {}
    _down_until: dict[str, float] = {}

    # ---- hooks ---------------------------------------------------------------------

    async def submit(
        self, argv: list[str], env: dict[str, str], secrets: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        host = await self._choose_host(env)
        yield {"host": host}
        conn = await self._connect(host)
        launcher = await self._ship_launcher(conn, host)
        run_dir = self._run_dir(self.kernel_id)
        yield {"run_dir": run_dir}
        command = shlex.join(self._launcher_argv(launcher, run_dir, argv))
        stdin = json.dumps({**secrets, "env": env}) + "\n"
        result = await asyncio.wait_for(
            conn.run(f"mkdir -p {shlex.quote(run_dir)} && exec {command}", input=stdin),
            timeout=self.connect_timeout + 20,
        )
        if result.exit_status != 0:
            raise KernelStartFailed(
                f"launcher on host {host} failed (exit {result.exit_status}): "
                f"{(result.stderr or result.stdout or '').strip()[-2000:]}"
            )
        started = json.loads(str(result.stdout).strip().splitlines()[-1])
        yield {"launcher_pid": started["pid"]}

    async def status(self, states: list[dict[str, Any]]) -> list[BackendStatus]:
        """One ssh command per host, whatever the number of kernels on it."""
        by_host: dict[str, list[int]] = {}
        for index, state in enumerate(states):
            by_host.setdefault(state.get("host", ""), []).append(index)
        answers = await asyncio.gather(*(
            self._host_status(host, [states[i] for i in indexes])
            for host, indexes in by_host.items()))
        results: dict[int, BackendStatus] = {}
        for indexes, statuses in zip(by_host.values(), answers, strict=True):
            results.update(zip(indexes, statuses, strict=True))
        return [results[i] for i in range(len(states))]

    async def cancel(self, state: dict[str, Any]) -> None:
        if not state.get("host") or not state.get("run_dir"):
            return
        conn = await self._connect(state["host"])
        args = [self.remote_python, "-c", CANCEL_SCRIPT, state["run_dir"],
                str(self.shutdown_grace), _kernel_id_of(state["run_dir"])]
        await conn.run(shlex.join(args), timeout=self.shutdown_grace + 20)

    async def release(self, state: dict[str, Any]) -> None:
        if state.get("host") and state.get("run_dir"):
            conn = await self._connect(state["host"])
            await conn.run(shlex.join(["rm", "-rf", "--", state["run_dir"]]), timeout=20)

    # ---- helpers -------------------------------------------------------------------

    async def _host_status(self, host: str, states: list[dict[str, Any]]) -> list[BackendStatus]:
        runs = [s.get("run_dir", "") for s in states]
        try:
            conn = await self._connect(host)
            args = [self.remote_python, "-c", STATUS_SCRIPT, *[r for r in runs if r]]
            result = await conn.run(shlex.join(args), timeout=self.connect_timeout + 10)
            report = json.loads(result.stdout or "{}")
        except (OSError, asyncio.TimeoutError, ValueError, KernelStartFailed) as e:
            return [BackendStatus(PENDING if "launcher_pid" not in s else RUNNING, host,
                                  reason=f"host unreachable: {e}") for s in states]
        return [_status_from(host, report.get(run)) for run in runs]

    async def _choose_host(self, env: dict[str, str]) -> str:
        if not self.hosts:
            raise KernelStartFailed("no SSH hosts are configured (SSHProvisioner.hosts)")
        pinned = env.get("KERNEL_REMOTE_HOST")
        if pinned:
            if pinned not in self.hosts:
                raise InvalidRequest(f"KERNEL_REMOTE_HOST {pinned!r} is not one of the hosts")
            return pinned
        counts = await self._kernels_per_host()
        up = self._hosts_up()
        if self.placement == "least-loaded":
            return min(up, key=lambda h: (counts.get(h, 0), self.hosts.index(h)))
        key = tuple(self.hosts)
        last = self._last_host.get(key)
        start = self.hosts.index(last) + 1 if last in self.hosts else sum(counts.values())
        ring = [self.hosts[(start + i) % len(self.hosts)] for i in range(len(self.hosts))]
        nxt = next(h for h in ring if h in up)
        self._last_host[key] = nxt
        return nxt

    def _hosts_up(self) -> list[str]:
        now = time.monotonic()
        up = [h for h in self.hosts if self._down_until.get(h, 0) <= now]
        return up or list(self.hosts)

    async def _kernels_per_host(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in await self._store().all():
            host = record.state.get("host")
            if host and record.kernel_id != self.kernel_id:
                counts[host] = counts.get(host, 0) + 1
        return counts

    async def _connect(self, host: str) -> Any:
        import asyncssh

        key = (host, self.port, self.username)
        conn = self._connections.get(key)
        if conn is not None and not conn.is_closed():
            return conn
        options: dict[str, Any] = {"port": self.port, "connect_timeout": self.connect_timeout}
        if self.username:
            options["username"] = self.username
        if self.client_keys:
            options["client_keys"] = list(self.client_keys)
        if not self.check_host_keys:
            options["known_hosts"] = None
        elif self.known_hosts:
            options["known_hosts"] = self.known_hosts
        try:
            conn = await asyncssh.connect(host, **options)
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
            self._down_until[host] = time.monotonic() + self.host_retry_after
            raise SSHHostError(f"cannot reach SSH host {host}: {e}") from None
        self._down_until.pop(host, None)
        self._connections[key] = conn
        return conn

    async def _ship_launcher(self, conn: Any, host: str) -> str:
        source = launcher_source()
        digest = hashlib.sha256(source).hexdigest()[:16]
        path = f"{self.remote_dir}/launcher-{digest}.py"
        if (host, digest) in self._shipped:
            return path
        async with conn.start_sftp_client() as sftp:
            await sftp.makedirs(self.remote_dir, exist_ok=True)
            if not await sftp.exists(path):
                tmp = f"{path}.{self.kernel_id}.tmp"
                async with sftp.open(tmp, "wb") as f:
                    await f.write(source)
                await sftp.rename(tmp, path)
        self._shipped.add((host, digest))
        return path

    def _run_dir(self, kernel_id: str) -> str:
        return f"{self.remote_dir}/kernels/{check_kernel_id(kernel_id)}"

    def _launcher_argv(self, launcher: str, run_dir: str, argv: list[str]) -> list[str]:
        opts = ["--detach", "--secrets-from-stdin", "--kernel-id", self.kernel_id,
                "--run-dir", run_dir, "--kernel-name", self.km.kernel_name]
        if self.port_range:
            opts += ["--port-range", self.port_range]
        return [self.remote_python, launcher, *opts, *launcher_args(argv)]


def _kernel_id_of(run_dir: str) -> str:
    return check_kernel_id(run_dir.rstrip("/").rsplit("/", 1)[-1])


def _status_from(host: str, entry: dict[str, Any] | None) -> BackendStatus:
    if not entry:
        return BackendStatus(PENDING, host, reason="no launcher yet")
    if entry.get("alive"):
        return BackendStatus(RUNNING, host)
    code = entry.get("exit_code")
    tail = entry.get("log_tail", "")
    reason = f"last lines of the kernel log:\n{tail}" if tail else ""
    return BackendStatus(EXITED, host, exit_code=code if code is not None else -9, reason=reason)

"""The SSH backend object: connections, host health, round-robin state, shipped launchers.

One ``SSHBackend`` exists per connection configuration (``SSHConfig``: hosts, port,
login user, keys, known_hosts checking, remote python and dir, user mode), shared
by the kernelspecs that have it. Every remote command line is built from settings
and validated ids and quoted with ``shlex.quote``; the launcher and the secrets
travel only on stdin (``command.Delivery.STDIN``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import KernelStartFailed
from ..identity import check_kernel_id, is_root, is_valid_username
from ..launcher import spark_startup_path, spark_startup_source
from .backend import Backend, BackendConfig
from .command import launcher_source
from .ssh_scripts import (
    CANCEL_SCRIPT,
    ENTER_HOME,
    INSTALL_SCRIPT,
    RELEASE_SCRIPT,
    STATUS_SCRIPT,
)
from .status import EXITED, PENDING, RUNNING, BackendStatus


class SSHHostError(KernelStartFailed):
    """A host could not be reached or refused us; names the host."""


@dataclass(frozen=True, kw_only=True)
class SSHConfig(BackendConfig):
    """The ``SSHProvisioner`` settings that make one SSH backend object."""

    hosts: tuple[str, ...] = ()
    port: int = 22
    username: str = ""
    client_keys: tuple[str, ...] = ()
    known_hosts: str = ""
    check_host_keys: bool = True
    remote_python: str = "/usr/bin/python3"
    remote_dir: str = ".kernelyard"
    connect_timeout: float = 10.0
    host_retry_after: float = 60.0
    shutdown_grace: float = 5.0
    user_mode: str = "service"
    user_keys_dir: str = ""
    user_keys: tuple[tuple[str, str], ...] = ()
    sudo_command: tuple[str, ...] = ("sudo", "-n")


class SSHBackend(Backend):
    """The hosts of one SSH configuration, as one backend object."""

    config_class: ClassVar[type[BackendConfig]] = SSHConfig
    config: SSHConfig

    def __init__(self, config: BackendConfig, logger: Any = None):
        super().__init__(config, logger)
        self._connections: dict[tuple[str, str], Any] = {}  # (host, login) -> connection
        self._shipped: set[tuple[str, str]] = set()  # (host:login:owner, the launcher's path)
        self._ship_locks: dict[tuple[str, str], asyncio.Lock] = {}  # one copy at a time
        self._down_until: dict[str, float] = {}
        self.last_host = ""  # round-robin placement: the host chosen last

    async def teardown(self) -> None:
        """Close every ssh connection."""
        await super().teardown()
        connections, self._connections = list(self._connections.values()), {}
        for conn in connections:
            conn.close()
        for conn in connections:
            await conn.wait_closed()

    # ---- status, cancel, release ---------------------------------------------------

    async def status(self, states: list[dict[str, Any]]) -> list[BackendStatus]:
        """One ssh command per host (and owner, unless all run as one user)."""
        by_host: dict[tuple[str, str], list[int]] = {}
        for index, state in enumerate(states):
            key = (state.get("host", ""), self.state_user(state))
            by_host.setdefault(key, []).append(index)
        answers = await asyncio.gather(*(
            self._host_status(host, user, [states[i] for i in indexes])
            for (host, user), indexes in by_host.items()))
        results: dict[int, BackendStatus] = {}
        for indexes, statuses in zip(by_host.values(), answers, strict=True):
            results.update(zip(indexes, statuses, strict=True))
        return [results[i] for i in range(len(states))]

    async def cancel(self, state: dict[str, Any]) -> None:
        if not state.get("host") or not state.get("run_dir"):
            return
        user = self.state_user(state)
        conn = await self.connect(state["host"], user)
        grace = self.config.shutdown_grace
        args = [self.config.remote_python, "-c", CANCEL_SCRIPT, state["run_dir"], str(grace),
                _kernel_id_of(state["run_dir"])]
        await conn.run(shlex.join(self.as_user(user, args)), timeout=grace + 20)

    async def release(self, state: dict[str, Any]) -> None:
        if state.get("host") and state.get("run_dir"):
            user = self.state_user(state)
            conn = await self.connect(state["host"], user)
            python = self.config.remote_python
            args = (self.as_user(user, [python, "-c", RELEASE_SCRIPT, state["run_dir"]])
                    if self.sudo(user) else ["rm", "-rf", "--", state["run_dir"]])
            await conn.run(shlex.join(args), timeout=20)

    async def _host_status(
        self, host: str, user: str, states: list[dict[str, Any]]
    ) -> list[BackendStatus]:
        runs = [s.get("run_dir", "") for s in states]
        try:
            conn = await self.connect(host, user)
            args = [self.config.remote_python, "-c", STATUS_SCRIPT, *[r for r in runs if r]]
            result = await conn.run(shlex.join(self.as_user(user, args)),
                                    timeout=self.config.connect_timeout + 10)
            report = json.loads(result.stdout or "{}")
        except (OSError, asyncio.TimeoutError, ValueError, KernelStartFailed) as e:
            return [BackendStatus(PENDING if "launcher_pid" not in s else RUNNING, host,
                                  reason=f"host unreachable: {e}") for s in states]
        return [_status_from(host, report.get(run)) for run in runs]

    # ---- hosts ---------------------------------------------------------------------

    def hosts_up(self) -> list[str]:
        """The hosts not passed over after a failed connection (all, if all are down)."""
        now = time.monotonic()
        up = [h for h in self.config.hosts if self._down_until.get(h, 0) <= now]
        return up or list(self.config.hosts)

    # ---- whom commands run as --------------------------------------------------------

    def state_user(self, state: dict[str, Any]) -> str:
        """The owner a stored state names ('' in service mode); refuses a bad one."""
        user = state.get("user", "")
        if user and (not is_valid_username(user) or is_root(user)):
            raise KernelStartFailed(f"bad user {user!r} in a kernel's stored state")
        return str(user)

    def sudo(self, user: str) -> bool:
        return bool(user) and self.config.user_mode == "sudo"

    def as_user(self, user: str, argv: list[str]) -> list[str]:
        """``argv`` as run on the host: through sudo as ``user`` (from their home) in sudo mode."""
        if not self.sudo(user):
            return argv
        return [*self.config.sudo_command, "-u", user, "--", self.config.remote_python, "-c",
                ENTER_HOME, *argv]

    def login(self, user: str) -> tuple[str, list[str]]:
        """The ssh login name and keys for a kernel of ``user``."""
        cfg = self.config
        if not user or cfg.user_mode != "login":
            return cfg.username, list(cfg.client_keys)
        key = dict(cfg.user_keys).get(user) or (
            os.path.join(cfg.user_keys_dir, user) if cfg.user_keys_dir else "")
        if not key or not os.path.isfile(key):
            raise KernelStartFailed(f"no SSH key for user {user!r} (SSHProvisioner.user_keys "
                                    "or user_keys_dir)")
        return user, [key]

    # ---- connections ---------------------------------------------------------------

    async def connect(self, host: str, user: str = "") -> Any:
        """The (cached) connection to ``host`` for a kernel of ``user``."""
        import asyncssh

        login, keys = self.login(user)
        conn = self._connections.get((host, login))
        if conn is not None and not conn.is_closed():
            return conn
        cfg = self.config
        options: dict[str, Any] = {"port": cfg.port, "connect_timeout": cfg.connect_timeout}
        if login:
            options["username"] = login
        if keys:
            options["client_keys"] = keys
        if not cfg.check_host_keys:
            options["known_hosts"] = None
        elif cfg.known_hosts:
            options["known_hosts"] = cfg.known_hosts
        try:
            conn = await asyncssh.connect(host, **options)
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
            self._down_until[host] = time.monotonic() + cfg.host_retry_after
            raise SSHHostError(f"cannot reach SSH host {host}: {e}") from None
        self._down_until.pop(host, None)
        self._connections[(host, login)] = conn
        return conn

    # ---- the launcher ----------------------------------------------------------------

    async def ship_launcher(self, conn: Any, host: str, user: str = "") -> str:
        """The launcher's path on the host, installed there first if it is not yet.

        One path for every user mode: the source goes on the stdin of ``INSTALL_SCRIPT``,
        run as the login user (as the owner, through sudo, in sudo mode), and so does the
        Spark startup file beside it (``kernelyard.launcher.spark_startup_path``). Starts
        on one host (and login) ship one at a time: the others wait, then find it shipped.
        """
        source, spark = launcher_source(), spark_startup_source()
        digest = hashlib.sha256(source + spark).hexdigest()[:16]
        path = f"{self.config.remote_dir}/launcher-{digest}.py"
        shipped = (f"{host}:{self.login(user)[0]}:{user}", path)
        async with self._ship_locks.setdefault(shipped, asyncio.Lock()):
            if shipped not in self._shipped:
                # The Spark startup file first: a launcher in place has it beside it.
                for target, data in ((spark_startup_path(path), spark), (path, source)):
                    await self._install(conn, host, user, target, data,
                                        hashlib.sha256(data).hexdigest()[:16])
                self._shipped.add(shipped)
        return path

    async def _install(self, conn: Any, host: str, user: str, path: str, source: bytes,
                       digest: str) -> None:
        args = self.as_user(user, [self.config.remote_python, "-c", INSTALL_SCRIPT, path,
                                   digest])
        result = await conn.run(shlex.join(args), input=source, encoding=None,
                                timeout=self.config.connect_timeout + 20)
        if result.exit_status != 0:
            who = f" for {user!r}" if user else ""
            raise SSHHostError(f"cannot install the launcher{who} on host {host}: "
                               f"{(result.stderr or b'').decode(errors='replace')[-500:]}")


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

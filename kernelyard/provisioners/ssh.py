"""``kernelyard-ssh``: kernels on a pool of SSH hosts.

The launcher file is copied to each host once (by SFTP, keyed by its hash), so
hosts need only a Python 3.8+. Secrets and the client's env go over the ssh
session's stdin; every command line is built from settings and validated ids
and quoted with ``shlex.quote``. Known-hosts checking is on by default.

Whom kernels run as (``user_mode``, docs/run-as-user.md): the configured
``username`` for every kernel (``service``, the default); the kernel's owner
(``KERNEL_USERNAME``), logging in with that user's own key (``login``); or the
owner through ``sudo -n -u <user>`` after logging in as ``username`` (``sudo``),
where every remote command (launcher, status, cancel, clean-up) runs as the
owner, from the owner's home, and secrets still travel only on stdin.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import time
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode

from ..errors import InvalidRequest, KernelStartFailed
from ..launcher import spark_startup_path, spark_startup_source
from ..policy import check_kernel_id, is_valid_username
from ..usermap import RunAsRefused
from .base import RemoteProvisionerBase, launcher_args
from .ssh_scripts import CANCEL_SCRIPT, STATUS_SCRIPT
from .status import EXITED, PENDING, RUNNING, BackendStatus

# Run first (as the owner) in sudo mode: enter the owner's home, then exec the command,
# so the relative remote_dir resolves there as it does after an ssh login.
ENTER_HOME = (
    "import os, pwd, sys\n"
    "os.chdir(pwd.getpwuid(os.getuid()).pw_dir)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)
# Sudo mode: the launcher's source on stdin, written as the owner (argv: path, digest).
INSTALL_SCRIPT = r"""
import hashlib, os, sys
path, digest = sys.argv[1], sys.argv[2]
data = sys.stdin.buffer.read()
if not os.path.exists(path):
    if hashlib.sha256(data).hexdigest()[:16] != digest:
        sys.exit("kernelyard: the launcher arrived damaged")
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
"""
RELEASE_SCRIPT = "import shutil, sys\nshutil.rmtree(sys.argv[1], ignore_errors=True)\n"


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
    user_mode = Enum(
        ["service", "login", "sudo"], "service", config=True,
        help="Whom kernels run as: 'service' = the remote user `username` for all; "
        "'login' = the kernel's owner (KERNEL_USERNAME), logging in with the owner's key "
        "(user_keys / user_keys_dir); 'sudo' = the owner, through `sudo -n -u <owner>` "
        "after logging in as `username` (the hosts need a sudoers rule that lets "
        "`username` run remote_python as the owners).",
    )
    user_keys_dir = Unicode(
        "", config=True,
        help="Login mode: a folder of private keys, one per user, named after the user.",
    )
    user_keys = Dict(
        value_trait=Unicode(), config=True,
        help="Login mode: user name -> private key file (before user_keys_dir).",
    )
    sudo_command = List(
        Unicode(), ["sudo", "-n"], config=True,
        help="Sudo mode: the command before `-u <owner> -- <remote_python> ...`.",
    )

    _connections: dict[tuple[str, int, str], Any] = {}
    _shipped: set[tuple[str, str]] = set()  # (host:port:login:owner, the launcher's path)
    _ship_locks: dict[tuple[str, str], asyncio.Lock] = {}  # the same keys: one copy at a time
    _last_host: dict[tuple[str, ...], str] = {}
    _down_until: dict[str, float] = {}

    def kernels_share_account(self) -> bool:
        """In 'service' mode every kernel runs as the one remote ``username``."""
        return self.user_mode == "service"

    def run_as_owner_setting(self) -> str:
        return "SSHProvisioner.user_mode = 'login' or 'sudo'"

    # ---- hooks ---------------------------------------------------------------------

    async def submit(
        self, argv: list[str], env: dict[str, str], secrets: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        user = self._owner(env)
        host = await self._choose_host(env)
        yield {"host": host, "user": user} if user else {"host": host}
        conn = await self._connect(host, user)
        launcher = await self._ship_launcher(conn, host, user)
        run_dir = self._run_dir(self.kernel_id)
        yield {"run_dir": run_dir}
        command = shlex.join(self._as(user, self._launcher_argv(launcher, run_dir, argv)))
        if self._sudo(user):  # the launcher makes its run dir, as the owner
            command = f"exec {command}"
        else:  # a run dir only the remote user may list, whatever sshd's umask
            command = f"(umask 077 && mkdir -p {shlex.quote(run_dir)}) && exec {command}"
        stdin = json.dumps({**secrets, "env": env}) + "\n"
        result = await asyncio.wait_for(conn.run(command, input=stdin),
                                        timeout=self.connect_timeout + 20)
        if result.exit_status != 0:
            raise KernelStartFailed(
                f"launcher on host {host} failed (exit {result.exit_status}): "
                f"{(result.stderr or result.stdout or '').strip()[-2000:]}"
            )
        started = json.loads(str(result.stdout).strip().splitlines()[-1])
        yield {"launcher_pid": started["pid"]}

    async def status(self, states: list[dict[str, Any]]) -> list[BackendStatus]:
        """One ssh command per host (and owner, unless all run as one user)."""
        by_host: dict[tuple[str, str], list[int]] = {}
        for index, state in enumerate(states):
            key = (state.get("host", ""), self._state_user(state))
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
        user = self._state_user(state)
        conn = await self._connect(state["host"], user)
        args = [self.remote_python, "-c", CANCEL_SCRIPT, state["run_dir"],
                str(self.shutdown_grace), _kernel_id_of(state["run_dir"])]
        await conn.run(shlex.join(self._as(user, args)), timeout=self.shutdown_grace + 20)

    async def release(self, state: dict[str, Any]) -> None:
        if state.get("host") and state.get("run_dir"):
            user = self._state_user(state)
            conn = await self._connect(state["host"], user)
            args = (self._as(user, [self.remote_python, "-c", RELEASE_SCRIPT, state["run_dir"]])
                    if self._sudo(user) else ["rm", "-rf", "--", state["run_dir"]])
            await conn.run(shlex.join(args), timeout=20)

    # ---- helpers -------------------------------------------------------------------

    async def _host_status(
        self, host: str, user: str, states: list[dict[str, Any]]
    ) -> list[BackendStatus]:
        runs = [s.get("run_dir", "") for s in states]
        try:
            conn = await self._connect(host, user)
            args = [self.remote_python, "-c", STATUS_SCRIPT, *[r for r in runs if r]]
            result = await conn.run(shlex.join(self._as(user, args)),
                                    timeout=self.connect_timeout + 10)
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

    # ---- whom the kernel runs as ---------------------------------------------------

    def _owner(self, env: dict[str, str]) -> str:
        """The user the kernel runs as in login/sudo mode ('' in service mode)."""
        if self.user_mode == "service":
            return ""
        user = env.get("KERNEL_USERNAME", "")
        if not is_valid_username(user):
            raise RunAsRefused(
                f"kernels of this kernelspec run as their user ({self.user_mode} mode): "
                "KERNEL_USERNAME must name one")
        if user == "root":
            raise RunAsRefused("refusing to run a kernel as root")
        return user

    def _state_user(self, state: dict[str, Any]) -> str:
        user = state.get("user", "")
        if user and (not is_valid_username(user) or user == "root"):
            raise KernelStartFailed(f"kernel {self.kernel_id}: bad user in its stored state")
        return str(user)

    def _sudo(self, user: str) -> bool:
        return bool(user) and self.user_mode == "sudo"

    def _as(self, user: str, argv: list[str]) -> list[str]:
        """``argv`` as run on the host: through sudo as ``user`` (from their home) in sudo mode."""
        if not self._sudo(user):
            return argv
        return [*self.sudo_command, "-u", user, "--", self.remote_python, "-c", ENTER_HOME,
                *argv]

    def _login(self, user: str) -> tuple[str, list[str]]:
        """The ssh login name and keys for a kernel of ``user``."""
        if not user or self.user_mode != "login":
            return self.username, list(self.client_keys)
        key = self.user_keys.get(user) or (
            os.path.join(self.user_keys_dir, user) if self.user_keys_dir else "")
        if not key or not os.path.isfile(key):
            raise KernelStartFailed(f"no SSH key for user {user!r} (SSHProvisioner.user_keys "
                                    "or user_keys_dir)")
        return user, [key]

    async def _connect(self, host: str, user: str = "") -> Any:
        import asyncssh

        login, keys = self._login(user)
        key = (host, self.port, login)
        conn = self._connections.get(key)
        if conn is not None and not conn.is_closed():
            return conn
        options: dict[str, Any] = {"port": self.port, "connect_timeout": self.connect_timeout}
        if login:
            options["username"] = login
        if keys:
            options["client_keys"] = keys
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

    async def _ship_launcher(self, conn: Any, host: str, user: str = "") -> str:
        """The launcher's path on the host, copied there first if it is not yet.

        Starts on one host (and login) ship one at a time: the others wait, then
        find it shipped.
        """
        source, spark = launcher_source(), spark_startup_source()
        digest = hashlib.sha256(source + spark).hexdigest()[:16]
        path = f"{self.remote_dir}/launcher-{digest}.py"
        # The path holds remote_dir, which kernelspecs may set apart, and the digest.
        shipped = (f"{host}:{self.port}:{self._login(user)[0]}:{user}", path)
        async with self._ship_locks.setdefault(shipped, asyncio.Lock()):
            if shipped not in self._shipped:
                # The Spark startup file first: a launcher in place has it beside it.
                for target, data in ((spark_startup_path(path), spark), (path, source)):
                    if self._sudo(user):
                        await self._install_as(conn, host, user, target, data,
                                               hashlib.sha256(data).hexdigest()[:16])
                    else:
                        await self._copy_launcher(conn, target, data)
                self._shipped.add(shipped)
        return path

    async def _install_as(self, conn: Any, host: str, user: str, path: str, source: bytes,
                          digest: str) -> None:
        """Sudo mode: the owner's Python writes the launcher (it replaces atomically)."""
        args = self._as(user, [self.remote_python, "-c", INSTALL_SCRIPT, path, digest])
        result = await conn.run(shlex.join(args), input=source, encoding=None,
                                timeout=self.connect_timeout + 20)
        if result.exit_status != 0:
            raise SSHHostError(f"cannot install the launcher for {user!r} on host {host}: "
                               f"{(result.stderr or b'').decode(errors='replace')[-500:]}")

    async def _copy_launcher(self, conn: Any, path: str, source: bytes) -> None:
        """By SFTP, through a temporary file renamed into place.

        SFTP's rename does not replace a file: if another process (a second gateway)
        put the launcher there first, its copy is kept when it is the same.
        """
        import asyncssh

        async with conn.start_sftp_client() as sftp:
            await sftp.makedirs(self.remote_dir, exist_ok=True)
            if await sftp.exists(path):
                return
            tmp = f"{path}.{self.kernel_id}.tmp"
            async with sftp.open(tmp, "wb") as f:
                await f.write(source)
            try:
                await sftp.rename(tmp, path)
            except asyncssh.SFTPError:
                await sftp.remove(tmp)
                if not await _same_file(sftp, path, source):
                    raise

    def _run_dir(self, kernel_id: str) -> str:
        return f"{self.remote_dir}/kernels/{check_kernel_id(kernel_id)}"

    def _launcher_argv(self, launcher: str, run_dir: str, argv: list[str]) -> list[str]:
        opts = ["--detach", "--secrets-from-stdin", "--kernel-id", self.kernel_id,
                "--run-dir", run_dir, "--kernel-name", self.km.kernel_name]
        if self.port_range:
            opts += ["--port-range", self.port_range]
        return [self.remote_python, launcher, *opts, *launcher_args(argv)]


async def _same_file(sftp: Any, path: str, content: bytes) -> bool:
    """Whether the remote file at ``path`` holds ``content``."""
    import asyncssh

    try:
        async with sftp.open(path, "rb") as f:
            return bool(await f.read() == content)
    except asyncssh.SFTPError:
        return False


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

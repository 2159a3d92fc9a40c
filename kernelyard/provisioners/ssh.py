"""``kernelyard-ssh``: kernels on a pool of SSH hosts.

The launcher file is installed on each host once (its source on the stdin of a
small install script, keyed by its hash; ``ssh_backend.SSHBackend.ship_launcher``), so
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
import json
import shlex
from collections.abc import AsyncIterator
from typing import Any, ClassVar, cast

from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode

from ..errors import InvalidRequest, KernelStartFailed
from ..identity import check_kernel_id, is_valid_username, refuse_root
from ..usermap import RunAsRefused
from .backend import Backend
from .base import RemoteProvisionerBase
from .launcher_link import launcher_args
from .ssh_backend import SSHBackend, SSHConfig, SSHHostError, launcher_source

__all__ = ["SSHHostError", "SSHProvisioner", "launcher_source"]

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

    backend_class: ClassVar[type[Backend]] = SSHBackend

    def kernels_share_account(self) -> bool:
        """In 'service' mode every kernel runs as the one remote ``username``."""
        return self.user_mode == "service"

    def run_as_owner_setting(self) -> str:
        return "SSHProvisioner.user_mode = 'login' or 'sudo'"

    @property
    def ssh(self) -> SSHBackend:
        """This kernelspec's SSH backend object."""
        return cast(SSHBackend, self.backend)

    def backend_config(self) -> SSHConfig:
        return SSHConfig(
            poll_interval=self.poll_interval, hosts=tuple(self.hosts), port=self.port,
            username=self.username, client_keys=tuple(self.client_keys),
            known_hosts=self.known_hosts, check_host_keys=self.check_host_keys,
            remote_python=self.remote_python, remote_dir=self.remote_dir,
            connect_timeout=self.connect_timeout, host_retry_after=self.host_retry_after,
            shutdown_grace=self.shutdown_grace, user_mode=self.user_mode,
            user_keys_dir=self.user_keys_dir, user_keys=tuple(sorted(self.user_keys.items())),
            sudo_command=tuple(self.sudo_command))

    # ---- hooks ---------------------------------------------------------------------

    async def submit(
        self, argv: list[str], env: dict[str, str], secrets: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        ssh = self.ssh
        user = self._owner(env)
        host = await self._choose_host(env)
        yield {"host": host, "user": user} if user else {"host": host}
        conn = await ssh.connect(host, user)
        launcher = await ssh.ship_launcher(conn, host, user)
        run_dir = self._run_dir(self.kernel_id)
        yield {"run_dir": run_dir}
        command = shlex.join(ssh.as_user(user, self._launcher_argv(launcher, run_dir, argv)))
        if ssh.sudo(user):  # the launcher makes its run dir, as the owner
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

    # ---- placement -----------------------------------------------------------------

    async def _choose_host(self, env: dict[str, str]) -> str:
        if not self.hosts:
            raise KernelStartFailed("no SSH hosts are configured (SSHProvisioner.hosts)")
        pinned = self.plan.host  # the client's KERNEL_REMOTE_HOST
        if pinned:
            if pinned not in self.hosts:
                raise InvalidRequest(f"KERNEL_REMOTE_HOST {pinned!r} is not one of the hosts")
            return pinned
        counts = await self._kernels_per_host()
        up = self.ssh.hosts_up()
        if self.placement == "least-loaded":
            return min(up, key=lambda h: (counts.get(h, 0), self.hosts.index(h)))
        last = self.ssh.last_host
        start = self.hosts.index(last) + 1 if last in self.hosts else sum(counts.values())
        ring = [self.hosts[(start + i) % len(self.hosts)] for i in range(len(self.hosts))]
        nxt = next(h for h in ring if h in up)
        self.ssh.last_host = nxt
        return nxt

    async def _kernels_per_host(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in await self._store().all():
            host = record.state.get("host")
            if host and record.kernel_id != self.kernel_id:
                counts[host] = counts.get(host, 0) + 1
        return counts

    # ---- whom the kernel runs as ---------------------------------------------------

    def _owner(self, env: dict[str, str]) -> str:
        """The user the kernel runs as in login/sudo mode: the plan's ('' in service mode)."""
        if self.user_mode == "service":
            return ""
        user = self.plan.run_as
        if not is_valid_username(user):
            raise RunAsRefused(
                f"kernels of this kernelspec run as their user ({self.user_mode} mode): "
                "KERNEL_USERNAME must name one")
        refuse_root(user)
        return user

    # ---- the launcher's command --------------------------------------------------------

    def _run_dir(self, kernel_id: str) -> str:
        return f"{self.remote_dir}/kernels/{check_kernel_id(kernel_id)}"

    def _launcher_argv(self, launcher: str, run_dir: str, argv: list[str]) -> list[str]:
        opts = ["--detach", "--secrets-from-stdin", "--kernel-id", self.kernel_id,
                "--run-dir", run_dir, "--kernel-name", self.km.kernel_name]
        if self.port_range:
            opts += ["--port-range", self.port_range]
        return [self.remote_python, launcher, *opts, *launcher_args(argv)]

"""``kernelyard-local``: jupyter_client's local provisioner, plus a kernel log and run-as-user.

The kernel's stdout and stderr go to a log file in the runtime dir, so that a
kernel that dies while starting can be explained to the client (its last
lines), and a port clash (``Address already in use``) can be told apart from
other failures and retried. The kernel's env is allow-listed: the base set of
``kernelyard.policy.base_env`` (PATH, locale, TZ, ...), the names the kernel
manager passes (``inherited_envs``, the client's), the kernelspec's env.

With ``run_as_user`` the kernel runs as its owner (``KERNEL_USERNAME``), started
by the privileged helper ``kernelyard.runas`` (docs/run-as-user.md): directly
when the gateway is root, through ``sudo -n`` otherwise. The helper gets one
JSON request over a socket on its stdin (the kernel's argv, env, cwd, umask and
connection info, key included: never on a command line), writes the connection
file as the user into the user's Jupyter runtime dir, answers the kernel's pid
and execs the kernel. Behind sudo the gateway may not signal the user's
processes itself: signals then go through the helper too (it sends them as the
user), and so does removing the connection file.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Bool, Float, Integer, List, Unicode

from ..errors import KernelStartFailed
from ..identity import is_valid_username
from ..kernel_env import DEFAULT_SECRET_ENVS, base_env, is_gateway_secret
from ..kernel_log import tail_lines
from ..launch_plan import LaunchPlan, plan_of
from ..usermap import DEFAULT_MIN_UID, RunAsRefused
from .hooks import ProvisionerHooks
from .local_helper import ask_helper, exchange, helper_env
from .resource_settings import ResourceSettings

HELPER_MODULE = "kernelyard.runas"


class LocalKernelProvisioner(ProvisionerHooks, ResourceSettings,  # type: ignore[misc,metaclass]
                             LocalProvisioner):
    """Runs a kernel as a child process of the gateway (or as its user, via a helper)."""

    log_dir = Unicode(
        "",
        config=True,
        help="Folder for kernel log files (stdout and stderr of each kernel). "
        "Default: the Jupyter runtime dir.",
    )
    secret_envs = List(
        Unicode(),
        default_value=list(DEFAULT_SECRET_ENVS),
        config=True,
        help="Names of gateway environment variables that never reach a kernel.",
    )
    run_as_user = Bool(
        False,
        config=True,
        help="Run each kernel as its owner (KERNEL_USERNAME) through the run-as helper "
        "(python -m kernelyard.runas). Off: kernels run as the gateway's own user.",
    )
    runas_command = List(
        Unicode(),
        config=True,
        help="The helper's argv (a list, never a shell string). Default: this Python with "
        "'-I -m kernelyard.runas' plus --min-uid/--allow-user/--allow-group from the "
        "settings below, prefixed by 'sudo -n --' when the gateway is not root. Set it "
        "to the exact command the sudoers rule allows.",
    )
    min_uid = Integer(
        DEFAULT_MIN_UID,
        config=True,
        help="The lowest uid a kernel may run as (passed to the helper as --min-uid when "
        "runas_command is not set). uid 0 is always refused.",
    )
    runas_allowed_users = List(
        Unicode(),
        config=True,
        help="Users kernels may run as (--allow-user). With this and runas_allowed_groups "
        "both empty, any user with a uid of at least min_uid.",
    )
    runas_allowed_groups = List(
        Unicode(), config=True,
        help="Groups whose members kernels may run as (--allow-group).",
    )
    umask = Unicode("077", config=True, help="The umask of kernels run as their user (octal).")
    user_envs = List(
        Unicode(),
        default_value=["LANG", "LC_ALL", "LC_CTYPE", "TZ"],
        config=True,
        help="Gateway env variables a kernel run as its user inherits. Other gateway "
        "variables stay behind; the kernelspec's and the client's values pass, and HOME, "
        "USER, LOGNAME, SHELL come from the user's passwd entry (PATH defaults to "
        "/usr/local/bin:/usr/bin:/bin).",
    )
    runas_timeout = Float(
        30.0, config=True, help="Seconds the run-as helper (and sudo) may take to answer."
    )

    _user: str = ""
    _user_connection_file: str = ""
    _relayed = False

    @property
    def plan(self) -> LaunchPlan:
        """The launch plan (whom the kernel runs as, the host pin): the one the kernelyard
        manager handed its kernel manager, else ``plan_from_env`` of the kernel's env."""
        return plan_of(self.parent, self.kernel_spec.env if self.kernel_spec else None)

    @property
    def _km(self) -> Any:
        """The KernelManager of this kernel."""
        return self.parent

    @property
    def log_path(self) -> Path:
        base = self.log_dir or getattr(self.parent, "connection_dir", "") or "."
        return Path(base) / f"kernel-{self.kernel_id}.log"

    def kernels_share_account(self) -> bool:
        """Kernels of different users share the gateway's account unless run_as_user."""
        return not self.run_as_user

    def run_as_owner_setting(self) -> str:
        return "LocalKernelProvisioner.run_as_user = True"

    def _finalize_env(self, env: dict[str, str]) -> None:
        super()._finalize_env(env)
        for name in self.secret_envs:
            env.pop(name, None)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """The kernel's env is the base set (``policy.base_env``), then the env the kernel
        manager gave (inherited names, the client's), then the kernelspec's: never the
        gateway's environment, which jupyter_client would use when none is given."""
        base = base_env(os.environ)
        kwargs["env"] = {**base, **(kwargs.get("env") or {})}
        kwargs = await super().pre_launch(**kwargs)
        if self.run_as_user:
            env = kwargs.get("env") or {}
            self._user = self._owner(env)
            kwargs["env"] = self._kernel_user_env(env, base)
            connection_file = self._km.connection_file
            kwargs["cmd"] = [arg.replace(connection_file, "{connection_file}")
                             for arg in kwargs["cmd"]]
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        """Start the kernel with its output appended to its log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if self.run_as_user:
                return await self._launch_as_user(cmd, fd, **kwargs)
            kwargs.setdefault("stdout", fd)
            kwargs.setdefault("stderr", fd)
            return await super().launch_kernel(cmd, **kwargs)
        finally:
            os.close(fd)

    async def send_signal(self, signum: int) -> None:
        if not self._relayed:
            await super().send_signal(signum)
            return
        if self.process is None or self.process.poll() is not None:
            return  # gone: its pid may belong to someone else by now
        reply = await self._ask_helper({"action": "signal", "user": self._user,
                                        "pid": self.pid, "signum": int(signum)})
        if "error" in reply:
            raise PermissionError(reply["error"])

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the kernel wrote, or '' if there is no log."""
        return tail_lines(self.log_path, lines)

    def forget_ports(self) -> None:
        """Make the next launch pick fresh ports (after a port clash)."""
        self.ports_cached = False

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        if not restart:
            self.log_path.unlink(missing_ok=True)
            await self._remove_user_connection_file()

    # ---- run as the user -----------------------------------------------------------

    def _owner(self, env: dict[str, str]) -> str:
        """The user the kernel runs as: the plan's (never the env's ``KERNEL_USERNAME``)."""
        user = self.plan.run_as
        if not is_valid_username(user):
            raise RunAsRefused(
                "kernels of this kernelspec run as their user: KERNEL_USERNAME must name one"
                + (f" ({user!r} is not a valid user name)" if user else "")
            )
        return user

    def _kernel_user_env(self, env: dict[str, str], base: dict[str, str]) -> dict[str, str]:
        """For a kernel run as its user: the base set only for ``user_envs`` (HOME, USER,
        ... come from the user's passwd entry), unless the kernelspec changed a value."""
        keep = set(self.user_envs)
        env = {k: v for k, v in env.items() if k in keep or base.get(k) != v}
        env.update({k: os.environ[k] for k in keep
                    if k in os.environ and k not in env and not is_gateway_secret(k)})
        return env

    def helper_argv(self) -> list[str]:
        if self.runas_command:
            return list(self.runas_command)
        argv = [sys.executable, "-I", "-m", HELPER_MODULE, "--min-uid", str(self.min_uid)]
        for user in self.runas_allowed_users:
            argv += ["--allow-user", user]
        for group in self.runas_allowed_groups:
            argv += ["--allow-group", group]
        return argv if os.geteuid() == 0 else ["sudo", "-n", "--", *argv]

    def _launch_request(self, cmd: list[str], env: dict[str, str], cwd: Any) -> bytes:
        info = dict(self.connection_info)
        info.update({k: v.decode() for k, v in info.items() if isinstance(v, bytes)})
        request = {"action": "launch", "user": self._user, "kernel_id": self.kernel_id,
                   "argv": cmd, "env": env, "cwd": str(cwd) if cwd else None,
                   "umask": self.umask, "connection": info}
        return json.dumps(request).encode() + b"\n"

    async def _launch_as_user(self, cmd: list[str], log_fd: int, **kwargs: Any) -> Any:
        ours, theirs = socket.socketpair()
        try:
            # A Popen, as jupyter_client's provisioner keeps (poll, wait, send_signal).
            self.process = subprocess.Popen(  # noqa: ASYNC220
                self.helper_argv(), stdin=theirs.fileno(), stdout=log_fd, stderr=log_fd,
                env=helper_env(), cwd="/", start_new_session=True)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self.pid = self.pgid = self.process.pid
        try:
            request = self._launch_request(cmd, kwargs.get("env") or {}, kwargs.get("cwd"))
            reply = await exchange(ours, request, self.runas_timeout)
        finally:
            ours.close()
        if "pid" not in reply:
            await self._helper_failed(reply)
        self.pid, self.pgid = int(reply["pid"]), int(reply["pgid"])
        self._relayed = self.pid != self.process.pid
        self._user_connection_file = str(reply.get("connection_file", ""))
        self.cwd = kwargs.get("cwd")
        self.log.info("Kernel %s runs as %s (pid %s)", self.kernel_id, self._user, self.pid)
        return self.connection_info

    async def _helper_failed(self, reply: dict[str, Any]) -> None:
        """Reap the helper, free what pre_launch made, and raise the reason."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            await asyncio.to_thread(process.wait)
        self._km.cleanup_connection_file()
        await super().cleanup(restart=False)
        self.ports_cached = False
        if reply.get("error"):
            if reply.get("kind", "refused") == "refused":
                raise RunAsRefused(f"cannot run the kernel as {self._user!r}: {reply['error']}")
            raise KernelStartFailed(f"cannot run the kernel as {self._user!r}: {reply['error']}")
        tail = self.log_tail(5)
        raise KernelStartFailed(
            f"the run-as helper did not start the kernel as {self._user!r}"
            + (f"; it said:\n{tail}" if tail else "")
        )

    async def _ask_helper(self, request: dict[str, Any]) -> dict[str, Any]:
        """A signal or remove request; the helper answers on its stdout."""
        return await ask_helper(self.helper_argv(), request, self.runas_timeout)

    async def _remove_user_connection_file(self) -> None:
        if not self._user_connection_file:
            return
        self._user_connection_file = ""
        reply = await self._ask_helper({"action": "remove", "user": self._user,
                                        "kernel_id": self.kernel_id})
        if "error" in reply:
            self.log.warning("Kernel %s: could not remove its connection file: %s",
                             self.kernel_id, reply["error"])

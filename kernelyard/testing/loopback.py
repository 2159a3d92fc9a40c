"""``kernelyard-loopback``: the remote lifecycle with the real launcher on this machine.

A testing backend (docs/writing-a-backend.md): ``submit`` starts
``kernelyard/launcher.py`` as a local process, detached, and hands it the secrets on
its stdin, as the SSH backend does over an ssh session; ``status`` reads each
launcher's pid file (one local command for all kernels); ``cancel`` and ``release``
(the backend object, ``LoopbackBackend``) need only the persisted run dir. Kernels
run as the gateway's own account and listen on 127.0.0.1 only, with a 0700 run dir
and a 0600 connection file: no user reaches another's kernel more than with the
local backend, whose kernels share the account the same way
(``kernels_share_account`` is True).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar

from jupyter_core.paths import jupyter_runtime_dir
from traitlets import Float, Unicode

from ..errors import KernelStartFailed
from ..identity import check_kernel_id
from ..kernel_env import base_env
from ..provisioners import command
from ..provisioners.backend import Backend, BackendConfig
from ..provisioners.base import RemoteProvisionerBase
from ..provisioners.launcher_link import launcher_args
from ..provisioners.ssh_scripts import CANCEL_SCRIPT, STATUS_SCRIPT
from ..provisioners.status import EXITED, PENDING, RUNNING, BackendStatus

KERNEL_IP = "127.0.0.1"  # loopback kernels are never reachable from another machine


def launcher_path() -> str:
    """The launcher file this package ships (the one every backend runs)."""
    return str(files("kernelyard").joinpath("launcher.py"))


@dataclass(frozen=True, kw_only=True)
class LoopbackConfig(BackendConfig):
    """The settings that make one loopback backend object."""

    run_root: str = ""
    command_timeout: float = 30.0
    shutdown_grace: float = 5.0


class LoopbackBackend(Backend):
    """This machine, as one backend object: status, cancel and release from run dirs."""

    config_class: ClassVar[type[BackendConfig]] = LoopbackConfig
    config: LoopbackConfig

    async def status(self, states: list[dict[str, Any]]) -> list[BackendStatus]:
        """One local command for every kernel (as one ssh command per host)."""
        runs = [str(s.get("run_dir", "")) for s in states]
        code, out, err = await self.run(
            [sys.executable, "-I", "-c", STATUS_SCRIPT, *[r for r in runs if r]])
        if code != 0:
            raise KernelStartFailed(f"the loopback status command failed: {err.strip()[-500:]}")
        report = json.loads(out or "{}")
        return [_status_from(report.get(run) if run else None) for run in runs]

    async def cancel(self, state: dict[str, Any]) -> None:
        run_dir = self.checked_run_dir(state)
        if run_dir:
            await self.run([sys.executable, "-I", "-c", CANCEL_SCRIPT, run_dir,
                            str(self.config.shutdown_grace), os.path.basename(run_dir)])

    async def release(self, state: dict[str, Any]) -> None:
        run_dir = self.checked_run_dir(state)
        if run_dir:
            await asyncio.to_thread(shutil.rmtree, run_dir, True)

    def root(self) -> Path:
        """The folder (0700) of the run dirs."""
        root = Path(self.config.run_root or
                    os.path.join(jupyter_runtime_dir(), "kernelyard-loopback"))
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        root.chmod(0o700)
        return root

    def checked_run_dir(self, state: dict[str, Any]) -> str:
        """The state's run dir if it is one of ours (a kernel id under ``run_root``), else ''."""
        run_dir = str(state.get("run_dir", ""))
        if not run_dir:
            return ""
        path = Path(run_dir)
        if path.parent != self.root() or path.name != check_kernel_id(path.name):
            raise KernelStartFailed("a run dir outside run_root in a kernel's stored state")
        return run_dir

    async def run(self, argv: list[str], stdin: str = "",
                  secrets: Collection[str] = ()) -> tuple[int, str, str]:
        """Run a local command (an argv list, never a shell), its input on stdin; none of
        ``secrets`` may be in its argv or env (``command.run`` refuses)."""
        try:
            result = await command.run(argv, env=base_env(os.environ), cwd=str(self.root()),
                                       stdin=stdin.encode(), timeout=self.config.command_timeout,
                                       secrets=secrets)
        except command.CommandTimeout:
            raise KernelStartFailed(f"a loopback command did not finish within "
                                    f"{self.config.command_timeout:g} s") from None
        return (result.returncode, result.stdout.decode(errors="replace"),
                result.stderr.decode(errors="replace"))


class LoopbackProvisioner(RemoteProvisionerBase):
    """Runs each kernel's launcher as a detached local process of the gateway's account."""

    run_root = Unicode(
        "", config=True,
        help="Folder (made 0700) for each loopback kernel's run dir (connection file, "
        "logs, pid files). Default: kernelyard-loopback in the Jupyter runtime dir.",
    )
    command_timeout = Float(
        30.0, config=True,
        help="Seconds the launcher (until it has detached), a status or a cancel command "
        "may take.",
    )
    backend_class: ClassVar[type[Backend]] = LoopbackBackend

    def backend_config(self) -> LoopbackConfig:
        return LoopbackConfig(poll_interval=self.poll_interval, run_root=self.run_root,
                              command_timeout=self.command_timeout,
                              shutdown_grace=self.shutdown_grace)

    @property
    def loopback(self) -> LoopbackBackend:
        backend = self.backend
        assert isinstance(backend, LoopbackBackend)
        return backend

    async def submit(
        self, argv: list[str], env: dict[str, str], secrets: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        run_dir = str(self.loopback.root() / check_kernel_id(self.kernel_id))
        yield {"run_dir": run_dir}
        stdin = command.secrets_payload(secrets, env).decode()  # Delivery.STDIN
        code, out, err = await self.loopback.run(self._launcher_argv(run_dir, argv), stdin,
                                                 secrets=list(secrets.values()))
        if code != 0:
            raise KernelStartFailed(
                f"the loopback launcher failed (exit {code}): {(err or out).strip()[-2000:]}")
        started = json.loads(out.strip().splitlines()[-1])
        yield {"launcher_pid": int(started["pid"])}

    def _launcher_argv(self, run_dir: str, argv: list[str]) -> list[str]:
        return [sys.executable, "-I", launcher_path(), "--detach", "--secrets-from-stdin",
                "--kernel-id", self.kernel_id, "--run-dir", run_dir,
                "--kernel-name", self.km.kernel_name, "--ip", KERNEL_IP,
                *launcher_args(argv)]


def _status_from(entry: dict[str, Any] | None) -> BackendStatus:
    if not entry:
        return BackendStatus(PENDING, "localhost", reason="no launcher yet")
    if entry.get("alive"):
        return BackendStatus(RUNNING, "localhost")
    code = entry.get("exit_code")
    tail = entry.get("log_tail", "")
    reason = f"last lines of the kernel log:\n{tail}" if tail else ""
    return BackendStatus(EXITED, "localhost", exit_code=code if code is not None else -9,
                         reason=reason)

"""``kernelyard-local``: jupyter_client's local provisioner, plus a kernel log.

The kernel's stdout and stderr go to a log file in the runtime dir, so that a
kernel that dies while starting can be explained to the client (its last
lines), and a port clash (``Address already in use``) can be told apart from
other failures and retried. The gateway's secrets are removed from the env.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import List, Unicode

from ..kernel_log import tail_lines
from ..policy import DEFAULT_SECRET_ENVS


class LocalKernelProvisioner(LocalProvisioner):  # type: ignore[misc]
    """Runs a kernel as a child process of the gateway."""

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

    @property
    def log_path(self) -> Path:
        base = self.log_dir or getattr(self.parent, "connection_dir", "") or "."
        return Path(base) / f"kernel-{self.kernel_id}.log"

    def _finalize_env(self, env: dict[str, str]) -> None:
        super()._finalize_env(env)
        for name in self.secret_envs:
            env.pop(name, None)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        """Start the kernel with its output appended to its log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            kwargs.setdefault("stdout", fd)
            kwargs.setdefault("stderr", fd)
            return await super().launch_kernel(cmd, **kwargs)
        finally:
            os.close(fd)

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

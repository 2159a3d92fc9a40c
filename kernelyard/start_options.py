"""What a client asks of one kernel start through its env: a deadline, a working directory.

Pure checks (``os.path`` aside); ``GatewayMappingKernelManager.launch`` applies them.

- ``KERNEL_LAUNCH_TIMEOUT``: the seconds the client waits for the start (Jupyter
  Server sends 40 and gives up after about 42). A positive decimal number of
  seconds (``40``, ``12.5``); anything else is refused (``InvalidRequest``). The
  start ends at that deadline, or at the gateway's own timeouts if they come
  first: a larger value never extends the gateway's ``start_timeout``, and only
  the remote provisioners' callback wait up to their ``max_launch_timeout``.
- ``KERNEL_WORKING_DIR``: the directory the kernel starts in, judged by
  ``working_dir_policy`` (see ``WORKING_DIR_POLICIES``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from .errors import InvalidRequest

LAUNCH_TIMEOUT = "KERNEL_LAUNCH_TIMEOUT"
WORKING_DIR = "KERNEL_WORKING_DIR"
# A day: past every timeout a gateway setting may reasonably hold.
MAX_DEADLINE = 86400.0
_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")
WORKING_DIR_POLICIES = {
    "ignore": "not used and not passed to the kernel (logged): the kernel starts where it "
              "would without it",
    "refuse": "a start that carries it is refused (400)",
    "home": "honoured for local kernels when it is an absolute path that resolves (symlinks "
            "included) to a directory inside the home of the user the kernel runs for; "
            "anything else is refused (400)",
}


def launch_deadline(env: Mapping[str, str]) -> float | None:
    """The client's deadline for the start in seconds (at most ``MAX_DEADLINE``), or None."""
    value = env.get(LAUNCH_TIMEOUT)
    if value is None:
        return None
    if not _SECONDS.fullmatch(value) or float(value) <= 0:
        raise InvalidRequest(f"{LAUNCH_TIMEOUT} must be a positive number of seconds such "
                             f"as '40' or '12.5', not {value[:40]!r}")
    return min(float(value), MAX_DEADLINE)


def refuse_working_dir() -> InvalidRequest:
    return InvalidRequest(
        f"{WORKING_DIR} is not accepted by this gateway "
        "(GatewayMappingKernelManager.working_dir_policy = 'refuse'); start the kernel "
        f"without it")


def dir_inside_home(asked: str, home: str) -> str:
    """``asked`` resolved, if it is a directory inside ``home``; else ``InvalidRequest``."""
    if not os.path.isabs(asked):
        raise InvalidRequest(f"{WORKING_DIR} must be an absolute path, not {asked[:200]!r}")
    real, real_home = os.path.realpath(asked), os.path.realpath(home)
    if os.path.commonpath([real, real_home]) != real_home:
        raise InvalidRequest(f"{WORKING_DIR} {asked[:200]!r} is outside the home directory "
                             f"of the kernel's user ({real_home})")
    if not os.path.isdir(real):
        raise InvalidRequest(f"{WORKING_DIR} {asked[:200]!r} is not a directory on the "
                             "gateway's host")
    return real

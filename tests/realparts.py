"""The state files that ci/ scripts write for the real parts they start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SSH_STATE = Path(os.environ.get("KY_SSH_STATE", "/tmp/kernelyard-ssh-hosts"))


def state_env(env_file: Path, start: str) -> dict[str, str]:
    """The KEY=VALUE lines of a real part's env file; fails the test (never skips) with
    the command that starts the part when it is missing."""
    if not env_file.is_file():
        pytest.fail(f"{env_file} is missing: start the part with `{start}` (as root)")
    pairs = (line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    return dict(pairs)


def ssh_hosts() -> dict[str, str]:
    """ci/ssh-hosts' state (KY_SSH_HOSTS, KY_SSH_GATEWAY_IP, KY_SSH_KEY, ...)."""
    return state_env(SSH_STATE / "env", "bash ci/ssh-hosts/start.sh 3")

"""The one registry of the real parts the integration tier runs against.

Each part has a name, a way to tell that it is there (the env file its ci/ script
writes, or a probe) and the command that starts it. Fixtures ask for a part by name
(``env("yarn")``, ``need("root")``) and, when a part is there but broken, report it
through ``missing(name, why)``; no test checks a part in its own way.

A missing part:

- with ``KERNELYARD_REAL_PARTS=required`` (``ci/test.sh`` exports it): FAILS the test,
  with why and the command that starts the part;
- otherwise (a run by hand): SKIPS the test, with the same text.

The unit tier (``tests/unit``) asks for no part. The start commands here are the ones
``ci/test.sh`` runs (``tests/unit/test_realparts.py`` checks that they agree).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

MODE_VAR = "KERNELYARD_REAL_PARTS"
REQUIRED = "required"
KERNEL_VENV = Path(os.environ.get("KY_KERNEL_VENV", "/opt/kernelyard/kernel-venv"))


@dataclass(frozen=True)
class Part:
    """One real part: where its state is, how to start it, and how to tell it is there.

    ``state_var``/``state_default``: the part's state folder (its ci/ scripts read the
    same variable); ``env_name``: the KEY=VALUE file in it that says the part runs.
    ``probe``: returns why the part is missing (None: there), checked before the env
    file. A part with neither (``e2e``, ``eg-itests``) is checked by its tests, which
    call ``missing`` with what they did not find.
    """

    name: str
    start: str
    state_var: str = ""
    state_default: str = ""
    env_name: str = "env"
    probe: Callable[[], str | None] | None = None
    install: str = ""  # run once before ``start`` on a new machine
    stop: str = ""

    @property
    def state(self) -> Path:
        return Path(os.environ.get(self.state_var) or self.state_default)

    @property
    def env_file(self) -> Path | None:
        return self.state / self.env_name if self.state_var else None

    def absent(self) -> str | None:
        """Why the part is not there; None when it is."""
        if self.probe is not None:
            why = self.probe()
            if why:
                return why
        env_file = self.env_file
        if env_file is None or env_file.is_file():
            return None
        if env_file.parent.exists() and not os.access(env_file.parent, os.R_OK | os.X_OK):
            return f"{env_file} is not readable by user id {os.geteuid()}"
        return f"{env_file} is missing"


ROOT_HINT = "run the tests as root (e.g. `sudo -E .venv/bin/python -m pytest ...`)"


def _root() -> str | None:
    return None if os.geteuid() == 0 else "these tests start processes as other users"


def _users() -> str | None:
    for name in ("alice", "bob"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            return f"the user {name} does not exist"
    return None


def _kernel_venv() -> str | None:
    python = KERNEL_VENV / "bin" / "python"
    return None if os.access(python, os.X_OK) else f"{python} is missing"


_ALL = (
    Part("root", ROOT_HINT, probe=_root),
    Part("users", "bash ci/users.sh", "KY_USERS_STATE", "/tmp/kernelyard-users", probe=_users),
    Part("kernel-venv", "bash ci/kernel-venv.sh", probe=_kernel_venv),
    Part("e2e", "bash ci/e2e/install.sh"),
    Part("eg-itests", "bash ci/eg-itests/install.sh"),
    Part("ssh-hosts", "bash ci/ssh-hosts/start.sh 3", "KY_SSH_STATE",
         "/tmp/kernelyard-ssh-hosts", install="bash ci/ssh-hosts/install.sh",
         stop="bash ci/ssh-hosts/stop.sh"),
    Part("spark-standalone", "bash ci/spark-standalone/start.sh", "KY_SPARK_STATE",
         "/tmp/kernelyard-spark", install="bash ci/yarn/install.sh",
         stop="bash ci/spark-standalone/stop.sh"),
    Part("yarn", "bash ci/yarn/start.sh", "KY_YARN_STATE", "/tmp/kernelyard-yarn",
         install="bash ci/yarn/install.sh", stop="bash ci/yarn/stop.sh"),
    Part("yarn-ssh-hosts", "bash ci/yarn/serve-ssh-hosts.sh", "KY_YARN_STATE",
         "/tmp/kernelyard-yarn", env_name="ssh-hosts.env"),  # ci/yarn/stop.sh stops it
    Part("kdc", "bash ci/kdc/start.sh", "KY_KDC_STATE", "/tmp/kernelyard-kdc",
         install="bash ci/kdc/install.sh", stop="bash ci/kdc/stop.sh"),
    Part("kerberized-rm", "bash ci/yarn/start-kerberized-rm.sh", "KY_YARN_KRB_STATE",
         "/tmp/kernelyard-yarn-krb", install="bash ci/yarn/install.sh",
         stop="bash ci/yarn/stop-kerberized-rm.sh"),
    Part("jupyterhub", "bash ci/jupyterhub/start.sh", "KY_HUB_STATE",
         "/tmp/kernelyard-jupyterhub", install="bash ci/jupyterhub/install.sh",
         stop="bash ci/jupyterhub/stop.sh"),
    Part("kubernetes", "bash ci/kubernetes/start.sh", "KY_K8S_STATE", "/tmp/kernelyard-k8s",
         install="bash ci/kubernetes/install.sh", stop="bash ci/kubernetes/stop.sh"),
)
PARTS: dict[str, Part] = {part.name: part for part in _ALL}


def required() -> bool:
    """Whether a missing part fails the test (CI) instead of skipping it (by hand)."""
    mode = os.environ.get(MODE_VAR, "")
    if mode not in ("", REQUIRED):
        pytest.fail(f"{MODE_VAR}={mode!r}: set it to {REQUIRED!r} (a missing real part "
                    "fails the test) or leave it unset (it skips)", pytrace=False)
    return mode == REQUIRED


def missing(name: str, why: str | None = None) -> NoReturn:
    """Skip, or in CI fail, the test: the part ``name`` is missing or broken."""
    part = PARTS[name]
    reason = f"real part {name!r} unavailable: {why or part.absent() or 'not running'}; "
    if name == "root":
        reason += part.start
    elif part.stop and part.env_file is not None and part.env_file.is_file():
        reason += f"restart it (as root) with `{part.stop} && {part.start}`"
    else:
        reason += f"start it (as root) with `{part.start}`"
        if part.install:
            reason += f" (installed once by `{part.install}`)"
    if required():
        pytest.fail(f"{reason} [{MODE_VAR}={REQUIRED}]", pytrace=False)
    pytest.skip(f"{reason} [set {MODE_VAR}={REQUIRED} to fail instead]")


def need(*names: str) -> None:
    """Skip (or in CI fail) unless every part ``names`` is there."""
    for name in names:
        why = PARTS[name].absent()
        if why:
            missing(name, why)


def env(name: str) -> dict[str, str]:
    """The KEY=VALUE lines of a running part's env file (skip/fail when it is missing)."""
    need(name)
    env_file = PARTS[name].env_file
    assert env_file is not None, f"the part {name} has no env file"
    pairs = (line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    return dict(pairs)


def state(name: str) -> Path:
    """The state folder of a part (keys and logs its ci/ script left there)."""
    return PARTS[name].state


def ssh_hosts() -> dict[str, str]:
    """ci/ssh-hosts' state (KY_SSH_HOSTS, KY_SSH_GATEWAY_IP, KY_SSH_KEY, ...)."""
    return env("ssh-hosts")


def ssh_login_args(hosts: dict[str, str]) -> list[str]:
    """The gateway options that log in to ci/ssh-hosts' hosts: user, key, known hosts."""
    return [f"--SSHProvisioner.username={hosts['KY_SSH_USER']}",
            f"--SSHProvisioner.client_keys={hosts['KY_SSH_KEY']}",
            f"--SSHProvisioner.known_hosts={hosts['KY_SSH_KNOWN_HOSTS']}"]


def ssh_login_config(hosts: dict[str, str]) -> dict[str, object]:
    """The same as kernelspec provisioner config (``ssh_login_args``)."""
    return {"username": hosts["KY_SSH_USER"], "client_keys": [hosts["KY_SSH_KEY"]],
            "known_hosts": hosts["KY_SSH_KNOWN_HOSTS"]}

"""Checks the gateway makes once at startup, over its authenticators and kernelspecs.

Whom kernels run as must fit how callers are identified:

- Authenticators that sign users in individually (every one but the shared
  ``token``) and a kernelspec whose backend runs the kernels of different users
  under ONE account (``kernels_share_account()`` of its provisioner) do not
  mix: a user's kernel could read another's connection file and run code in
  their kernel, or read what the gateway's account can. The gateway refuses to
  start, naming the kernelspec and the settings that fix it: run kernels as
  their users, or ``KernelyardApp.allow_shared_kernel_account = True`` (a
  warning at every start).
- Without any authentication a client's ``KERNEL_USERNAME`` names the kernel's
  owner (as Enterprise Gateway does), since there is no identity to protect;
  but then a kernelspec whose kernels change OS or cluster identity (run as
  their owner) would let anyone who reaches the port run code as anyone: the
  gateway refuses to start.
- Enterprise Gateway remote kernelspecs, and kernelspecs whose backend's pip extra
  is not installed, are refused (``kernelyard.kernelspecs``).

``plan_checks`` is a pure function of what was found; ``kernelspec_accounts``
asks each kernelspec's provisioner, built exactly as a launch builds it (the
kernelspec's ``metadata.kernel_provisioner`` plus the configuration).
"""

from __future__ import annotations

import ctypes
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.provisioning import KernelProvisionerFactory

from .errors import ConfigError
from .provisioners.hooks import hooks_of
from .provisioners.resource_settings import ResourceSettings

SHARED_TOKEN = "token"  # noqa: S105 - the shared-token authenticator's name
ALLOW_SHARED = "KernelyardApp.allow_shared_kernel_account = True"
RUN_AS_SETTINGS = ("LocalKernelProvisioner.run_as_user = True, SSHProvisioner.user_mode = "
                   "'login' or 'sudo', YarnProvisioner.impersonate = True")
PR_SET_DUMPABLE = 4


@dataclass(frozen=True)
class SpecAccount:
    """Whom a kernelspec's kernels run as, as its provisioner says."""

    name: str
    provisioner: str
    shares_account: bool
    run_as_setting: str = ""  # the setting that runs them as their owner ('' if none)
    config_error: str = ""  # a malformed setting of its provisioner (resource_limits)

    def describe(self) -> str:
        return f"kernelspec {self.name!r} ({self.provisioner})"


@dataclass
class CheckResult:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def per_user_authenticators(chain: Iterable[Any]) -> list[str]:
    """The names of the enabled authenticators that identify individual users."""
    return [auth.name for auth in chain
            if getattr(auth, "enabled", True) and auth.name != SHARED_TOKEN]


def plan_checks(accounts: Sequence[SpecAccount], *, per_user: Sequence[str], auth_enabled: bool,
                allow_shared: bool, refused_kernelspecs: dict[str, str]) -> CheckResult:
    """The startup errors and warnings for these kernelspecs and authenticators."""
    result = CheckResult()
    result.errors += [f"Refusing to start: {why}" for why in refused_kernelspecs.values()]
    result.errors += [f"Refusing to start: {a.describe()}: {a.config_error}"
                      for a in accounts if a.config_error]
    shared = [a for a in accounts if a.shares_account]
    if per_user and shared:
        what = (f"the authenticators {', '.join(per_user)} sign users in one by one, but "
                "these kernelspecs would run the kernels of different users under one "
                "account, where one user's kernel can read another's connection file, run "
                "code in it and read whatever that account can:\n"
                + "".join(f"  {a.describe()}: {a.run_as_setting or 'no run-as setting'}\n"
                          for a in shared))
        if allow_shared:
            result.warnings.append(f"{ALLOW_SHARED} is set, so the gateway starts although "
                                   f"{what}")
        else:
            result.errors.append(
                f"Refusing to start: {what}Run kernels as their users ({RUN_AS_SETTINGS}; in "
                "the config or in the kernelspec's metadata.kernel_provisioner.config), or "
                f"accept the shared account with {ALLOW_SHARED} (docs/run-as-user.md).")
    if not auth_enabled:
        result.errors += [_unauthenticated_run_as(a) for a in accounts if not a.shares_account]
        result.warnings.append(
            "No authentication: a client's KERNEL_USERNAME is taken as its kernel's owner "
            "(as Enterprise Gateway does). Owners are labels here, not identities: every "
            "caller may use every kernel, and kernels run as the gateway's account.")
    return result


def _unauthenticated_run_as(account: SpecAccount) -> str:
    return (f"Refusing to start: {account.describe()} runs each kernel as its owner "
            f"({account.run_as_setting or 'its provisioner changes identity'}), but no "
            "authenticator is enabled, so anyone who reaches the port could run code as any "
            "user by naming them in KERNEL_USERNAME. Enable an authenticator "
            "(KernelyardApp.authenticators, KernelyardApp.auth_token) or run its kernels as "
            "the gateway's account (turn that setting off).")


def kernelspec_accounts(app: Any) -> list[SpecAccount]:
    """A ``SpecAccount`` per kernelspec the gateway serves."""
    ksm = app.kernel_spec_manager
    accounts = []
    for name in sorted(ksm.get_all_specs()):
        try:
            spec = ksm.get_kernel_spec(name)
        except Exception:  # noqa: S112 - it is not served either (jupyter_client logs it)
            continue
        accounts.append(account_of(app, name, spec))
    return accounts


def account_of(app: Any, name: str, spec: Any) -> SpecAccount:
    """Whom the kernels of kernelspec ``name`` run as, as its provisioner says."""
    factory = KernelProvisionerFactory.instance(parent=app)
    stanza = spec.metadata.get("kernel_provisioner") or {}
    provisioner_name = stanza.get("provisioner_name") or factory.default_provisioner_name
    return _account_of(app, factory, name, spec, str(provisioner_name))


def late_shared_account_refusal(app: Any, per_user: Sequence[str]) -> Any:
    """For a kernelspec added after startup: the reason it is refused, or None."""
    def refuse(name: str, spec: Any) -> str | None:
        account = account_of(app, name, spec)
        if not account.shares_account:
            return None
        return (f"{account.describe()} would run the kernels of different users under one "
                f"account, which this gateway refuses with the authenticators "
                f"{', '.join(per_user)}: run them as their users "
                f"({account.run_as_setting or RUN_AS_SETTINGS}) or set {ALLOW_SHARED}")
    return refuse


def _account_of(app: Any, factory: Any, name: str, spec: Any, provisioner_name: str
                ) -> SpecAccount:
    try:
        provisioner = factory.create_provisioner_instance(
            str(uuid.uuid4()), spec, parent=app.kernel_manager)
    except Exception as e:  # a provisioner that can't be built: assume the worst
        app.log.warning("Kernelspec %r: cannot build its provisioner %r (%s); counting its "
                        "kernels as sharing one account", name, provisioner_name, e)
        return SpecAccount(name, provisioner_name, True)
    hooks = hooks_of(provisioner)  # a provisioner that does not say: assume the worst
    return SpecAccount(name, provisioner_name, shares_account=hooks.kernels_share_account(),
                       run_as_setting=hooks.run_as_owner_setting(),
                       config_error=_limits_error(provisioner, name))


def _limits_error(provisioner: Any, name: str) -> str:
    """The ``ConfigError`` of a kernelspec's resource limits ('' if they are well-formed)."""
    if not isinstance(provisioner, ResourceSettings):
        return ""
    try:
        provisioner.kernelspec_limits(name)
    except ConfigError as e:
        return e.message
    return ""


def make_undumpable() -> bool:
    """Make this process non-dumpable (Linux): processes of its own uid can then no longer
    read its ``/proc/<pid>/environ`` or memory, or ptrace it. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False

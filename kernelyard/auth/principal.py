"""Who made a request: the one identity type every layer uses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``name`` is the user kernels run as (an OS / Kerberos short name such as
    ``alice``), in its canonical form (``canonical_username``). ``via`` names
    the authenticator that vouched for it (``token``,
    ``api-token``, ``jupyterhub``, ``kerberos``, ``proxy-header``, ``mtls``).
    ``may_act_for_others`` marks a service (JupyterHub, a trusted proxy) whose
    ``KERNEL_USERNAME`` is honoured; for everyone else it must equal ``name``.
    """

    name: str
    groups: frozenset[str] = field(default_factory=frozenset)
    admin: bool = False
    via: str = ""
    may_act_for_others: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", canonical_username(self.name))


def canonical_username(name: str) -> str:
    """The one form of a user name that rules, quotas, owners and audit lines use.

    User names compare without regard to letter case (as JupyterHub's do, and as
    directory services such as Active Directory sign users in): ``Alice`` is
    ``alice``. Every ``Principal``, ``KERNEL_USERNAME`` and user name in the
    settings goes through this, so no spelling escapes a rule keyed by a name.
    """
    return name.lower() if isinstance(name, str) else name

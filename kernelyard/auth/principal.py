"""Who made a request: the one identity type every layer uses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``name`` is the user kernels run as (an OS / Kerberos short name such as
    ``alice``). ``via`` names the authenticator that vouched for it (``token``,
    ``api-token``, ``jupyterhub``, ``kerberos``, ``proxy-header``, ``mtls``).
    ``may_act_for_others`` marks a service (JupyterHub, a trusted proxy) whose
    ``KERNEL_USERNAME`` is honoured; for everyone else it must equal ``name``.
    """

    name: str
    groups: frozenset[str] = field(default_factory=frozenset)
    admin: bool = False
    via: str = ""
    may_act_for_others: bool = False

"""The launch rules every start is judged by (built by ``KernelyardApp``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .. import policy
from ..errors import NotFound
from ..identity import Principal, canonical_username, gateway_user

# Principals that are the gateway's own OS account unless configured otherwise: the
# shared token's user and the anonymous caller (see ``LaunchRules.launch_policy``).
OWN_ACCOUNT_VIAS = frozenset({"token", "anonymous"})


def runs_as_gateway_account(principal: Principal, requested: Any, account: str) -> bool:
    """Whether a launch keeps the gateway's own OS account: no impersonation happens.

    True for the shared token's and the anonymous principal when they are the
    gateway's own user (the default) and the client names no ``KERNEL_USERNAME``.
    """
    return (not requested and principal.via in OWN_ACCOUNT_VIAS
            and principal.name == canonical_username(account))


@dataclass(frozen=True)
class LaunchRules:
    """What every launch is judged by; ``KernelyardApp`` builds it from its settings.

    ``access.allow_root`` is the setting ``KernelyardApp.allow_root_kernels``; a
    launch that keeps the gateway's own account (``runs_as_gateway_account``) is
    not refused for being root, because no identity changes hands: the kernel
    runs exactly as the gateway does.
    """

    access: policy.AccessPolicy = field(default_factory=policy.AccessPolicy)
    resource_limits: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    env: policy.EnvPolicy = field(default_factory=lambda: policy.EnvPolicy(
        secret_names=frozenset(policy.DEFAULT_SECRET_ENVS)))
    gateway_account: str = field(default_factory=gateway_user)

    def launch_policy(self, principal: Principal, requested: Any = None) -> policy.LaunchPolicy:
        """The policy for ``principal`` launching with ``KERNEL_USERNAME=requested``."""
        access = self.access
        if runs_as_gateway_account(principal, requested, self.gateway_account):
            access = replace(access, allow_root=True)
        return policy.LaunchPolicy(access=access, resource_limits=self.resource_limits)

    def kernel_env(self, client_env: Mapping[str, str]) -> dict[str, str]:
        """What every kernel is given: the ``inherited_envs`` and the client's names.

        Never the gateway's environment: a kernel on this host gets the base set
        (``policy.base_env``) from its provisioner, a remote one its host's own.
        """
        return {**policy.inherited_env(os.environ, self.env), **client_env}


async def os_groups(user: str) -> frozenset[str]:
    """The groups of ``user`` on this host (passwd/group, NSS included); none if unknown."""
    from ..usermap import PasswdUserMap

    def lookup() -> frozenset[str]:
        try:
            return PasswdUserMap().lookup(user).groups
        except NotFound:
            return frozenset()

    return await asyncio.to_thread(lookup)

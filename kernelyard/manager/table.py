"""The kernels table of the gateway's kernel manager: owners, kernelspecs, ids."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from jupyter_client.kernelspec import NoSuchKernel
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

from .. import policy
from ..audit import AuditLog
from ..errors import NotFound
from ..identity import Principal
from ..quotas import QuotaGate
from ..store import StoreFactory
from .rules import LaunchRules


class KernelTable(AsyncMappingKernelManager):
    """The kernels of this gateway and their owners: lookups, kernelspecs, remembered ids.

    The base of ``GatewayMappingKernelManager``; its settings are declared there.
    """

    max_kernels: int
    remembered_kernel_ids: int
    working_dir_policy: str
    rules: LaunchRules
    audit: AuditLog
    quota_gate: QuotaGate
    _starting: dict[str, Any]
    _used_ids: OrderedDict[str, None]
    _claimed: set[str]
    kernel_removed_listeners: list[Callable[[str], None]]

    def configure_policy(self, rules: LaunchRules, quotas: policy.QuotaPolicy,
                         audit: AuditLog) -> None:
        """Install the settings ``KernelyardApp`` built and validated at start.

        Settings keyed by kernelspec name are re-keyed by the listed (canonical)
        names, as every launch is looked up by those (``resolve_kernelspec``).
        """
        ksm: Any = self.kernel_spec_manager
        listed = list(ksm.find_kernel_specs())
        limits = self._canonical("kernelspec_max_kernels", quotas.kernelspec_max_kernels, listed)
        access = self._canonical("kernelspec_access", rules.access.kernelspec_rules, listed)
        self.rules = replace(rules, access=replace(rules.access, kernelspec_rules=access))
        self.quota_gate.policy = replace(quotas, kernelspec_max_kernels=limits)
        self.audit = audit

    def _canonical(self, setting: str, table: Mapping[str, Any], listed: list[str]) -> Any:
        out, renamed = policy.by_canonical_kernelspec(table, listed)
        for key, canonical in renamed:
            self.log.warning("KernelyardApp.%s[%r] is taken as the kernelspec %r (kernelspec "
                             "names are matched as listed); write %r", setting, key, canonical,
                             canonical)
        return out

    def kernel_counts(self) -> policy.KernelCounts:
        """The kernels this gateway has, by owner and kernelspec (starts in flight are the
        quota gate's)."""
        return policy.KernelCounts.of(
            (getattr(km, "owner", ""), km.kernel_name) for km in self._kernels.values())

    def owner_of(self, kernel_id: str) -> str | None:
        """The owner of a kernel (None: nobody's, so admins' alone); NotFound if missing."""
        self._check_kernel_id(kernel_id)
        return policy.owner_of(self._kernels[kernel_id])

    def may_access(self, principal: Principal, kernel_id: str) -> bool:
        """Whether ``principal`` may see and act on a kernel that exists."""
        return policy.may_access_kernel(principal, self.owner_of(kernel_id))

    def may_use_kernelspec(self, principal: Principal, name: str,
                           metadata: Mapping[str, Any]) -> bool:
        """Whether ``principal`` may see and launch a kernelspec (as itself); ``name``
        must be the canonical one (``resolve_kernelspec``)."""
        access = self.rules.launch_policy(principal).access
        return policy.may_use_kernelspec(principal, name, metadata, access)

    def kernel_model(self, kernel_id: str) -> dict[str, Any]:
        """jupyter_server's kernel model, plus the kernel's ``owner`` and, once it is dead,
        the ``reason`` its backend gave (an OOM kill, a deleted pod, its last log lines)."""
        model: dict[str, Any] = super().kernel_model(kernel_id)
        kernel = self._kernels[kernel_id]
        model["owner"] = policy.owner_of(kernel)
        if model.get("execution_state") == "dead":
            model["reason"] = kernel.death_reason()
        return model

    async def kernel_spec_of(self, name: str) -> Any:
        """The kernelspec ``name``; NotFound if there is none."""
        return (await self.resolve_kernelspec(name))[1]

    async def resolve_kernelspec(self, name: str) -> tuple[str, Any]:
        """The canonical name (``policy.canonical_kernelspec_name``) and the kernelspec
        ``name`` stands for; NotFound if it stands for none. Policy, quotas, records
        and audit lines take this name, never the one the client typed."""
        ksm: Any = self.kernel_spec_manager
        listed = await asyncio.to_thread(ksm.find_kernel_specs)
        canonical = policy.canonical_kernelspec_name(name, listed)
        if canonical is None:
            raise NotFound(f"no such kernelspec: {name!r}")
        try:
            return canonical, await self._kernel_spec(canonical)
        except NoSuchKernel:
            raise NotFound(f"no such kernelspec: {name!r}") from None

    async def _kernel_spec(self, name: str) -> Any:
        ksm: Any = self.kernel_spec_manager
        getter = getattr(ksm, "async_get_kernel_spec", None) or ksm.get_kernel_spec
        result = getter(name)
        return await result if hasattr(result, "__await__") else result

    def _remember_id(self, kernel_id: str) -> None:
        if self.remembered_kernel_ids <= 0:
            return
        self._used_ids[kernel_id] = None
        self._used_ids.move_to_end(kernel_id)
        while len(self._used_ids) > self.remembered_kernel_ids:
            self._used_ids.popitem(last=False)

    def remove_kernel(self, kernel_id: str) -> Any:
        """jupyter_client's, then every ``kernel_removed_listeners`` (sessions go too)."""
        km = super().remove_kernel(kernel_id)
        self._remember_id(kernel_id)
        for listener in list(self.kernel_removed_listeners):
            listener(kernel_id)
        return km

    async def _persist_owner(self, kernel_id: str) -> None:
        """Write the owner into the store record of a remote kernel (re-adopted later)."""
        km = self._kernels.get(kernel_id)
        if km is None or not getattr(km, "is_remote", False):
            return
        try:
            await StoreFactory.instance().store.update(kernel_id, owner=km.owner)
        except Exception as e:
            self.log.warning("Kernel %s: its owner could not be stored (after a gateway "
                             "restart only admins will see it): %s", kernel_id, e)

    def _check_kernel_id(self, kernel_id: str) -> None:
        if kernel_id not in self:
            raise NotFound(f"no such kernel: {kernel_id}")

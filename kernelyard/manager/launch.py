"""Launching a kernel for a caller: policy, quotas, kernel ids, working directory."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from jupyter_client.provisioning import KernelProvisionerFactory as KPF

from .. import policy, start_options
from ..audit import where_of
from ..errors import Conflict, InvalidRequest, NotFound
from ..identity import Principal
from ..provisioners.resource_settings import ResourceSettings
from .rules import os_groups
from .sessions import Caller
from .starting import Starting

# The answer for a client-chosen id that names, or named, a kernel the caller may not see:
# the same whether that kernel lives or is gone, so an id can't be probed.
USED_KERNEL_ID = ("KERNEL_ID {} can't be used: it is not a new id (choose a new random "
                  "UUID; an id is never given to a second kernel)")
LOCAL_PROVISIONERS = frozenset({"kernelyard-local", "local-provisioner"})


def _home_of(user: str) -> str:
    """The home directory of ``user`` on this host (passwd, NSS included)."""
    from ..usermap import PasswdUserMap

    try:
        return PasswdUserMap().lookup(user).home
    except NotFound:
        raise InvalidRequest(f"{start_options.WORKING_DIR}: user {user!r} has no home "
                             "directory on the gateway's host") from None


class Launching(Starting):
    """Every start for a request: the policy, the quotas, the kernel id, the working dir."""

    async def launch(self, caller: Caller, request: policy.LaunchRequest) -> str:
        """Start a kernel for ``caller`` under every rule; return its id once it is ready.

        In order: the kernelspec (``NotFound``); whom it runs as, the kernelspec
        access and the resource limits (``policy.authorize``: ``InvalidRequest``,
        ``Forbidden``, ``LimitReached``); the quotas, counted and reserved under
        one lock with the starts in flight (``LimitReached``); then the start
        (``Conflict``, ``KernelStartFailed``). The kernel belongs to the launch
        subject: the caller, or the user a service starts it for. Its env carries
        ``KERNEL_USERNAME`` set to that user. ``caller.event`` is filled in.

        The client's ``KERNEL_LAUNCH_TIMEOUT`` ends the start at its deadline
        (``StartDeadlineExceeded``), its ``KERNEL_WORKING_DIR`` is judged by
        ``working_dir_policy`` (``InvalidRequest``), and a client-chosen id must be a
        new one (``claim_kernel_id``). A start that is cancelled (the client left) or
        runs out of time leaves nothing behind.
        """
        event = caller.event
        event.action, event.kernelspec = "launch", request.kernel_name or self.default_kernel_name
        name, spec = await self.resolve_kernelspec(event.kernelspec)
        event.kernelspec = name
        deadline = start_options.launch_deadline(request.env)
        plan = await self._authorize(caller.principal, request, name, spec)
        event.owner = plan.subject.name
        env, cwd = await self._working_dir(plan, spec, name)
        kernel_id = event.kernel_id = self.claim_kernel_id(caller.principal, request.kernel_id)
        try:
            async with self.quota_gate.reserve(plan.subject, name):
                await self._start_within(
                    deadline, kernel_name=name, path=None if cwd else request.path,
                    kernel_id=kernel_id, env=self.rules.kernel_env(env),
                    owner=plan.subject.name, plan=plan, **({"cwd": cwd} if cwd else {}))
        finally:
            self._claimed.discard(kernel_id)
        self._remember_id(kernel_id)
        event.where = where_of(self._kernels.get(kernel_id))
        await self._persist_owner(kernel_id)
        return kernel_id

    def claim_kernel_id(self, principal: Principal, requested: str | None) -> str:
        """The id of a new kernel: a fresh one, or the client's if no kernel has or had it.

        The owner (or an admin) of a live kernel with that id gets ``Conflict``;
        anyone else, and everyone for the id of a kernel that is starting or gone
        (as far back as ``remembered_kernel_ids``), gets the same ``InvalidRequest``.
        The id stays claimed until the caller's start ends (``launch``); an id whose
        start failed was never a kernel's and may be tried again.
        """
        if requested is None:
            kernel_id = self.new_kernel_id()
        elif requested in self and self.may_access(principal, requested):
            raise Conflict(f"a kernel with id {requested} already exists")
        elif requested in self or requested in self._pending_kernels \
                or requested in self._claimed or requested in self._used_ids:
            raise InvalidRequest(USED_KERNEL_ID.format(requested))
        else:
            kernel_id = requested
        self._claimed.add(kernel_id)
        return kernel_id

    async def _working_dir(self, plan: policy.LaunchPlan, spec: Any,
                           name: str) -> tuple[dict[str, str], str | None]:
        """The kernel's env and working directory under ``working_dir_policy``."""
        env = dict(plan.env)
        asked = env.pop(start_options.WORKING_DIR, None)
        if asked is None:
            return env, None
        if self.working_dir_policy == "ignore":
            self.log.info("%s %r ignored (GatewayMappingKernelManager.working_dir_policy = "
                          "'ignore')", start_options.WORKING_DIR, asked)
            return env, None
        if self.working_dir_policy == "refuse":
            raise start_options.refuse_working_dir()
        if not self._runs_locally(spec):
            raise InvalidRequest(f"{start_options.WORKING_DIR} is honoured for local kernels "
                                 f"only, and kernelspec {name!r} runs on a remote backend")
        home = await asyncio.to_thread(_home_of, plan.run_as)
        cwd = start_options.dir_inside_home(asked, home)
        return {**env, start_options.WORKING_DIR: cwd}, cwd

    def _runs_locally(self, spec: Any) -> bool:
        configured = (spec.metadata.get("kernel_provisioner") or {}).get("provisioner_name")
        name = configured or KPF.instance(parent=self.parent).default_provisioner_name
        return name in LOCAL_PROVISIONERS

    async def _authorize(self, principal: Principal, request: policy.LaunchRequest,
                         name: str, spec: Any) -> policy.LaunchPlan:
        requested = request.env.get("KERNEL_USERNAME")
        run_as = policy.effective_username(principal, requested)
        groups = await os_groups(run_as) if run_as != principal.name else frozenset()
        settings = self.rules.launch_policy(principal, requested)
        return policy.authorize(principal, request, name, spec.metadata, settings,
                                run_as=run_as, run_as_groups=groups,
                                kernelspec_check=self._kernelspec_check(name, spec))


    def _kernelspec_check(self, name: str, spec: Any) -> policy.KernelspecCheck | None:
        """The kernelspec level of the resource limits: its provisioner's settings (the
        config and ``metadata.kernel_provisioner.config``), read before any launch.
        None for a provisioner that is not kernelyard's (its start fails on its own if
        it cannot be built)."""
        try:
            provisioner = KPF.instance(parent=self.parent).create_provisioner_instance(
                str(uuid.uuid4()), spec, parent=self)
        except Exception:
            return None
        if not isinstance(provisioner, ResourceSettings):
            return None
        return lambda resources, who: provisioner.check_resources(resources, who, name)

"""The gateway's kernel manager: policy, quotas and ownership, then jupyter_server's machinery.

Culling, pending kernels, restarts and message buffering across websocket
reconnects all come from jupyter_server's ``AsyncMappingKernelManager``. This
module adds what a shared gateway needs:

- ``GatewayMappingKernelManager.launch``: every start goes through the policy
  (``kernelyard.policy``: whom the kernel runs as, kernelspec access, resource
  limits) and one ``QuotaGate`` (global, per user, per group, per kernelspec,
  counting starts in flight), and the kernel is recorded as its owner's, on its
  kernel manager (``km.owner``) and in the store (re-adopted after a restart);
- a client-chosen kernel id, and the guarantee that a failed start leaves
  nothing behind;
- ``GatewaySessionManager``: jupyter_server's sessions, each visible only to the
  owner of its kernel (and admins), with every kernel start through ``launch``.

Who is asking reaches the session manager through ``acting_as`` (a context
variable the session handlers set), because jupyter_server's session API has no
parameter for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

from jupyter_client.kernelspec import NoSuchKernel
from jupyter_client.provisioning import KernelProvisionerFactory as KPF
from jupyter_core.utils import ensure_async
from jupyter_server._tz import utcnow
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.services.sessions.sessionmanager import SessionManager
from traitlets import Enum, Integer, default

from . import policy, start_options, wire
from .audit import AuditEvent, AuditLog, result_of, where_of
from .errors import (
    Conflict,
    InvalidRequest,
    KernelStartFailed,
    KernelyardError,
    NotFound,
    StartDeadlineExceeded,
    Unauthorized,
)
from .identity import Principal, canonical_username, gateway_user
from .kernel import GatewayKernelManager
from .quotas import QuotaGate
from .store import KernelRecord, StoreFactory

# Principals that are the gateway's own OS account unless configured otherwise: the
# shared token's user and the anonymous caller (see ``LaunchRules.launch_policy``).
OWN_ACCOUNT_VIAS = frozenset({"token", "anonymous"})
NO_CALLER = "no authenticated caller for this operation"
# The answer for a client-chosen id that names, or named, a kernel the caller may not see:
# the same whether that kernel lives or is gone, so an id can't be probed.
USED_KERNEL_ID = ("KERNEL_ID {} can't be used: it is not a new id (choose a new random "
                  "UUID; an id is never given to a second kernel)")
LOCAL_PROVISIONERS = frozenset({"kernelyard-local", "local-provisioner"})


@dataclass
class Caller:
    """Who asks for an operation, and the audit line the request will write."""

    principal: Principal
    event: AuditEvent = field(default_factory=lambda: AuditEvent("api"))


current_caller: ContextVar[Caller | None] = ContextVar("kernelyard_caller", default=None)


@contextlib.contextmanager
def acting_as(caller: Caller) -> Iterator[Caller]:
    """Run the body on behalf of ``caller`` (read by ``GatewaySessionManager``)."""
    token = current_caller.set(caller)
    try:
        yield caller
    finally:
        current_caller.reset(token)


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
    from .usermap import PasswdUserMap

    def lookup() -> frozenset[str]:
        try:
            return PasswdUserMap().lookup(user).groups
        except NotFound:
            return frozenset()

    return await asyncio.to_thread(lookup)


class GatewayMappingKernelManager(AsyncMappingKernelManager):
    """All kernels of this gateway, each with an owner."""

    max_kernels = Integer(
        0,
        config=True,
        help="The most kernels this gateway runs at once, counting starts in flight "
        "(0 = no limit). A start beyond it gets 403.",
    )
    remembered_kernel_ids = Integer(
        100_000,
        config=True,
        help="How many ids of kernels (live or gone, newest first) the gateway remembers, "
        "in memory, to refuse a client-chosen KERNEL_ID that names or named another "
        "kernel (400, the same answer for both, so ids can't be probed or reused; the "
        "owner of a live kernel gets 409). 0 remembers none.",
    )
    working_dir_policy = Enum(
        list(start_options.WORKING_DIR_POLICIES),
        "ignore",
        config=True,
        help="What a client's KERNEL_WORKING_DIR does (Jupyter Server sends the notebook's "
        "directory on ITS filesystem, which often does not exist here). "
        + "; ".join(f"'{k}': {v}" for k, v in start_options.WORKING_DIR_POLICIES.items())
        + ".",
    )

    @default("kernel_manager_class")
    def _default_kernel_manager_class(self) -> str:
        return f"{GatewayKernelManager.__module__}.{GatewayKernelManager.__name__}"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.rules = LaunchRules()
        self.audit = AuditLog()
        self._starting: dict[str, Any] = {}  # kernel id -> its manager, while it starts
        self.quota_gate = QuotaGate(policy.QuotaPolicy(max_kernels=self.max_kernels or None),
                                    self.kernel_counts)
        self._used_ids: OrderedDict[str, None] = OrderedDict()  # ids kernels had
        self._claimed: set[str] = set()  # ids of starts in flight
        # Called with a kernel's id once it is removed (shut down, culled): its sessions go.
        self.kernel_removed_listeners: list[Callable[[str], None]] = []

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
        """jupyter_server's kernel model, plus the kernel's ``owner``."""
        model: dict[str, Any] = super().kernel_model(kernel_id)
        model["owner"] = policy.owner_of(self._kernels[kernel_id])
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

    def _remember_id(self, kernel_id: str) -> None:
        if self.remembered_kernel_ids <= 0:
            return
        self._used_ids[kernel_id] = None
        self._used_ids.move_to_end(kernel_id)
        while len(self._used_ids) > self.remembered_kernel_ids:
            self._used_ids.popitem(last=False)

    async def _start_within(self, deadline: float | None, **start: Any) -> str:
        """``start_kernel`` that ends, leaving nothing, at ``deadline`` seconds or when the
        request is cancelled (the client closed its connection)."""
        kernel_id, loop = start["kernel_id"], asyncio.get_running_loop()
        began = loop.time()
        try:
            return await asyncio.wait_for(self.start_kernel(**start), deadline)
        except asyncio.TimeoutError:
            if deadline is None or loop.time() - began < deadline:
                raise
            await self._discard_start(kernel_id)
            raise StartDeadlineExceeded(
                f"Kernel '{start['kernel_name']}' was not ready within the client's "
                f"{start_options.LAUNCH_TIMEOUT} of {deadline:g} s; the start was cancelled "
                "and cleaned up") from None
        except asyncio.CancelledError:
            self.log.info("Kernel %s: start cancelled; cleaning up", kernel_id)
            await self._discard_start(kernel_id)
            raise

    async def _discard_start(self, kernel_id: str) -> None:
        """Leave nothing of a start that was cut short: the kernel manager killed what it
        launched (``GatewayKernelManager.start_kernel``) and ``_start_or_clean_up`` dropped
        the pending entry; here the kernel goes if it had got as far as the table."""
        self._pending_kernels.pop(kernel_id, None)
        if kernel_id in self._kernels:
            try:
                await self.shutdown_kernel(kernel_id, now=True)
            except Exception as e:
                self.log.warning("Kernel %s: a cancelled start could not be shut down: %s",
                                 kernel_id, e)

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

    def remove_kernel(self, kernel_id: str) -> Any:
        """jupyter_client's, then every ``kernel_removed_listeners`` (sessions go too)."""
        km = super().remove_kernel(kernel_id)
        self._remember_id(kernel_id)
        for listener in list(self.kernel_removed_listeners):
            listener(kernel_id)
        return km

    async def _authorize(self, principal: Principal, request: policy.LaunchRequest,
                         name: str, spec: Any) -> policy.LaunchPlan:
        requested = request.env.get("KERNEL_USERNAME")
        run_as = policy.effective_username(principal, requested)
        groups = await os_groups(run_as) if run_as != principal.name else frozenset()
        settings = self.rules.launch_policy(principal, requested)
        return policy.authorize(principal, request, name, spec.metadata, settings,
                                run_as=run_as, run_as_groups=groups)

    def pre_start_kernel(self, kernel_name: str | None, kwargs: Any) -> tuple[Any, str, str]:
        """jupyter_client's, and the new kernel manager gets its ``owner`` and launch ``plan``
        right away (its provisioner reads ``plan``)."""
        owner = kwargs.pop("owner", "")
        plan = kwargs.pop("plan", None)
        km: Any
        km, name, kernel_id = super().pre_start_kernel(kernel_name, kwargs)
        km.owner, km.plan = owner, plan
        self._starting[kernel_id] = km  # for _forget_failed_start
        return km, name, kernel_id

    async def start_kernel(  # type: ignore[override]
        self,
        *,
        kernel_name: str | None = None,
        path: str | None = None,
        kernel_id: str | None = None,
        owner: str = "",
        **kwargs: Any,
    ) -> str:
        """Start a kernel owned by ``owner`` and return its id once it is ready.

        No policy here: ``launch`` is the way in for requests. Raises ``NotFound``
        for an unknown kernelspec, ``Conflict`` for a kernel id in use and
        ``KernelStartFailed`` when the kernel cannot start.
        """
        name, _ = await self.resolve_kernelspec(kernel_name or self.default_kernel_name)
        if kernel_id is not None and (kernel_id in self or kernel_id in self._pending_kernels):
            raise Conflict(f"a kernel with id {kernel_id} already exists")
        return await self._start_or_clean_up(name, path, kernel_id, {**kwargs, "owner": owner})

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

    async def restart_kernel(self, kernel_id: str, now: bool = False) -> Any:  # type: ignore[override]
        """jupyter_server's restart; a remote kernel's new store record keeps its owner."""
        result = await super().restart_kernel(kernel_id, now=now)
        await self._persist_owner(kernel_id)
        return result

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        """jupyter_server's culling, with an audit line (``cull``) for a kernel it shuts down."""
        km = self._kernels.get(kernel_id)
        if km is None:
            return
        event = AuditEvent("cull", via="culler", kernel_id=kernel_id,
                           kernelspec=km.kernel_name, owner=getattr(km, "owner", ""),
                           where=where_of(km))
        try:
            await super().cull_kernel_if_idle(kernel_id)
        except Exception as e:
            self.audit.write(event, "error", None, _reason(e))
            raise
        if kernel_id not in self._kernels:
            self.audit.write(event, result_of(200), None)

    async def _start_or_clean_up(
        self, name: str, path: str | None, kernel_id: str | None, kwargs: dict[str, Any]
    ) -> str:
        """jupyter_server's start; a start that fails in ANY way leaves nothing behind.

        Whatever the exception (a ``KernelStartFailed``, one a provisioner did not
        expect, a cancellation), the kernel's process, files and ports are freed and
        no pending entry is left (a stale one breaks ``shutdown_all``, so the gateway
        would no longer exit on SIGTERM). An unexpected exception becomes a
        ``KernelStartFailed`` naming the kernelspec; cancellations are re-raised.
        """
        kernel_id = kernel_id or self.new_kernel_id()
        try:
            kid: str = await super().start_kernel(
                kernel_name=name, path=path, kernel_id=kernel_id, **kwargs  # type: ignore[arg-type]
            )
            # It has answered kernel_info: not 'starting' (clients would wait for it).
            self._kernels[kid].execution_state = "idle"
            return kid
        except BaseException as e:
            await self._forget_failed_start(kernel_id, e)
            if isinstance(e, KernelyardError) or not isinstance(e, Exception):
                raise
            self.log.error("Kernel %s (%s) failed to start", kernel_id, name, exc_info=e)
            raise KernelStartFailed(f"Kernel '{name}' could not be started: an unexpected "
                                    f"{type(e).__name__} (see the gateway's log)") from e
        finally:
            self._starting.pop(kernel_id, None)

    async def _forget_failed_start(self, kernel_id: str, error: BaseException) -> None:
        """Free what a failed start made, and drop it from jupyter_client's tables.

        jupyter_client keeps a failed start in its pending table forever. The paths
        that raise ``KernelStartFailed`` after launching free the kernel themselves;
        any other failure (or one before the launch, with the connection file
        written) is freed here: the process group killed, files and ports released.
        """
        self._pending_kernels.pop(kernel_id, None)
        km: Any = self._starting.get(kernel_id)
        if km is None:
            return
        if self._kernels.get(kernel_id) is km:
            self._kernels.pop(kernel_id, None)
        if isinstance(error, KernelStartFailed) and not km._connection_file_written:
            return
        try:
            await km._discard_failed_launch()
        except Exception as e:
            self.log.warning("Kernel %s: cleaning up a failed start failed: %s", kernel_id, e)

    async def _kernel_spec(self, name: str) -> Any:
        ksm: Any = self.kernel_spec_manager
        getter = getattr(ksm, "async_get_kernel_spec", None) or ksm.get_kernel_spec
        result = getter(name)
        return await result if hasattr(result, "__await__") else result

    def start_watching_activity(self, kernel_id: str) -> None:
        """Track last activity and execution state from IOPub, decoding headers only.

        Same rules as jupyter_server's watcher, which decodes (and date-parses) every
        message a second time; this one reads the header and parent header, and the
        content of status messages only.
        """
        kernel = self._kernels[kernel_id]
        kernel.reason = ""
        kernel.last_activity = utcnow()
        kernel._activity_stream = kernel.connect_iopub()
        kernel._activity_stream.on_recv(lambda msg_list: self._record_activity(kernel, msg_list))

    def _record_activity(self, kernel: Any, msg_list: list[Any]) -> None:
        parts = wire.message_parts(msg_list)
        msg_type = wire.header_of(parts).get("msg_type")
        parent_type = wire.parent_of(parts).get("msg_type")
        tracked_parent = self.track_message_type(parent_type)
        if self.track_message_type(msg_type) or tracked_parent or kernel.execution_state == "busy":
            self.last_kernel_activity = kernel.last_activity = utcnow()
        if msg_type != "status":
            return
        state = json.loads(parts[wire.CONTENT]).get("execution_state")
        if tracked_parent:
            kernel.execution_state = state
        elif kernel.execution_state == "starting" and state != "starting":
            kernel.execution_state = "idle"

    def _handle_kernel_died(self, kernel_id: str) -> None:
        """Keep a dead kernel visible as 'dead' (with its reason) until it is deleted."""
        kernel = self._kernels.get(kernel_id)
        if kernel is None:
            return
        kernel.execution_state = "dead"
        kernel.reason = "the kernel died"
        self.log.warning("Kernel %s died", kernel_id)

    async def adopt_stored_kernels(self) -> None:
        """Take back the remote kernels a previous gateway process left running."""
        store = StoreFactory.instance().store
        for record in await store.all():
            if record.kernel_id in self:
                continue
            try:
                await self._adopt(record)
            except Exception as e:
                self.log.warning("Kernel %s could not be re-adopted: %s", record.kernel_id, e)

    async def _adopt(self, record: KernelRecord) -> None:
        kid = record.kernel_id
        km = self.kernel_manager_factory(
            connection_file=os.path.join(self.connection_dir, f"kernel-{kid}.json"),
            parent=self, log=self.log, kernel_name=record.kernel_name,
        )
        km.kernel_id = kid
        km.owner = record.owner
        provisioner: Any = KPF.instance(parent=self.parent).create_provisioner_instance(
            kid, km.kernel_spec, parent=km
        )
        await provisioner.load_provisioner_info(
            {"kernel_id": kid, "state": record.state, "connection_info": record.connection}
        )
        status = (await provisioner.status([record.state]))[0]
        if status.ended:
            self.log.info("Kernel %s ended while the gateway was away: %s", kid, status.describe())
            await provisioner.cleanup(restart=False)
            return
        km.provisioner = provisioner
        km.load_connection_info(record.connection)
        km._launch_args = {}
        km._attempted_start = True  # later shutdowns and restarts get fresh 'ready' futures
        km._ready = asyncio.get_running_loop().create_future()
        km._ready.set_result(None)
        self._register_adopted(kid, km)
        self.log.info("Kernel %s of %s re-adopted (%s)", kid, record.owner or "nobody",
                      status.describe())

    def _register_adopted(self, kid: str, km: Any) -> None:
        self._kernels[kid] = km
        self._remember_id(kid)
        self._kernel_connections[kid] = 0
        km.execution_state = "idle"
        km.reason = ""
        km.last_activity = utcnow()
        km._connect_control_socket()
        km.start_restarter()
        self.start_watching_activity(kid)
        self.add_restart_callback(kid, lambda: self._handle_kernel_died(kid), "dead")
        if not self._initialized_culler:
            self.initialize_culler()

    async def detach_remote_kernels(self) -> list[str]:
        """Let go of remote kernels without stopping them (the gateway is stopping)."""
        detached = [kid for kid, km in list(self._kernels.items()) if km.is_remote]
        for kid in detached:
            self.stop_watching_activity(kid)
            km = self._kernels.pop(kid)
            km.stop_restarter()
            km._close_control_socket()
            km.provisioner.poller.unregister(kid)
        return detached

    def _check_kernel_id(self, kernel_id: str) -> None:
        if kernel_id not in self:
            raise NotFound(f"no such kernel: {kernel_id}")


def _home_of(user: str) -> str:
    """The home directory of ``user`` on this host (passwd, NSS included)."""
    from .usermap import PasswdUserMap

    try:
        return PasswdUserMap().lookup(user).home
    except NotFound:
        raise InvalidRequest(f"{start_options.WORKING_DIR}: user {user!r} has no home "
                             "directory on the gateway's host") from None


def _reason(error: BaseException) -> str:
    """The client-safe message of a kernelyard error, else only the error's type."""
    return error.message if isinstance(error, KernelyardError) else type(error).__name__


class GatewaySessionManager(SessionManager):  # type: ignore[misc]
    """jupyter_server's sessions, each with an owner of its own, and gone with its kernel.

    The session handlers run on behalf of the caller (``acting_as``). A session
    belongs to whoever created it (the ``owner`` column): only that user, while
    they may still access its kernel, and admins see it; any other session is
    answered like a missing one (404). A session's kernel starts through
    ``GatewayMappingKernelManager.launch``, and a session can only be pointed at
    a kernel the caller may access: any other id, of a missing kernel or of
    someone else's, gets the same 404 (``require_kernel``). When a kernel is
    removed (shut down, culled), its session rows are deleted, so a later kernel
    can never inherit them. Without a caller (the gateway itself) every session
    is visible, and no kernel can be started.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        listeners = getattr(self.kernel_manager, "kernel_removed_listeners", None)
        if listeners is not None:
            listeners.append(self.forget_kernel)

    @property
    def cursor(self) -> Any:
        """jupyter_server's table, with an ``owner`` column (added to an older table)."""
        if self._cursor is None:
            cursor = self.connection.cursor()
            cursor.execute("CREATE TABLE IF NOT EXISTS session "
                           "(session_id, path, name, type, kernel_id, owner)")
            if "owner" not in {row[1] for row in cursor.execute("PRAGMA table_info(session)")}:
                cursor.execute("ALTER TABLE session ADD COLUMN owner")
            self._cursor = cursor
        return self._cursor

    def forget_kernel(self, kernel_id: str) -> None:
        """Delete the sessions of a kernel that is gone."""
        self.cursor.execute("DELETE FROM session WHERE kernel_id=?", (kernel_id,))

    def _may_see(self, row: Any) -> bool:
        caller = current_caller.get()
        if caller is None or caller.principal.admin:
            return True
        if not row["owner"] or row["owner"] != caller.principal.name:
            return False
        km: Any = self.kernel_manager
        kernel_id = row["kernel_id"]  # a gone kernel's row is dropped by row_to_model
        return kernel_id not in km or bool(km.may_access(caller.principal, kernel_id))

    def require_kernel(self, kernel_id: str) -> str:
        """``kernel_id`` if the caller may attach a session to it; else the ``NotFound`` of a
        missing kernel (a malformed id is an ``InvalidRequest``)."""
        caller = current_caller.get()
        if caller is None:
            return kernel_id
        policy.check_kernel_id(kernel_id)
        km: Any = self.kernel_manager
        if kernel_id in km and km.may_access(caller.principal, kernel_id):
            return kernel_id
        raise self._refuse(f"no such kernel: {kernel_id}", denied=kernel_id in km)

    def _refuse(self, message: str, denied: bool = True) -> NotFound:
        caller = current_caller.get()
        if caller is not None and denied:
            caller.event.ownership_denied = True
        return NotFound(message)

    def _rows(self, **columns: Any) -> list[Any]:
        for column in columns:
            if column not in self._columns:
                raise TypeError(f"No such column: {column}")
        where = " AND ".join(f"{column}=?" for column in columns) or "1"
        # Column names are checked against the table's; values go through '?' parameters.
        query = f"SELECT * FROM session WHERE {where}"  # noqa: S608
        return list(self.cursor.execute(query, list(columns.values())).fetchall())

    async def save_session(self, session_id: str, path: str | None = None, name: Any = None,
                           type: str | None = None,
                           kernel_id: str | None = None) -> dict[str, Any]:
        """jupyter_server's row, with the caller as the session's owner."""
        caller = current_caller.get()
        owner = caller.principal.name if caller is not None else ""
        self.cursor.execute("INSERT INTO session VALUES (?,?,?,?,?,?)",
                            (session_id, path, name, type, kernel_id, owner))
        return await self.get_session(session_id=session_id)

    async def session_exists(self, path: str) -> bool:
        """Whether the caller has a live session for ``path`` (others' do not count)."""
        for row in self._rows(path=path):
            if self._may_see(row) and await self.row_to_model(
                    row, tolerate_culled=True) is not None:
                return True
        return False

    async def get_session(self, **kwargs: Any) -> dict[str, Any]:
        """The first session matching ``kwargs`` that the caller may see; else NotFound."""
        if not kwargs:
            raise TypeError("must specify a column to query")
        rows = self._rows(**kwargs)
        visible = [row for row in rows if self._may_see(row)]
        missing = "Session not found: " + ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        if not visible:
            raise self._refuse(missing) if rows else NotFound(missing)
        try:
            model: dict[str, Any] = await self.row_to_model(visible[0])
        except KeyError:
            raise NotFound(missing) from None
        return model

    async def row_to_model(self, row: Any, tolerate_culled: bool = False) -> Any:
        """jupyter_server's model, with ``""`` for a session created without a name.

        jupyter_server answers ``null`` there, which its own spec (a string) and
        JupyterLab's session model check refuse; the row keeps the null, so the
        kernel's ``JPY_SESSION_NAME`` is still the path.
        """
        model = await super().row_to_model(row, tolerate_culled=tolerate_culled)
        if model is not None and model["name"] is None:
            model["name"] = ""
            if "notebook" in model:
                model["notebook"]["name"] = ""
        return model

    async def list_sessions(self) -> list[dict[str, Any]]:
        """The sessions the caller may see."""
        models = []
        for row in self._rows():
            if self._may_see(row):
                with contextlib.suppress(KeyError):  # its kernel is gone: the row too
                    models.append(await self.row_to_model(row))
        return models

    async def create_session(self, path: str | None = None, name: Any = None,
                             type: str | None = None, kernel_name: Any = None,
                             kernel_id: str | None = None) -> dict[str, Any]:
        """A new session; a ``kernel_id`` must name a kernel the caller may access (a new
        kernel at a chosen id is ``POST /api/kernels`` with ``KERNEL_ID``)."""
        if kernel_id is not None:
            self.require_kernel(kernel_id)
        result: dict[str, Any] = await super().create_session(
            path=path, name=name, type=type, kernel_name=kernel_name, kernel_id=kernel_id)
        return result

    async def update_session(self, session_id: str, **kwargs: Any) -> None:
        """jupyter_server's update; a new ``kernel_id`` must be one the caller may access."""
        kernel_id = kwargs.get("kernel_id")
        if kernel_id is not None:
            self.require_kernel(kernel_id)
        await super().update_session(session_id, **kwargs)

    def get_kernel_env(self, path: str | None, name: Any = None) -> dict[str, str]:
        """Only ``JPY_SESSION_NAME``: the kernel's env is built by the launch rules, and
        jupyter_server's version would copy the gateway's whole environment."""
        if name is not None:
            path = os.path.join(self.kernel_manager.cwd_for_path(path), name)
        return {"JPY_SESSION_NAME": str(path)}

    async def start_kernel_for_session(self, session_id: str, path: str | None, name: Any,
                                       type: str | None, kernel_name: str | None,
                                       kernel_id: str | None = None) -> str:
        """Start the session's kernel for the caller, under every launch rule."""
        caller = current_caller.get()
        if caller is None:
            raise Unauthorized(NO_CALLER)
        kernel_path = await ensure_async(self.contents_manager.get_kernel_path(path=path))
        request = policy.LaunchRequest(
            kernel_name=kernel_name, path=policy.check_api_path(kernel_path),
            env=self.get_kernel_env(path, name),
            kernel_id=None if kernel_id is None else policy.check_kernel_id(kernel_id))
        km: Any = self.kernel_manager
        return str(await km.launch(caller, request))

"""All of it for one launch: ``LaunchPolicy`` and ``authorize``, which makes the
``LaunchPlan`` (``kernelyard.launch_plan``, a leaf the provisioners read)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import Forbidden
from ..identity import Principal, is_root
from ..launch_plan import HOST_ENV, RUN_AS_ENV, LaunchPlan
from ..resources import Resources, parse_request
from .access import AccessPolicy, check_kernelspec_access
from .request import LaunchRequest
from .resources import check_resources
from .runas import effective_username, launch_subject


@dataclass(frozen=True)
class LaunchPolicy:
    """The settings ``authorize`` applies (quotas are the ``QuotaGate``'s)."""

    access: AccessPolicy = field(default_factory=AccessPolicy)
    resource_limits: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


# The kernelspec level: refuses (InvalidRequest) what the kernelspec's limits or its
# backend don't allow; called with the resources and the subject's name.
KernelspecCheck = Callable[[Resources, str], None]


def authorize(
    principal: Principal,
    request: LaunchRequest,
    kernel_name: str,
    spec_metadata: Mapping[str, Any],
    settings: LaunchPolicy,
    *,
    run_as: str | None = None,
    run_as_groups: Iterable[str] = (),
    kernelspec_check: KernelspecCheck | None = None,
) -> LaunchPlan:
    """Run-as, kernelspec access and resource limits for a parsed launch request.

    ``kernel_name`` is the resolved kernelspec (the request's or the default).
    ``run_as`` is ``effective_username(principal, KERNEL_USERNAME)`` when the caller
    already decided it (the manager does, to look up ``run_as_groups``, the groups of
    the user a service starts a kernel for); else it is decided here. Either way it
    is decided once per launch. The plan's ``env`` carries ``KERNEL_USERNAME`` set to
    ``run_as``; its ``host`` is the client's ``KERNEL_REMOTE_HOST`` (text the client
    env's check passed; the backend checks it names one of its hosts). The request's
    ``KERNEL_*`` resource variables are parsed once (``InvalidRequest`` naming a bad
    one), then checked against the group level (``LimitReached``) and the kernelspec
    level, ``kernelspec_check`` (``InvalidRequest``).
    """
    if run_as is None:
        run_as = effective_username(principal, request.env.get(RUN_AS_ENV))
    subject = launch_subject(principal, run_as, run_as_groups)
    try:
        check_kernelspec_access(subject, kernel_name, spec_metadata, settings.access)
    except Forbidden as e:
        if not is_root(run_as) or settings.access.allow_root:
            raise
        raise Forbidden(f"refusing to run a kernel as root ({e.message}; see "
                        "KernelyardApp.allow_root_kernels)") from None
    resources = parse_request(request.env)
    check_resources(subject, resources, settings.resource_limits)
    if kernelspec_check is not None:
        kernelspec_check(resources, subject.name)
    env = {**request.env, RUN_AS_ENV: run_as}
    return LaunchPlan(subject=subject, run_as=run_as, kernel_name=kernel_name, env=env,
                      host=request.env.get(HOST_ENV) or "", resources=resources)

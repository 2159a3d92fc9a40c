"""All of it for one launch: ``LaunchPolicy`` and ``authorize``, which makes the
``LaunchPlan`` (``kernelyard.launch_plan``, a leaf the provisioners read)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import Forbidden
from ..identity import Principal, is_root
from ..launch_plan import HOST_ENV, RUN_AS_ENV, LaunchPlan
from .access import AccessPolicy, check_kernelspec_access
from .request import LaunchRequest
from .resources import check_resources
from .runas import effective_username, launch_subject


@dataclass(frozen=True)
class LaunchPolicy:
    """The settings ``authorize`` applies (quotas are the ``QuotaGate``'s)."""

    access: AccessPolicy = field(default_factory=AccessPolicy)
    resource_limits: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def authorize(
    principal: Principal,
    request: LaunchRequest,
    kernel_name: str,
    spec_metadata: Mapping[str, Any],
    settings: LaunchPolicy,
    *,
    run_as: str | None = None,
    run_as_groups: Iterable[str] = (),
) -> LaunchPlan:
    """Run-as, kernelspec access and resource limits for a parsed launch request.

    ``kernel_name`` is the resolved kernelspec (the request's or the default).
    ``run_as`` is ``effective_username(principal, KERNEL_USERNAME)`` when the caller
    already decided it (the manager does, to look up ``run_as_groups``, the groups of
    the user a service starts a kernel for); else it is decided here. Either way it
    is decided once per launch. The plan's ``env`` carries ``KERNEL_USERNAME`` set to
    ``run_as``; its ``host`` is the client's ``KERNEL_REMOTE_HOST`` (text the client
    env's check passed; the backend checks it names one of its hosts).
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
    check_resources(subject, request.env, settings.resource_limits)
    env = {**request.env, RUN_AS_ENV: run_as}
    return LaunchPlan(subject=subject, run_as=run_as, kernel_name=kernel_name, env=env,
                      host=request.env.get(HOST_ENV) or "")

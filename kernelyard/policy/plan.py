"""All of it for one launch: ``LaunchPolicy``, ``LaunchPlan`` and ``authorize``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..auth.principal import Principal
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


@dataclass(frozen=True)
class LaunchPlan:
    """What a launch may do: whom it runs as, who owns it, with which env and resources.

    ``resources`` were parsed once from the request and passed both limit levels; a
    backend maps them (``YarnProvisioner``: spark-submit options), never the env.
    """

    subject: Principal
    run_as: str
    kernel_name: str
    env: dict[str, str]
    resources: Resources = field(default_factory=Resources)


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
    run_as_groups: Iterable[str] = (),
    kernelspec_check: KernelspecCheck | None = None,
) -> LaunchPlan:
    """Run-as, kernelspec access and resource limits for a parsed launch request.

    ``kernel_name`` is the resolved kernelspec (the request's or the default);
    ``run_as_groups`` are the groups of the user a service starts a kernel for.
    The plan's ``env`` carries ``KERNEL_USERNAME`` set to ``run_as``. The request's
    ``KERNEL_*`` resource variables are parsed once (``InvalidRequest`` naming a bad
    one), then checked against the group level (``LimitReached``) and the kernelspec
    level, ``kernelspec_check`` (``InvalidRequest``).
    """
    run_as = effective_username(principal, request.env.get("KERNEL_USERNAME"))
    subject = launch_subject(principal, run_as, run_as_groups)
    check_kernelspec_access(subject, kernel_name, spec_metadata, settings.access)
    resources = parse_request(request.env)
    check_resources(subject, resources, settings.resource_limits)
    if kernelspec_check is not None:
        kernelspec_check(resources, subject.name)
    env = {**request.env, "KERNEL_USERNAME": run_as}
    return LaunchPlan(subject=subject, run_as=run_as, kernel_name=kernel_name, env=env,
                      resources=resources)

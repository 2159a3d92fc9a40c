"""The launch plan: what the policy decided, once, for one kernel start.

``kernelyard.policy.authorize`` makes it; the manager hands it to the kernel
manager (``GatewayKernelManager.plan``, as it hands over the owner); a
provisioner reads it as ``self.plan`` and never re-reads the decision from the
kernel's env. In a plain Jupyter Server (no kernelyard manager) a provisioner's
plan is the one ``plan_from_env`` makes of the kernel's env. A leaf (stdlib,
``kernelyard.identity`` and ``kernelyard.resources``), so provisioners may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .identity import Principal
from .resources import Resources, parse_request

RUN_AS_ENV = "KERNEL_USERNAME"
HOST_ENV = "KERNEL_REMOTE_HOST"


@dataclass(frozen=True)
class LaunchPlan:
    """What a launch may do.

    ``subject`` is who the launch's rules followed and who owns the kernel;
    ``run_as`` the user the kernel runs as when its backend runs kernels as their
    owner (a backend that runs all kernels as one account ignores it);
    ``kernel_name`` the resolved kernelspec; ``env`` the client env that passed
    the policy (``KERNEL_USERNAME`` set to ``run_as``); ``host`` the client's
    ``KERNEL_REMOTE_HOST`` pin ('' for none), checked as text only: the backend
    checks that it is one of its hosts; ``resources`` were parsed once from the
    request and passed both limit levels: a backend maps them (``YarnProvisioner``:
    spark-submit options), never the env. New fields come with a default, so every
    maker of a plan keeps working.
    """

    subject: Principal
    run_as: str
    kernel_name: str
    env: dict[str, str] = field(default_factory=dict, repr=False)  # may hold a client's secrets
    resources: Resources = field(default_factory=Resources)
    host: str = ""


def plan_from_env(env: Mapping[str, str], kernel_name: str = "") -> LaunchPlan:
    """The plan of a kernel started without kernelyard's manager: ``run_as`` from
    ``KERNEL_USERNAME`` and ``host`` from ``KERNEL_REMOTE_HOST`` as the env holds
    them ('' when absent; the backend checks them as it would a planned value)."""
    user = env.get(RUN_AS_ENV) or ""
    return LaunchPlan(subject=Principal(name=user), run_as=user, kernel_name=kernel_name,
                      env=dict(env), resources=parse_request(env),
                      host=env.get(HOST_ENV) or "")


def plan_of_adopted(owner: str, kernel_name: str) -> LaunchPlan:
    """The plan of a kernel re-adopted from the store, for its later restarts: it runs
    as its owner (``authorize`` makes the subject the user a kernel runs as) with the
    kernelspec's default resources, since a client's request isn't stored."""
    return LaunchPlan(subject=Principal(name=owner), run_as=owner, kernel_name=kernel_name)


def plan_of(kernel_manager: Any, spec_env: Mapping[str, str] | None = None) -> LaunchPlan:
    """A provisioner's plan: its kernel manager's ``plan`` when the kernelyard manager
    handed one over, else ``plan_from_env`` of the env the kernel was started with
    (the kernelspec's ``spec_env`` over it, as jupyter_client merges them)."""
    plan = getattr(kernel_manager, "plan", None)
    if isinstance(plan, LaunchPlan):
        return plan
    launch_args = getattr(kernel_manager, "_launch_args", None) or {}
    env = {**(launch_args.get("env") or {}), **(spec_env or {})}
    return plan_from_env(env, str(getattr(kernel_manager, "kernel_name", "") or ""))

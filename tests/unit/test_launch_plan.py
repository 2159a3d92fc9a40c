"""One launch plan, decided once by the policy and read by the provisioners."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

import kernelyard.policy.plan
from kernelyard import policy
from kernelyard.errors import InvalidRequest
from kernelyard.identity import Principal
from kernelyard.kernel import GatewayKernelManager
from kernelyard.launch_plan import LaunchPlan, plan_from_env, plan_of_adopted
from kernelyard.manager import GatewayMappingKernelManager
from kernelyard.provisioners.local import LocalKernelProvisioner
from kernelyard.provisioners.ssh import SSHProvisioner
from kernelyard.provisioners.yarn import YarnProvisioner
from kernelyard.resources import parse_request

ALICE = Principal(name="alice", via="token")
HUB = Principal(name="hub", via="jupyterhub", may_act_for_others=True)
IMPOSTOR_ENV = {"KERNEL_USERNAME": "mallory", "KERNEL_REMOTE_HOST": "h2"}


def _launch(env: dict[str, str]) -> policy.LaunchRequest:
    return policy.parse_launch_request({"env": env}, policy.EnvPolicy())


def _provisioner(cls: type, km: GatewayKernelManager, **settings: Any) -> Any:
    return cls(kernel_id=str(uuid.uuid4()), kernel_spec=None, parent=km, **settings)


def _planned_km(run_as: str = "alice", host: str = "h1") -> GatewayKernelManager:
    km = GatewayKernelManager()
    km.plan = LaunchPlan(subject=Principal(name=run_as), run_as=run_as, kernel_name="py",
                         env={"KERNEL_USERNAME": run_as}, host=host)
    return km


def test_authorize_returns_run_as_and_host() -> None:
    plan = policy.authorize(HUB, _launch({"KERNEL_USERNAME": "Bob",
                                          "KERNEL_REMOTE_HOST": "h2"}),
                            "py", {}, policy.LaunchPolicy())
    assert (plan.subject.name, plan.run_as, plan.host) == ("bob", "bob", "h2")
    assert plan.env["KERNEL_USERNAME"] == "bob"
    plan = policy.authorize(ALICE, _launch({}), "py", {}, policy.LaunchPolicy())
    assert (plan.run_as, plan.host) == ("alice", "")


def test_a_launch_decides_run_as_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    decide = policy.effective_username

    def counted(principal: Principal, requested: Any = None) -> str:
        calls.append(requested)
        return decide(principal, requested)

    monkeypatch.setattr(policy, "effective_username", counted)
    monkeypatch.setattr(kernelyard.policy.plan, "effective_username", counted)
    manager = GatewayMappingKernelManager()
    plan = asyncio.run(manager._authorize(ALICE, _launch({"KERNEL_REMOTE_HOST": "h1"}), "py",
                                          SimpleNamespace(metadata={})))
    assert (plan.run_as, plan.host, calls) == ("alice", "h1", [None])


def test_a_provisioner_given_a_plan_ignores_the_env() -> None:
    ssh = _provisioner(SSHProvisioner, _planned_km(), user_mode="sudo", hosts=["h1", "h2"])
    assert ssh._owner(dict(IMPOSTOR_ENV)) == "alice"
    assert asyncio.run(ssh._choose_host(dict(IMPOSTOR_ENV))) == "h1"
    yarn = _provisioner(YarnProvisioner, _planned_km(), impersonate=True)
    assert yarn._proxy_user(dict(IMPOSTOR_ENV)) == "alice"
    local = _provisioner(LocalKernelProvisioner, _planned_km(), run_as_user=True)
    assert local._owner(dict(IMPOSTOR_ENV)) == "alice"


def test_the_backend_checks_the_planned_host() -> None:
    ssh = _provisioner(SSHProvisioner, _planned_km(host="elsewhere"), hosts=["h1", "h2"])
    with pytest.raises(InvalidRequest, match="KERNEL_REMOTE_HOST 'elsewhere'"):
        asyncio.run(ssh._choose_host({}))


def test_without_a_plan_a_provisioner_takes_it_from_the_kernels_env() -> None:
    km = GatewayKernelManager()  # a plain Jupyter Server hands over no plan
    km._launch_args = {"env": dict(IMPOSTOR_ENV)}
    ssh = _provisioner(SSHProvisioner, km, user_mode="sudo", hosts=["h1", "h2"])
    assert ssh.plan == plan_from_env(IMPOSTOR_ENV, km.kernel_name)
    assert ssh._owner({}) == "mallory"
    assert asyncio.run(ssh._choose_host({})) == "h2"
    assert _provisioner(LocalKernelProvisioner, km, run_as_user=True)._owner({}) == "mallory"
    assert _provisioner(YarnProvisioner, km)._proxy_user({}) == "mallory"


def test_a_readopted_kernel_restarts_as_its_owner() -> None:
    """A kernel re-adopted from the store has no launch env left: a restart must still
    run it as its owner, never as the gateway's own account (no --proxy-user)."""
    km = GatewayKernelManager()
    km._launch_args = {}  # as adoption leaves it
    assert _provisioner(YarnProvisioner, km, impersonate=True)._proxy_user({}) == ""
    km.plan = plan_of_adopted("alice", "spark")
    assert _provisioner(YarnProvisioner, km, impersonate=True)._proxy_user({}) == "alice"
    assert _provisioner(SSHProvisioner, km, user_mode="sudo", hosts=["h1"])._owner({}) == "alice"


def test_without_a_plan_the_resources_come_from_the_kernels_env() -> None:
    plan = plan_from_env({"KERNEL_DRIVER_MEMORY": "1.5g"})
    assert plan.resources == parse_request({"KERNEL_DRIVER_MEMORY": "1.5g"})

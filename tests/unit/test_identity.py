"""The identity leaf: the one user-name check, the one refusal of root, kernel ids."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kernelyard import identity, policy
from kernelyard.cli.token import check_name
from kernelyard.errors import ConfigError, Forbidden, InvalidRequest, KernelStartFailed
from kernelyard.identity import Principal, RunAsRefused, is_root, refuse_root
from kernelyard.kernel import GatewayKernelManager
from kernelyard.launch_plan import LaunchPlan
from kernelyard.provisioners.ssh import SSHProvisioner
from kernelyard.provisioners.yarn import YarnProvisioner
from kernelyard.usermap import RunAsRules, UserIdentity, check_run_as, parse_static_entry

NAMES = ["alice", "Alice", "_svc", "a.b-c_d", "x" * 32, "x" * 33, "1alice", ".alice", "-a",
         "a/b", "a@b", "a b", "", "al$ce", "ålice"]


def _planned(provisioner_class: type, run_as: str, **settings: Any) -> Any:
    km = GatewayKernelManager()
    km.plan = LaunchPlan(subject=Principal(name=run_as or "x"), run_as=run_as,
                         kernel_name="py")
    return provisioner_class(kernel_id=str(uuid.uuid4()), kernel_spec=None, parent=km,
                             **settings)


def _accepts(check: Any, name: str) -> bool:
    try:
        check(name)
    except (ValueError, InvalidRequest, ConfigError, Forbidden):
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_every_user_name_check_is_the_one_in_identity(name: str) -> None:
    expected = identity.is_valid_username(name)
    assert policy.is_valid_username is identity.is_valid_username
    assert _accepts(check_name, name) == expected, "kernelyard token --user"
    assert _accepts(lambda n: parse_static_entry(n, {"uid": 2000}), name) == expected
    yarn = _planned(YarnProvisioner, name, impersonate=True)
    assert _accepts(yarn._proxy_user, {}) == (expected or name == ""), "YARN proxy user"
    ssh = _planned(SSHProvisioner, name, user_mode="sudo")
    assert _accepts(lambda n: ssh._owner({}), name) == expected, "SSH run-as user"


@pytest.mark.parametrize(("name", "uid"), [("root", None), ("Root", None), ("ROOT", 5),
                                           ("toor", 0)])
def test_root_is_refused_by_the_one_function(name: str, uid: int | None) -> None:
    assert is_root(name, uid)
    with pytest.raises(RunAsRefused, match="refusing to run a kernel as root"):
        refuse_root(name, uid)
    with pytest.raises(RunAsRefused, match="refusing to run a kernel as root"):
        check_run_as(UserIdentity(name, 0 if uid is None else uid, 0, "/root"), RunAsRules())


@pytest.mark.parametrize("name", ["root", "Root", "ROOT"])
def test_every_backend_refuses_root_in_any_case(name: str) -> None:
    ssh = _planned(SSHProvisioner, name, user_mode="sudo")
    with pytest.raises(RunAsRefused, match="as root"):
        ssh._owner({})
    with pytest.raises(KernelStartFailed, match="bad user"):
        ssh.ssh.state_user({"user": name})
    service = Principal(name="hub", via="jupyterhub", may_act_for_others=True)
    request = policy.parse_launch_request({"env": {"KERNEL_USERNAME": name}},
                                          policy.EnvPolicy())
    with pytest.raises(Forbidden, match="refusing to run a kernel as root"):
        policy.authorize(service, request, "py", {}, policy.LaunchPolicy())


def test_not_root() -> None:
    assert not is_root("alice") and not is_root("alice", 1000) and not is_root(None)
    refuse_root("alice", 1000)


def test_the_kernel_id_check() -> None:
    kid = str(uuid.uuid4())
    assert identity.check_kernel_id(kid) == kid
    assert policy.check_kernel_id is identity.check_kernel_id
    for bad in [kid.upper(), kid.replace("-", ""), "x", None, 5]:
        with pytest.raises(InvalidRequest, match="KERNEL_ID"):
            identity.check_kernel_id(bad)

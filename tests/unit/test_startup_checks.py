"""The startup checks' decisions, and each provisioner's answer to "one account for all?"."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kernelyard.kernelspecs import eg_kernelspec_message, eg_process_proxy
from kernelyard.provisioners.local import LocalKernelProvisioner
from kernelyard.provisioners.ssh import SSHProvisioner
from kernelyard.provisioners.yarn import YarnProvisioner
from kernelyard.startup_checks import SpecAccount, per_user_authenticators, plan_checks

RUN_AS = "LocalKernelProvisioner.run_as_user = True"
SHARED = SpecAccount("python3", "kernelyard-local", True, RUN_AS)
OWN = SpecAccount("as_user", "kernelyard-local", False, RUN_AS)


def plan(accounts: list[SpecAccount], per_user: list[str], *, auth: bool = True,
         allow: bool = False) -> tuple[list[str], list[str]]:
    result = plan_checks(accounts, per_user=per_user, auth_enabled=auth, allow_shared=allow,
                         refused_kernelspecs={})
    return result.errors, result.warnings


def test_per_user_authentication_and_a_shared_account_is_an_error() -> None:
    errors, warnings = plan([SHARED, OWN], ["api-token"])
    assert len(errors) == 1 and not warnings
    assert "'python3'" in errors[0] and "'as_user'" not in errors[0]
    assert "KernelyardApp.allow_shared_kernel_account" in errors[0]
    assert "LocalKernelProvisioner.run_as_user" in errors[0]


def test_the_waiver_turns_it_into_a_warning() -> None:
    errors, warnings = plan([SHARED], ["kerberos"], allow=True)
    assert not errors and len(warnings) == 1 and "'python3'" in warnings[0]


def test_the_shared_token_alone_and_run_as_kernelspecs_pass() -> None:
    assert plan([SHARED], []) == ([], [])
    assert plan([OWN], ["api-token", "jupyterhub"]) == ([], [])


def test_no_authentication_refuses_identity_changes_and_warns_otherwise() -> None:
    errors, warnings = plan([SHARED, OWN], [], auth=False)
    assert len(errors) == 1 and "'as_user'" in errors[0] and "KERNEL_USERNAME" in errors[0]
    assert any("KERNEL_USERNAME is taken as its kernel's owner" in w for w in warnings)


def test_only_enabled_authenticators_other_than_the_shared_token_name_users() -> None:
    chain = [SimpleNamespace(name="token", enabled=True),
             SimpleNamespace(name="api-token", enabled=True),
             SimpleNamespace(name="proxy-header", enabled=False)]
    assert per_user_authenticators(chain) == ["api-token"]


@pytest.mark.parametrize(("cls", "settings", "shares"), [
    (LocalKernelProvisioner, {}, True),
    (LocalKernelProvisioner, {"run_as_user": True}, False),
    (SSHProvisioner, {}, True),
    (SSHProvisioner, {"user_mode": "sudo"}, False),
    (SSHProvisioner, {"user_mode": "login"}, False),
    (YarnProvisioner, {}, False),
    (YarnProvisioner, {"impersonate": False}, True),
])
def test_each_provisioner_says_whether_kernels_share_an_account(
    cls: type, settings: dict[str, object], shares: bool
) -> None:
    provisioner = cls(kernel_id="k", kernel_spec=None, **settings)
    assert provisioner.kernels_share_account() is shares
    assert cls.__name__ in provisioner.run_as_owner_setting()


@pytest.mark.parametrize(("metadata", "found"), [
    ({"process_proxy": {"class_name": "enterprise_gateway.services.processproxies.yarn."
                                      "YarnClusterProcessProxy"}}, True),
    ({"process_proxy": {"class_name": "x.DistributedProcessProxy"}}, True),
    ({"process_proxy": {"class_name": "enterprise_gateway.services.processproxies."
                                      "processproxy.LocalProcessProxy"}}, False),
    ({"process_proxy": {"config": {"authorized_users": ["alice"]}}}, False),
    ({"process_proxy": "x"}, False),
    ({}, False),
])
def test_eg_remote_kernelspecs_are_recognised(metadata: dict[str, object], found: bool) -> None:
    assert (eg_process_proxy(metadata) is not None) is found


def test_the_message_names_the_kernelyard_command() -> None:
    yarn = eg_kernelspec_message("spark", "a.b.YarnClusterProcessProxy")
    assert "`kernelyard kernelspec install yarn --name spark`" in yarn
    ssh = eg_kernelspec_message("dist", "a.b.DistributedProcessProxy")
    assert "kernelyard kernelspec install ssh --name dist --hosts" in ssh
    other = eg_kernelspec_message("k8s", "a.b.KubernetesProcessProxy")
    assert "install ssh" in other and "install yarn" in other and "no backend" in other


def test_malformed_kernelspec_resource_limits_stop_the_gateway_naming_the_setting() -> None:
    from kernelyard.startup_checks import _limits_error

    bad = YarnProvisioner(kernel_id="k", kernel_spec=None,
                          resource_limits={"KERNEL_MEMORY": "lots"})
    message = _limits_error(bad, "spark")
    assert "YarnProvisioner.resource_limits" in message and "KERNEL_MEMORY" in message
    old = YarnProvisioner(kernel_id="k", kernel_spec=None, max_driver_memory="1 g")
    assert "max_driver_memory" in _limits_error(old, "spark")
    assert _limits_error(LocalKernelProvisioner(kernel_id="k", kernel_spec=None), "py") == ""
    errors, _ = plan([SpecAccount("spark", "kernelyard-yarn", False, config_error=message)], [])
    assert errors == [f"Refusing to start: kernelspec 'spark' (kernelyard-yarn): {message}"]

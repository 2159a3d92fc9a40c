"""Callback tokens: one use, expiry, exact fields."""

from __future__ import annotations

import asyncio

import pytest

from kernelyard.callbacks import CallbackRegistry
from kernelyard.errors import Forbidden, InvalidRequest

KID = "0b5b5c52-1111-4222-8333-944455556666"


def _report(**over: object) -> dict:
    base = {"kernel_id": KID, "ip": "10.0.0.1", "hostname": "h1", "shell_port": 1,
            "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5,
            "launcher_port": 6, "pid": 100, "pgid": 100}
    return {**base, **over}


def _run(scenario) -> None:
    async def wrapped() -> None:
        registry = CallbackRegistry(token_ttl=60)
        await scenario(registry)

    asyncio.run(wrapped())


def test_token_works_once() -> None:
    async def scenario(reg: CallbackRegistry) -> None:
        token, future = reg.expect(KID)
        reg.fulfil(KID, token, _report())
        assert (await future)["shell_port"] == 1
        with pytest.raises(Forbidden):
            reg.fulfil(KID, token, _report())

    _run(scenario)


def test_wrong_or_expired_token_is_forbidden() -> None:
    async def scenario(reg: CallbackRegistry) -> None:
        token, _ = reg.expect(KID)
        with pytest.raises(Forbidden):
            reg.fulfil(KID, token + "x", _report())
        with pytest.raises(Forbidden):
            reg.fulfil("other", token, _report())
        reg.token_ttl = -1
        token, _ = reg.expect(KID)
        with pytest.raises(Forbidden):
            reg.fulfil(KID, token, _report())

    _run(scenario)


@pytest.mark.parametrize("bad", [
    _report(extra="x"), {k: v for k, v in _report().items() if k != "pid"},
    _report(shell_port="1"), _report(shell_port=True), _report(shell_port=70000),
    _report(kernel_id="4f1e2d3c-aaaa-4bbb-8ccc-0123456789ab"), [1], None,
])
def test_only_declared_fields(bad: object) -> None:
    async def scenario(reg: CallbackRegistry) -> None:
        token, future = reg.expect(KID)
        with pytest.raises(InvalidRequest):
            reg.fulfil(KID, token, bad)
        assert not future.done()

    _run(scenario)


def test_client_launch_timeout_is_capped() -> None:
    from kernelyard.provisioners.ssh import SSHProvisioner

    prov = SSHProvisioner(kernel_id=KID, kernel_spec=None, launch_timeout=30,
                          max_launch_timeout=100)
    assert prov._launch_timeout({}) == 30
    assert prov._launch_timeout({"KERNEL_LAUNCH_TIMEOUT": "60"}) == 60
    assert prov._launch_timeout({"KERNEL_LAUNCH_TIMEOUT": "9999"}) == 100
    assert prov._launch_timeout({"KERNEL_LAUNCH_TIMEOUT": "5"}) == 30
    assert prov._launch_timeout({"KERNEL_LAUNCH_TIMEOUT": "soon"}) == 30

"""The end-of-session secret sweep finds a secret in a kernel's environment.

Synthetic processes stand for a gateway and its kernels (the sweep has to fail on a
leak no real gateway should produce); one test goes through a real gateway, whose
kernel is given the secret by the client.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.envsweep import EnvSweep
from tests.gateway import SecretRegistry, start_gateway
from tests.procs import wait_gone

SLEEP = "import time; time.sleep(60)"
# A fake gateway: holds the secret itself, starts one child with the given env.
FAKE_GATEWAY = (
    "import os, subprocess, sys, time\n"
    "child_env = dict(os.environ) if sys.argv[1] == 'inherit' else {}\n"
    "child = subprocess.Popen([sys.executable, '-c', " + repr(SLEEP) + "], env=child_env)\n"
    "if os.fork() == 0:\n"
    "    time.sleep(60)\n"  # a fork that never execs: the gateway's own environment
    "    os._exit(0)\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.fixture
def secret() -> str:
    return "sweep-" + secrets.token_hex(16)


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def _registry(secret: str) -> SecretRegistry:
    registry = SecretRegistry(envs=EnvSweep())
    registry.add_secret(secret, "the test secret")
    return registry


def _fake_gateway(spawn: list[subprocess.Popen[str]], secret: str, mode: str) -> tuple[int, int]:
    proc = subprocess.Popen([sys.executable, "-c", FAKE_GATEWAY, mode], text=True,
                            stdout=subprocess.PIPE, env={"GATEWAY_SECRET": secret},
                            start_new_session=True)
    spawn.append(proc)
    assert proc.stdout is not None
    return proc.pid, int(proc.stdout.readline())


def test_a_secret_inherited_by_a_gateways_child_is_a_leak(spawn: list, secret: str) -> None:
    registry = _registry(secret)
    gateway, child = _fake_gateway(spawn, secret, "inherit")
    registry.envs.roots.add(gateway)
    registry.envs.look()
    leaks = registry.leaks()
    assert [what for _, what in leaks] == ["the test secret"], leaks
    assert f"pid {child} " in leaks[0][0], leaks


def test_the_gateway_itself_and_its_unexeced_forks_are_not_leaks(spawn: list,
                                                                  secret: str) -> None:
    registry = _registry(secret)
    gateway, child = _fake_gateway(spawn, secret, "clean")
    registry.envs.roots.add(gateway)
    registry.envs.look()
    assert registry.leaks() == []
    seen = [label for label, _ in registry.envs.seen.values()]
    assert any(f"pid {child} " in label for label in seen), seen  # the clean child was
    assert not any(f"pid {gateway} " in label for label in seen), seen  # not the gateway


def test_a_launcher_anywhere_on_the_machine_is_swept(spawn: list, secret: str,
                                                     tmp_path: Path) -> None:
    """SSH kernels are not the gateway's children: their launchers are found by name."""
    launcher = tmp_path / "launcher-0123456789abcdef.py"
    launcher.write_text(SLEEP)
    spawn.append(subprocess.Popen([sys.executable, str(launcher)], env={"K": secret}))
    registry = _registry(secret)
    deadline = time.monotonic() + 30
    while not registry.leaks() and time.monotonic() < deadline:
        registry.envs.look()
        time.sleep(0.05)
    assert [what for _, what in registry.leaks()] == ["the test secret"]


def test_the_watcher_keeps_a_kernel_that_is_gone_by_the_end(secret: str) -> None:
    registry = _registry(secret)
    gateway = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', "
         "'import time; time.sleep(2)'])"], env={"LEAKED": secret})
    registry.add_gateway(gateway.pid)
    try:
        gateway.wait(60)
    finally:
        registry.envs.stop()
    assert [what for _, what in registry.leaks()] == ["the test secret"]


def test_a_real_gateways_kernel_with_a_secret_in_its_env_is_found(tmp_path: Path,
                                                                  secret: str) -> None:
    """Through the wiring the suite uses: a ``Gateway``'s process is watched, and the
    kernel a client gave the secret to (KERNEL_* travels) is found."""
    gw = start_gateway(tmp_path)
    registry = _registry(secret)
    registry.envs.roots.add(gw.proc.pid)
    try:
        kid = gw.start_kernel(env={"KERNEL_SWEEP_PROBE": secret})
        registry.envs.look()
        assert gw.request("DELETE", f"/api/kernels/{kid}")[0] == 204
    finally:
        gw.stop()
    leaks = registry.leaks()
    assert leaks and {what for _, what in leaks} == {"the test secret"}, leaks
    assert all("ipykernel" in where for where, _ in leaks), leaks
    assert wait_gone({gw.proc.pid}) == set()

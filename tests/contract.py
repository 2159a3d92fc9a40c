"""The backend contract: one lifecycle scenario, written once, run against every backend.

A backend passes when, through a real gateway process and a real client, a kernel
starts (the launcher calls back), executes code, is interrupted in a running cell,
restarts, is reported dead after a kill -9 of its process, outlives a gateway
restart (SIGTERM) and is re-adopted by the next gateway, is cleaned up by the next
gateway after a SIGKILL of the gateway in the middle of its start, shuts down, and
leaves nothing behind: no process, no run dir (or resource-manager application), no
store record.

How to run it on a backend (docs/writing-a-backend.md): subclass ``ContractSuite``
in a test module and give it a class-scoped ``backend`` fixture that returns a
``ContractBackend`` (a kernelspec factory, the gateway's settings, and a probe of
what the backend still holds for a kernel). tests/unit/test_contract.py runs it on
the loopback backend and on a third-party package; tests/integration/test_contract.py
on SSH and YARN.

It lives in tests/ and not in the product: it drives the gateway through
tests/gateway.py (a websocket client, the secret sweep of every log) and
tests/procs.py, which are test dependencies, defined once there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.gateway import Gateway, start_gateway
from tests.procs import alive, process_table, wait_gone
from tests.waits import wait_for

SPEC = "contract"
# The same kernel, with the launcher's callback held back (--port-clash-watch makes the
# launcher watch the new kernel that long first): a gateway killed in this window dies
# in the middle of the start.
SLOW_CALLBACK_SPEC = "contract_slow_callback"
SLOW_CALLBACK_SECONDS = 600
SLOW_CALLBACK_OPTIONS = ["--port-clash-watch", str(SLOW_CALLBACK_SECONDS)]
GATEWAY_START_WAIT = 300.0
# The kernel process: its pid and host (a restarted container kernel may have the same pid
# in a new pod, whose host name is new).
WHO_AM_I = "import os, socket; print(os.getpid(), socket.gethostname())"


@dataclass
class ContractBackend:
    """What the contract needs to know about one backend.

    ``write_specs(folder)`` writes the kernelspecs ``SPEC`` and ``SLOW_CALLBACK_SPEC``
    under ``folder/kernels`` (the folder becomes the gateway's JUPYTER_PATH);
    ``leftovers(kernel_id)`` describes what the backend still holds for a kernel
    besides processes (run dirs, applications): empty when nothing.
    """

    name: str
    write_specs: Callable[[Path], None]
    leftovers: Callable[[str], list[str]] = lambda kernel_id: []
    gateway_args: Sequence[str] = ()
    gateway_env: Mapping[str, str] = field(default_factory=dict)
    execute_timeout: float = 60
    cleanup_timeout: float = 60
    # kill -9 of the kernel, given its id and the pid it reports (a container backend's
    # kernel reports the pid of its own PID namespace): by default os.kill of that pid
    kill_kernel: Callable[[str, int], None] | None = None


def write_launcher_spec(folder: Path, name: str, provisioner: str, argv: list[str],
                        launcher_options: Sequence[str] = (), **config: Any) -> None:
    """A kernelspec of a launcher backend: ``kernelyard-launcher [options] -- argv``."""
    spec_dir = folder / "kernels" / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": ["kernelyard-launcher", *launcher_options, "--", *argv],
            "display_name": name, "language": "python", "interrupt_mode": "signal",
            "metadata": {"kernel_provisioner": {"provisioner_name": provisioner,
                                                "config": config}}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))


def write_contract_specs(folder: Path, provisioner: str, argv: list[str], **config: Any) -> None:
    """``SPEC`` and ``SLOW_CALLBACK_SPEC`` for a launcher backend."""
    write_launcher_spec(folder, SPEC, provisioner, argv, **config)
    write_launcher_spec(folder, SLOW_CALLBACK_SPEC, provisioner, argv, SLOW_CALLBACK_OPTIONS,
                        **config)


def kernel_processes(kernel_id: str) -> set[int]:
    """Processes whose command line names the kernel (launcher, kernel, driver), not ours;
    those seen twice, 0.3 s apart, so a backend's short status query is left out."""
    def look() -> set[int]:
        return {p.pid for p in process_table().values()
                if p.pid != os.getpid() and any(kernel_id in arg for arg in p.cmdline)}

    first = look()
    if not first:
        return first
    time.sleep(0.3)
    return first & look()


def store_has(root: Path, kernel_id: str) -> bool:
    """Whether the kernel store of the gateways started in ``root`` holds the kernel."""
    path = root / "data" / "kernelyard.db"
    if not path.exists():
        return False
    db = sqlite3.connect(str(path), timeout=10)
    try:
        row = db.execute("SELECT 1 FROM kernels WHERE kernel_id = ?", (kernel_id,)).fetchone()
    finally:
        db.close()
    return row is not None


def what_is_left(backend: ContractBackend, root: Path, kernel_id: str) -> list[str]:
    left = [f"process {pid}" for pid in sorted(kernel_processes(kernel_id))]
    left += backend.leftovers(kernel_id)
    return left + (["its store record"] if store_has(root, kernel_id) else [])


def assert_nothing_left(backend: ContractBackend, root: Path, kernel_id: str) -> None:
    """Wait (the backend's cleanup_timeout) until nothing of the kernel is left."""
    deadline = time.monotonic() + backend.cleanup_timeout
    left = what_is_left(backend, root, kernel_id)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = what_is_left(backend, root, kernel_id)
    assert not left, f"{backend.name}: kernel {kernel_id} left {left}"


def start(backend: ContractBackend, root: Path) -> Gateway:
    """A gateway on the backend (its store in ``root``); it may take long to listen on a
    loaded machine, and longer when it re-adopts kernels first."""
    return start_gateway(root, *backend.gateway_args, wait=GATEWAY_START_WAIT,
                         env={"JUPYTER_PATH": str(root / "jupyter"), **backend.gateway_env})


def wait_dead(gw: Gateway, kernel_id: str, timeout: float = 60) -> str:
    """Wait until the gateway reports the kernel dead (or gone); the last state seen."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        status, model, _ = gw.request("GET", f"/api/kernels/{kernel_id}")
        state = model.get("execution_state", "") if status == 200 else "gone"
        if state in ("dead", "gone"):
            break
        time.sleep(0.5)
    return state


def new_root(root: Path, name: str) -> Path:
    """A folder for a test's own gateways (their store), sharing the kernelspecs."""
    sub = root / f"{name}-{uuid.uuid4().hex[:6]}"
    sub.mkdir()
    (sub / "jupyter").symlink_to(root / "jupyter")
    return sub


class ContractSuite:
    """The scenario; a subclass provides the class-scoped ``backend`` fixture."""

    @pytest.fixture(scope="class")
    @classmethod
    def root(cls, backend: ContractBackend, tmp_path_factory: pytest.TempPathFactory) -> Path:
        root = tmp_path_factory.mktemp(f"contract-{backend.name}")
        root.chmod(0o755)
        (root / "jupyter").mkdir(mode=0o755)
        backend.write_specs(root / "jupyter")
        return root

    @pytest.fixture(scope="class")
    @classmethod
    def gw(cls, backend: ContractBackend, root: Path) -> Iterator[Gateway]:
        gateway = start(backend, root)
        yield gateway
        for kernel in gateway.request("GET", "/api/kernels")[1] or []:
            gateway.request("DELETE", f"/api/kernels/{kernel['id']}", timeout=120)
        gateway.stop()

    @pytest.fixture
    def started(self) -> Iterator[list[str]]:
        """The kernel ids a test starts: a test that fails leaves none of their processes
        (a detached launcher outlives its gateway)."""
        kids: list[str] = []
        yield kids
        for kid in kids:
            for pid in kernel_processes(kid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def test_start_execute_interrupt_restart_shutdown(
        self, backend: ContractBackend, gw: Gateway, root: Path, started: list[str]
    ) -> None:
        started.append(kid := str(uuid.uuid4()))
        gw.start_kernel(SPEC, env={"KERNEL_ID": kid})
        assert gw.log_shows(f"Kernel {kid}: the launcher on"), "no callback was logged"
        ks = gw.connect(kid)
        try:
            assert ks.execute("x = 6*7; print(x)", backend.execute_timeout)["stdout"] == "42\n"
            pid_before = ks.execute(WHO_AM_I)["stdout"]
            msg_id = ks.submit("import time; print('sleeping', flush=True); time.sleep(120)")
            _wait_for_stdout(ks, msg_id, "sleeping")
            assert gw.request("POST", f"/api/kernels/{kid}/interrupt", {})[0] == 204
            error = ks.wait_idle(msg_id, timeout=60)
            assert error is not None and error["ename"] == "KeyboardInterrupt", error
            assert ks.execute("print(x)")["stdout"] == "42\n"
        finally:
            ks.close()
        status, model, _ = gw.request("POST", f"/api/kernels/{kid}/restart", {}, timeout=600)
        assert status == 200 and model["id"] == kid, (status, model)
        out = gw.run(kid, f"{WHO_AM_I}\nx", backend.execute_timeout)
        assert out["error"]["ename"] == "NameError" and out["stdout"] != pid_before, out
        assert gw.request("DELETE", f"/api/kernels/{kid}", timeout=120)[0] == 204
        assert_nothing_left(backend, root, kid)

    def test_kill_9_of_the_kernel_is_reported_dead(
        self, backend: ContractBackend, gw: Gateway, root: Path, started: list[str]
    ) -> None:
        started.append(kid := str(uuid.uuid4()))
        gw.start_kernel(SPEC, env={"KERNEL_ID": kid})
        pid = int(gw.run(kid, "import os; print(os.getpid())", backend.execute_timeout)["stdout"])
        if backend.kill_kernel is not None:
            backend.kill_kernel(kid, pid)
        else:
            os.kill(pid, signal.SIGKILL)
        assert wait_dead(gw, kid) in ("dead", "gone")
        gw.request("DELETE", f"/api/kernels/{kid}", timeout=120)
        assert_nothing_left(backend, root, kid)

    def test_kernel_outlives_a_gateway_restart_and_is_readopted(
        self, backend: ContractBackend, root: Path, started: list[str]
    ) -> None:
        sub = new_root(root, "restart")
        first = start(backend, sub)
        try:
            started.append(kid := str(uuid.uuid4()))
            first.start_kernel(SPEC, env={"KERNEL_ID": kid})
            out = first.run(kid, "y = 'survives'; print(y)", backend.execute_timeout)
            assert out["stdout"] == "survives\n", out
            procs = kernel_processes(kid)
        finally:
            assert first.stop() == 0
        assert procs and all(alive(p) for p in procs), "the kernel did not outlive the gateway"
        second = start(backend, sub)
        try:
            assert second.run(kid, "print(y)")["stdout"] == "survives\n"
            assert kernel_processes(kid) == procs, "a second copy of the kernel is running"
            assert second.request("DELETE", f"/api/kernels/{kid}", timeout=120)[0] == 204
            assert wait_gone(procs) == set()
            assert_nothing_left(backend, sub, kid)
        finally:
            second.stop()

    def test_a_start_cut_by_a_gateway_sigkill_is_cleaned_up_by_the_next_gateway(
        self, backend: ContractBackend, root: Path, started: list[str]
    ) -> None:
        sub = new_root(root, "midstart")
        first = start(backend, sub)
        started.append(kid := str(uuid.uuid4()))
        posting = threading.Thread(target=_post_quietly, daemon=True, args=(
            first, {"name": SLOW_CALLBACK_SPEC, "env": {"KERNEL_ID": kid}}))
        posting.start()
        try:
            wait_for(f"kernel {kid} to be submitted", backend.cleanup_timeout,
                     lambda: store_has(sub, kid) and what_is_left(backend, sub, kid) != [
                         "its store record"], interval=0.1)
        finally:
            first.stop(signal.SIGKILL)
        posting.join(30)
        assert store_has(sub, kid), "the store forgot the half-started kernel"
        second = start(backend, sub)
        try:
            assert_nothing_left(backend, sub, kid)
            assert kid not in {k["id"] for k in second.request("GET", "/api/kernels")[1]}
        finally:
            second.stop()


def _post_quietly(gw: Gateway, body: dict[str, Any]) -> None:
    """POST a kernel start whose gateway is about to be killed (the request then fails)."""
    with contextlib.suppress(OSError):
        gw.request("POST", "/api/kernels", body, timeout=600)


def _wait_for_stdout(ks: Any, msg_id: str, text: str, timeout: float = 60) -> None:
    """Wait until the cell ``msg_id`` printed ``text`` (it runs)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = ks.recv(timeout=max(0.1, deadline - time.monotonic()))
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream"
                and text in msg["content"]["text"]):
            return


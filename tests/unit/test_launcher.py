"""The launcher (docs/launcher-protocol.md) around real kernels, as real processes."""

from __future__ import annotations

import ast
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernelyard import launcher
from kernelyard.launcher import (
    CALLBACK_FIELDS,
    ControlRefused,
    control_request_body,
    parse_port_range,
    sign,
    verify_control,
)
from tests.launcher_helpers import (
    DEBIAN_PYTHON,
    LAUNCHER_FILE,
    CallbackServer,
    LauncherRun,
    free_port_range,
    ipykernel_argv,
    kernel_client,
    proc_text,
    run_code,
    self_signed_cert,
    start_launcher,
    wait_iopub,
    wait_reply,
    wait_until,
)
from tests.procs import alive, children_of, wait_gone

Launch = Callable[..., LauncherRun]

SPAWN_SLEEP = "import subprocess; print(subprocess.Popen(['sleep', '300']).pid)"
SECRET_ENV_CHECK = "import os; print(sorted(k for k in os.environ if k.startswith('KERNELYARD_')))"
# A kernel that is not ipykernel: sleeps, with a grandchild in its process group.
SLEEPY_KERNEL = [sys.executable, "-c",
                 "import subprocess, sys, time; subprocess.Popen(['sleep', '300']); "
                 "time.sleep(300)", "{connection_file}"]
# Loses its shell port to another process on the first start (a real EADDRINUSE),
# then runs ipykernel.
CLASH_KERNEL = r"""
import json, os, socket, subprocess, sys
conn, marker = sys.argv[1], sys.argv[2]
if not os.path.exists(marker):
    info = json.load(open(conn))
    holder = subprocess.Popen([sys.executable, "-c",
        "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])));"
        "s.listen(); print('bound', flush=True); time.sleep(300)", str(info["shell_port"])],
        stdout=subprocess.PIPE)
    holder.stdout.readline()
    with open(marker, "w") as f:
        json.dump({"port": info["shell_port"], "holder": holder.pid}, f)
    socket.socket().bind((info["ip"], info["shell_port"]))
os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", "-f", conn])
"""


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start launchers; every process they started is killed at the end."""
    runs: list[LauncherRun] = []

    def start(kernel_argv: list[str] | None = None, **options: Any) -> LauncherRun:
        return start_launcher(tmp_path / f"launch{len(runs)}", kernel_argv or ipykernel_argv(),
                              track=runs.append, **options)

    yield start
    for run in runs:
        run.cleanup()


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherRun]:
    """One ipykernel behind ``python -m kernelyard.launcher``, for tests that keep it alive."""
    runs: list[LauncherRun] = []
    try:
        run = start_launcher(tmp_path_factory.mktemp("launcher"), ipykernel_argv(),
                             as_module=True, track=runs.append)
        run.report()
        yield run
    finally:
        for started in runs:
            started.cleanup()


def assert_secrets_absent(run: LauncherRun, text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for name, secret in (("key", run.key), ("token", run.token)):
        assert secret.encode() not in data, f"the {name} appears in {where}"


# ---- the pure helpers the gateway imports -------------------------------------------------


def test_callback_fields_are_exactly_the_documented_ones() -> None:
    assert CALLBACK_FIELDS == {
        "kernel_id": str, "ip": str, "hostname": str, "shell_port": int, "iopub_port": int,
        "stdin_port": int, "control_port": int, "hb_port": int, "launcher_port": int,
        "pid": int, "pgid": int,
    }


def test_sign_is_hex_hmac_sha256() -> None:
    assert sign(b"key", b"The quick brown fox jumps over the lazy dog") == (
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")


def test_control_request_body_is_compact_json_with_fresh_ts_and_nonce() -> None:
    body = control_request_body("signal", signum=2)
    request = json.loads(body)
    assert b" " not in body
    assert set(request) == {"action", "ts", "nonce", "signum"}
    assert request["action"] == "signal" and request["signum"] == 2
    assert abs(request["ts"] - time.time()) < 5
    assert len(request["nonce"]) >= 16 and int(request["nonce"], 16) >= 0
    assert json.loads(control_request_body("status"))["nonce"] != request["nonce"]


@pytest.mark.parametrize(("text", "expected"), [
    (None, None), ("", None), ("  ", None), ("9000..9010", (9000, 9010)),
    (" 1..6 ", (1, 6)), ("60000..65535", (60000, 65535)),
])
def test_parse_port_range(text: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_port_range(text) == expected


@pytest.mark.parametrize("text", ["9000", "9000-9010", "a..b", "9010..9000", "0..10",
                                  "65530..65536", "9000..9004", "-1..10", "1..2..3"])
def test_parse_port_range_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_port_range(text)


def test_bind_ports_gives_distinct_ports_and_tries_avoided_ones_last() -> None:
    held = launcher.bind_ports("127.0.0.1", 6, None)
    lo, hi = free_port_range(12)
    try:
        assert len({launcher.port_of(s) for s in held}) == 6
        held += launcher.bind_ports("127.0.0.1", 6, (lo, hi), avoid=set(range(lo, lo + 6)))
        assert {launcher.port_of(s) for s in held[6:]} == set(range(lo + 6, hi + 1))
        with pytest.raises(OSError):  # only the 6 avoided ports are left
            launcher.bind_ports("127.0.0.1", 7, (lo, hi))
    finally:
        for sock in held:
            sock.close()


def signed(key: bytes, **fields: Any) -> tuple[bytes, str]:
    body = control_request_body("status", **fields)
    return body, sign(key, body)


def test_verify_control_accepts_a_fresh_signed_request_once() -> None:
    key, seen = b"k" * 64, dict[str, float]()
    body, signature = signed(key)
    now = time.time()
    assert verify_control(key, body, signature, now, seen)["action"] == "status"
    with pytest.raises(ControlRefused, match="replayed"):
        verify_control(key, body, signature, now + 1, seen)
    assert issubclass(ControlRefused, ValueError)


@pytest.mark.parametrize("skew", [-61.0, 61.0])
def test_verify_control_refuses_a_ts_more_than_60s_off(skew: float) -> None:
    key = b"k"
    body, signature = signed(key, ts=time.time() + skew)
    with pytest.raises(ControlRefused, match="ts"):
        verify_control(key, body, signature, time.time(), {})
    body, signature = signed(key, ts=time.time() + skew * 0.9)
    verify_control(key, body, signature, time.time(), {})


@pytest.mark.parametrize("fields", [{"ts": None}, {"ts": "1"}, {"ts": True}, {"ts": 10 ** 400},
                                    {"nonce": None}, {"nonce": "short"}, {"nonce": "zz" * 16}])
def test_verify_control_refuses_bad_ts_or_nonce(fields: dict[str, Any]) -> None:
    key = b"k"
    body, signature = signed(key, **fields)
    with pytest.raises(ControlRefused):
        verify_control(key, body, signature, time.time(), {})


def test_verify_control_refuses_nan_and_bad_signatures() -> None:
    key = b"k"
    nan_body = b'{"action":"status","ts":NaN,"nonce":"' + b"a" * 32 + b'"}'
    with pytest.raises(ControlRefused, match="ts"):
        verify_control(key, nan_body, sign(key, nan_body), time.time(), {})
    body, signature = signed(key)
    flipped = signature[:-1] + ("1" if signature[-1] == "0" else "0")
    for bad in ("", signature[:-1], flipped, "é" * 64, sign(b"other", body)):
        with pytest.raises(ControlRefused, match="signature"):
            verify_control(key, body, bad, time.time(), {})
    with pytest.raises(ControlRefused, match="signature"):
        verify_control(key, body + b" ", signature, time.time(), {})
    assert verify_control(key, body, signature.upper(), time.time(), {})


def test_verify_control_forgets_nonces_after_120s() -> None:
    key, seen = b"k", dict[str, float]()
    now = time.time()
    nonce = "ab" * 16
    body, signature = signed(key, ts=now, nonce=nonce)
    verify_control(key, body, signature, now, seen)
    later = now + 121
    body, signature = signed(key, ts=later, nonce=nonce)
    verify_control(key, body, signature, later, seen)
    assert list(seen) == [nonce]


def test_the_file_is_python38_syntax_and_imports_no_kernelyard() -> None:
    source = LAUNCHER_FILE.read_text()
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith(("kernelyard", ".")) or name == "" for name in imported)
    stdlib = set(sys.stdlib_module_names)
    assert {name.split(".")[0] for name in imported} <= stdlib | {"__future__"}
    assert launcher.__doc__ and "verify_control" in launcher.__doc__


# ---- a running kernel ---------------------------------------------------------------------


def test_callback_has_exactly_the_fields_and_the_bearer_token(kernel: LauncherRun) -> None:
    recorded = kernel.callback.accepted(1)
    assert recorded.headers["Authorization"] == f"Bearer {kernel.token}"
    report = json.loads(recorded.body)
    assert set(report) == set(CALLBACK_FIELDS)
    for name, kind in CALLBACK_FIELDS.items():
        assert type(report[name]) is kind, name
    assert report["kernel_id"] == kernel.kernel_id
    assert report["ip"] == "127.0.0.1"
    assert report["hostname"] == os.uname().nodename
    assert report["pid"] == report["pgid"] == os.getpgid(report["pid"])
    assert os.getsid(report["pid"]) == report["pid"]  # its own session
    assert len(kernel.callback.requests) == 1


def test_all_six_ports_are_distinct_and_inside_the_range(kernel: LauncherRun) -> None:
    report = kernel.report()
    ports = [report[n] for n in CALLBACK_FIELDS if n.endswith("_port")]
    lo, hi = kernel.port_range
    assert len(ports) == 6 == len(set(ports))
    assert all(lo <= port <= hi for port in ports), (ports, kernel.port_range)


def test_connection_file_is_0600_with_the_key(kernel: LauncherRun) -> None:
    path = kernel.run_dir / f"kernel-{kernel.kernel_id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = json.loads(path.read_text())
    report = kernel.report()
    assert info["key"] == kernel.key
    assert info["transport"] == "tcp" and info["signature_scheme"] == "hmac-sha256"
    assert info["kernel_name"] == "python3" and info["ip"] == "127.0.0.1"
    assert all(info[n] == report[n] for n in launcher.KERNEL_PORT_NAMES)
    assert (kernel.run_dir / "launcher.pid").read_text().strip() == str(kernel.pid)


def test_a_client_executes_code_on_the_reported_ports(kernel: LauncherRun) -> None:
    with kernel_client(kernel) as client:
        assert run_code(client, "print(6*7)") == ("ok", "42\n")


def test_secrets_are_not_in_argv_nor_in_the_kernel_env(kernel: LauncherRun) -> None:
    kernel_pid = kernel.report()["pid"]
    for pid, what in ((kernel.pid, "launcher"), (kernel_pid, "kernel")):
        assert_secrets_absent(kernel, proc_text(pid, "cmdline"), f"the {what}'s argv")
    assert_secrets_absent(kernel, proc_text(kernel_pid, "environ"), "the kernel's environ")
    with kernel_client(kernel) as client:
        assert run_code(client, SECRET_ENV_CHECK) == ("ok", "[]\n")


def test_status_reports_a_live_kernel(kernel: LauncherRun) -> None:
    assert kernel.control("status") == (200, {"alive": True, "exit_code": None})


def test_signed_sigint_interrupts_running_code_and_the_kernel_survives(
    kernel: LauncherRun,
) -> None:
    with kernel_client(kernel) as client:
        # stop_on_error=False: else ipykernel may abort the next request right after the error
        msg_id = client.execute("import time; time.sleep(60)", stop_on_error=False)
        wait_iopub(client, msg_id, "execute_input")
        time.sleep(0.5)
        started = time.monotonic()
        assert kernel.control("signal", signum=int(signal.SIGINT)) == (200, {"delivered": True})
        reply = wait_reply(client, msg_id, timeout=15)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - started < 15
        assert run_code(client, "print('still here')") == ("ok", "still here\n")


def test_refused_requests_get_403_and_have_no_effect(kernel: LauncherRun) -> None:
    with kernel_client(kernel) as client:
        counter = ("import signal\nhits = []\n"
                   "signal.signal(signal.SIGUSR1, lambda *a: hits.append(1))")
        assert run_code(client, counter)[0] == "ok"

        def hits() -> int:
            return int(run_code(client, "print(len(hits))")[1])

        usr1 = int(signal.SIGUSR1)
        body = control_request_body("signal", signum=usr1)
        assert kernel.control(body=body, signature="0" * 64)[0] == 403
        assert kernel.control(body=body, signature="")[0] == 403
        assert kernel.control("signal", signum=usr1, ts=time.time() - 120)[0] == 403
        assert kernel.control("signal", signum=usr1, ts=time.time() + 120)[0] == 403
        assert kernel.control("shutdown", grace=0, ts=time.time() - 300)[0] == 403
        other = control_request_body("shutdown", grace=0)
        assert kernel.control(body=other, signature=sign(b"wrong key", other))[0] == 403
        time.sleep(0.5)
        assert hits() == 0

        assert kernel.control(body=body) == (200, {"delivered": True})
        assert wait_until(lambda: hits() == 1, timeout=10)
        status, answer = kernel.control(body=body)  # the very same signed request again
        assert (status, answer) == (403, {"error": "replayed nonce"})
        time.sleep(0.5)
        assert hits() == 1
    assert kernel.control("status") == (200, {"alive": True, "exit_code": None})


def test_unknown_actions_and_bad_fields_get_400(kernel: LauncherRun) -> None:
    assert kernel.control("reboot")[0] == 400
    assert kernel.control("signal", signum=0)[0] == 400
    assert kernel.control("signal", signum="INT")[0] == 400
    assert kernel.control("signal", signum=True)[0] == 400
    assert kernel.control("signal", signum=2.0)[0] == 400
    assert kernel.control("shutdown", grace="5")[0] == 400
    assert kernel.control("shutdown", grace=-1)[0] == 400
    assert kernel.control(path="/other")[0] == 404
    assert kernel.control(method="GET")[0] == 405
    assert kernel.control("status")[1]["alive"] is True


# ---- ends of a kernel -----------------------------------------------------------------------


def spawn_grandchild(run: LauncherRun) -> int:
    with kernel_client(run) as client:
        status, out = run_code(client, SPAWN_SLEEP)
    assert status == "ok"
    pid = int(out)
    assert os.getpgid(pid) == run.report()["pgid"]
    return pid


def assert_finished(run: LauncherRun, pids: set[int], exit_code: str) -> None:
    assert not wait_gone(pids, 10), "the kernel's process group survived"
    assert (run.run_dir / "exit_code").read_text().strip() == exit_code
    assert not (run.run_dir / f"kernel-{run.kernel_id}.json").exists()
    assert_secrets_absent(run, run.files_text(), "the run dir or the launcher's output")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["control", "SIGTERM", "SIGINT"])
def test_shutdown_kills_the_whole_group_and_the_launcher_exits(launch: Launch, how: str) -> None:
    run = launch()
    grandchild = spawn_grandchild(run)
    kernel_pid = run.report()["pid"]
    if how == "control":
        assert run.control("shutdown", grace=2) == (200, {})
    else:
        os.kill(run.pid, getattr(signal, how))
    assert run.wait_exit(20) == 0
    assert_finished(run, {kernel_pid, grandchild}, str(-signal.SIGTERM))
    assert "shutting the kernel down" in (run.run_dir / "launcher.log").read_text()


@pytest.mark.timeout(60)
def test_kernel_dies_with_a_killed_launcher(launch: Launch) -> None:
    """A resource manager SIGKILLing the launcher alone (a YARN container's main
    process) must not leave the kernel, which runs in a session of its own, behind."""
    run = launch()
    kernel_pid = run.report()["pid"]
    assert os.getsid(kernel_pid) != os.getsid(run.pid)
    os.kill(run.pid, signal.SIGKILL)
    assert wait_until(lambda: not alive(kernel_pid), timeout=20), "the kernel outlived it"


@pytest.mark.timeout(60)
def test_shutdown_sigkills_after_the_grace(launch: Launch) -> None:
    ignores_sigterm = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                       "open(sys.argv[1] + '.ready', 'w').close(); time.sleep(300)")
    run = launch([sys.executable, "-c", ignores_sigterm, "{connection_file}"])
    kernel_pid = run.report()["pid"]
    deadline = time.monotonic() + 20
    while not list(run.run_dir.glob("*.ready")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel ignores SIGTERM from here on
    started = time.monotonic()
    assert run.control("shutdown", grace=1.5)[0] == 200
    assert run.wait_exit(20) == 0
    assert 1.4 < time.monotonic() - started < 15
    assert_finished(run, {kernel_pid}, str(-signal.SIGKILL))


@pytest.mark.timeout(60)
def test_a_kernel_that_exits_ends_the_launcher_with_its_code(launch: Launch) -> None:
    run = launch()
    grandchild = spawn_grandchild(run)
    kernel_pid = run.report()["pid"]
    with kernel_client(run) as client:
        client.execute("import os; os._exit(3)")
        assert run.wait_exit(20) == 3
    assert_finished(run, {kernel_pid, grandchild}, "3")


@pytest.mark.timeout(60)
def test_a_port_clash_at_start_is_retried_on_new_ports(launch: Launch, tmp_path: Path) -> None:
    script, marker = tmp_path / "clash.py", tmp_path / "clash.json"
    script.write_text(CLASH_KERNEL)
    run = launch([sys.executable, str(script), "{connection_file}", str(marker)],
                 extra_options=("--port-clash-watch", "2"))
    report = run.report()
    first = json.loads(marker.read_text())
    assert report["shell_port"] != first["port"]
    assert not wait_gone({first["holder"]}, 10), "the first attempt's group survived"
    assert "Address already in use" in (run.run_dir / "kernel.log").read_text()
    assert "retrying on new ports" in (run.run_dir / "launcher.log").read_text()
    with kernel_client(run) as client:
        assert run_code(client, "print(6*7)") == ("ok", "42\n")


@pytest.mark.timeout(60)
def test_the_callback_is_retried_until_accepted(launch: Launch) -> None:
    run = launch(SLEEPY_KERNEL, callback=CallbackServer(statuses=(503, 500, 403)))
    run.report()
    assert [r.status for r in run.callback.requests] == [503, 500, 403, 200]
    bodies = {r.body for r in run.callback.requests}
    assert len(bodies) == 1
    assert run.control("status")[1]["alive"] is True


@pytest.mark.timeout(60)
def test_an_https_callback_is_verified_with_the_cafile(launch: Launch, tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    run = launch(SLEEPY_KERNEL, callback=CallbackServer(tls=(cert, key)),
                 extra_options=("--callback-cafile", str(cert)))
    assert run.callback.url("x").startswith("https://")
    assert set(run.report()) == set(CALLBACK_FIELDS)
    assert run.callback.accepted(1).headers["Authorization"] == f"Bearer {run.token}"


@pytest.mark.timeout(60)
def test_an_https_callback_to_an_unknown_certificate_carries_nothing(
    launch: Launch, tmp_path: Path
) -> None:
    (tmp_path / "other").mkdir()
    other_ca, _ = self_signed_cert(tmp_path / "other")
    run = launch(SLEEPY_KERNEL, callback=CallbackServer(tls=self_signed_cert(tmp_path)),
                 extra_options=("--callback-cafile", str(other_ca)))
    launcher_log = run.run_dir / "launcher.log"
    assert wait_until(lambda: launcher_log.exists()
                      and "CERTIFICATE_VERIFY_FAILED" in launcher_log.read_text(), 15)
    assert run.callback.requests == []


@pytest.mark.timeout(90)
def test_a_callback_never_accepted_kills_the_kernel_and_exits_1(launch: Launch) -> None:
    run = launch(SLEEPY_KERNEL, callback=CallbackServer(default_status=403))
    assert wait_until(lambda: len(run.callback.requests) >= 1, timeout=15)
    assert wait_until(lambda: len(children_of(run.pid)) >= 2, timeout=15)
    group = {run.pid} | children_of(run.pid)
    started = time.monotonic()
    assert run.wait_exit(60) == 1
    assert 25 < time.monotonic() - started < 45
    group.discard(run.pid)
    assert len(group) == 2, group  # the kernel and its grandchild
    assert not wait_gone(group, 10)
    assert (run.run_dir / "exit_code").exists()
    assert "never accepted" in (run.run_dir / "launcher.log").read_text()


@pytest.mark.timeout(60)
def test_a_kernel_command_that_cannot_start(launch: Launch) -> None:
    run = launch(["/nonexistent/kernel", "{connection_file}"])
    assert run.wait_exit(20) == 127
    assert "cannot start" in (run.run_dir / "kernel.log").read_text()
    assert (run.run_dir / "exit_code").read_text().strip() == "127"
    assert run.callback.requests == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("secrets_line", "message"), [
    ("not json", "not JSON"),
    ('{"key": "k", "token": "t"}', "callback_url"),
    ('{"key": "k", "token": "t", "callback_url": "file:///etc/passwd"}', "http or https"),
])
def test_bad_secrets_are_refused_without_echoing_them(
    tmp_path: Path, secrets_line: str, message: str
) -> None:
    result = subprocess.run(
        [sys.executable, str(LAUNCHER_FILE), "--kernel-id", "k1", "--run-dir",
         str(tmp_path / "run"), "--secrets-from-stdin", "--", "true"],
        input=secrets_line + "\n", capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert '"k"' not in result.stderr and "passwd" not in result.stderr


# ---- other ways to run it ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_detach_prints_pid_and_run_dir_and_survives_the_session(launch: Launch) -> None:
    run = launch(detach=True, ip=None)
    assert run.proc.returncode == 0
    started = json.loads(run.detach_stdout)
    assert set(started) == {"pid", "run_dir"}
    assert started["run_dir"] == str(run.run_dir)
    assert run.detach_stdout.count("\n") == 1
    with pytest.raises(ProcessLookupError):  # like an ssh session ending: nothing is left
        os.killpg(run.proc.pid, signal.SIGKILL)
    assert alive(run.pid) and run.pid != run.proc.pid
    # a session of its own: neither the test's nor the one the parent led
    assert os.getsid(run.pid) not in (os.getsid(0), run.proc.pid)
    assert os.getpgid(run.pid) != run.proc.pid
    assert (run.run_dir / "launcher.pid").read_text().strip() == str(run.pid)  # already
    report = run.report()
    assert report["ip"] == "127.0.0.1"  # --ip 0.0.0.0: the address the callback left from
    with kernel_client(run) as client:
        assert run_code(client, "print(6*7)") == ("ok", "42\n")
    assert os.readlink(f"/proc/{run.pid}/fd/0") == os.devnull
    assert os.readlink(f"/proc/{run.pid}/fd/1") == str(run.run_dir / "launcher.log")
    assert run.control("shutdown", grace=2) == (200, {})
    run.wait_exit(20)
    assert_finished(run, {report["pid"]}, str(-signal.SIGTERM))


@pytest.mark.timeout(90)
def test_debian_python_runs_the_standalone_file_around_its_ipykernel(launch: Launch) -> None:
    check = subprocess.run([DEBIAN_PYTHON, "-c", "import ipykernel"], capture_output=True,
                           timeout=30)
    assert check.returncode == 0, (
        f"{DEBIAN_PYTHON} has no ipykernel: run ci/ssh-hosts/install.sh "
        f"(python3-ipykernel from apt)\n{check.stderr.decode()}")
    run = launch(ipykernel_argv(DEBIAN_PYTHON), python=DEBIAN_PYTHON, secrets_via="env")
    report = run.report()
    assert proc_text(run.pid, "cmdline").split(b"\0")[:2] == [
        DEBIAN_PYTHON.encode(), str(run.run_dir.parent / "standalone" / "launcher.py").encode()]
    assert_secrets_absent(run, proc_text(run.pid, "cmdline"), "the launcher's argv")
    assert set(report) == set(CALLBACK_FIELDS)
    assert proc_text(report["pid"], "cmdline").startswith(DEBIAN_PYTHON.encode())
    assert_secrets_absent(run, proc_text(report["pid"], "environ"), "the kernel's environ")
    with kernel_client(run) as client:
        assert run_code(client, "print(6*7)") == ("ok", "42\n")
        assert run_code(client, SECRET_ENV_CHECK) == ("ok", "[]\n")
        assert run_code(client, "import sys; print(sys.executable)")[1] == DEBIAN_PYTHON + "\n"
    assert run.control("shutdown", grace=2) == (200, {})
    assert run.wait_exit(20) == 0
    assert_finished(run, {report["pid"]}, str(-signal.SIGTERM))



def _secrets_file(tmp_path: Path, **extra: Any) -> Path:
    path = tmp_path / "kernelyard-secrets.json"
    path.write_text(json.dumps({"key": "k" * 64, "token": "t" * 43,
                                "callback_url": "http://gw:1/kernelyard/callback/x", **extra}))
    path.chmod(0o600)
    return path


def test_a_secrets_file_is_read_once_and_deleted(tmp_path: Path) -> None:
    path = _secrets_file(tmp_path, env={"KERNEL_USERNAME": "alice"})
    got = launcher.read_secrets(False, str(path))
    assert (got.key, got.env, got.curve) == ("k" * 64, {"KERNEL_USERNAME": "alice"}, {})
    assert not path.exists()
    with pytest.raises(launcher.UsageError, match="cannot read the secrets file"):
        launcher.read_secrets(False, str(path))


def test_curve_keys_travel_with_the_secrets(tmp_path: Path) -> None:
    keys = {"curve_publickey": "P" * 40, "curve_secretkey": "S" * 40}
    got = launcher.read_secrets(False, str(_secrets_file(tmp_path, **keys)))
    assert got.curve == keys
    for bad in ({"curve_publickey": "P" * 40}, {**keys, "curve_secretkey": "short"},
                {**keys, "curve_secretkey": 5}):
        with pytest.raises(launcher.UsageError, match="CurveZMQ"):
            launcher.read_secrets(False, str(_secrets_file(tmp_path, **bad)))


def test_spark_conf_options_must_be_key_value() -> None:
    options, _ = launcher.parse_args(["--kernel-id", "k1", "--spark-session", "eager",
                                      "--spark-conf", "spark.a=1=2", "--", "true"])
    assert options.spark_conf == [("spark.a", "1=2")] and options.spark_session == "eager"
    with pytest.raises(SystemExit):
        launcher.parse_args(["--kernel-id", "k1", "--spark-conf", "novalue", "--", "true"])
    with pytest.raises(SystemExit):
        launcher.parse_args(["--kernel-id", "k1", "--spark-session", "sometimes", "--", "true"])


def test_spark_startup_without_pyspark_explains_on_first_use() -> None:
    """A kernel whose Python lacks pyspark still starts; `sc` then says why it is missing."""
    code = textwrap.dedent('''
        import json, os, sys
        sys.modules["pyspark"] = sys.modules["py4j"] = None  # as if not installed
        os.environ["KERNELYARD_SPARK"] = json.dumps({"mode": "lazy"})
        from IPython.core.interactiveshell import InteractiveShell
        from kernelyard.launcher import spark_startup_source
        shell = InteractiveShell.instance()
        print("STARTUP", shell.run_cell(spark_startup_source().decode()).success)
        print("USE", repr(shell.run_cell("sc.version").error_in_exec))
    ''')
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines()
                 if line.startswith(("STARTUP ", "USE ")))
    assert lines.get("STARTUP") == "True", run.stdout + run.stderr
    assert "the Spark session could not be created" in lines.get("USE", ""), run.stdout
    assert "pyspark" in lines["USE"], run.stdout


def test_a_spark_session_runs_the_startup_file_shipped_beside_the_launcher(
        launch: Launch, tmp_path: Path) -> None:
    """The shipped launcher (a copy away from the package) hands the kernel the startup
    file beside it, launcher_spark.py, as $PYTHONSTARTUP."""
    seen = tmp_path / "startup-seen.py"
    kernel = [sys.executable, "-c", "import os, shutil, sys; "
              "shutil.copy(os.environ['PYTHONSTARTUP'], sys.argv[1])", str(seen),
              "{connection_file}"]
    run = launch(kernel, python=DEBIAN_PYTHON, extra_options=("--spark-session", "lazy"))
    assert wait_until(seen.exists, timeout=30), run.output.read_text()
    assert seen.read_bytes() == LAUNCHER_FILE.with_name("launcher_spark.py").read_bytes()
    assert "standalone" in str(run.proc.args)


def test_a_launcher_shipped_without_its_spark_file_refuses_a_spark_session(
        tmp_path: Path) -> None:
    """Exit 2 before anything starts, naming the file that should be beside it."""
    alone = tmp_path / "alone" / "launcher-0123abcd.py"
    alone.parent.mkdir()
    alone.write_bytes(LAUNCHER_FILE.read_bytes())
    missing = str(alone.with_name("launcher-0123abcd_spark.py"))
    for mode in ("lazy", "eager"):
        done = subprocess.run(
            [DEBIAN_PYTHON, "-I", str(alone), "--kernel-id", "k1", "--spark-session", mode,
             "--run-dir", str(tmp_path / f"run-{mode}"),
             "--secrets-file", str(_secrets_file(tmp_path)), "--", "/bin/false"],
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and missing in done.stderr, (mode, done)
        assert not (tmp_path / f"run-{mode}").exists()
    launcher.check_spark_startup("none", str(alone))  # no Spark session: no file needed
    launcher.check_spark_startup(None, str(alone))


def test_the_spark_file_of_a_launcher_is_named_after_it() -> None:
    assert launcher.spark_startup_path("ky/launcher-0123abcd.py") == (
        "ky/launcher-0123abcd_spark.py")
    assert launcher.spark_startup_path() == str(LAUNCHER_FILE.with_name("launcher_spark.py"))
    assert launcher.spark_startup_source() == LAUNCHER_FILE.with_name(
        "launcher_spark.py").read_bytes()


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--kernel-id", "k1", "--help"],
                                  ["--help", "--", "true"]])
def test_help_prints_the_usage_and_exits_0(args: list[str]) -> None:
    """`python3 launcher.py --help` on a node: the usage on stdout, exit 0 (not 2)."""
    done = subprocess.run([DEBIAN_PYTHON, "-I", str(LAUNCHER_FILE), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: kernelyard-launcher [options] -- <kernel argv")
    assert "--kernel-id" in done.stdout and done.stderr == ""


def test_without_dashes_it_still_says_what_is_missing() -> None:
    with pytest.raises(SystemExit) as exit_info:
        launcher.parse_args(["--kernel-id", "k1", "python3"])
    assert exit_info.value.code == 2

"""The command layer: one way to run a backend's program (kernelyard.provisioners.command)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernelyard.provisioners import command

PY = sys.executable


def _run(argv: list[str], **kwargs: object) -> command.CommandResult:
    return asyncio.run(command.run(argv, **{"timeout": 30, **kwargs}))  # type: ignore[arg-type]


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_argv_env_stdin_cwd_and_exit_code(tmp_path: Path) -> None:
    code = ("import os, sys; data = sys.stdin.read(); print(data.upper(), os.getcwd(), "
            "sorted(k for k in os.environ if k == 'ONLY')); print('err', file=sys.stderr); "
            "sys.exit(3)")
    result = _run([PY, "-c", code], env={"ONLY": "1"}, stdin=b"hello", cwd=str(tmp_path))
    assert result.returncode == 3
    assert result.text.split() == ["HELLO", str(tmp_path), "['ONLY']"]
    assert result.stderr.strip() == b"err"


def test_merged_stderr_and_no_stdin() -> None:
    code = "import sys; print('a'); print('b', file=sys.stderr); print(repr(sys.stdin.read()))"
    result = _run([PY, "-c", code], merge_stderr=True)
    assert sorted(result.text.split()) == ["''", "a", "b"] and result.stderr == b""


def test_output_is_bounded_and_keeps_its_end() -> None:
    code = "import sys; sys.stdout.write('x' * 3_000_000 + 'END')"
    result = _run([PY, "-c", code], max_output=1000)
    assert len(result.stdout) == 1000 and result.stdout.endswith(b"END") and result.truncated


def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    code = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(300)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); p.wait()")
    with pytest.raises(command.CommandTimeout, match="did not finish within"):
        _run([PY, "-c", code], timeout=3)
    assert _gone(int(pid_file.read_text()))


def test_a_cancelled_caller_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(300)"

    async def cancel_it() -> None:
        task = asyncio.ensure_future(command.run([PY, "-c", code], timeout=300))
        while not pid_file.exists() or not pid_file.read_text():
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    assert _gone(int(pid_file.read_text()))


def test_a_secret_never_goes_on_a_command_line_or_in_an_env() -> None:
    with pytest.raises(ValueError, match="secret"):
        _run([PY, "-c", "pass", "--key=s3cret"], secrets=["s3cret"])
    with pytest.raises(ValueError, match="secret"):
        _run([PY, "-c", "pass"], env={"X": "s3cret"}, secrets=["s3cret"])
    assert _run([PY, "-c", "pass"], secrets=["s3cret", ""]).returncode == 0


def test_a_missing_program_raises_oserror() -> None:
    with pytest.raises(OSError):
        _run(["/nonexistent/program"])


def test_run_as_goes_through_sudo_with_the_user() -> None:
    # A stand-in for sudo that prints what it was asked, then runs the command.
    fake_sudo = [PY, "-c", "import os, sys; print(sys.argv[1:4], flush=True); "
                 "os.execv(sys.argv[4], sys.argv[4:])"]
    result = asyncio.run(command.run_as("alice", [PY, "-c", "print('ran')"], sudo=fake_sudo,
                                        timeout=30))
    assert result.text.split("\n")[:2] == ["['-u', 'alice', '--']", "ran"]


def test_the_secrets_file_is_private(tmp_path: Path) -> None:
    path = command.write_secrets_file(tmp_path, "s.json", {"key": "k"}, {"A": "1"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == b'{"key": "k", "env": {"A": "1"}}\n'
    with pytest.raises(FileExistsError):
        command.write_secrets_file(tmp_path, "s.json", {}, {})


GATEWAY_THAT_DIES = """
import asyncio, sys
from kernelyard.provisioners import command
child = [sys.executable, "-c",
         "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(300)",
         sys.argv[1]]
asyncio.run(command.run(child, timeout=600, dies_with_gateway=sys.argv[2] == "yes"))
"""


def _program_of_a_killed_gateway(tmp_path: Path, dies: str) -> int:
    """The pid of a program a 'gateway' process ran, once that process got SIGKILL."""
    pid_file = tmp_path / f"child-{dies}.pid"
    gateway = subprocess.Popen([PY, "-c", GATEWAY_THAT_DIES, str(pid_file), dies],
                               env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    gateway.kill()
    gateway.wait()
    return int(pid_file.read_text())


def test_a_program_that_dies_with_the_gateway_dies_with_its_sigkill(tmp_path: Path) -> None:
    """spark-submit must not submit after a crash: the next gateway has cleaned up by then."""
    survivor = _program_of_a_killed_gateway(tmp_path, "no")
    try:
        assert not _gone(survivor), "without dies_with_gateway the program outlives it"
    finally:
        os.kill(survivor, 9)
    assert _gone(_program_of_a_killed_gateway(tmp_path, "yes"))


def test_dying_with_the_gateway_keeps_a_missing_program_an_oserror() -> None:
    with pytest.raises(FileNotFoundError):
        command.dying_with_gateway(["/nonexistent/spark-submit"])

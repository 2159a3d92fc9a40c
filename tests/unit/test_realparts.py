"""The registry of real parts (tests/realparts.py): a missing part skips by hand, fails in CI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import realparts

REPO = Path(__file__).resolve().parents[2]

# Asks for a part the way the integration tier does: a helper and a fixture.
TINY = textwrap.dedent(
    """
    from tests.realparts import ssh_hosts

    def test_needs_the_ssh_hosts():
        assert ssh_hosts()["KY_SSH_HOSTS"]

    def test_needs_yarn(yarn):
        assert yarn["KY_YARN_RM_URL"]
    """
)


def run_tiny(tmp_path: Path, mode: str | None) -> subprocess.CompletedProcess[str]:
    """pytest on TINY in a subprocess, both parts' env files pointed at a missing folder."""
    (tmp_path / "test_tiny.py").write_text(TINY)
    env = {k: v for k, v in os.environ.items() if k != realparts.MODE_VAR}
    env |= {"PYTHONPATH": str(REPO), "KY_SSH_STATE": str(tmp_path / "no-ssh-hosts"),
            "KY_YARN_STATE": str(tmp_path / "no-yarn")}
    if mode is not None:
        env[realparts.MODE_VAR] = mode
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.yarncluster",
         "-rA", "--rootdir", str(tmp_path), str(tmp_path / "test_tiny.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_missing_part_skips_with_its_start_command_by_hand(tmp_path: Path) -> None:
    run = run_tiny(tmp_path, None)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 skipped" in run.stdout, run.stdout
    assert "start it (as root) with `bash ci/ssh-hosts/start.sh 3`" in run.stdout, run.stdout
    assert "start it (as root) with `bash ci/yarn/start.sh`" in run.stdout, run.stdout
    assert str(tmp_path / "no-ssh-hosts" / "env") in run.stdout


def test_a_missing_part_fails_when_the_parts_are_required(tmp_path: Path) -> None:
    run = run_tiny(tmp_path, "required")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 error" in run.stdout, run.stdout  # the fixture errors
    assert "skipped" not in run.stdout, run.stdout
    assert "start it (as root) with `bash ci/ssh-hosts/start.sh 3`" in run.stdout, run.stdout
    assert "start it (as root) with `bash ci/yarn/start.sh`" in run.stdout, run.stdout


def test_an_unknown_mode_fails_and_names_the_variable(tmp_path: Path) -> None:
    run = run_tiny(tmp_path, "requird")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "KERNELYARD_REAL_PARTS='requird'" in run.stdout, run.stdout


def test_a_running_part_gives_its_env_file(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "env").write_text("KY_SSH_HOSTS=10.0.0.2,10.0.0.3\nKY_SSH_KEY=/k=ey\n\n")
    monkeypatch.setenv("KY_SSH_STATE", str(tmp_path))
    monkeypatch.setenv(realparts.MODE_VAR, realparts.REQUIRED)
    assert realparts.ssh_hosts() == {"KY_SSH_HOSTS": "10.0.0.2,10.0.0.3", "KY_SSH_KEY": "/k=ey"}


def test_a_broken_part_is_told_to_restart(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An env file left by a part that no longer answers: stop, then start it again."""
    (tmp_path / "env").write_text("KY_YARN_RM_URL=http://127.0.0.1:1\n")
    monkeypatch.setenv("KY_YARN_STATE", str(tmp_path))
    monkeypatch.delenv(realparts.MODE_VAR, raising=False)
    with pytest.raises(pytest.skip.Exception, match="does not answer") as skipped:
        realparts.missing("yarn", "the RM does not answer")
    assert "restart it (as root) with `bash ci/yarn/stop.sh && bash ci/yarn/start.sh`" in str(
        skipped.value)


def ci_parts() -> dict[str, list[str]]:
    """ci/test.sh's table of parts: name -> [install, start, stop] ("-": none)."""
    out = subprocess.run(["bash", str(REPO / "ci" / "test.sh"), "--list-parts"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return {row[0]: row[1:] for row in (line.split("\t") for line in out.splitlines())}


def test_ci_and_the_registry_name_the_same_parts_and_commands() -> None:
    table = ci_parts()
    assert set(table) == set(realparts.PARTS) - {"root"}
    for name, (install, start, stop) in table.items():
        part = realparts.PARTS[name]
        if start == "-":  # installed, not started: the install is what makes it
            assert install.split(" >")[0] == part.start, name
        else:
            assert (start, stop) == (part.start, part.stop or "-"), name


def test_ci_exports_the_required_mode() -> None:
    out = subprocess.run(["bash", str(REPO / "ci" / "test.sh"), "--dry-run", "-q"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    assert "+ KERNELYARD_REAL_PARTS=required python -m pytest -p no:cacheprovider -q" in out
    starts = [line for line in out.splitlines() if "start" in line and "stop" not in line]
    assert starts[0] == "+ bash ci/ssh-hosts/start.sh 3"
    assert starts[1] == "+ bash ci/spark-standalone/start.sh"

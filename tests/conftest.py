"""Shared fixtures: a real kernelyard process per module (or per test)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import gateway as gateway_module
from tests import realparts
from tests.gateway import SECRETS, Gateway, start_gateway

# Fixtures of the real parts, for every test module.
pytest_plugins = ["tests.yarncluster"]

OUTPUT_DIR = Path(__file__).resolve().parent.parent / "test-output"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--gateway-log-level", default=None, metavar="LEVEL",
        help="kernelyard: run every test gateway at this --log-level (e.g. DEBUG) unless the "
        "test sets one; the end-of-session secret sweep then covers those logs.",
    )


def pytest_configure(config: pytest.Config) -> None:
    gateway_module.DEFAULT_LOG_LEVEL = config.getoption("--gateway-log-level")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a gateway's log or a kernel's environment holds a secret.

    Every gateway started through ``start_gateway`` registered its token and log,
    every ``Gateway`` its process (its kernels' environments are kept as they
    appear); tests may have registered more secrets and logs (tests/gateway.py
    SECRETS).
    """
    SECRETS.envs.stop()
    SECRETS.envs.look()
    leaks = SECRETS.leaks()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and SECRETS.secrets:
        reporter.write_line(f"secret sweep: {len(SECRETS.secrets)} secrets looked for in "
                            f"{len(SECRETS.logs)} logs and {len(SECRETS.envs.seen)} kernel "
                            "environments")
    if not leaks:
        return
    lines = [f"SECRET LEAK: {what} appears in {path}" for path, what in leaks]
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "secrets found in logs or kernel environments", red=True, bold=True)
        for line in lines:
            reporter.write_line(line, red=True)
    else:
        print("\n".join(lines), file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with a token, shared by the tests of one module."""
    gw = start_gateway(tmp_path_factory.mktemp("gateway"))
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def hosts() -> dict[str, str]:
    """ci/ssh-hosts' env (KY_SSH_HOSTS, ...); skips, or in CI fails, without the hosts."""
    return realparts.ssh_hosts()


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """A folder for a test's artifacts (screenshots, logs), kept after the run."""
    path = OUTPUT_DIR / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path

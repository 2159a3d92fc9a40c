"""Shared fixtures: a real kernelyard process per module (or per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway import Gateway, start_gateway

# Fixtures of the real parts, for every test module.
pytest_plugins = ["tests.yarncluster"]

OUTPUT_DIR = Path(__file__).resolve().parent.parent / "test-output"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with a token, shared by the tests of one module."""
    gw = start_gateway(tmp_path_factory.mktemp("gateway"))
    yield gw
    gw.stop()


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """A folder for a test's artifacts (screenshots, logs), kept after the run."""
    path = OUTPUT_DIR / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path

"""The backend contract (tests/contract.py) on the loopback backend: no cluster needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.contract import ContractBackend, ContractSuite, write_contract_specs
from tests.entrypoints import provisioner_path
from tests.kernelspecs import IPYKERNEL


def gateway_env(*paths: str) -> dict[str, str]:
    """PYTHONPATH for the gateway: ``paths`` (entry points, packages) before ours."""
    parts = [p for p in (*paths, os.environ.get("PYTHONPATH", "")) if p]
    return {"PYTHONPATH": os.pathsep.join(parts)} if parts else {}


def loopback_backend(tmp: Path, provisioner: str = "kernelyard-loopback",
                     *paths: str) -> ContractBackend:
    """The contract's view of a loopback backend whose run dirs are under ``tmp``."""
    runs = tmp / "runs"

    def leftovers(kernel_id: str) -> list[str]:
        return [f"run dir {runs / kernel_id}"] if (runs / kernel_id).exists() else []

    return ContractBackend(
        name=provisioner,
        write_specs=lambda folder: write_contract_specs(
            folder, provisioner, IPYKERNEL, run_root=str(runs), poll_interval=1.0),
        leftovers=leftovers,
        gateway_env=gateway_env(provisioner_path(tmp), *paths),
    )


class TestLoopbackContract(ContractSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tmp_path_factory: pytest.TempPathFactory) -> ContractBackend:
        return loopback_backend(tmp_path_factory.mktemp("loopback"))

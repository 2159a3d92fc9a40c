"""The backend contract (tests/contract.py) on the loopback backend: no cluster needed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.contract import SPEC, ContractBackend, ContractSuite, write_contract_specs
from tests.entrypoints import provisioner_path
from tests.gateway import Gateway
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

    def test_loopback_kernels_are_as_private_as_local_ones(
        self, backend: ContractBackend, gw: Gateway
    ) -> None:
        """A 0700 run dir, a 0600 connection file, ports on 127.0.0.1 only."""
        kid = gw.start_kernel(SPEC)
        try:
            (run_dir,) = (Path(p.split(" ", 2)[2]) for p in backend.leftovers(kid))
            connection = run_dir / f"kernel-{kid}.json"
            assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
            assert stat.S_IMODE(run_dir.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE(connection.stat().st_mode) == 0o600
            assert json.loads(connection.read_text())["ip"] == "127.0.0.1"
        finally:
            gw.request("DELETE", f"/api/kernels/{kid}")

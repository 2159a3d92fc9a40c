"""A provisioner from a package outside kernelyard/, installed and found through its
entry point, passes the backend contract (tests/contract.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.contract import SPEC, ContractBackend, ContractSuite, write_contract_specs
from tests.entrypoints import install_package, provisioner_path
from tests.gateway import Gateway
from tests.kernelspecs import IPYKERNEL
from tests.unit.test_contract import gateway_env
from tests.unit.test_registry import generated_settings

PACKAGE = Path(__file__).resolve().parents[1] / "data" / "thirdparty_backend"
ENTRY_POINT = "thirdparty-scratch"


class TestThirdPartyContract(ContractSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tmp_path_factory: pytest.TempPathFactory) -> ContractBackend:
        tmp = tmp_path_factory.mktemp("thirdparty")
        site = install_package(PACKAGE, tmp / "site")
        scratch = tmp / "scratch"

        def leftovers(kernel_id: str) -> list[str]:
            run_dir = scratch / "runs" / kernel_id
            return [f"run dir {run_dir}"] if run_dir.exists() else []

        def write_specs(folder: Path) -> None:
            write_contract_specs(folder, ENTRY_POINT, IPYKERNEL, scratch_dir=str(scratch),
                                 poll_interval=1.0)

        return ContractBackend(name=ENTRY_POINT, write_specs=write_specs, leftovers=leftovers,
                               gateway_env=gateway_env(provisioner_path(tmp), str(site)))

    def test_its_kernels_run_in_the_third_party_backend(
        self, backend: ContractBackend, gw: Gateway
    ) -> None:
        """The gateway loaded the package's provisioner: the run dir is in its scratch dir."""
        kid = gw.start_kernel(SPEC)
        try:
            assert backend.leftovers(kid), "the kernel's run dir is not in the scratch folder"
        finally:
            gw.request("DELETE", f"/api/kernels/{kid}")


def test_its_settings_are_in_generate_config(tmp_path: Path) -> None:
    """The registry lists an installed third-party backend's settings (by construction)."""
    site = install_package(PACKAGE, tmp_path / "site")
    settings = generated_settings(tmp_path, gateway_env(str(site)))
    assert {"ScratchProvisioner.scratch_dir", "ScratchProvisioner.run_root"} <= settings

"""The backend contract (tests/contract.py) on every real backend: SSH and YARN.

SSH: the hosts of ci/ssh-hosts (network namespaces on this machine: their
processes and the remote user's run dirs are visible here). YARN: the real YARN
of ci/yarn; "nothing left" there means no active application tagged with the
kernel, besides no process and no store record.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.contract import (
    SLOW_CALLBACK_OPTIONS,
    SLOW_CALLBACK_SPEC,
    SPEC,
    ContractBackend,
    ContractSuite,
    write_contract_specs,
)
from tests.integration.test_yarn_kernels import _install_spec, instance_tag  # noqa: F401
from tests.realparts import ssh_hosts
from tests.yarncluster import ACTIVE, apps

REMOTE_PY = "/usr/bin/python3"
PY_KERNEL = [REMOTE_PY, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
LAUNCHER = "kernelyard-launcher"


def ssh_backend() -> ContractBackend:
    env = ssh_hosts()
    hosts = env["KY_SSH_HOSTS"].split(",")[:2]
    runs = Path(os.path.expanduser(f"~{env['KY_SSH_USER']}")) / ".kernelyard" / "kernels"

    def leftovers(kernel_id: str) -> list[str]:
        return [f"run dir {runs / kernel_id}"] if (runs / kernel_id).exists() else []

    return ContractBackend(
        name="ssh",
        write_specs=lambda folder: write_contract_specs(folder, "kernelyard-ssh", PY_KERNEL,
                                                        hosts=hosts),
        leftovers=leftovers,
        gateway_args=["--ip", env["KY_SSH_GATEWAY_IP"],
                      f"--SSHProvisioner.username={env['KY_SSH_USER']}",
                      f"--SSHProvisioner.client_keys={env['KY_SSH_KEY']}",
                      f"--SSHProvisioner.known_hosts={env['KY_SSH_KNOWN_HOSTS']}",
                      "--SSHProvisioner.poll_interval=1"],
    )


def with_slow_callback(spec: dict) -> dict:
    """The kernelspec with the launcher's callback held back (tests/contract.py)."""
    argv = list(spec["argv"])
    rest = argv[1:] if argv and argv[0] == LAUNCHER else ["--", *argv]
    return {**spec, "argv": [LAUNCHER, *SLOW_CALLBACK_OPTIONS, *rest]}


def yarn_backend(yarn: dict[str, str], tmp: Path, tag: str) -> ContractBackend:
    def write_specs(folder: Path) -> None:
        _install_spec(tmp, yarn, SPEC)
        installed = tmp / "share" / "jupyter" / "kernels" / SPEC
        shutil.copytree(installed, folder / "kernels" / SPEC)
        slow = folder / "kernels" / SLOW_CALLBACK_SPEC
        shutil.copytree(installed, slow)
        spec = json.loads((slow / "kernel.json").read_text())
        (slow / "kernel.json").write_text(json.dumps(with_slow_callback(spec)))

    def leftovers(kernel_id: str) -> list[str]:
        return [f"YARN application {app['id']} ({app['state']})"
                for app in apps(yarn, f"kernelyard-kernel-{kernel_id}", ACTIVE)]

    return ContractBackend(
        name="yarn",
        write_specs=write_specs,
        leftovers=leftovers,
        gateway_args=[f"--YarnProvisioner.instance_tag={tag}",
                      "--YarnProvisioner.poll_interval=1"],
        gateway_env={"HADOOP_CONF_DIR": yarn["HADOOP_CONF_DIR"], "JAVA_HOME": yarn["JAVA_HOME"],
                     "SPARK_LOCAL_IP": "127.0.0.1",
                     "SPARK_SUBMIT_OPTS": "-XX:TieredStopAtLevel=1"},
        execute_timeout=240,
        cleanup_timeout=180,
    )


class TestSSHContract(ContractSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> ContractBackend:
        return ssh_backend()


@pytest.mark.timeout(1800)
class TestYarnContract(ContractSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, yarn: dict[str, str], instance_tag: str,  # noqa: F811
                tmp_path_factory: pytest.TempPathFactory) -> ContractBackend:
        return yarn_backend(yarn, tmp_path_factory.mktemp("yarn-contract"), instance_tag)

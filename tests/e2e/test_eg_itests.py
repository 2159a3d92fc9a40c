"""Enterprise Gateway's own integration tests, unchanged, against kernelyard without auth.

EG's itests (``enterprise_gateway/itests`` from its PyPI wheel, unpacked by
``bash ci/eg-itests/install.sh``) drive a gateway with EG's test client, which
sends ``KERNEL_USERNAME`` (here alice, as a JupyterHub deployment without a
gateway token would) and no credentials. kernelyard serves without
authentication, so it takes that name as the kernel's owner, as EG does; its
kernels keep the gateway's account (a kernelspec that would run them as their
owner makes the gateway refuse to start: tests/integration/test_shared_accounts.py).

Each itest class runs in its own pytest subprocess; the test fails if it fails:
a local Python kernel, an SSH-distributed one (service mode on the shared hosts),
a Spark kernel in YARN cluster mode (the real YARN of ci/yarn, without
``--proxy-user``) and EG's authorization test with EG's own
``authorization_test`` kernelspec (``LocalProcessProxy``, access lists as
comma-separated strings).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import realparts
from tests.gateway import Gateway, start_gateway
from tests.integration.test_yarn_kernels import _install_spec
from tests.kernelspecs import IPYKERNEL, write_spec
from tests.realparts import ssh_hosts

pytestmark = pytest.mark.e2e

EG_VERSION = "3.3.0"
ITESTS_ROOT = Path(os.environ.get("KY_EG_ITESTS_CACHE",
                                  Path.home() / ".cache" / "kernelyard" / "eg-itests")) / EG_VERSION
ITESTS = ITESTS_ROOT / "enterprise_gateway" / "itests"
REMOTE_KERNEL = ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
OWNER = "alice"


def _itests() -> Path:
    if not (ITESTS / "test_python_kernel.py").is_file():
        realparts.missing("eg-itests", f"EG's itests are missing in {ITESTS_ROOT}")
    return ITESTS


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    itests = _itests()
    hosts = ssh_hosts()
    root = tmp_path_factory.mktemp("eg-itests")
    specs = root / "jupyter"
    write_spec(specs, "python3", IPYKERNEL)
    write_spec(specs, "python_distributed", ["kernelyard-launcher", "--", *REMOTE_KERNEL],
               metadata={"kernel_provisioner": {"provisioner_name": "kernelyard-ssh", "config": {
                   "hosts": hosts["KY_SSH_HOSTS"].split(",")[:2], "user_mode": "service",
                   **realparts.ssh_login_config(hosts), "poll_interval": 1.0}}})
    # No token: EG's clients send none. The SSH hosts call back on the bridge's address.
    gateway = start_gateway(root, "--ip", hosts["KY_SSH_GATEWAY_IP"], "--allow-unauthenticated",
                            f"--KernelyardApp.audit_log={root / 'audit.log'}", token=None,
                            allow_shared_kernel_account=False,
                            env={"JUPYTER_PATH": os.pathsep.join([str(specs), str(itests)])})
    gateway.extra["audit"] = root / "audit.log"
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def yarn_gw(tmp_path_factory: pytest.TempPathFactory, yarn: dict[str, str]) -> Iterator[Gateway]:
    """A gateway without auth whose spark_python_yarn_cluster submits as its own user."""
    _itests()
    root = tmp_path_factory.mktemp("eg-itests-yarn")
    _install_spec(root / "prefix", yarn, "spark_python_yarn_cluster")
    env = {"JUPYTER_PATH": str(root / "prefix" / "share" / "jupyter"),
           "HADOOP_CONF_DIR": yarn["HADOOP_CONF_DIR"], "JAVA_HOME": yarn["JAVA_HOME"],
           "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_SUBMIT_OPTS": "-XX:TieredStopAtLevel=1"}
    gateway = start_gateway(root, "--YarnProvisioner.impersonate=False",
                            "--YarnProvisioner.poll_interval=1",
                            f"--YarnProvisioner.instance_tag=kyeg-{uuid.uuid4().hex[:12]}",
                            f"--KernelyardApp.audit_log={root / 'audit.log'}", token=None,
                            allow_shared_kernel_account=False, env=env)
    gateway.extra["audit"] = root / "audit.log"
    yield gateway
    for kernel in gateway.request("GET", "/api/kernels")[1] or []:
        gateway.request("DELETE", f"/api/kernels/{kernel['id']}")
    gateway.stop()


def run_itests(gw: Gateway, tmp: Path, target: str, hostname: str,
               **extra_env: str) -> str:
    """EG's pytest run of ``target`` (a file::Class of the itests) against ``gw``; its output."""
    ini = tmp / "pytest.ini"
    ini.write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": str(ITESTS_ROOT), "GATEWAY_HOST": gw.url.split("//")[1]
           .rstrip("/"), "KERNEL_USERNAME": OWNER, "KERNEL_LAUNCH_TIMEOUT": "300",
           "ITEST_HOSTNAME_PREFIX": hostname, "LOG_LEVEL": "INFO", **extra_env}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(tmp),
         "-p", "no:cacheprovider", "-v", str(ITESTS / target)],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"EG's itests {target} failed:\n{output[-6000:]}\n" \
        f"gateway log:\n{gw.log()[-4000:]}"
    assert " passed" in output and " failed" not in output, output
    return output


def owners(gw: Gateway, action: str = "launch") -> list[tuple[str, str | None, str]]:
    """(kernelspec, owner, result) of the audit log's ``action`` lines."""
    path: Path = gw.extra["audit"]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r.get("kernelspec", ""), r.get("owner"), r.get("result", ""))
            for r in lines if r.get("action") == action]


def test_the_gateway_warns_that_kernel_username_names_the_owner(gw: Gateway) -> None:
    assert "KERNEL_USERNAME is taken as its kernel's owner" in gw.log()


def test_eg_itests_local_python_kernel(gw: Gateway, tmp_path: Path) -> None:
    out = run_itests(gw, tmp_path, "test_python_kernel.py::TestPythonKernelLocal",
                     socket.gethostname())
    assert "test_restart PASSED" in out and "test_interrupt PASSED" in out, out
    assert ("python3", OWNER, "ok") in owners(gw), owners(gw)


def test_eg_itests_ssh_distributed_python_kernel(gw: Gateway, tmp_path: Path) -> None:
    run_itests(gw, tmp_path, "test_python_kernel.py::TestPythonKernelDistributed", "h")
    assert ("python_distributed", OWNER, "ok") in owners(gw), owners(gw)


def test_eg_itests_authorization(gw: Gateway, tmp_path: Path) -> None:
    run_itests(gw, tmp_path, "test_authorization.py", socket.gethostname())
    seen = owners(gw)
    assert ("authorization_test", "bob", "ok") in seen, seen
    assert ("authorization_test", None, "denied") in seen, seen  # bad_guy: 403


@pytest.mark.timeout(1200)
def test_eg_itests_yarn_cluster_spark_kernel(yarn_gw: Gateway, yarn: dict[str, str],
                                            tmp_path: Path) -> None:
    import pyspark

    run_itests(yarn_gw, tmp_path, "test_python_kernel.py::TestPythonKernelCluster",
               socket.gethostname(), EXPECTED_SPARK_VERSION=pyspark.__version__.replace(".", r"\."),
               EXPECTED_DEPLOY_MODE="cluster")
    assert ("spark_python_yarn_cluster", OWNER, "ok") in owners(yarn_gw), owners(yarn_gw)

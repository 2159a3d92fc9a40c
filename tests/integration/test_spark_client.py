"""A Spark client-mode kernel on an SSH host, with executors on the real standalone cluster.

Needs the ssh hosts (ci/ssh-hosts) and ci/spark-standalone, started after them.
The kernel runs Debian's python3 (the ssh user can't run the venv's pyenv python)
with pyspark's own zips on PYTHONPATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway import Gateway, start_gateway
from tests.realparts import state_env

SSH_STATE = Path(os.environ.get("KY_SSH_STATE", "/tmp/kernelyard-ssh-hosts"))
SPARK_STATE = Path(os.environ.get("KY_SPARK_STATE", "/tmp/kernelyard-spark"))
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def parts() -> dict[str, str]:
    return {**state_env(SSH_STATE / "env", "bash ci/ssh-hosts/start.sh 3"),
            **state_env(SPARK_STATE / "env", "bash ci/spark-standalone/start.sh")}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, parts: dict[str, str]) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("spark-client")
    spark_home = parts["KY_SPARK_HOME"]
    c1 = "-XX:TieredStopAtLevel=1"
    args = [sys.executable, "-m", "kernelyard.cli.main", "kernelspec", "install", "ssh",
            "--name", "spark_python_ssh_client", "--prefix", str(root),
            "--hosts", parts["KY_SSH_HOSTS"].split(",")[0], "--python", "/usr/bin/python3",
            "--spark-master", parts["KY_SPARK_MASTER_URL"],
            "--spark-conf", "spark.ui.enabled=false",
            "--spark-conf", f"spark.driver.extraJavaOptions={c1}",
            "--spark-conf", f"spark.executor.extraJavaOptions={c1}",
            "--env", f"SPARK_HOME={spark_home}",
            "--env", f"PYTHONPATH={parts['KY_SPARK_DRIVER_PYTHONPATH']}",
            "--env", "PYSPARK_PYTHON=/usr/bin/python3",
            "--env", f"JAVA_HOME={parts['JAVA_HOME']}"]
    subprocess.run(args, check=True, capture_output=True)
    gateway = start_gateway(
        root, "--ip", parts["KY_SSH_GATEWAY_IP"],
        f"--SSHProvisioner.username={parts['KY_SSH_USER']}",
        f"--SSHProvisioner.client_keys={parts['KY_SSH_KEY']}",
        f"--SSHProvisioner.known_hosts={parts['KY_SSH_KNOWN_HOSTS']}",
        "--SSHProvisioner.poll_interval=1",
        env={"JUPYTER_PATH": str(root / "share" / "jupyter")})
    yield gateway
    for kernel in gateway.request("GET", "/api/kernels")[1] or []:
        gateway.request("DELETE", f"/api/kernels/{kernel['id']}")
    gateway.stop()


def test_client_mode_driver_on_an_ssh_host(gw: Gateway, parts: dict[str, str]) -> None:
    status, model, _ = gw.request("POST", "/api/kernels", {"name": "spark_python_ssh_client"},
                                  timeout=180)
    assert status == 201, (model, gw.log()[-2000:])
    ks = gw.connect(model["id"])
    try:
        out = ks.execute("print(sc.master, spark.conf.get('spark.submit.deployMode'), "
                         "spark.range(1000).selectExpr('sum(id)').collect()[0][0], "
                         "sc.getConf().get('spark.driver.host'))", timeout=300)
    finally:
        ks.close()
    assert out["error"] is None, out["error"]
    master, mode, total, driver_host = out["stdout"].split()
    assert master == parts["KY_SPARK_MASTER_URL"] and master.startswith("spark://")
    assert (mode, total) == ("client", "499500")
    # The driver runs on the SSH host: executors connect back to its own address.
    assert driver_host == parts["KY_SSH_HOSTS"].split(",")[0]
    assert gw.request("DELETE", f"/api/kernels/{model['id']}")[0] == 204

"""Spark client-mode kernels on an SSH host, with executors on the real standalone
cluster or on the real YARN.

Needs the ssh hosts (ci/ssh-hosts), ci/spark-standalone started after them, and for
YARN ci/yarn/start.sh and ci/yarn/serve-ssh-hosts.sh. The kernel runs Debian's python3
(the ssh user can't run the venv's pyenv python) with the kernel venv's pyspark zips
on PYTHONPATH.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import realparts, yarncluster
from tests.gateway import Gateway, start_gateway
from tests.realparts import ssh_hosts

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def parts() -> dict[str, str]:
    return {**ssh_hosts(), **realparts.env("spark-standalone")}


def install_client_spec(root: Path, parts: dict[str, str], name: str, master: str,
                        conf: dict[str, str], env: dict[str, str]) -> None:
    """An ssh kernelspec for a client-mode Spark kernel on the first ssh host."""
    c1 = "-XX:TieredStopAtLevel=1"
    conf = {"spark.ui.enabled": "false", "spark.driver.extraJavaOptions": c1,
            "spark.executor.extraJavaOptions": c1} | conf
    env = {"SPARK_HOME": parts["KY_SPARK_HOME"],
           "PYTHONPATH": parts["KY_SPARK_DRIVER_PYTHONPATH"],
           "PYSPARK_PYTHON": "/usr/bin/python3", "JAVA_HOME": parts["JAVA_HOME"]} | env
    args = [sys.executable, "-m", "kernelyard.cli.main", "kernelspec", "install", "ssh",
            "--name", name, "--prefix", str(root),
            "--hosts", parts["KY_SSH_HOSTS"].split(",")[0], "--python", "/usr/bin/python3",
            "--spark-master", master,
            *(a for k, v in conf.items() for a in ("--spark-conf", f"{k}={v}")),
            *(a for k, v in env.items() for a in ("--env", f"{k}={v}"))]
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spark-client")


@pytest.fixture(scope="module")
def gw(root: Path, parts: dict[str, str]) -> Iterator[Gateway]:
    install_client_spec(root, parts, "spark_python_ssh_client", parts["KY_SPARK_MASTER_URL"],
                        {}, {})
    gateway = start_gateway(
        root, "--ip", parts["KY_SSH_GATEWAY_IP"],
        *realparts.ssh_login_args(parts),
        "--SSHProvisioner.poll_interval=1",
        env={"JUPYTER_PATH": str(root / "share" / "jupyter")})
    yield gateway
    for kernel in gateway.request("GET", "/api/kernels")[1] or []:
        gateway.request("DELETE", f"/api/kernels/{kernel['id']}")
    gateway.stop()


def _start_and_ask(gw: Gateway, kernelspec: str) -> tuple[str, list[str]]:
    """Start a kernel; return its id and its Spark master, deploy mode, application
    id, user, sum of 0..999 and driver host."""
    status, model, _ = gw.request("POST", "/api/kernels", {"name": kernelspec}, timeout=180)
    assert status == 201, (model, gw.log()[-2000:])
    ks = gw.connect(model["id"])
    try:
        out = ks.execute("print(sc.master, spark.conf.get('spark.submit.deployMode'), "
                         "sc.applicationId, sc.sparkUser(), "
                         "spark.range(1000).selectExpr('sum(id)').collect()[0][0], "
                         "sc.getConf().get('spark.driver.host'))", timeout=300)
    finally:
        ks.close()
    assert out["error"] is None, out["error"]
    return model["id"], out["stdout"].split()


def test_client_mode_driver_on_an_ssh_host(gw: Gateway, parts: dict[str, str]) -> None:
    kid, (master, mode, _, _, total, driver_host) = _start_and_ask(gw, "spark_python_ssh_client")
    assert master == parts["KY_SPARK_MASTER_URL"] and master.startswith("spark://")
    assert (mode, total) == ("client", "499500")
    # The driver runs on the SSH host: executors connect back to its own address.
    assert driver_host == parts["KY_SSH_HOSTS"].split(",")[0]
    assert gw.request("DELETE", f"/api/kernels/{kid}")[0] == 204


@pytest.fixture(scope="module")
def yarn_client(root: Path, parts: dict[str, str], yarn: dict[str, str]) -> dict[str, str]:
    """EG's spark_python_yarn_client: the driver on the ssh host, executors on YARN."""
    served = realparts.env("yarn-ssh-hosts")
    bridge = parts["KY_SSH_GATEWAY_IP"]
    install_client_spec(root, parts, "spark_python_yarn_client", "yarn", {
        # The jars are on the NodeManager's disk already: nothing big to upload.
        "spark.yarn.jars": f"local:{parts['KY_SPARK_HOME']}/jars/*",
        "spark.yarn.queue": "analytics",
        "spark.yarn.am.memory": "512m",
        "spark.executor.memory": "512m",
        "spark.executor.instances": "1",
        # The ApplicationMaster and executors run in the root namespace: they bind on
        # the bridge, where the driver on the ssh host reaches them.
        "spark.yarn.appMasterEnv.SPARK_LOCAL_IP": bridge,
        "spark.executorEnv.SPARK_LOCAL_IP": bridge,
    }, {"HADOOP_CONF_DIR": served["KY_YARN_SSH_HADOOP_CONF_DIR"]})
    return yarn


def test_yarn_client_mode_driver_on_an_ssh_host(gw: Gateway, parts: dict[str, str],
                                                yarn_client: dict[str, str]) -> None:
    kid, (master, mode, app_id, user, total, driver_host) = _start_and_ask(
        gw, "spark_python_yarn_client")
    assert (master, mode, total) == ("yarn", "client", "499500")
    assert driver_host == parts["KY_SSH_HOSTS"].split(",")[0]
    app = yarncluster.rm(yarn_client, f"/ws/v1/cluster/apps/{app_id}")["app"]
    assert (app["state"], app["user"]) == ("RUNNING", user), app
    assert app["queue"].split(".")[-1] == "analytics", app
    assert user == parts["KY_SSH_USER"]
    assert gw.request("DELETE", f"/api/kernels/{kid}")[0] == 204
    # The driver dies with the kernel, and its application ends with it.
    ended = yarncluster.wait_for(
        f"{app_id} to end", yarncluster.KILL_TIMEOUT,
        lambda: yarncluster.rm(yarn_client, f"/ws/v1/cluster/apps/{app_id}")["app"]["state"]
        in ("FINISHED", "KILLED", "FAILED"))
    assert ended

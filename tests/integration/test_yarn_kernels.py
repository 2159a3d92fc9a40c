"""Spark kernels as YARN applications (cluster mode) on the real YARN of ci/yarn.

Every application a test makes is tagged with this module's instance tag; the
module's teardown asserts that none of them is left RUNNING or ACCEPTED.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway import Gateway, KernelSocket, start_gateway
from tests.yarncluster import ACTIVE, KILL_TIMEOUT, apps, kill, rm, wait_for

START_TIMEOUT = 400  # seconds for a POST: spark-submit + YARN + driver on two busy cores
pytestmark = pytest.mark.timeout(900)


def _install_spec(prefix: Path, yarn: dict[str, str], name: str, *extra: str) -> None:
    spark_home = yarn["KY_YARN_SPARK_HOME"]
    c1 = "-XX:TieredStopAtLevel=1"  # faster JVM start on two cores
    conf = {
        "spark.yarn.jars": f"local:{spark_home}/jars/*",
        "spark.yarn.stagingDir": f"file://{yarn['KY_YARN_STAGING_DIR']}",
        "spark.yarn.appMasterEnv.SPARK_LOCAL_IP": "127.0.0.1",
        "spark.executorEnv.SPARK_LOCAL_IP": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.driver.extraJavaOptions": c1,
        "spark.executor.extraJavaOptions": c1,
    }
    args = [sys.executable, "-m", "kernelyard.cli.main", "kernelspec", "install", "yarn",
            "--name", name, "--prefix", str(prefix), "--python", yarn["KY_YARN_PYTHON"],
            "--driver-memory", "512m", "--executor-memory", "512m",
            "--launch-timeout", str(START_TIMEOUT - 30), *extra]
    for key, value in conf.items():
        args += ["--spark-conf", f"{key}={value}"]
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture(scope="module")
def instance_tag(yarn: dict[str, str]) -> Iterator[str]:
    """This module's YARN tag; at the end, nothing tagged with it may still be active."""
    tag = f"kytest-{uuid.uuid4().hex[:12]}"
    yield tag
    left = apps(yarn, tag, ACTIVE)
    for app in left:
        kill(yarn, app["id"])
    assert not left, f"applications left active: {[(a['id'], a['state']) for a in left]}"


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory, yarn: dict[str, str]) -> Path:
    prefix = tmp_path_factory.mktemp("yarn-specs")
    _install_spec(prefix, yarn, "spark_python_yarn_cluster")
    _install_spec(prefix, yarn, "spark_yarn_eager", "--spark-session", "eager")
    return prefix / "share" / "jupyter"


def _start(tmp: Path, yarn: dict[str, str], specs: Path, tag: str, *extra: str) -> Gateway:
    env = {"JUPYTER_PATH": str(specs), "HADOOP_CONF_DIR": yarn["HADOOP_CONF_DIR"],
           "JAVA_HOME": yarn["JAVA_HOME"], "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_SUBMIT_OPTS": "-XX:TieredStopAtLevel=1"}
    return start_gateway(tmp, f"--YarnProvisioner.instance_tag={tag}",
                         "--YarnProvisioner.poll_interval=1", *extra, env=env)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, yarn: dict[str, str], specs: Path,
       instance_tag: str) -> Iterator[Gateway]:
    gateway = _start(tmp_path_factory.mktemp("yarn-gw"), yarn, specs, instance_tag)
    yield gateway
    for kernel in gateway.request("GET", "/api/kernels")[1] or []:
        gateway.request("DELETE", f"/api/kernels/{kernel['id']}", timeout=120)
    gateway.stop()


def _post(gw: Gateway, name: str, **env: str) -> tuple[int, Any]:
    status, body, _ = gw.request("POST", "/api/kernels", {"name": name, "env": env},
                                 timeout=START_TIMEOUT)
    return status, body


def _kernel_app(yarn: dict[str, str], kernel_id: str) -> dict[str, Any]:
    found = apps(yarn, f"kernelyard-kernel-{kernel_id}")
    assert found, f"no YARN application tagged with kernel {kernel_id}"
    return max(found, key=lambda a: a["startedTime"])


def _run(ks: KernelSocket, code: str, timeout: float = 240) -> dict[str, Any]:
    out = ks.execute(code, timeout=timeout)
    assert out["error"] is None, out["error"]
    return out


def test_kernel_is_a_yarn_application_of_alice(gw: Gateway, yarn: dict[str, str],
                                               instance_tag: str) -> None:
    status, model = _post(gw, "spark_python_yarn_cluster", KERNEL_USERNAME="alice",
                          KERNEL_QUEUE="analytics")
    assert status == 201, (model, gw.log()[-3000:])
    kid = model["id"]
    ks = gw.connect(kid)
    try:
        out = _run(ks, "print(sc.master, spark.conf.get('spark.submit.deployMode'), "
                       "sc.applicationId, sc.sparkUser())")
        master, mode, app_id, user = out["stdout"].split()
        assert (master, mode, user) == ("yarn", "cluster", "alice")
        assert app_id.startswith("application_")
        app = _kernel_app(yarn, kid)
        assert app["id"] == app_id
        assert (app["state"], app["user"]) == ("RUNNING", "alice")
        assert app["queue"].split(".")[-1] == "analytics"
        assert instance_tag in app["applicationTags"].split(",")
        out = _run(ks, "print(spark.range(1000).selectExpr('sum(id)').collect()[0][0])")
        assert out["stdout"].strip() == "499500"
    finally:
        ks.close()
    assert gw.request("DELETE", f"/api/kernels/{kid}", timeout=120)[0] == 204
    ended = wait_for(f"{app_id} to end", KILL_TIMEOUT,
                     lambda: rm(yarn, f"/ws/v1/cluster/apps/{app_id}")["app"]["state"]
                     in ("FINISHED", "KILLED"))
    assert ended

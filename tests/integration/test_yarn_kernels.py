"""Spark kernels as YARN applications (cluster mode) on the real YARN of ci/yarn.

Every application a test makes is tagged with this module's instance tag; the
module's teardown asserts that none of them is left RUNNING or ACCEPTED.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway import Gateway, KernelSocket, start_gateway, traceback_text
from tests.yarncluster import ACTIVE, KILL_TIMEOUT, apps, kill, rm, wait_for

GROUP_LIMITS = {"*": {"KERNEL_DRIVER_MEMORY": "2g"}}
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
    _install_spec(prefix, yarn, "spark_yarn_dies", "--kernel-cmd",
                  "{python} -c \"import sys; print('bad kernel config', file=sys.stderr); "
                  "sys.exit(3)\" {connection_file}")
    slow_python = prefix / "slow-python"  # the driver's Python takes 5 minutes to start
    slow_python.write_text(f"#!/bin/sh\nsleep 300\nexec {yarn['KY_YARN_PYTHON']} \"$@\"\n")
    slow_python.chmod(0o755)
    _install_spec(prefix, yarn, "spark_yarn_short", "--launch-timeout", "6",
                  "--python", str(slow_python))
    _install_spec(prefix, yarn, "spark_rm_down", "--rm-urls", f"http://127.0.0.1:{_closed_port()}")
    _install_spec(prefix, yarn, "spark_rm_ha", "--rm-urls",
                  f"http://127.0.0.1:{_closed_port()},{yarn['KY_YARN_RM_URL']}")
    root = prefix / "share" / "jupyter"
    _with_config(root, "spark_rm_down", "spark_yarn_small",
                 resource_limits={"KERNEL_MEMORY": "1g", "KERNEL_QUEUE": ["default"]})
    _with_config(root, "spark_python_yarn_cluster", "spark_yarn_none", spark_session="none")
    return root


def _with_config(root: Path, source: str, name: str, **config: Any) -> None:
    """Kernelspec ``name``: ``source`` with more ``kernel_provisioner.config``."""
    spec_file = root / "kernels" / name / "kernel.json"
    spec_file.parent.mkdir(parents=True)
    spec = json.loads((root / "kernels" / source / "kernel.json").read_text())
    spec["metadata"]["kernel_provisioner"]["config"].update(config)
    spec_file.write_text(json.dumps(spec))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(tmp: Path, yarn: dict[str, str], specs: Path, tag: str, *extra: str) -> Gateway:
    env = {"JUPYTER_PATH": str(specs), "HADOOP_CONF_DIR": yarn["HADOOP_CONF_DIR"],
           "JAVA_HOME": yarn["JAVA_HOME"], "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_SUBMIT_OPTS": "-XX:TieredStopAtLevel=1"}
    return start_gateway(tmp, f"--YarnProvisioner.instance_tag={tag}",
                         "--YarnProvisioner.poll_interval=1", *extra, env=env)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, yarn: dict[str, str], specs: Path,
       instance_tag: str) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("yarn-gw")
    config = tmp / "kernelyard_config.py"
    config.write_text(f"c.KernelyardApp.group_resource_limits = {GROUP_LIMITS!r}\n")
    gateway = _start(tmp, yarn, specs, instance_tag, "--config", str(config))
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


def test_kernel_closed_before_its_spark_context_is_up_is_killed_not_failed(
        gw: Gateway, yarn: dict[str, str]) -> None:
    """A notebook closed right after it opened: the lazy SparkContext is still starting
    (the application ACCEPTED) when the DELETE comes."""
    status, model = _post(gw, "spark_python_yarn_cluster", KERNEL_USERNAME="alice")
    assert status == 201, model
    app = _kernel_app(yarn, model["id"])
    print(f"{app['id']} was {app['state']} at the DELETE")
    assert gw.request("DELETE", f"/api/kernels/{model['id']}", timeout=120)[0] == 204
    final = wait_for(f"{app['id']} to end", KILL_TIMEOUT, lambda: _ended(yarn, app["id"]))
    assert final["state"] in ("FINISHED", "KILLED") and final["finalStatus"] != "FAILED", final


def _ended(yarn: dict[str, str], app_id: str) -> dict[str, Any] | None:
    """The application's record once it has ended."""
    app: dict[str, Any] = rm(yarn, f"/ws/v1/cluster/apps/{app_id}")["app"]
    return app if app["state"] in ("FINISHED", "KILLED", "FAILED") else None


def _state(gw: Gateway, kid: str) -> str:
    status, model, _ = gw.request("GET", f"/api/kernels/{kid}")
    return str(model.get("execution_state")) if status == 200 else "gone"


def test_interrupt_cancels_the_spark_job_restart_makes_a_new_application(
        gw: Gateway, yarn: dict[str, str]) -> None:
    kid = _post(gw, "spark_python_yarn_cluster", KERNEL_USERNAME="bob")[1]["id"]
    ks = gw.connect(kid)
    try:
        first_app = _run(ks, "print(sc.applicationId)")["stdout"].strip()
        msg_id = ks.submit("import time\n"
                           "sc.parallelize(range(2), 2).map(lambda x: time.sleep(900)).count()")
        wait_for("the Spark job to run", 240, lambda: _active_jobs(yarn, first_app))
        assert gw.request("POST", f"/api/kernels/{kid}/interrupt", {})[0] == 204
        error = ks.wait_idle(msg_id, timeout=120)
        assert error is not None and "KeyboardInterrupt" in error["ename"], traceback_text(error)
        # Cancelling is asynchronous in Spark: the 900 s job must be gone soon after.
        wait_for("the interrupted Spark job to be cancelled", 30, lambda: _run(
            ks, "print(sc.statusTracker().getActiveJobsIds())")["stdout"].strip() == "[]")
        assert _run(ks, "print(sc.range(10).count())")["stdout"].strip() == "10"
    finally:
        ks.close()

    status, model, _ = gw.request("POST", f"/api/kernels/{kid}/restart", {},
                                  timeout=START_TIMEOUT)
    assert (status, model["id"]) == (200, kid), model
    old = rm(yarn, f"/ws/v1/cluster/apps/{first_app}")["app"]
    assert old["state"] in ("FINISHED", "KILLED"), old
    ks = gw.connect(kid)
    try:
        second_app = _run(ks, "print(sc.applicationId)")["stdout"].strip()
    finally:
        ks.close()
    assert second_app.startswith("application_") and second_app != first_app
    assert gw.request("DELETE", f"/api/kernels/{kid}", timeout=120)[0] == 204
    wait_for(f"{second_app} to end", KILL_TIMEOUT, lambda: rm(
        yarn, f"/ws/v1/cluster/apps/{second_app}")["app"]["state"] in ("FINISHED", "KILLED"))


def _active_jobs(yarn: dict[str, str], app_id: str) -> bool:
    """True once the app has an executor running our task (seen as its second container)."""
    attempts = rm(yarn, f"/ws/v1/cluster/apps/{app_id}")["app"]
    return int(attempts.get("runningContainers") or 0) >= 2


def test_three_kernels_at_once(gw: Gateway, yarn: dict[str, str]) -> None:
    results: dict[str, tuple[int, Any]] = {}
    names = {"a1": ("spark_python_yarn_cluster", "alice"), "a2": ("spark_yarn_eager", "alice"),
             "b1": ("spark_python_yarn_cluster", "bob")}

    def start(label: str) -> None:
        spec, user = names[label]
        results[label] = _post(gw, spec, KERNEL_USERNAME=user)

    threads = [threading.Thread(target=start, args=(label,)) for label in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(status == 201 for status, _ in results.values()), results
    kids = {label: body["id"] for label, (_, body) in results.items()}
    try:
        eager = gw.connect(kids["a2"])
        try:  # eager: the session exists before the kernel's first answer
            assert _run(eager, "print(type(spark).__name__)")["stdout"].strip() == "SparkSession"
        finally:
            eager.close()
        for label, kid in kids.items():
            ks = gw.connect(kid)
            try:
                out = _run(ks, "print(sc.sparkUser(), sc.applicationId)")
            finally:
                ks.close()
            user, app_id = out["stdout"].split()
            assert user == names[label][1]
            app = rm(yarn, f"/ws/v1/cluster/apps/{app_id}")["app"]
            assert (app["state"], app["user"]) == ("RUNNING", user)
        running = {a["id"] for kid in kids.values()
                   for a in apps(yarn, f"kernelyard-kernel-{kid}", "RUNNING")}
        assert len(running) == 3
    finally:
        for kid in kids.values():
            gw.request("DELETE", f"/api/kernels/{kid}", timeout=120)


def test_driver_container_killed_on_the_nodemanager_is_reported_dead(
        gw: Gateway, yarn: dict[str, str]) -> None:
    kid = _post(gw, "spark_python_yarn_cluster", KERNEL_USERNAME="alice")[1]["id"]
    app = _kernel_app(yarn, kid)
    attempt = rm(yarn, f"/ws/v1/cluster/apps/{app['id']}/appattempts")
    container = attempt["appAttempts"]["appAttempt"][-1]["containerId"]
    # The RM asks the NodeManager to kill the driver's container, as it does on preemption.
    rm(yarn, f"/ws/v1/cluster/containers/{container}/signal/FORCEFUL_SHUTDOWN", "POST")
    wait_for(f"kernel {kid} to be reported dead", 60,
             lambda: _state(gw, kid) in ("dead", "gone"))
    assert not _processes_of(kid), "kernel processes outlived their container"
    assert gw.request("DELETE", f"/api/kernels/{kid}", timeout=120)[0] in (204, 404)


def _processes_of(kernel_id: str) -> list[str]:
    deadline = time.monotonic() + 20
    while True:
        found = subprocess.run(["pgrep", "-af", kernel_id], capture_output=True, text=True)
        mine = [line for line in found.stdout.splitlines()
                if "pgrep" not in line and str(os.getpid()) != line.split()[0]]
        if not mine or time.monotonic() > deadline:
            return mine
        time.sleep(1)


def test_unknown_queue_and_bad_sizes_are_refused_before_submit(
        gw: Gateway, yarn: dict[str, str]) -> None:
    kid = str(uuid.uuid4())
    status, body = _post(gw, "spark_python_yarn_cluster", KERNEL_QUEUE="nope", KERNEL_ID=kid)
    assert status == 400 and "'nope'" in body["message"], body
    assert "analytics" in body["message"]
    status, body = _post(gw, "spark_python_yarn_cluster", KERNEL_DRIVER_MEMORY="lots")
    assert status == 400 and "KERNEL_DRIVER_MEMORY" in body["message"], body
    status, body = _post(gw, "spark_python_yarn_cluster", KERNEL_SPARK_CONF=json.dumps(
        {"spark.driver.extraJavaOptions": "-Dx=1"}))
    assert status == 400 and "spark.driver.extraJavaOptions" in body["message"], body
    status, body = _post(gw, "spark_yarn_none")
    assert status == 500 and "client mode" in body["message"], body
    assert not apps(yarn, f"kernelyard-kernel-{kid}")


def test_driver_that_exits_before_calling_back(gw: Gateway, yarn: dict[str, str]) -> None:
    kid = str(uuid.uuid4())
    status, body = _post(gw, "spark_yarn_dies", KERNEL_ID=kid)
    assert status == 500, body
    assert "FAILED" in body["message"] and "bad kernel config" in body["message"], body
    assert not apps(yarn, f"kernelyard-kernel-{kid}", ACTIVE)


def test_launch_timeout_kills_the_application(gw: Gateway, yarn: dict[str, str]) -> None:
    kid = str(uuid.uuid4())
    status, body = _post(gw, "spark_yarn_short", KERNEL_ID=kid)
    assert status == 500 and "did not start within 6 s" in body["message"], body
    assert apps(yarn, f"kernelyard-kernel-{kid}"), "the application was never submitted"
    wait_for("the timed-out application to be killed", KILL_TIMEOUT,
             lambda: not apps(yarn, f"kernelyard-kernel-{kid}", ACTIVE))


def test_rm_down_is_a_503_and_a_second_rm_takes_over(gw: Gateway, yarn: dict[str, str]) -> None:
    status, body = _post(gw, "spark_rm_down")
    assert status == 503 and "ResourceManager is unreachable" in body["message"], body
    status, body = _post(gw, "spark_rm_ha", KERNEL_USERNAME="bob")
    assert status == 201, body
    ks = gw.connect(body["id"])
    try:
        assert _run(ks, "print(sc.sparkUser())")["stdout"].strip() == "bob"
    finally:
        ks.close()
    assert gw.request("DELETE", f"/api/kernels/{body['id']}", timeout=120)[0] == 204


def test_gateway_restart_readopts_the_yarn_kernel(
        tmp_path: Path, yarn: dict[str, str], specs: Path, instance_tag: str) -> None:
    first = _start(tmp_path, yarn, specs, instance_tag)
    try:
        status, model = _post(first, "spark_python_yarn_cluster", KERNEL_USERNAME="alice")
        assert status == 201, model
        kid = model["id"]
        ks = first.connect(kid)
        try:
            app_id = _run(ks, "y = 'survives'; print(sc.applicationId)")["stdout"].strip()
        finally:
            ks.close()
    finally:
        assert first.stop() == 0
    assert rm(yarn, f"/ws/v1/cluster/apps/{app_id}")["app"]["state"] == "RUNNING"
    second = _start(tmp_path, yarn, specs, instance_tag)
    try:
        ks = second.connect(kid)
        try:
            out = _run(ks, "print(y, sc.applicationId)")
        finally:
            ks.close()
        assert out["stdout"].split() == ["survives", app_id]
        assert len(apps(yarn, f"kernelyard-kernel-{kid}")) == 1, "a second application ran"
        assert second.request("DELETE", f"/api/kernels/{kid}", timeout=120)[0] == 204
    finally:
        second.stop()
    wait_for(f"{app_id} to end", KILL_TIMEOUT, lambda: rm(
        yarn, f"/ws/v1/cluster/apps/{app_id}")["app"]["state"] in ("FINISHED", "KILLED"))


def test_a_size_the_group_limit_accepts_is_the_size_yarn_gets(
        gw: Gateway, yarn: dict[str, str]) -> None:
    """Issue 11 item 4: one grammar. ``1.5g`` passed the group limit (2g) and was then
    refused by the YARN backend's own parser; now it is the driver's 1536 MiB."""
    status, model = _post(gw, "spark_python_yarn_cluster", KERNEL_DRIVER_MEMORY="1.5g")
    assert status == 201, (model, gw.log()[-3000:])
    kid = model["id"]
    ks = gw.connect(kid)
    try:
        out = _run(ks, "print(spark.conf.get('spark.driver.memory'))")
        assert out["stdout"].strip() == "1536m"
    finally:
        ks.close()
    assert gw.request("DELETE", f"/api/kernels/{kid}", timeout=120)[0] == 204
    status, body = _post(gw, "spark_python_yarn_cluster", KERNEL_MEMORY="2.5g")
    assert status == 403 and "KERNEL_MEMORY=2.5g" in body["message"], body
    assert "2g, the limit of group '*'" in body["message"], body


@pytest.mark.parametrize(("env", "named"), [
    ({"KERNEL_MEMORY": "1.5g"}, ["KERNEL_MEMORY=1.5g", "1g", "kernelspec 'spark_yarn_small'"]),
    ({"KERNEL_DRIVER_MEMORY": "1025m"}, ["KERNEL_DRIVER_MEMORY=1025m", "1g"]),
    ({"KERNEL_QUEUE": "analytics"}, ["KERNEL_QUEUE=analytics", "default"]),
    ({"KERNEL_GPUS": "1"}, ["KERNEL_GPUS", "not supported"]),
    ({"KERNEL_WALLTIME": "2h"}, ["KERNEL_WALLTIME", "not supported"]),
    ({"KERNEL_CPUS": "0.5"}, ["KERNEL_CPUS=0.5", "whole cores"]),
])
def test_what_a_kernelspec_refuses_is_a_400_before_the_backend_is_called(
        gw: Gateway, yarn: dict[str, str], env: dict[str, str], named: list[str]) -> None:
    """spark_yarn_small's ResourceManager is down: reaching the backend would be a 503."""
    kid = str(uuid.uuid4())
    status, body = _post(gw, "spark_yarn_small", KERNEL_ID=kid, **env)
    assert status == 400, body
    for text in named:
        assert text in body["message"], body
    assert not apps(yarn, f"kernelyard-kernel-{kid}")

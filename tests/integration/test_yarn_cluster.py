"""The real single-machine Hadoop YARN of ci/yarn: its RM REST API, a Spark
cluster-mode submit as another user (--proxy-user), and a kill through the REST API.

Needs `bash ci/yarn/install.sh && bash ci/yarn/start.sh`, which write the state env file.
Containers run as the NodeManager's user (root: DefaultContainerExecutor), while YARN
records the proxy user (alice) as the application's user.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.yarncluster import KILL_TIMEOUT, driver_log, kill, rm, tail, wait_for
from tests.yarncluster import apps as tagged_apps

SUBMIT_TIMEOUT = 420  # seconds; a cluster-mode run takes 30-90 s on two (busy) cores
RUNNING_TIMEOUT = 240

SUM_JOB = """\
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
total = spark.range(1000).selectExpr("sum(id)").collect()[0][0]
print("sum:", total, "user:", spark.sparkContext.sparkUser(), flush=True)
spark.stop()
"""

SLEEP_JOB = """\
import time
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
print("session up", flush=True)
time.sleep(900)
"""


def _spark_submit(env: dict[str, str], tmp: Path, script: str, tag: str, user: str,
                  queue: str, wait: bool, extra: list[str] | None = None,
                  ) -> subprocess.CompletedProcess[str]:
    job = tmp / "job.py"
    job.write_text(script)
    spark_home = env["KY_YARN_SPARK_HOME"]
    c1 = "-XX:TieredStopAtLevel=1"  # faster JVM start-up on two cores
    conf = {
        # The jars are already on the node: don't upload ~460 MB per submit.
        "spark.yarn.jars": f"local:{spark_home}/jars/*",
        "spark.yarn.stagingDir": f"file://{tmp}/staging",
        "spark.yarn.tags": tag,
        "spark.yarn.submit.waitAppCompletion": str(wait).lower(),
        "spark.yarn.maxAppAttempts": "1",
        # Containers run as root here, so the pyspark Python may be under /root.
        "spark.pyspark.python": env["KY_YARN_PYTHON"],
        # Spark binds the first non-loopback interface otherwise (the hostname maps
        # to 127.0.0.1). Don't set this through yarn.nodemanager.admin-env: YARN
        # appends it to Spark's own value ("127.0.0.1:127.0.0.1") and executors die.
        "spark.yarn.appMasterEnv.SPARK_LOCAL_IP": "127.0.0.1",
        "spark.executorEnv.SPARK_LOCAL_IP": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.driver.extraJavaOptions": c1,
        "spark.executor.extraJavaOptions": c1,
    }
    argv = [f"{spark_home}/bin/spark-submit", "--master", "yarn", "--deploy-mode", "cluster",
            "--proxy-user", user, "--queue", queue, "--driver-memory", "512m"]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    argv += [*(extra or []), str(job)]
    proc_env = {**os.environ, "HADOOP_CONF_DIR": env["HADOOP_CONF_DIR"],
                "JAVA_HOME": env["JAVA_HOME"], "SPARK_LOCAL_IP": "127.0.0.1",
                "SPARK_SUBMIT_OPTS": c1}
    proc_env.pop("SPARK_HOME", None)  # spark-submit finds its own (pyspark's)
    try:
        return subprocess.run(argv, cwd=tmp, env=proc_env, capture_output=True, text=True,
                              timeout=SUBMIT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"spark-submit took over {SUBMIT_TIMEOUT} s; its stderr ends:\n"
                             f"{tail(e.stderr)}") from e


def test_rm_lists_queues_and_one_running_node(yarn: dict[str, str]) -> None:
    info = rm(yarn, "/ws/v1/cluster/scheduler")["scheduler"]["schedulerInfo"]
    assert info["type"] == "capacityScheduler"
    queues = {q["queueName"]: q for q in info["queues"]["queue"]}
    assert set(queues) == {"default", "analytics"}
    assert all(q["state"] == "RUNNING" for q in queues.values())

    nodes = rm(yarn, "/ws/v1/cluster/nodes")["nodes"]["node"]
    assert [n["state"] for n in nodes] == ["RUNNING"], nodes
    # Room for three ~1 GB Spark drivers (plus executors) at once.
    assert nodes[0]["usedMemoryMB"] + nodes[0]["availMemoryMB"] >= 8192


@pytest.mark.timeout(SUBMIT_TIMEOUT + 120)
def test_cluster_mode_submit_as_alice(yarn: dict[str, str], tmp_path: Path,
                                      tags: Callable[[], str]) -> None:
    tag = tags()
    result = _spark_submit(yarn, tmp_path, SUM_JOB, tag, "alice", "analytics", wait=True,
                           extra=["--num-executors", "1", "--executor-memory", "512m"])
    found = tagged_apps(yarn, tag)
    assert len(found) == 1, (f"expected one application tagged {tag}, got {found}; "
                            f"spark-submit said:\n{tail(result.stderr)}")
    app = found[0]
    stdout = driver_log(yarn, app["id"], "stdout")
    detail = (f"{app['id']}: {app['state']}/{app['finalStatus']} {app['diagnostics']}\n"
              f"spark-submit (exit {result.returncode}):\n{tail(result.stderr, 15)}\n"
              f"driver stdout:\n{tail(stdout)}\n"
              f"driver stderr:\n{tail(driver_log(yarn, app['id'], 'stderr'))}")
    assert (app["state"], app["finalStatus"]) == ("FINISHED", "SUCCEEDED"), detail
    assert result.returncode == 0, detail
    assert app["user"] == "alice", detail
    assert app["queue"].split(".")[-1] == "analytics", detail  # "root.analytics" in 3.5
    assert "sum: 499500 user: alice" in stdout, detail


@pytest.mark.timeout(SUBMIT_TIMEOUT + RUNNING_TIMEOUT + 120)
def test_kill_through_rest_api(yarn: dict[str, str], tmp_path: Path,
                               tags: Callable[[], str]) -> None:
    tag = tags()
    # No executors: dynamic allocation from zero, and the job never runs a task.
    result = _spark_submit(yarn, tmp_path, SLEEP_JOB, tag, "bob", "default", wait=False,
                           extra=["--conf", "spark.dynamicAllocation.enabled=true",
                                  "--conf", "spark.dynamicAllocation.shuffleTracking.enabled=true",
                                  "--conf", "spark.dynamicAllocation.minExecutors=0",
                                  "--conf", "spark.dynamicAllocation.initialExecutors=0"])
    assert result.returncode == 0, tail(result.stderr)

    def running() -> dict[str, Any] | None:
        listed = tagged_apps(yarn, tag)
        assert listed, f"no application tagged {tag}; spark-submit said:\n{tail(result.stderr)}"
        assert listed[0]["state"] not in ("FINISHED", "FAILED", "KILLED"), (
            f"{listed[0]['id']} ended before the kill: {listed[0]['diagnostics']}\n"
            f"{tail(driver_log(yarn, listed[0]['id'], 'stderr'))}")
        return listed[0] if listed[0]["state"] == "RUNNING" else None

    app = wait_for(f"the application tagged {tag} to be RUNNING", RUNNING_TIMEOUT, running)
    assert app["user"] == "bob"
    assert app["queue"].split(".")[-1] == "default"

    kill(yarn, app["id"])
    killed = wait_for(f"{app['id']} to be KILLED", KILL_TIMEOUT, lambda: next(
        (a for a in tagged_apps(yarn, tag) if a["state"] == "KILLED"), None))
    assert killed["finalStatus"] == "KILLED", killed

    # The driver's container is gone from the NodeManager too, not only from the RM.
    def no_containers() -> bool:
        with urllib.request.urlopen(f"{yarn['KY_YARN_NM_URL']}/ws/v1/node/containers",
                                    timeout=15) as resp:
            containers = (json.loads(resp.read())["containers"] or {}).get("container", [])
        return not [c for c in containers if app["id"][len("application"):] in c["id"]
                    and c["state"] not in ("COMPLETE", "DONE")]

    wait_for(f"the containers of {app['id']} to end", KILL_TIMEOUT, no_containers)

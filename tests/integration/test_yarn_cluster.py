"""The real single-machine Hadoop YARN of ci/yarn: its RM REST API, a Spark
cluster-mode submit as another user (--proxy-user), and a kill through the REST API.

Needs `bash ci/yarn/install.sh && bash ci/yarn/start.sh`, which write the state env file.
Containers run as the NodeManager's user (root: DefaultContainerExecutor), while YARN
records the proxy user (alice) as the application's user.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

STATE = Path(os.environ.get("KY_YARN_STATE", "/tmp/kernelyard-yarn"))
SUBMIT_TIMEOUT = 420  # seconds; a cluster-mode run takes 30-90 s on two (busy) cores
RUNNING_TIMEOUT = 240
KILL_TIMEOUT = 60
ACTIVE = "NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING"

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


@pytest.fixture(scope="module")
def yarn() -> dict[str, str]:
    env_file = STATE / "env"
    if not env_file.is_file():
        pytest.fail(f"YARN is not running ({env_file} missing): run "
                    "`bash ci/yarn/install.sh && bash ci/yarn/start.sh` (as root)")
    pairs = (line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    env = dict(pairs)
    try:
        _rm(env, "/ws/v1/cluster/info")
    except OSError as e:
        pytest.fail(f"the ResourceManager at {env['KY_YARN_RM_URL']} does not answer ({e}): "
                    "restart it with `bash ci/yarn/stop.sh && bash ci/yarn/start.sh`")
    return env


def _rm(env: dict[str, str], path: str, method: str = "GET",
        body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(env["KY_YARN_RM_URL"] + path, data=data, method=method,
                                 headers={"Accept": "application/json",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=15) as resp:
        return json.loads(resp.read() or b"null")


def _apps(env: dict[str, str], tag: str, states: str | None = None) -> list[dict[str, Any]]:
    query = {"applicationTags": tag}
    if states:
        query["states"] = states
    apps = _rm(env, "/ws/v1/cluster/apps?" + urllib.parse.urlencode(query))["apps"]
    return (apps or {}).get("app", [])


def _kill(env: dict[str, str], app_id: str) -> None:
    _rm(env, f"/ws/v1/cluster/apps/{app_id}/state", "PUT", {"state": "KILLED"})


def _wait(what: str, timeout: float, probe: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1)


@pytest.fixture
def tags(yarn: dict[str, str]) -> Iterator[Callable[[], str]]:
    """New application tags; every application still active under one is killed after."""
    made: list[str] = []

    def new() -> str:
        made.append(f"kytest-{uuid.uuid4().hex[:12]}")  # YARN lowercases tags
        return made[-1]

    yield new
    for tag in made:
        for app in _apps(yarn, tag, ACTIVE):
            _kill(yarn, app["id"])
        _wait(f"applications tagged {tag} to end", KILL_TIMEOUT,
              functools.partial(_none_active, yarn, tag))


def _none_active(env: dict[str, str], tag: str) -> bool:
    return not _apps(env, tag, ACTIVE)


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
                             f"{_tail(e.stderr)}") from e


def _tail(text: str | bytes | None, lines: int = 40) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").splitlines()[-lines:])


def _driver_log(env: dict[str, str], app_id: str, name: str) -> str:
    """A log of the driver (the AM, the app's first container) in the NM's log dir."""
    found = sorted(Path(env["KY_YARN_NM_LOG_DIR"], app_id).glob(f"container_*_000001/{name}"))
    return found[0].read_text(errors="replace") if found else f"(no {name} for {app_id})"


def test_rm_lists_queues_and_one_running_node(yarn: dict[str, str]) -> None:
    info = _rm(yarn, "/ws/v1/cluster/scheduler")["scheduler"]["schedulerInfo"]
    assert info["type"] == "capacityScheduler"
    queues = {q["queueName"]: q for q in info["queues"]["queue"]}
    assert set(queues) == {"default", "analytics"}
    assert all(q["state"] == "RUNNING" for q in queues.values())

    nodes = _rm(yarn, "/ws/v1/cluster/nodes")["nodes"]["node"]
    assert [n["state"] for n in nodes] == ["RUNNING"], nodes
    # Room for three ~1 GB Spark drivers (plus executors) at once.
    assert nodes[0]["usedMemoryMB"] + nodes[0]["availMemoryMB"] >= 8192


@pytest.mark.timeout(SUBMIT_TIMEOUT + 120)
def test_cluster_mode_submit_as_alice(yarn: dict[str, str], tmp_path: Path,
                                      tags: Callable[[], str]) -> None:
    tag = tags()
    result = _spark_submit(yarn, tmp_path, SUM_JOB, tag, "alice", "analytics", wait=True,
                           extra=["--num-executors", "1", "--executor-memory", "512m"])
    apps = _apps(yarn, tag)
    assert len(apps) == 1, (f"expected one application tagged {tag}, got {apps}; "
                            f"spark-submit said:\n{_tail(result.stderr)}")
    app = apps[0]
    stdout = _driver_log(yarn, app["id"], "stdout")
    detail = (f"{app['id']}: {app['state']}/{app['finalStatus']} {app['diagnostics']}\n"
              f"spark-submit (exit {result.returncode}):\n{_tail(result.stderr, 15)}\n"
              f"driver stdout:\n{_tail(stdout)}\n"
              f"driver stderr:\n{_tail(_driver_log(yarn, app['id'], 'stderr'))}")
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
    assert result.returncode == 0, _tail(result.stderr)

    def running() -> dict[str, Any] | None:
        apps = _apps(yarn, tag)
        assert apps, f"no application tagged {tag}; spark-submit said:\n{_tail(result.stderr)}"
        assert apps[0]["state"] not in ("FINISHED", "FAILED", "KILLED"), (
            f"{apps[0]['id']} ended before the kill: {apps[0]['diagnostics']}\n"
            f"{_tail(_driver_log(yarn, apps[0]['id'], 'stderr'))}")
        return apps[0] if apps[0]["state"] == "RUNNING" else None

    app = _wait(f"the application tagged {tag} to be RUNNING", RUNNING_TIMEOUT, running)
    assert app["user"] == "bob"
    assert app["queue"].split(".")[-1] == "default"

    _kill(yarn, app["id"])
    killed = _wait(f"{app['id']} to be KILLED", KILL_TIMEOUT,
                   lambda: next((a for a in _apps(yarn, tag) if a["state"] == "KILLED"), None))
    assert killed["finalStatus"] == "KILLED", killed

    # The driver's container is gone from the NodeManager too, not only from the RM.
    def no_containers() -> bool:
        with urllib.request.urlopen(f"{yarn['KY_YARN_NM_URL']}/ws/v1/node/containers",
                                    timeout=15) as resp:
            containers = (json.loads(resp.read())["containers"] or {}).get("container", [])
        return not [c for c in containers if app["id"][len("application"):] in c["id"]
                    and c["state"] not in ("COMPLETE", "DONE")]

    _wait(f"the containers of {app['id']} to end", KILL_TIMEOUT, no_containers)

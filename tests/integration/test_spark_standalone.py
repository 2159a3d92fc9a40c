"""The real Spark standalone cluster of ci/spark-standalone, used the way a kernel on an
SSH host will use it: a client-mode driver started over ssh as the ssh hosts' user
inside a host's network namespace, with executors on the worker in the root namespace
connecting back to it.

Needs `bash ci/ssh-hosts/start.sh 3` and then `bash ci/spark-standalone/start.sh`, which
write the state env files. The venv's python is pyenv's under /root (mode 700), which
the ssh user can't run, so the driver is Debian's /usr/bin/python3 with the pyspark
install's own pyspark.zip and py4j zip on PYTHONPATH (readable by everyone).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests import realparts

REMOTE_PY = "/usr/bin/python3"
RUN_TIMEOUT = 240  # seconds per driver run; about 10-25 s on two busy cores

# The driver: what a kernel runs once it has a Spark session. spark.local.dir is a
# directory of the ssh user's own, to show it is honoured and writable.
DRIVER = """\
import json, os, shutil, socket, sys, tempfile, time
t0 = time.monotonic()
from pyspark.sql import SparkSession

master, name, conf = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if "SPARK_LOCAL_IP" not in os.environ:
    # What a kernel can do itself: the local address a connection to the master leaves
    # from (UDP connect sends nothing), set before the JVM starts.
    host, port = master[len("spark://"):].rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, int(port)))
        os.environ["SPARK_LOCAL_IP"] = probe.getsockname()[0]
local_dir = tempfile.mkdtemp(prefix="ky-spark-local-")
try:
    builder = SparkSession.builder.master(master).appName(name)
    builder = builder.config("spark.local.dir", local_dir)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    t1 = time.monotonic()
    sc = spark.sparkContext
    total = spark.range(1000).selectExpr("sum(id)").collect()[0][0]
    t2 = time.monotonic()
    # Python code on the executors: their Python workers must start too.
    squares = sc.parallelize(range(100), 2).map(lambda x: x * x).sum()
    executors = [e.host() for e in sc._jsc.sc().statusTracker().getExecutorInfos()]
    result = {
        "sum": total, "squares": squares, "master": sc.master, "user": sc.sparkUser(),
        "hostname": socket.gethostname(), "app_id": sc.applicationId,
        "driver_host": sc.getConf().get("spark.driver.host"), "executor_hosts": executors,
        "local_dir_used": any(n.startswith("blockmgr-") for n in os.listdir(local_dir)),
        "session_s": round(t1 - t0, 2), "sum_s": round(t2 - t1, 2),
    }
    spark.stop()
finally:
    shutil.rmtree(local_dir, ignore_errors=True)
print("RESULT " + json.dumps(result), flush=True)
"""


def _master_json(spark: dict[str, str]) -> dict[str, Any]:
    with urllib.request.urlopen(spark["KY_SPARK_MASTER_WEBUI_URL"] + "/json/",
                                timeout=15) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def spark(hosts: dict[str, str]) -> dict[str, str]:
    env = realparts.env("spark-standalone")
    try:
        state = _master_json(env)
    except OSError as e:
        realparts.missing("spark-standalone", f"the Spark master's web UI "
                          f"{env['KY_SPARK_MASTER_WEBUI_URL']} does not answer ({e})")
    alive = [w for w in state["workers"] if w["state"] == "ALIVE"]
    if not alive:
        realparts.missing("spark-standalone", f"the Spark master has no ALIVE worker: "
                          f"{state['workers']} (see `bash ci/spark-standalone/logs.sh`)")
    if env["KY_SPARK_MASTER_HOST"] != hosts["KY_SSH_GATEWAY_IP"]:
        realparts.missing("spark-standalone", f"the Spark master is bound on "
                          f"{env['KY_SPARK_MASTER_HOST']}, not on the ssh hosts' bridge "
                          f"{hosts['KY_SSH_GATEWAY_IP']} (ssh hosts restarted since?)")
    return env


def kernel_env(spark: dict[str, str], host_ip: str | None) -> dict[str, str]:
    """The environment a client-mode Python kernel on the ssh host `host_ip` needs.

    SPARK_LOCAL_IP: the host's own address on the bridge. Without it the driver's JVM
    dies at start (UnknownHostException: the host's name, h1, does not resolve), and
    spark.driver.host can't help: Spark resolves the name before it reads its conf.
    The driver binds on that address and advertises it (spark.driver.host) to the
    executors, which connect back to it. With host_ip None the driver script derives
    it from the route to the master, as a kernel's startup code can.
    """
    env = {} if host_ip is None else {"SPARK_LOCAL_IP": host_ip}
    return env | {
        "SPARK_HOME": spark["KY_SPARK_HOME"],
        "JAVA_HOME": spark["JAVA_HOME"],
        "PYTHONPATH": spark["KY_SPARK_DRIVER_PYTHONPATH"],
        # The Python the executors (on the worker, as root) run for Python code; the
        # same minor version as the driver's.
        "PYSPARK_PYTHON": REMOTE_PY,
    }


# Spark conf for kernels: no driver web UI, and C1-only JVMs, which start the driver
# and the executors about twice as fast on two cores (peak speed doesn't matter in CI).
KERNEL_CONF = {
    "spark.ui.enabled": "false",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
    "spark.executor.extraJavaOptions": "-XX:TieredStopAtLevel=1",
}


def _start_driver(hosts: dict[str, str], spark: dict[str, str], host_ip: str,
                  app_name: str, local_ip_given: bool = True) -> subprocess.Popen[str]:
    """Start DRIVER over ssh as the hosts' user on host_ip (_finish sends it on stdin)."""
    env = kernel_env(spark, host_ip if local_ip_given else None)
    remote = " ".join([
        "cd && exec env", *(f"{k}={shlex.quote(v)}" for k, v in env.items()),
        REMOTE_PY, "-", shlex.quote(spark["KY_SPARK_MASTER_URL"]), shlex.quote(app_name),
        shlex.quote(json.dumps(KERNEL_CONF)),
    ])
    argv = ["ssh", "-i", hosts["KY_SSH_KEY"], "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={hosts['KY_SSH_KNOWN_HOSTS']}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10", f"{hosts['KY_SSH_USER']}@{host_ip}", remote]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    try:
        out, err = proc.communicate(DRIVER, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{what}: no result after {RUN_TIMEOUT} s; stderr ends:\n"
                             f"{_tail(err)}\nsee also bash ci/spark-standalone/logs.sh") from None
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"{what}: exit {proc.returncode}, stdout:\n{_tail(out)}\nstderr:\n{_tail(err)}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result


def _tail(text: str, n: int = 40) -> str:
    # The console progress bar redraws with \r.
    return "\n".join(text.replace("\r", "\n").splitlines()[-n:])


def _check(result: dict[str, Any], spark: dict[str, str], hosts: dict[str, str],
           host_ip: str) -> None:
    assert result["sum"] == 499500, result
    assert result["squares"] == sum(x * x for x in range(100)), result
    assert result["master"].startswith("spark://"), result
    assert result["master"] == spark["KY_SPARK_MASTER_URL"], result
    assert result["user"] == hosts["KY_SSH_USER"], result
    assert result["hostname"].startswith("h"), result  # the ssh host's own UTS name
    assert result["driver_host"] == host_ip, result
    # The executors ran on the worker, in the root namespace.
    assert spark["KY_SPARK_MASTER_HOST"] in result["executor_hosts"], result
    assert result["local_dir_used"], result


def _app(spark: dict[str, str], app_id: str) -> dict[str, Any]:
    state = _master_json(spark)
    apps = {a["id"]: a for a in state["activeapps"] + state["completedapps"]}
    assert app_id in apps, f"{app_id} unknown to the master: {sorted(apps)}"
    return apps[app_id]


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_client_mode_driver_inside_an_ssh_host(hosts: dict[str, str],
                                               spark: dict[str, str]) -> None:
    host_ip = hosts["KY_SSH_HOSTS"].split(",")[0]
    name = f"ky-test-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    result = _finish(_start_driver(hosts, spark, host_ip, name), f"driver on {host_ip}")
    elapsed = time.monotonic() - t0
    _check(result, spark, hosts, host_ip)
    app = _app(spark, result["app_id"])
    assert (app["name"], app["user"]) == (name, hosts["KY_SSH_USER"]), app
    print(f"client mode on {host_ip}: session {result['session_s']} s, first job "
          f"{result['sum_s']} s, whole run over ssh {elapsed:.1f} s")


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_two_kernels_at_once_on_two_hosts(hosts: dict[str, str],
                                          spark: dict[str, str]) -> None:
    # An application that sets no spark.cores.max gets the master's default cores
    # (1 of 2), so a second kernel is not left waiting for the first one's cores.
    # Here the drivers find their SPARK_LOCAL_IP themselves.
    h1, h2 = hosts["KY_SSH_HOSTS"].split(",")[:2]
    tag = uuid.uuid4().hex[:8]
    procs = {ip: _start_driver(hosts, spark, ip, f"ky-test-{tag}-{ip}", local_ip_given=False)
             for ip in (h1, h2)}
    # Both read at once: a driver blocked on a full pipe would stall.
    with ThreadPoolExecutor(2) as pool:
        futures = {ip: pool.submit(_finish, proc, f"driver on {ip}") for ip, proc in procs.items()}
        results = {ip: f.result() for ip, f in futures.items()}
    for ip, result in results.items():
        _check(result, spark, hosts, ip)
        assert _app(spark, result["app_id"])["cores"] == 1, _app(spark, result["app_id"])
    assert results[h1]["hostname"] != results[h2]["hostname"], results

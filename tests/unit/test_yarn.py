"""Pure parts of the YARN backend: request checks, queue trees, config parsing."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernelyard.errors import BackendUnavailable, ConfigError, InvalidRequest
from kernelyard.provisioners import spark_submit
from kernelyard.provisioners.yarn import YarnProvisioner
from kernelyard.provisioners.yarn_rm import (
    ResourceManager,
    YarnApp,
    _collect_leaves,
    _log_contents,
    rm_urls_from_hadoop_conf,
)
from kernelyard.resources import Resources, parse_request

SETTINGS = {"max_driver_memory": "4g", "max_executor_memory": "8g", "max_cores": 4,
            "max_executors": 10, "allowed_spark_conf": ["spark.sql.*"]}


def checked(env: dict[str, str], **settings: Any) -> Resources:
    """A request as the policy parses it, checked by a YARN kernelspec's level."""
    resources = parse_request(env)
    YarnProvisioner(**{**SETTINGS, **settings}).check_resources(resources, "alice", "spark")
    return resources


def options(env: dict[str, str], **settings: Any) -> list[str]:
    provisioner = YarnProvisioner(**{**SETTINGS, **settings})
    return spark_submit.submit_options(checked(env, **settings), provisioner._defaults())


@pytest.mark.parametrize(("env", "driver"), [
    ({"KERNEL_DRIVER_MEMORY": "512m"}, "512m"), ({"KERNEL_DRIVER_MEMORY": "2g"}, "2048m"),
    ({"KERNEL_MEMORY": "2G"}, "2048m"), ({"KERNEL_DRIVER_MEMORY": "1.5g"}, "1536m"),
    ({"KERNEL_DRIVER_MEMORY": "1gb"}, "1024m"), ({"KERNEL_MEMORY": "1024k"}, "1m"),
    ({}, "1024m"),  # the kernelspec's driver_memory (1g)
])
def test_memory_sizes_in_the_one_grammar(env: dict[str, str], driver: str) -> None:
    """Issue 11: 1.5g and 1gb, refused by the old YARN parser, are the group limits' grammar."""
    got = options(env)
    assert got[got.index("--driver-memory") + 1] == driver


@pytest.mark.parametrize("text", ["", "0m", "-1g", "1 g", "g", "12345678m", "4097m"])
def test_bad_memory_sizes_name_the_variable(text: str) -> None:
    env = {"KERNEL_DRIVER_MEMORY": text or "x"}
    with pytest.raises(InvalidRequest, match="KERNEL_DRIVER_MEMORY"):
        checked(env)


def test_request_within_limits_overrides_the_kernelspec() -> None:
    env = {"KERNEL_QUEUE": "analytics", "KERNEL_DRIVER_MEMORY": "4G",
           "KERNEL_EXECUTOR_CORES": "4", "KERNEL_NUM_EXECUTORS": "0",
           "KERNEL_SPARK_CONF": json.dumps({"spark.sql.shuffle.partitions": 8,
                                            "spark.sql.ansi.enabled": True})}
    got = options(env, spark_conf={"spark.a": "1"})
    assert got == ["--queue", "analytics", "--driver-memory", "4096m", "--driver-cores", "1",
                   "--executor-memory", "1024m", "--executor-cores", "4"]
    conf = spark_submit.spark_conf(parse_request(env), YarnProvisioner(
        spark_conf={"spark.a": "1"})._defaults())
    assert {k: v for k, v in conf.items() if not k.startswith("spark.dynamic")} == {
        "spark.a": "1", "spark.sql.shuffle.partitions": "8", "spark.sql.ansi.enabled": "true"}
    assert conf["spark.dynamicAllocation.minExecutors"] == "0"
    assert "--num-executors" in options({"KERNEL_NUM_EXECUTORS": "3"})


@pytest.mark.parametrize(("env", "names"), [
    ({"KERNEL_DRIVER_MEMORY": "5g"}, "KERNEL_DRIVER_MEMORY=5g is more than alice may request "
     "(4g, the limit of kernelspec 'spark' (YarnProvisioner.max_driver_memory))"),
    ({"KERNEL_MEMORY": "5g"}, "KERNEL_MEMORY=5g is more than alice"),
    ({"KERNEL_EXECUTOR_MEMORY": "9g"}, "KERNEL_EXECUTOR_MEMORY"),
    ({"KERNEL_DRIVER_CORES": "0"}, "KERNEL_DRIVER_CORES=0: Spark's driver takes whole cores"),
    ({"KERNEL_CPUS": "1.5"}, "KERNEL_CPUS=1.5: Spark's driver takes whole cores"),
    ({"KERNEL_DRIVER_CORES": "5"}, "KERNEL_DRIVER_CORES=5 is more than alice may request "
     "(4, the limit of kernelspec 'spark' (YarnProvisioner.max_cores))"),
    ({"KERNEL_NUM_EXECUTORS": "11"}, "KERNEL_NUM_EXECUTORS=11"),
    ({"KERNEL_NUM_EXECUTORS": "two"}, "KERNEL_NUM_EXECUTORS must be a whole number"),
    ({"KERNEL_QUEUE": "a/b"}, "KERNEL_QUEUE"),
    ({"KERNEL_GPUS": "1"}, "KERNEL_GPUS is not supported by kernelspec 'spark'"),
    ({"KERNEL_WALLTIME": "1h"}, "KERNEL_WALLTIME is not supported"),
    ({"KERNEL_MEMORY_LIMIT": "2g"}, "KERNEL_MEMORY_LIMIT is not supported"),
    ({"KERNEL_SPARK_CONF": "[1]"}, "JSON object"),
    ({"KERNEL_SPARK_CONF": '{"spark.driver.extraJavaOptions": "-X"}'},
     "spark.driver.extraJavaOptions may not be set"),
    ({"KERNEL_SPARK_CONF": '{"spark.sql.x": "a\\nb"}'}, "control characters"),
    ({"KERNEL_SPARK_CONF": '{"spark.sql.x": "a\\u2028b"}'}, "control characters"),
])
def test_requests_outside_the_limits_are_400s(env: dict[str, str], names: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(names)):
        checked(env)


def test_gpus_zero_is_no_gpus() -> None:
    assert checked({"KERNEL_GPUS": "0"}).gpus == 0


def test_allowed_queues() -> None:
    assert checked({"KERNEL_QUEUE": "default"}, allowed_queues=["default"]).queue == "default"
    with pytest.raises(InvalidRequest, match="KERNEL_QUEUE=analytics is not a queue alice"):
        checked({"KERNEL_QUEUE": "analytics"}, allowed_queues=["default"])


def test_resource_limits_override_the_older_spellings() -> None:
    limits = {"KERNEL_MEMORY": "8g", "KERNEL_SPARK_CONF": ["spark.x.*"]}
    assert checked({"KERNEL_DRIVER_MEMORY": "8g"}, resource_limits=limits).memory == 8192
    checked({"KERNEL_SPARK_CONF": '{"spark.x.y": 1}'}, resource_limits=limits)
    with pytest.raises(InvalidRequest,
                       match=r"KERNEL_MEMORY=9g .*YarnProvisioner\.resource_limits"):
        checked({"KERNEL_MEMORY": "9g"}, resource_limits=limits)
    with pytest.raises(ConfigError, match=r"YarnProvisioner\.resource_limits"):
        checked({}, resource_limits={"KERNEL_MEMORY": "lots"})


def test_a_bad_kernelspec_size_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"YarnProvisioner\.driver_memory"):
        options({}, driver_memory="1 g")


def test_capacity_scheduler_leaf_queues() -> None:
    info = {"type": "capacityScheduler", "queueName": "root", "queues": {"queue": [
        {"queueName": "default"},
        {"queueName": "eng", "queues": {"queue": [{"queueName": "etl"},
                                                   {"queueName": "adhoc"}]}}]}}
    names: set[str] = set()
    _collect_leaves(info, "root", names)
    assert names == {"default", "root.default", "etl", "root.eng.etl", "adhoc",
                     "root.eng.adhoc"}


def test_fair_scheduler_leaf_queues() -> None:
    info = {"type": "fairScheduler", "rootQueue": {"queueName": "root", "childQueues": {
        "queue": [{"queueName": "root.default"}, {"queueName": "root.analytics"}]}}}
    names: set[str] = set()
    _collect_leaves(info, "root", names)
    assert names == {"default", "root.default", "analytics", "root.analytics"}


def _yarn_site(folder: Path, props: dict[str, str]) -> str:
    rows = "".join(f"<property><name>{k}</name><value>{v}</value></property>"
                   for k, v in props.items())
    (folder / "yarn-site.xml").write_text(f"<configuration>{rows}</configuration>")
    return str(folder)


def test_rm_urls_from_yarn_site(tmp_path: Path) -> None:
    assert rm_urls_from_hadoop_conf(_yarn_site(tmp_path, {
        "yarn.resourcemanager.webapp.address": "rm:8188"})) == ["http://rm:8188"]
    assert rm_urls_from_hadoop_conf(_yarn_site(tmp_path, {
        "yarn.resourcemanager.hostname": "rm"})) == ["http://rm:8088"]
    assert rm_urls_from_hadoop_conf(_yarn_site(tmp_path, {
        "yarn.resourcemanager.ha.rm-ids": "rm1,rm2",
        "yarn.resourcemanager.hostname.rm1": "a", "yarn.resourcemanager.hostname.rm2": "b",
        "yarn.http.policy": "HTTPS_ONLY",
        "yarn.resourcemanager.webapp.https.address.rm2": "b:9999"})) == [
        "https://a:8090", "https://b:9999"]


def test_rm_urls_without_config_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"yarn-site\.xml"):
        rm_urls_from_hadoop_conf(str(tmp_path))


def test_app_from_rm_json_and_log_contents() -> None:
    app = YarnApp.from_json({"id": "application_1_0002", "state": "RUNNING",
                             "applicationTags": "kernelyard-kernel-x,inst",
                             "amHostHttpAddress": "node1:8042", "startedTime": 5})
    assert app.active and app.tags == {"kernelyard-kernel-x", "inst"} and app.am_host == "node1"
    text = ("Container: c on n\nLogType:stderr\nLogContents:\nboom\n\tat a.b(C.java:1)\n"
            "Caused by: x\nEnd of LogType:stderr.\n****")
    assert _log_contents(text) == "boom\nCaused by: x"


class _Fixed(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the server's canned status and body (failure injection)."""

    def do_GET(self) -> None:
        status, body = self.server.canned  # type: ignore[attr-defined]
        self.send_response(status)
        if status == 307:
            self.send_header("Location", "http://active-rm:8088" + self.path)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)
        self.server.hits += 1  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rm_servers() -> Iterator[Callable[[int, bytes], str]]:
    servers: list[http.server.HTTPServer] = []

    def serve(status: int, body: bytes) -> str:
        server = http.server.HTTPServer(("127.0.0.1", 0), _Fixed)
        server.canned = (status, body)  # type: ignore[attr-defined]
        server.hits = 0  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_standby_rm_is_skipped_and_the_active_one_remembered(
        rm_servers: Callable[[int, bytes], str]) -> None:
    apps = json.dumps({"apps": {"app": [{"id": "application_1_0001", "state": "RUNNING",
                                         "applicationTags": "t"}]}}).encode()
    standby, active = rm_servers(307, b""), rm_servers(200, apps)
    rm = ResourceManager([standby, active], timeout=5)
    assert [a.id for a in asyncio.run(rm.apps("t"))] == ["application_1_0001"]
    assert [a.id for a in asyncio.run(rm.apps("t"))] == ["application_1_0001"]
    assert rm.requests == 3  # the standby once, then the active RM directly


def test_no_rm_answering_is_backend_unavailable(
        rm_servers: Callable[[int, bytes], str]) -> None:
    down = "http://127.0.0.1:9"  # discard port: nothing listens
    broken = rm_servers(500, b"{}")
    with pytest.raises(BackendUnavailable, match="unreachable") as caught:
        asyncio.run(ResourceManager([down, broken], timeout=5).leaf_queues())
    assert down in str(caught.value) and broken in str(caught.value)

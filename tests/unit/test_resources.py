"""The one resource model: its grammar (golden tables), the model, the two limit levels."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernelyard import resources as res
from kernelyard.errors import ConfigError, InvalidRequest, LimitReached

# --- The grammar: golden tables ------------------------------------------------------------

MEMORY_ACCEPTED = [
    ("512m", 512), ("512M", 512), ("512mb", 512), ("512MiB", 512), ("512mi", 512),
    ("2g", 2048), ("2G", 2048), ("2gb", 2048), ("2Gi", 2048), ("2GiB", 2048),
    ("1.5g", 1536), ("1.25g", 1280), ("1.1g", 1127), ("0.5m", 1), ("1024", 1024),
    ("1.5", 2), ("0", 0), ("0g", 0), ("1024k", 1), ("1536k", 2), ("1k", 1), ("1t", 1024**2),
    ("1p", 1024**3), ("1048576b", 1), ("1b", 1), ("3145728B", 3), (" 2g ", 2048),
    ("0010m", 10), ("9" * 30 + "m", 10**30 - 1), ("12345678m", 12345678),
]
MEMORY_REFUSED = [
    "", " ", "g", "m", "mb", "-1g", "+1g", "1e3m", "1.5.5g", "1g2", "0x10m", "1_000m",
    "\u0661\u0662m", "nan", "inf", "2 g", "2gg", "2mbb", "2x", "2bb", "2ib", ".5g", "5.g",
    "1,5g", "2\u212a", "1" * 33, "1g\n", None, 5, 1.5, ["2g"], True,
]
CPUS_ACCEPTED = [("1", Fraction(1)), ("2", Fraction(2)), ("0.5", Fraction(1, 2)),
                 ("500m", Fraction(1, 2)), ("1500m", Fraction(3, 2)), ("0", Fraction(0)),
                 ("0.001", Fraction(1, 1000)), (" 4 ", Fraction(4))]
CPUS_REFUSED = ["", "x", "-1", "+1", "1.5m", "1e2", "1/2", ".5", "2 cpus", "1k", None, 2]
COUNT_ACCEPTED = [("0", 0), ("1", 1), ("10", 10), ("007", 7), (" 2 ", 2)]
COUNT_REFUSED = ["", "1.5", "-1", "+2", "x", "\u0661", "1e3", "2\t", None, 1]
WALLTIME_ACCEPTED = [("90s", 90), ("30m", 1800), ("8h", 28800), ("1d", 86400),
                     ("1:30:00", 5400), ("0:00:59", 59), ("100:00:00", 360000)]
WALLTIME_REFUSED = ["", "30", "1.5h", "1w", "1:60:00", "1:00", "-1h", "h", "1 h", None]


def var(kind: str) -> res.Variable:
    return res.Variable("KERNEL_X", "x", kind)


@pytest.mark.parametrize(("text", "mib"), MEMORY_ACCEPTED)
def test_memory_sizes(text: str, mib: int) -> None:
    assert res.parse_memory_mib(text) == mib


@pytest.mark.parametrize("junk", MEMORY_REFUSED)
def test_memory_junk_is_refused_naming_the_variable(junk: Any) -> None:
    with pytest.raises(InvalidRequest, match="KERNEL_DRIVER_MEMORY must be a memory size"):
        res.parse_memory_mib(junk, "KERNEL_DRIVER_MEMORY")


@pytest.mark.parametrize(("kind", "text", "value"), [
    *[(res.CPUS, t, v) for t, v in CPUS_ACCEPTED],
    *[(res.COUNT, t, v) for t, v in COUNT_ACCEPTED],
    *[(res.DURATION, t, v) for t, v in WALLTIME_ACCEPTED]])
def test_numbers(kind: str, text: str, value: Any) -> None:
    assert res.parse_value(var(kind), text) == value


@pytest.mark.parametrize(("kind", "junk"), [
    *[(res.CPUS, t) for t in CPUS_REFUSED], *[(res.COUNT, t) for t in COUNT_REFUSED],
    *[(res.DURATION, t) for t in WALLTIME_REFUSED]])
def test_number_junk_names_the_variable_and_the_rule(kind: str, junk: Any) -> None:
    with pytest.raises(InvalidRequest, match=f"KERNEL_X must be {res.RULES[kind]}"):
        res.parse_value(var(kind), junk)


@given(st.integers(min_value=0, max_value=10**12))
def test_memory_units_scale_exactly(n: int) -> None:
    assert res.parse_memory_mib(f"{n}m") == n
    assert res.parse_memory_mib(f"{n}G") == n * 1024
    assert res.parse_memory_mib(f"{n}k") == -(-n // 1024)
    assert res.parse_memory_mib(f"{n}.5g") == n * 1024 + 512


@given(st.text(max_size=12))
def test_the_parsers_never_fail_otherwise(text: str) -> None:
    for kind in (res.MEMORY, res.CPUS, res.COUNT, res.DURATION, res.NAME):
        try:
            res.parse_value(var(kind), text)
        except InvalidRequest:
            pass


# --- The model, parsed once ----------------------------------------------------------------

def test_every_variable_sets_its_field() -> None:
    got = res.parse_request({
        "KERNEL_MEMORY": "1.5g", "KERNEL_MEMORY_LIMIT": "2Gi", "KERNEL_CPUS": "500m",
        "KERNEL_CPUS_LIMIT": "1", "KERNEL_GPUS": "1", "KERNEL_GPUS_LIMIT": "2",
        "KERNEL_QUEUE": "analytics", "KERNEL_WALLTIME": "8h", "KERNEL_EXECUTOR_MEMORY": "2g",
        "KERNEL_EXECUTOR_CORES": "2", "KERNEL_NUM_EXECUTORS": "3",
        "KERNEL_SPARK_CONF": '{"spark.sql.ansi.enabled": true, "spark.sql.x": 8}',
        "KERNEL_OTHER": "ignored"})
    assert (got.memory, got.memory_limit, got.cpus, got.cpus_limit) == (
        1536, 2048, Fraction(1, 2), 1)
    assert (got.gpus, got.gpus_limit, got.queue, got.walltime) == (1, 2, "analytics", 28800)
    assert (got.executor_memory, got.executor_cores, got.num_executors) == (2048, 2, 3)
    assert got.spark_conf == (("spark.sql.ansi.enabled", "true"), ("spark.sql.x", "8"))
    assert got.variable("memory") == "KERNEL_MEMORY" and got.text("memory") == "1.5g"
    assert len(got.requested()) == 12


def test_spark_names_are_the_kernels_memory_and_cpus() -> None:
    got = res.parse_request({"KERNEL_DRIVER_MEMORY": "2g", "KERNEL_DRIVER_CORES": "2"})
    assert (got.memory, got.cpus) == (2048, 2)
    assert got.variable("memory") == "KERNEL_DRIVER_MEMORY"
    same = res.parse_request({"KERNEL_MEMORY": "2048m", "KERNEL_DRIVER_MEMORY": "2g"})
    assert same.memory == 2048
    with pytest.raises(InvalidRequest, match="KERNEL_MEMORY and KERNEL_DRIVER_MEMORY"):
        res.parse_request({"KERNEL_MEMORY": "1g", "KERNEL_DRIVER_MEMORY": "2g"})


def test_nothing_asked_is_an_empty_model() -> None:
    assert res.parse_request({}) == res.Resources()
    assert res.parse_request({"KERNEL_MEMORY": "", "KERNEL_GPUS": ""}).requested() == []


@pytest.mark.parametrize(("env", "message"), [
    ({"KERNEL_MEMORY": "lots"}, "KERNEL_MEMORY must be a memory size"),
    ({"KERNEL_GPUS": "0.5"}, "KERNEL_GPUS must be a whole number"),
    ({"KERNEL_QUEUE": "a/b"}, "KERNEL_QUEUE must be a queue name"),
    ({"KERNEL_QUEUE": "default\n"}, "KERNEL_QUEUE must be a queue name"),
    ({"KERNEL_MEMORY": "2g", "KERNEL_MEMORY_LIMIT": "1g"},
     "KERNEL_MEMORY_LIMIT=1g is below KERNEL_MEMORY=2g"),
    ({"KERNEL_SPARK_CONF": "[1]"}, "JSON object"),
    ({"KERNEL_SPARK_CONF": "{"}, "JSON object"),
    ({"KERNEL_SPARK_CONF": '{"spark.sql.x": {"a": 1}}'}, "not a Spark conf entry"),
    ({"KERNEL_SPARK_CONF": '{"hadoop.x": "1"}'}, "not a Spark conf entry"),
    ({"KERNEL_SPARK_CONF": '{"spark.sql.x\\n": "1"}'}, "not a Spark conf entry"),
    ({"KERNEL_SPARK_CONF": '{"spark.sql.x": "' + "a" * 1025 + '"}'}, "too long"),
])
def test_malformed_requests_are_400s_naming_the_variable(env: dict[str, str],
                                                         message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        res.parse_request(env)


# --- Limits: one system, two levels --------------------------------------------------------

def group_limits(table: dict[str, dict[str, Any]]) -> dict[str, res.Limit]:
    return res.most_generous({group: res.parse_limits(entry, "g", f"the limit of group "
                                                      f"{group!r}")
                              for group, entry in table.items()})


def test_a_limit_on_either_spelling_limits_both() -> None:
    limits = group_limits({"*": {"KERNEL_DRIVER_MEMORY": "2g"}})
    for name in ("KERNEL_MEMORY", "KERNEL_DRIVER_MEMORY"):
        res.check_limits(res.parse_request({name: "1.5g"}), limits, "carol")
        with pytest.raises(LimitReached, match=f"{name}=2049m is more than carol may request "
                           r"\(2g, the limit of group '\*'\)"):
            res.check_limits(res.parse_request({name: "2049m"}), limits, "carol")


def test_the_most_generous_group_wins_ties_go_to_the_first() -> None:
    limits = group_limits({"b": {"KERNEL_CPUS": 4, "KERNEL_QUEUE": ["etl"]},
                           "a": {"KERNEL_CPUS": "4", "KERNEL_QUEUE": "adhoc"},
                           "c": {"KERNEL_CPUS": "500m"}})
    assert limits["cpus"].source == "the limit of group 'a'" and limits["cpus"].amount == 4
    assert limits["queue"].amount == ("adhoc", "etl")


@pytest.mark.parametrize(("env", "ok"), [
    ({"KERNEL_CPUS": "4"}, True), ({"KERNEL_CPUS": "4001m"}, False),
    ({"KERNEL_GPUS": "0"}, True), ({"KERNEL_GPUS": "1"}, False),
    ({"KERNEL_WALLTIME": "8h"}, True), ({"KERNEL_WALLTIME": "8:00:01"}, False),
    ({"KERNEL_QUEUE": "etl"}, True), ({"KERNEL_QUEUE": "prod"}, False),
    ({"KERNEL_SPARK_CONF": '{"spark.sql.x": 1}'}, True),
    ({"KERNEL_SPARK_CONF": '{"spark.driver.extraJavaOptions": "-X"}'}, False),
    ({"KERNEL_EXECUTOR_MEMORY": "64g"}, True),  # not limited
])
def test_kernelspec_level(env: dict[str, str], ok: bool) -> None:
    limits = res.parse_limits({"KERNEL_CPUS": 4, "KERNEL_GPUS": 0, "KERNEL_WALLTIME": "8h",
                               "KERNEL_QUEUE": ["etl"], "KERNEL_SPARK_CONF": ["spark.sql.*"]},
                              "X.resource_limits", "the limit of kernelspec 's'")
    asked = res.parse_request(env)
    if ok:
        res.check_limits(asked, limits, "alice", InvalidRequest)
    else:
        with pytest.raises(InvalidRequest, match="kernelspec 's'"):
            res.check_limits(asked, limits, "alice", InvalidRequest)


@pytest.mark.parametrize("entry", [
    {"KERNEL_MEMORY": "lots"}, {"KERNEL_CPUS": -1}, {"KERNEL_CPUS": True},
    {"KERNEL_CPUS": 1.5}, ["KERNEL_CPUS"], {"KERNEL_MEMORY": -5}, {"KERNEL_QUEUE": 3},
    {"KERNEL_SPARK_CONF": [1]}, {"KERNEL_FOO_MEMORY": "1g"},
])
def test_malformed_limits_are_config_errors_naming_the_setting(entry: Any) -> None:
    with pytest.raises(ConfigError, match=r"X\.resource_limits"):
        res.parse_limits(entry, "X.resource_limits", "s")


def test_an_int_memory_limit_is_mib() -> None:
    limits = res.parse_limits({"KERNEL_EXECUTOR_MEMORY": 4096}, "w", "s")
    res.check_limits(res.parse_request({"KERNEL_EXECUTOR_MEMORY": "4g"}), limits, "x")
    with pytest.raises(LimitReached):
        res.check_limits(res.parse_request({"KERNEL_EXECUTOR_MEMORY": "4097m"}), limits, "x")


# --- What a backend can't honour -----------------------------------------------------------

@pytest.mark.parametrize("name", ["kernelyard.provisioners.local:LocalKernelProvisioner",
                                  "kernelyard.provisioners.ssh:SSHProvisioner"])
@pytest.mark.parametrize(("env", "refused"), [
    ({"KERNEL_GPUS": "1"}, "KERNEL_GPUS"), ({"KERNEL_GPUS_LIMIT": "1"}, "KERNEL_GPUS_LIMIT"),
    ({"KERNEL_WALLTIME": "1h"}, "KERNEL_WALLTIME"), ({"KERNEL_GPUS": "0"}, None),
    ({"KERNEL_MEMORY": "2g", "KERNEL_CPUS": "2"}, None),  # accepted, not enforced (docs)
])
def test_local_and_ssh_refuse_what_they_cannot_honour(name: str, env: dict[str, str],
                                                      refused: str | None) -> None:
    import importlib

    module, cls = name.split(":")
    provisioner = getattr(importlib.import_module(module), cls)()
    asked = res.parse_request(env)
    if refused is None:
        provisioner.check_resources(asked, "alice", "spec")
        return
    with pytest.raises(InvalidRequest, match=f"{refused} is not supported by kernelspec 'spec' "
                       f"\\({cls} cannot honour it\\)"):
        provisioner.check_resources(asked, "alice", "spec")


def test_a_kernelspec_limit_comes_from_its_provisioner_config() -> None:
    from kernelyard.provisioners.local import LocalKernelProvisioner

    provisioner = LocalKernelProvisioner(resource_limits={"KERNEL_MEMORY": "1g"})
    provisioner.check_resources(res.parse_request({"KERNEL_MEMORY": "1g"}), "alice", "py")
    with pytest.raises(InvalidRequest, match=r"KERNEL_DRIVER_MEMORY=2g is more than alice may "
                       r"request \(1g, the limit of kernelspec 'py' "
                       r"\(LocalKernelProvisioner\.resource_limits\)\)"):
        provisioner.check_resources(res.parse_request({"KERNEL_DRIVER_MEMORY": "2g"}),
                                    "alice", "py")

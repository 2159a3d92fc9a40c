"""The resource model mapped to spark-submit options (Spark on YARN, cluster mode).

The kernel is Spark's driver: ``memory`` (``KERNEL_MEMORY`` or
``KERNEL_DRIVER_MEMORY``) is ``--driver-memory`` and ``cpus`` (``KERNEL_CPUS`` or
``KERNEL_DRIVER_CORES``, whole cores) ``--driver-cores``. ``queue``, the executor
fields and ``spark_conf`` map to their options; a field the kernelspec's request
leaves unset takes the kernelspec's value (``SparkDefaults``). GPUs, walltime and
the ``*_LIMIT`` ceilings have no spark-submit option here: requesting them is a 400.
Only argv lists come out of this module: no shell ever sees a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from ..errors import ConfigError, InvalidRequest
from ..kernel_env import unsafe_character
from ..resources import Resources, parse_memory_mib

SUPPORTED = frozenset({"memory", "cpus", "queue", "executor_memory", "executor_cores",
                       "num_executors", "spark_conf"})


@dataclass(frozen=True)
class SparkDefaults:
    """A kernelspec's own Spark resources (its ``YarnProvisioner`` settings)."""

    queue: str = "default"
    driver_memory: str = "1g"
    driver_cores: int = 1
    executor_memory: str = "1g"
    executor_cores: int = 1
    num_executors: int = 0
    conf: Mapping[str, str] = field(default_factory=dict)


def check(resources: Resources) -> None:
    """``InvalidRequest`` for what spark-submit can't take (named by its variable)."""
    if resources.cpus is not None and (resources.cpus.denominator != 1 or resources.cpus < 1):
        raise InvalidRequest(f"{resources.variable('cpus')}={resources.text('cpus')}: Spark's "
                             "driver takes whole cores, at least 1")
    for name in ("memory", "executor_memory", "executor_cores"):
        if getattr(resources, name) == 0:
            raise InvalidRequest(f"{resources.variable(name)} must be more than 0 for Spark")
    for key, value in resources.spark_conf or ():
        if unsafe_character(value) is not None:
            raise InvalidRequest(f"KERNEL_SPARK_CONF: the value of {key} has control "
                                 "characters")


def submit_options(resources: Resources, defaults: SparkDefaults) -> list[str]:
    """spark-submit options (an argv fragment) for ``resources`` over ``defaults``."""
    check(resources)
    cores = resources.cpus if resources.cpus is not None else Fraction(defaults.driver_cores)
    args = ["--queue", resources.queue or defaults.queue,
            "--driver-memory", _mib(resources.memory, defaults.driver_memory, "driver_memory"),
            "--driver-cores", str(int(cores)),
            "--executor-memory", _mib(resources.executor_memory, defaults.executor_memory,
                                      "executor_memory"),
            "--executor-cores", str(_or(resources.executor_cores, defaults.executor_cores))]
    executors = _or(resources.num_executors, defaults.num_executors)
    if executors:
        args += ["--num-executors", str(executors)]
    return args


def spark_conf(resources: Resources, defaults: SparkDefaults) -> dict[str, str]:
    """The Spark conf of the request over the kernelspec's (dynamic allocation included)."""
    dynamic = {} if _or(resources.num_executors, defaults.num_executors) else {
        "spark.dynamicAllocation.enabled": "true",
        "spark.dynamicAllocation.shuffleTracking.enabled": "true",
        "spark.dynamicAllocation.minExecutors": "0",
        "spark.dynamicAllocation.initialExecutors": "0"}
    return {**dynamic, **defaults.conf, **dict(resources.spark_conf or ())}


def _or(asked: int | None, default: int) -> int:
    return default if asked is None else asked


def _mib(asked: int | None, default: str, setting: str) -> str:
    if asked is None:
        try:
            asked = parse_memory_mib(default, setting)
        except InvalidRequest as e:
            raise ConfigError(f"YarnProvisioner.{e.message}") from None
    return f"{asked}m"

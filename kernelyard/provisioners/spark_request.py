"""What a client may ask of a Spark kernel, checked against the kernelspec's limits.

Request variables (all optional; the kernelspec's values are the defaults):

``KERNEL_QUEUE``            the YARN queue
``KERNEL_DRIVER_MEMORY``    e.g. ``1g``, ``768m``
``KERNEL_DRIVER_CORES``     an integer
``KERNEL_EXECUTOR_MEMORY``  e.g. ``2g``
``KERNEL_EXECUTOR_CORES``   an integer
``KERNEL_NUM_EXECUTORS``    an integer; 0 means dynamic allocation from zero
``KERNEL_SPARK_CONF``       a JSON object of Spark conf, keys from the allow-list only
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InvalidRequest
from ..kernel_env import unsafe_character

_MEMORY = re.compile(r"^([1-9][0-9]{0,6})([kmgt])$", re.IGNORECASE)
_MB_PER_UNIT = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
_CONF_KEY = re.compile(r"^spark\.[A-Za-z0-9_.-]{1,200}$")
MAX_CONF_VALUE = 1024


@dataclass(frozen=True)
class SparkLimits:
    """The most a request may ask for (from the provisioner's settings)."""

    max_driver_memory: str = "4g"
    max_executor_memory: str = "8g"
    max_cores: int = 4
    max_executors: int = 10
    allowed_conf: tuple[str, ...] = ()
    allowed_queues: tuple[str, ...] = ()


@dataclass(frozen=True)
class SparkResources:
    """One kernel's Spark resources, as spark-submit gets them."""

    queue: str = "default"
    driver_memory: str = "1g"
    driver_cores: int = 1
    executor_memory: str = "1g"
    executor_cores: int = 1
    num_executors: int = 0
    conf: Mapping[str, str] = field(default_factory=dict)

    def submit_args(self) -> list[str]:
        """spark-submit options (an argv fragment: no shell ever sees it)."""
        args = ["--queue", self.queue, "--driver-memory", self.driver_memory,
                "--driver-cores", str(self.driver_cores),
                "--executor-memory", self.executor_memory,
                "--executor-cores", str(self.executor_cores)]
        if self.num_executors:
            args += ["--num-executors", str(self.num_executors)]
        return args

    def dynamic_allocation_conf(self) -> dict[str, str]:
        """With no fixed executors, executors come and go with the notebook's jobs."""
        if self.num_executors:
            return {}
        return {"spark.dynamicAllocation.enabled": "true",
                "spark.dynamicAllocation.shuffleTracking.enabled": "true",
                "spark.dynamicAllocation.minExecutors": "0",
                "spark.dynamicAllocation.initialExecutors": "0"}


def memory_mb(text: str, name: str) -> float:
    """A Spark memory size (``512m``, ``2g``) in MB; InvalidRequest naming ``name`` if not one."""
    found = _MEMORY.fullmatch(text.strip())
    if not found:
        raise InvalidRequest(f"{name} must be a size like 512m or 2g, not {text!r}")
    return int(found.group(1)) * _MB_PER_UNIT[found.group(2).lower()]


def resources_for(defaults: SparkResources, limits: SparkLimits,
                  env: Mapping[str, str]) -> SparkResources:
    """The kernelspec's resources with the request's values applied, or InvalidRequest."""
    asked: dict[str, Any] = {}
    if env.get("KERNEL_QUEUE"):
        asked["queue"] = _queue(env["KERNEL_QUEUE"], limits)
    for var, attr, most in (("KERNEL_DRIVER_MEMORY", "driver_memory", limits.max_driver_memory),
                            ("KERNEL_EXECUTOR_MEMORY", "executor_memory",
                             limits.max_executor_memory)):
        if env.get(var):
            asked[attr] = _memory_within(env[var], var, most)
    for var, attr, top in (("KERNEL_DRIVER_CORES", "driver_cores", limits.max_cores),
                           ("KERNEL_EXECUTOR_CORES", "executor_cores", limits.max_cores),
                           ("KERNEL_NUM_EXECUTORS", "num_executors", limits.max_executors)):
        if env.get(var):
            asked[attr] = _count_within(env[var], var, 0 if attr == "num_executors" else 1, top)
    if env.get("KERNEL_SPARK_CONF"):
        asked["conf"] = {**defaults.conf, **_conf(env["KERNEL_SPARK_CONF"], limits)}
    return replace(defaults, **asked)


def _queue(name: str, limits: SparkLimits) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,255}", name):
        raise InvalidRequest(f"KERNEL_QUEUE {name!r} is not a queue name")
    if limits.allowed_queues and name not in limits.allowed_queues:
        raise InvalidRequest(f"KERNEL_QUEUE {name!r} is not allowed here "
                             f"(allowed: {', '.join(limits.allowed_queues)})")
    return name


def _memory_within(text: str, name: str, most: str) -> str:
    if memory_mb(text, name) > memory_mb(most, "the limit"):
        raise InvalidRequest(f"{name}={text} is over the limit of {most}")
    return text.strip().lower()


def _count_within(text: str, name: str, least: int, most: int) -> int:
    if not re.fullmatch(r"[0-9]{1,6}", text.strip()):
        raise InvalidRequest(f"{name} must be a whole number, not {text!r}")
    value = int(text)
    if not least <= value <= most:
        raise InvalidRequest(f"{name}={value} is outside {least}..{most}")
    return value


def _conf(text: str, limits: SparkLimits) -> dict[str, str]:
    try:
        conf = json.loads(text)
    except ValueError:
        raise InvalidRequest("KERNEL_SPARK_CONF must be a JSON object") from None
    if not isinstance(conf, dict):
        raise InvalidRequest("KERNEL_SPARK_CONF must be a JSON object")
    checked = {}
    for key, value in conf.items():
        if not isinstance(value, str | int | float | bool) or not _CONF_KEY.fullmatch(str(key)):
            raise InvalidRequest(f"KERNEL_SPARK_CONF: {key!r} is not a Spark conf entry")
        if not any(fnmatch.fnmatchcase(key, pattern) for pattern in limits.allowed_conf):
            raise InvalidRequest(f"KERNEL_SPARK_CONF: {key} may not be set by a request")
        text_value = str(value).lower() if isinstance(value, bool) else str(value)
        if len(text_value) > MAX_CONF_VALUE or unsafe_character(text_value) is not None:
            raise InvalidRequest(f"KERNEL_SPARK_CONF: the value of {key} is too long or "
                                 "has control characters")
        checked[key] = text_value
    return checked

"""One resource model: what a client asks a kernel's backend for, parsed once, limited once.

A leaf module (stdlib and ``kernelyard.errors`` only). The policy parses a launch
request's ``KERNEL_*`` variables into one frozen ``Resources`` (``parse_request``),
checks it against the group level (``KernelyardApp.group_resource_limits``) and
the kernelspec level (its provisioner's ``resource_limits``) with ``check_limits``,
and puts it into the launch plan; each backend maps the model (YARN: spark-submit
options) and refuses what it cannot honour.

Variables (Enterprise Gateway's names; an empty value counts as not given):

=========================  ===============  =============================================
``KERNEL_MEMORY``          memory           the kernel's memory (EG's request)
``KERNEL_DRIVER_MEMORY``   memory           Spark's name for the same (the driver is the
                                            kernel); giving both with different sizes is a 400
``KERNEL_MEMORY_LIMIT``    memory_limit     a ceiling above the request (EG, containers)
``KERNEL_CPUS``            cpus             the kernel's CPUs (EG's request)
``KERNEL_DRIVER_CORES``    cpus             Spark's name for the same
``KERNEL_CPUS_LIMIT``      cpus_limit       a ceiling above the request
``KERNEL_GPUS``            gpus             whole GPUs
``KERNEL_GPUS_LIMIT``      gpus_limit       a ceiling above the request
``KERNEL_QUEUE``           queue            the queue or partition
``KERNEL_WALLTIME``        walltime         the longest the kernel may run
``KERNEL_EXECUTOR_MEMORY`` executor_memory  Spark executors' memory
``KERNEL_EXECUTOR_CORES``  executor_cores   Spark executors' cores
``KERNEL_NUM_EXECUTORS``   num_executors    fixed Spark executors (0: dynamic from zero)
``KERNEL_SPARK_CONF``      spark_conf       a JSON object of Spark conf (allow-listed keys)
=========================  ===============  =============================================

The one grammar:

- **memory**: a whole or decimal number with an optional binary unit ``k``, ``m``,
  ``g``, ``t``, ``p``, each optionally followed by ``b``, ``i`` or ``ib`` (``2g``,
  ``2gb``, ``2Gi``, ``2GiB`` are all 2048 MiB), or ``b`` for bytes. No unit means
  MiB, as for Spark. Decimals are exact (``1.5g`` is 1536 MiB), rounded up to a
  whole MiB. Units are binary also where Kubernetes reads them as decimal (``1G``).
- **CPUs**: a whole or decimal number (``2``, ``0.5``) or whole milli-CPUs (``500m``).
- **counts** (GPUs, executors, executor cores): a whole number ``>= 0``.
- **walltime**: a whole number with a unit ``s``, ``m``, ``h`` or ``d`` (``90m``), or
  ``H:MM:SS``; no unit is refused (is ``30`` minutes or seconds?).
- **queue**: 1-255 of ``A-Z a-z 0-9 _ . -``.

A limit (either level) is ``{variable: limit}``: a size or number in the same
grammar (an ``int`` limit on a memory variable means MiB), a list of names for
``KERNEL_QUEUE`` and a list of glob patterns for ``KERNEL_SPARK_CONF``. A limit on
either spelling of a resource limits both.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from typing import Any

from .errors import ConfigError, InvalidRequest, KernelyardError, LimitReached

MEMORY, CPUS, COUNT, DURATION, NAME, CONF = "memory", "cpus", "count", "duration", "name", "conf"
MAX_TEXT = 32  # characters of one number (memory, CPUs, count, walltime)
MAX_CONF_VALUE = 1024
_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(?:([kmgtp])(?:ib?|b)?|(b))?", re.I | re.ASCII)
_UNIT_MIB = {"k": Fraction(1, 1024), "m": Fraction(1), "g": Fraction(1024),
             "t": Fraction(1024**2), "p": Fraction(1024**3)}
_CPUS = re.compile(r"([0-9]+(?:\.[0-9]+)?)|([0-9]+)m", re.ASCII)
_COUNT = re.compile(r"[0-9]+", re.ASCII)
_DURATION = re.compile(r"([0-9]+)([smhd])|([0-9]+):([0-5][0-9]):([0-5][0-9])", re.ASCII)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_QUEUE = re.compile(r"[A-Za-z0-9_.-]{1,255}", re.ASCII)
_CONF_KEY = re.compile(r"spark\.[A-Za-z0-9_.-]{1,200}", re.ASCII)
RULES = {MEMORY: "a memory size such as 512m, 2g or 1.5g",
         CPUS: "a number of CPUs such as 2, 0.5 or 500m",
         COUNT: "a whole number >= 0",
         DURATION: "a duration such as 90m, 8h, 1d or 1:30:00",
         NAME: "a queue name (letters, digits, _ . -)",
         CONF: "a JSON object of Spark conf"}


@dataclass(frozen=True)
class Variable:
    """One client variable: its name, the model field it sets and its grammar."""

    name: str
    field: str
    kind: str


VARIABLES: tuple[Variable, ...] = (
    Variable("KERNEL_MEMORY", "memory", MEMORY),
    Variable("KERNEL_DRIVER_MEMORY", "memory", MEMORY),
    Variable("KERNEL_MEMORY_LIMIT", "memory_limit", MEMORY),
    Variable("KERNEL_CPUS", "cpus", CPUS),
    Variable("KERNEL_DRIVER_CORES", "cpus", CPUS),
    Variable("KERNEL_CPUS_LIMIT", "cpus_limit", CPUS),
    Variable("KERNEL_GPUS", "gpus", COUNT),
    Variable("KERNEL_GPUS_LIMIT", "gpus_limit", COUNT),
    Variable("KERNEL_QUEUE", "queue", NAME),
    Variable("KERNEL_WALLTIME", "walltime", DURATION),
    Variable("KERNEL_EXECUTOR_MEMORY", "executor_memory", MEMORY),
    Variable("KERNEL_EXECUTOR_CORES", "executor_cores", COUNT),
    Variable("KERNEL_NUM_EXECUTORS", "num_executors", COUNT),
    Variable("KERNEL_SPARK_CONF", "spark_conf", CONF),
)
BY_NAME = {v.name: v for v in VARIABLES}
_CEILINGS = (("memory", "memory_limit"), ("cpus", "cpus_limit"), ("gpus", "gpus_limit"))


@dataclass(frozen=True)
class Resources:
    """One kernel's resources as its client asked for them (``None``: not asked).

    Memory in whole MiB, CPUs exact, walltime in seconds. ``asked`` maps each set
    field to the variable and text the client used, for messages.
    """

    memory: int | None = None
    memory_limit: int | None = None
    cpus: Fraction | None = None
    cpus_limit: Fraction | None = None
    gpus: int | None = None
    gpus_limit: int | None = None
    queue: str | None = None
    walltime: int | None = None
    executor_memory: int | None = None
    executor_cores: int | None = None
    num_executors: int | None = None
    spark_conf: tuple[tuple[str, str], ...] | None = None
    asked: tuple[tuple[str, str, str], ...] = ()  # (field, variable, text)

    def requested(self) -> list[str]:
        """The fields the client set, in the model's order."""
        return [f.name for f in fields(self) if f.name != "asked"
                and getattr(self, f.name) is not None]

    def variable(self, field: str) -> str:
        """The variable the client set ``field`` with (its first spelling if unset)."""
        return next((v for f, v, _ in self.asked if f == field),
                    next(v.name for v in VARIABLES if v.field == field))

    def text(self, field: str) -> str:
        """The client's text for ``field`` ('' if unset)."""
        return next((t for f, _, t in self.asked if f == field), "")



def parse_request(env: Mapping[str, Any]) -> Resources:
    """The ``Resources`` of a launch request's env; ``InvalidRequest`` naming a bad variable."""
    values: dict[str, Any] = {}
    asked: list[tuple[str, str, str]] = []
    for var in VARIABLES:
        text = env.get(var.name)
        if text is None or text == "":
            continue
        value = parse_value(var, text)
        if var.field in values and values[var.field] != value:
            first = next(v for f, v, _ in asked if f == var.field)
            raise InvalidRequest(f"{first} and {var.name} name the same resource with "
                                 "different values: give one")
        if var.field not in values:
            values[var.field] = value
            asked.append((var.field, var.name, str(text)))
    resources = Resources(**values, asked=tuple(asked))
    _check_ceilings(resources)
    return resources


def parse_value(var: Variable, text: Any) -> Any:
    """One variable's value in the model's units; ``InvalidRequest`` naming it."""
    value = _amount(var.kind, text) if var.kind not in (NAME, CONF) else _named(var.kind, text)
    if value is None:
        raise InvalidRequest(f"{var.name} must be {RULES[var.kind]}")
    if var.kind == MEMORY:
        return math.ceil(value)
    return value if var.kind in (CPUS, NAME, CONF) else int(value)


def parse_memory_mib(text: Any, variable: str = "memory") -> int:
    """A memory size in whole MiB, rounded up; ``InvalidRequest`` naming ``variable``."""
    return int(parse_value(Variable(variable, "memory", MEMORY), text))


def _check_ceilings(resources: Resources) -> None:
    for request, ceiling in _CEILINGS:
        asked, most = getattr(resources, request), getattr(resources, ceiling)
        if asked is not None and most is not None and most < asked:
            raise InvalidRequest(f"{resources.variable(ceiling)}={resources.text(ceiling)} is "
                                 f"below {resources.variable(request)}={resources.text(request)}")


def _amount(kind: str, text: Any) -> Fraction | None:
    """Exact amount of a number in ``kind``'s grammar (MiB, CPUs, count, seconds), or None."""
    if isinstance(text, bool) or not isinstance(text, str) or len(text) > MAX_TEXT:
        return None
    text = text.strip(" ")
    if kind == MEMORY:
        found = _MEMORY.fullmatch(text)
        if found is None:
            return None
        number, unit, byte = found.groups()
        return Fraction(number) / 1024**2 if byte else Fraction(number) * _UNIT_MIB[
            (unit or "m").lower()]
    if kind == CPUS:
        found = _CPUS.fullmatch(text)
        if found is None:
            return None
        return Fraction(found.group(1)) if found.group(1) else Fraction(int(found.group(2)), 1000)
    if kind == DURATION:
        found = _DURATION.fullmatch(text)
        if found is None:
            return None
        n, unit, h, m, s = found.groups()
        return Fraction(int(n) * _SECONDS[unit] if unit else int(h) * 3600 + int(m) * 60 + int(s))
    return Fraction(int(text)) if _COUNT.fullmatch(text) else None


def _named(kind: str, text: Any) -> Any:
    if not isinstance(text, str):
        return None
    if kind == NAME:
        return text if _QUEUE.fullmatch(text) else None
    return _spark_conf(text)


def _spark_conf(text: str) -> tuple[tuple[str, str], ...]:
    try:
        conf = json.loads(text)
    except ValueError:
        raise InvalidRequest("KERNEL_SPARK_CONF must be a JSON object") from None
    if not isinstance(conf, dict):
        raise InvalidRequest("KERNEL_SPARK_CONF must be a JSON object")
    entries = []
    for key, value in conf.items():
        if not isinstance(value, str | int | float | bool) or not _CONF_KEY.fullmatch(key):
            raise InvalidRequest(f"KERNEL_SPARK_CONF: {key!r} is not a Spark conf entry")
        text_value = str(value).lower() if isinstance(value, bool) else str(value)
        if len(text_value) > MAX_CONF_VALUE:
            raise InvalidRequest(f"KERNEL_SPARK_CONF: the value of {key} is too long")
        entries.append((key, text_value))
    return tuple(entries)


# --- Limits -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limit:
    """The limit on one model field: as written, its amount, and whose limit it is.

    ``amount`` is a ``Fraction`` (MiB, CPUs, count, seconds) or, for ``queue`` and
    ``spark_conf``, the tuple of allowed names or glob patterns. ``source`` reads
    "the limit of group 'analysts'" or "the limit of kernelspec 'spark'
    (YarnProvisioner.max_driver_memory)".
    """

    field: str
    value: Any
    amount: Any
    source: str


def parse_limits(entry: Any, where: str, source: str,
                 settings: Mapping[str, str] | None = None) -> dict[str, Limit]:
    """One level's ``{variable: limit}`` as ``{field: Limit}``; ``ConfigError`` naming ``where``.

    ``settings`` names the setting a variable's limit came from (for messages).
    """
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping of KERNEL_* names to limits")
    limits: dict[str, Limit] = {}
    for name, value in entry.items():
        var = BY_NAME.get(name)
        if var is None:
            raise ConfigError(f"{where}: {name!r} is not a resource variable "
                              f"(one of {', '.join(BY_NAME)})")
        amount = _limit_amount(var, value)
        setting = (settings or {}).get(name)
        if amount is None:
            raise ConfigError(f"{where}: the limit {name} must be {_limit_rule(var)}"
                              + (f" (set by {setting})" if setting else ""))
        limits[var.field] = Limit(var.field, value, amount,
                                  f"{source} ({setting})" if setting else source)
    return limits


def _limit_amount(var: Variable, value: Any) -> Any:
    if var.kind in (NAME, CONF):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            return None
        return tuple(items)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Fraction(value)
    return _amount(var.kind, value)


def _limit_rule(var: Variable) -> str:
    if var.kind in (NAME, CONF):
        return "a list of queue names" if var.kind == NAME else "a list of glob patterns"
    return RULES[var.kind]


def most_generous(levels: Mapping[str, Mapping[str, Limit]]) -> dict[str, Limit]:
    """Per field, the most generous limit among ``levels`` (a user's groups); ties: first."""
    best: dict[str, Limit] = {}
    for key in sorted(levels):
        for name, limit in levels[key].items():
            held = best.get(name)
            if held is None:
                best[name] = limit
            elif isinstance(limit.amount, tuple):
                merged = held.amount + tuple(i for i in limit.amount if i not in held.amount)
                best[name] = replace(held, amount=merged, value=list(merged))
            elif limit.amount > held.amount:
                best[name] = limit
    return best


def check_limits(resources: Resources, limits: Mapping[str, Limit], who: str,
                 error: type[KernelyardError] = LimitReached) -> None:
    """Raise ``error`` naming the variable and the limit of the first field over its limit."""
    for name in resources.requested():
        limit = limits.get(name)
        if limit is None:
            continue
        asked, var = getattr(resources, name), resources.variable(name)
        if name == "queue" and asked not in limit.amount:
            raise error(f"{var}={asked} is not a queue {who} may use "
                        f"({', '.join(limit.amount) or 'none'}, {limit.source})")
        if name == "spark_conf":
            for key, _ in asked:
                if not any(fnmatch.fnmatchcase(key, p) for p in limit.amount):
                    raise error(f"KERNEL_SPARK_CONF: {key} may not be set by a request "
                                f"({limit.source})")
        elif name != "queue" and asked > limit.amount:
            raise error(f"{var}={resources.text(name)} is more than {who} may request "
                        f"({limit.value}, {limit.source})")

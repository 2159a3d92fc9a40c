"""Resource limits per group (``KernelyardApp.group_resource_limits``)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..auth.principal import Principal
from ..errors import ConfigError, InvalidRequest, LimitReached

ALL_GROUPS = "*"
_MEMORY_SIZE = re.compile(
    r"([0-9]+(?:\.[0-9]+)?)(?:([kmgtp])(?:ib?|b)?|(b))?", re.IGNORECASE | re.ASCII
)
_MEMORY_RULE = "a memory size such as 512m, 2g or 1.5g"
_COUNT = re.compile(r"[0-9]+")
_UNIT_MB = {"k": Fraction(1, 1024), "m": Fraction(1), "g": Fraction(1024),
            "t": Fraction(1024**2), "p": Fraction(1024**3)}
_MAX_VALUE_LENGTH = 32


def is_memory_resource(name: str) -> bool:
    """Resource names ending in ``MEMORY`` or ``_MEM`` hold memory sizes; others counts."""
    upper = name.upper()
    return upper.endswith("MEMORY") or upper.endswith("_MEM")


def _memory_mb(text: Any) -> Fraction | None:
    """Exact MiB of ``512m``, ``2g``, ``1.5G``, ``1024`` (MiB), ``4gb``, ``2Gi``; else None."""
    if isinstance(text, bool) or not isinstance(text, str) or len(text) > _MAX_VALUE_LENGTH:
        return None
    match = _MEMORY_SIZE.fullmatch(text.strip())
    if match is None:
        return None
    number, unit, byte = match.groups()
    if byte:
        return Fraction(number) / 1024**2
    return Fraction(number) * _UNIT_MB[(unit or "m").lower()]


def parse_memory_mb(text: Any, variable: str = "memory") -> int:
    """A JVM/Spark-style memory size in whole MiB, rounded up.

    Junk raises ``InvalidRequest`` naming ``variable``. Units are binary: ``k``,
    ``m``, ``g``, ``t``, ``p``, each optionally followed by ``b``, ``i`` or ``ib``
    (``2g``, ``2gb``, ``2Gi``, ``2GiB`` are all 2048), or ``b`` for bytes; no unit
    means MiB, as for Spark. Decimals are exact (``1.5g`` is 1536), never floats.
    """
    size = _memory_mb(text)
    if size is None:
        raise InvalidRequest(f"{variable} must be {_MEMORY_RULE}")
    return math.ceil(size)


def _count(text: Any) -> int | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text if text >= 0 else None
    if not isinstance(text, str) or len(text) > _MAX_VALUE_LENGTH:
        return None
    stripped = text.strip()
    return int(stripped) if _COUNT.fullmatch(stripped) else None


def _resource_amount(name: str, value: Any) -> Fraction | None:
    """MiB for a memory resource (an int limit counts as MiB), else a whole count."""
    if is_memory_resource(name):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return Fraction(value)
        return _memory_mb(value)
    count = _count(value)
    return None if count is None else Fraction(count)


def _kind(name: str) -> str:
    return _MEMORY_RULE if is_memory_resource(name) else "a whole number >= 0"


@dataclass(frozen=True)
class ResourceLimit:
    """The limit on one resource that applies to a principal, and the group that grants it."""

    group: str
    value: Any
    amount: Fraction


def validate_resource_limits(limits: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise ``ConfigError`` naming the group and resource of any malformed limit."""
    for group, entry in limits.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"resource limits of group {group!r} must be a mapping")
        for name, value in entry.items():
            if _resource_amount(name, value) is None:
                raise ConfigError(f"resource limit {name} of group {group!r} must be {_kind(name)}")


def resource_limits_for(
    principal: Principal, limits: Mapping[str, Mapping[str, Any]]
) -> dict[str, ResourceLimit]:
    """Resource name -> its most generous limit among the principal's groups and ``"*"``.

    A group whose entry does not name a resource has no say on it.
    """
    validate_resource_limits(limits)
    best: dict[str, ResourceLimit] = {}
    for group in sorted((principal.groups | {ALL_GROUPS}) & limits.keys()):
        for name, value in limits[group].items():
            amount = _resource_amount(name, value)
            held = best.get(name)
            if amount is not None and (held is None or amount > held.amount):
                best[name] = ResourceLimit(group, value, amount)
    return best


def check_resources(
    principal: Principal,
    requested: Mapping[str, Any],
    limits: Mapping[str, Mapping[str, Any]],
) -> None:
    """Refuse a request for more resources than the principal's groups allow.

    ``requested`` maps variable names (``KERNEL_DRIVER_MEMORY``) to values;
    ``limits`` maps a group (or ``"*"``, everyone) to ``{variable: limit}``.
    Every requested variable that any group limits must be well-formed
    (``InvalidRequest`` naming it); a variable with no limit for this principal
    is allowed; a value above the limit raises ``LimitReached``.
    """
    applicable = resource_limits_for(principal, limits)
    limited = {name for entry in limits.values() for name in entry}
    for name in sorted(limited & requested.keys()):
        amount = _resource_amount(name, requested[name])
        if amount is None:
            raise InvalidRequest(f"{name} must be {_kind(name)}")
        limit = applicable.get(name)
        if limit is not None and amount > limit.amount:
            raise LimitReached(
                f"{name}={requested[name]} is more than {principal.name} may request "
                f"({limit.value}, the limit of group {limit.group!r})"
            )

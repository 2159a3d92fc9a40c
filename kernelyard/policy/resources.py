"""The group level of the resource limits (``KernelyardApp.group_resource_limits``).

The model, its grammar and the limit checks are ``kernelyard.resources``'s; this
module only knows groups: ``{"*": {...}, "analysts": {...}}``, where ``"*"`` is
everyone and the most generous limit among a user's groups applies. A request over
it is ``LimitReached`` (403) naming the variable, the limit and its group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..identity import Principal
from ..resources import Limit, Resources, check_limits, most_generous, parse_limits

ALL_GROUPS = "*"
GroupLimits = Mapping[str, Mapping[str, Any]]


def validate_resource_limits(limits: GroupLimits) -> dict[str, dict[str, Limit]]:
    """Each group's limits by model field; ``ConfigError`` naming the group and variable."""
    if not isinstance(limits, Mapping):
        raise ConfigError("resource limits must map groups to {variable: limit}")
    return {group: parse_limits(entry, f"resource limits of group {group!r}",
                                f"the limit of group {group!r}")
            for group, entry in limits.items()}


def resource_limits_for(principal: Principal, limits: GroupLimits) -> dict[str, Limit]:
    """Model field -> its most generous limit among the principal's groups and ``"*"``.

    A group whose entry does not name a resource has no say on it.
    """
    parsed = validate_resource_limits(limits)
    return most_generous({g: parsed[g] for g in (principal.groups | {ALL_GROUPS}) & parsed.keys()})


def check_resources(principal: Principal, resources: Resources, limits: GroupLimits) -> None:
    """``LimitReached`` if ``resources`` (parsed once, ``kernelyard.resources``) ask for
    more than the principal's groups allow."""
    check_limits(resources, resource_limits_for(principal, limits), principal.name)

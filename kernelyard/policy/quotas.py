"""Kernel quotas: ``QuotaPolicy``, ``KernelCounts`` and ``check_quota``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, LimitReached
from ..identity import Principal, canonical_username

Limit = int | None  # None: no limit; 0: no kernels at all


@dataclass(frozen=True)
class QuotaPolicy:
    """How many kernels may run, counting starts in flight. ``None`` means no limit.

    A user's own limit is, from the most specific: ``user_max_kernels[name]``;
    else the most generous ``group_max_kernels_per_user`` among the user's
    groups; else ``max_kernels_per_user``.
    """

    max_kernels: Limit = None
    max_kernels_per_user: Limit = None
    user_max_kernels: Mapping[str, Limit] = field(default_factory=dict)
    group_max_kernels_per_user: Mapping[str, Limit] = field(default_factory=dict)
    kernelspec_max_kernels: Mapping[str, Limit] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_max_kernels", _by_canonical_user(self.user_max_kernels))
        _check_limit("max_kernels", self.max_kernels)
        _check_limit("max_kernels_per_user", self.max_kernels_per_user)
        for table in ("user_max_kernels", "group_max_kernels_per_user",
                      "kernelspec_max_kernels"):
            for key, value in getattr(self, table).items():
                _check_limit(f"{table}[{key!r}]", value)

    def user_limit(self, principal: Principal) -> tuple[Limit, str]:
        """The principal's own kernel limit and a phrase naming where it comes from."""
        if principal.name in self.user_max_kernels:
            return self.user_max_kernels[principal.name], f"the limit set for {principal.name}"
        groups = sorted(principal.groups & self.group_max_kernels_per_user.keys())
        if groups:
            best = max(groups, key=lambda g: _generosity(self.group_max_kernels_per_user[g]))
            return (self.group_max_kernels_per_user[best],
                    f"the per-user limit of group {best!r}")
        return self.max_kernels_per_user, "the per-user limit"


def _by_canonical_user(limits: Mapping[str, Limit]) -> dict[str, Limit]:
    """``user_max_kernels`` keyed by canonical user names; two spellings of one name
    with different limits are a ConfigError."""
    out: dict[str, Limit] = {}
    for name, limit in limits.items():
        key = canonical_username(name)
        if key in out and out[key] != limit:
            raise ConfigError(f"user_max_kernels names the user {key!r} twice, with "
                              "different limits (user names ignore letter case)")
        out[key] = limit
    return out


def _check_limit(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"kernel quota {name} must be a whole number >= 0 or None")


def _generosity(limit: Limit) -> float:
    return math.inf if limit is None else limit


@dataclass(frozen=True)
class KernelCounts:
    """A snapshot of kernel counts, INCLUDING starts in flight."""

    total: int = 0
    by_user: Mapping[str, int] = field(default_factory=dict)
    by_kernelspec: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, kernels: Iterable[tuple[str | None, str | None]]) -> KernelCounts:
        """Count ``(owner, kernel_name)`` pairs, one per kernel."""
        total = 0
        by_user: dict[str, int] = {}
        by_spec: dict[str, int] = {}
        for owner, kernel_name in kernels:
            total += 1
            if owner:
                by_user[owner] = by_user.get(owner, 0) + 1
            if kernel_name:
                by_spec[kernel_name] = by_spec.get(kernel_name, 0) + 1
        return cls(total, by_user, by_spec)

    def __add__(self, other: KernelCounts) -> KernelCounts:
        return KernelCounts(
            self.total + other.total,
            _add_counts(self.by_user, other.by_user),
            _add_counts(self.by_kernelspec, other.by_kernelspec),
        )


def _add_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for key, n in b.items():
        out[key] = out.get(key, 0) + n
    return out


def check_quota(
    policy: QuotaPolicy, principal: Principal, kernel_name: str, counts: KernelCounts
) -> None:
    """Raise ``LimitReached`` if one more ``kernel_name`` kernel for ``principal`` is too many.

    ``counts`` must include starts in flight and be taken under the same lock (or
    store transaction) as the reservation that follows; ``kernelyard.quotas.QuotaGate``
    does both. Checked in order: the user's own limit, the kernelspec's, the gateway's.
    """
    user_limit, which = policy.user_limit(principal)
    _refuse_at(user_limit, counts.by_user.get(principal.name, 0), principal.name, which)
    _refuse_at(
        policy.kernelspec_max_kernels.get(kernel_name),
        counts.by_kernelspec.get(kernel_name, 0),
        f"the kernelspec {kernel_name!r}",
        "its limit",
    )
    _refuse_at(policy.max_kernels, counts.total, "the gateway", "its limit")


def _refuse_at(limit: Limit, count: int, who: str, which: str) -> None:
    if limit is not None and count >= limit:
        noun = "kernel" if count == 1 else "kernels"
        raise LimitReached(f"{who} already has {count} {noun}, {which} ({limit})")

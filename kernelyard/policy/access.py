"""Kernelspec access: allow and deny lists, canonical kernelspec names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import ConfigError, Forbidden
from ..identity import Principal, canonical_username, is_root

V = TypeVar("V")


def canonical_kernelspec_name(requested: str, listed: Iterable[str]) -> str | None:
    """The listed kernelspec name a request's ``requested`` stands for, or None.

    jupyter_client finds a kernelspec by its name in lower case (its listing holds
    lower-case names only), so ``PYTHON3`` would launch ``python3``. Every policy
    lookup, count, record and audit line uses the name this returns: the request's
    own if listed, else the one listed name equal to it in lower case.
    """
    names = set(listed)
    if requested in names:
        return requested
    folded = requested.lower()
    return folded if folded in names else None


def by_canonical_kernelspec(table: Mapping[str, V], listed: Iterable[str]
                            ) -> tuple[dict[str, V], list[tuple[str, str]]]:
    """A setting keyed by kernelspec name (``kernelspec_max_kernels``,
    ``kernelspec_access``), re-keyed by the names the listing gives, and the
    ``(key, canonical)`` pairs renamed. A key that names no listed kernelspec stays
    as it is; when a key and its canonical name are both set, the canonical one wins."""
    names = list(listed)
    out: dict[str, V] = {}
    renamed: list[tuple[str, str]] = []
    for key, value in table.items():
        canonical = canonical_kernelspec_name(key, names) or key
        if canonical != key:
            renamed.append((key, canonical))
            if canonical in table:
                continue
        out[canonical] = value
    return out, renamed


_ACCESS_KEYS = ("authorized_users", "unauthorized_users", "authorized_groups",
                "unauthorized_groups")


@dataclass(frozen=True)
class AccessRules:
    """Allow and deny lists at one level: gateway-wide, or for one kernelspec.

    An empty allow list (no users and no groups) says nothing; a non-empty one
    admits only the users and the members of the groups it names.
    """

    authorized_users: frozenset[str] = frozenset()
    unauthorized_users: frozenset[str] = frozenset()
    authorized_groups: frozenset[str] = frozenset()
    unauthorized_groups: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # User names in their canonical form, as every Principal's (group names are
        # the authenticators' and the OS's, compared exactly).
        for key in ("authorized_users", "unauthorized_users"):
            names = getattr(self, key)
            object.__setattr__(self, key, frozenset(canonical_username(n) for n in names))

    @property
    def has_allow_list(self) -> bool:
        return bool(self.authorized_users or self.authorized_groups)

    def denies(self, principal: Principal) -> bool:
        return principal.name in self.unauthorized_users or bool(
            principal.groups & self.unauthorized_groups
        )

    def allows(self, principal: Principal) -> bool:
        """Whether the allow list names the principal or one of its groups."""
        return principal.name in self.authorized_users or bool(
            principal.groups & self.authorized_groups
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AccessRules | None:
        """Rules from a kernelspec's metadata or a config dict; ``None`` if malformed.

        Each list may be a list of names, a single name or null (empty); anything
        else (a number, a list holding a non-string) makes the whole entry malformed.
        """
        lists: dict[str, frozenset[str]] = {}
        for key in _ACCESS_KEYS:
            names = _name_set(data.get(key, ()))
            if names is None:
                return None
            lists[key] = names
        return cls(**lists)

    @classmethod
    def from_config(cls, data: Mapping[str, Any], setting: str) -> AccessRules:
        """Rules from a config dict; ``ConfigError`` naming ``setting`` if malformed."""
        unknown = set(data) - set(_ACCESS_KEYS)
        rules = None if unknown else cls.from_mapping(data)
        if rules is None:
            raise ConfigError(
                f"{setting} must map some of {', '.join(_ACCESS_KEYS)} to lists of names"
            )
        return rules


def _name_set(value: Any) -> frozenset[str] | None:
    """A list of names, or one string of comma-separated names (as Enterprise Gateway's
    kernelspecs write them: no user or group name holds a comma)."""
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(n.strip() for n in value.split(",") if n.strip())
    if isinstance(value, (list, tuple, set, frozenset)) and all(
        isinstance(v, str) for v in value
    ):
        return frozenset(value)
    return None


@dataclass(frozen=True)
class AccessPolicy:
    """Who may use which kernelspec.

    ``rules`` apply to every kernelspec; ``kernelspec_rules`` (from the gateway's
    config, by kernelspec name) and the kernelspec's own metadata refine them.
    ``root`` is refused unless ``allow_root``. Admins skip allow lists (never
    deny lists) while ``admins_bypass_allow_lists`` holds.
    """

    rules: AccessRules = field(default_factory=AccessRules)
    kernelspec_rules: Mapping[str, AccessRules] = field(default_factory=dict)
    allow_root: bool = False
    admins_bypass_allow_lists: bool = True


def spec_access_rules(spec_metadata: Mapping[str, Any]) -> AccessRules | None:
    """A kernelspec's own access lists; ``None`` if they are malformed.

    Read from ``metadata.kernelyard``, or for Enterprise Gateway kernelspecs
    from ``metadata.process_proxy.config``.
    """
    return AccessRules.from_mapping(_spec_access_config(spec_metadata))


def may_use_kernelspec(
    principal: Principal,
    kernel_name: str,
    spec_metadata: Mapping[str, Any],
    policy: AccessPolicy,
) -> bool:
    """Whether ``principal`` may see and launch the kernelspec ``kernel_name``.

    In order: any deny list that names the user or one of its groups refuses
    (deny beats allow, admins included); ``root`` is refused unless
    ``allow_root``; an admin is admitted (``admins_bypass_allow_lists``); then the
    most specific non-empty allow list decides (config for this kernelspec, then
    the kernelspec's metadata, then gateway-wide); no allow list admits everyone.
    A kernelspec with malformed access lists admits no one.
    """
    own = spec_access_rules(spec_metadata)
    if own is None:
        return False
    levels = [policy.kernelspec_rules.get(kernel_name, AccessRules()), own, policy.rules]
    return _decide(principal, levels, policy)


def _decide(principal: Principal, levels: list[AccessRules], policy: AccessPolicy) -> bool:
    """``levels`` go from the most specific to the gateway-wide rules."""
    if any(level.denies(principal) for level in levels):
        return False
    if is_root(principal.name) and not policy.allow_root:
        return False
    if principal.admin and policy.admins_bypass_allow_lists:
        return True
    for level in levels:
        if level.has_allow_list:
            return level.allows(principal)
    return True


def check_kernelspec_access(
    principal: Principal,
    kernel_name: str,
    spec_metadata: Mapping[str, Any],
    policy: AccessPolicy,
) -> None:
    """Raise ``Forbidden`` unless ``principal`` may launch ``kernel_name``."""
    if not may_use_kernelspec(principal, kernel_name, spec_metadata, policy):
        raise Forbidden(f"{principal.name} may not use the kernelspec {kernel_name!r}")


def spec_metadata_of(entry: Any) -> Mapping[str, Any]:
    """The ``metadata`` of a kernelspec listing entry.

    Accepts ``KernelSpecManager.get_all_specs()`` entries (``{"resource_dir",
    "spec": {...}}``), kernel.json dicts and ``KernelSpec`` objects.
    """
    if isinstance(entry, Mapping):
        spec = entry.get("spec")
        metadata = (spec if isinstance(spec, Mapping) else entry).get("metadata")
    else:
        metadata = getattr(entry, "metadata", None)
    return metadata if isinstance(metadata, Mapping) else {}


def kernelspecs_for(
    principal: Principal, specs: Mapping[str, Any], policy: AccessPolicy
) -> dict[str, Any]:
    """The entries of a kernelspec listing (name -> entry) that ``principal`` may launch."""
    return {
        name: entry
        for name, entry in specs.items()
        if may_use_kernelspec(principal, name, spec_metadata_of(entry), policy)
    }


def user_may_use_kernelspec(
    user: str,
    spec_metadata: Mapping[str, Any],
    *,
    authorized_users: Iterable[str] = (),
    unauthorized_users: Iterable[str] = (),
    groups: Iterable[str] = (),
    authorized_groups: Iterable[str] = (),
    unauthorized_groups: Iterable[str] = (),
) -> bool:
    """Whether ``user`` may see and launch a kernelspec (by name only).

    The kernelspec's own lists (``metadata.kernelyard`` or, for Enterprise
    Gateway kernelspecs, ``metadata.process_proxy.config``) refine the
    gateway-wide ones. An unauthorized listing always wins. The same rules as
    ``may_use_kernelspec`` for a non-admin user in ``groups``, except that
    ``root`` is not refused here (this form predates that rule).
    """
    principal = Principal(name=user, groups=frozenset(groups))
    rules = AccessRules(
        authorized_users=frozenset(authorized_users),
        unauthorized_users=frozenset(unauthorized_users),
        authorized_groups=frozenset(authorized_groups),
        unauthorized_groups=frozenset(unauthorized_groups),
    )
    own = spec_access_rules(spec_metadata)
    if own is None:
        return False
    return _decide(principal, [own, rules], AccessPolicy(rules=rules, allow_root=True))


def _spec_access_config(metadata: Mapping[str, Any]) -> Mapping[str, Any]:
    own = metadata.get("kernelyard")
    if isinstance(own, Mapping):
        return own
    proxy = metadata.get("process_proxy")
    if isinstance(proxy, Mapping) and isinstance(proxy.get("config"), Mapping):
        return proxy["config"]
    return {}

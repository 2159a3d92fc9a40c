"""Who a user is on the machines kernels run on: name -> uid, gid, home, groups.

Backends that run a kernel as its owner need the owner's numeric identity:
the local run-as helper (``kernelyard.runas``) and, later, container backends
(a pod's ``runAsUser``, ``docker run --user``). Two sources:

- the local passwd and group databases (``pwd``/``grp``, so NSS sources such
  as LDAP or SSSD count), the default;
- a static mapping from configuration, for clusters whose users do not exist
  on the gateway host.

Everything here is pure except ``PasswdUserMap``, whose lookups are injectable
(the defaults call ``pwd`` and ``grp``). ``check_run_as`` is the one rule that
decides whether a kernel may run as an identity; the helper and the backends
all apply it. No kernel ever runs as uid 0, whatever the configuration.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, NotFound
from .identity import RunAsRefused, is_valid_username, refuse_root

DEFAULT_MIN_UID = 1000


@dataclass(frozen=True)
class UserIdentity:
    """A user as the kernel's host knows it."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str = "/bin/sh"
    groups: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class RunAsRules:
    """Whom kernels may run as: never root, never below ``min_uid``, and if
    either allow list is set, only its users or members of its groups."""

    min_uid: int = DEFAULT_MIN_UID
    allowed_users: frozenset[str] = frozenset()
    allowed_groups: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if isinstance(self.min_uid, bool) or not isinstance(self.min_uid, int) \
                or self.min_uid < 1:
            raise ConfigError("min_uid must be an integer of at least 1 (root is never allowed)")


def check_run_as(identity: UserIdentity, rules: RunAsRules) -> UserIdentity:
    """Return ``identity`` if a kernel may run as it, else raise ``RunAsRefused``."""
    refuse_root(identity.name, identity.uid)
    if identity.gid == 0:
        raise RunAsRefused(f"refusing to run a kernel with gid 0 (user {identity.name!r})")
    if identity.uid < rules.min_uid:
        raise RunAsRefused(
            f"user {identity.name!r} has uid {identity.uid}, below the minimum {rules.min_uid} "
            "for kernels (system accounts are refused)"
        )
    if rules.allowed_users or rules.allowed_groups:
        if identity.name not in rules.allowed_users and not (
            identity.groups & rules.allowed_groups
        ):
            raise RunAsRefused(f"user {identity.name!r} is not allowed to run kernels here")
    return identity


class UserMap:
    """Resolves a user name to a ``UserIdentity``; raises ``NotFound`` if unknown."""

    def lookup(self, name: str) -> UserIdentity:
        raise NotImplementedError

    def resolve(self, name: Any, rules: RunAsRules) -> UserIdentity:
        """Look ``name`` up and apply ``rules``: the identity a kernel runs as."""
        if not is_valid_username(name):
            raise RunAsRefused(f"{name!r} is not a valid user name")
        return check_run_as(self.lookup(name), rules)


class StaticUserMap(UserMap):
    """Users from configuration: ``{"alice": {"uid": 1002, "gid": 1002, "home": ...}}``.

    ``gid`` defaults to ``uid``, ``home`` to ``/home/<name>``; ``groups`` is a
    list of group names (used by ``RunAsRules.allowed_groups``).
    """

    def __init__(self, mapping: Mapping[str, Mapping[str, Any]]):
        self.users = {name: parse_static_entry(name, entry) for name, entry in mapping.items()}

    def lookup(self, name: str) -> UserIdentity:
        try:
            return self.users[name]
        except KeyError:
            raise NotFound(f"user {name!r} is not in the user map") from None


def parse_static_entry(name: str, entry: Mapping[str, Any]) -> UserIdentity:
    """Validate one static mapping entry; ``ConfigError`` names the user and field."""
    if not is_valid_username(name):
        raise ConfigError(f"user map: {name!r} is not a valid user name")
    if not isinstance(entry, Mapping):
        raise ConfigError(f"user map: the entry of {name!r} must be a mapping")
    unknown = set(entry) - {"uid", "gid", "home", "shell", "groups"}
    if unknown:
        raise ConfigError(f"user map: unknown field(s) {sorted(unknown)} for {name!r}")
    uid = _id_field(name, "uid", entry.get("uid"))
    gid = _id_field(name, "gid", entry.get("gid", uid))
    home = entry.get("home", f"/home/{name}")
    if not isinstance(home, str) or not home.startswith("/"):
        raise ConfigError(f"user map: the home of {name!r} must be an absolute path")
    shell = entry.get("shell", "/bin/sh")
    groups = entry.get("groups", [])
    if not isinstance(shell, str) or not isinstance(groups, list | tuple) or not all(
        isinstance(g, str) for g in groups
    ):
        raise ConfigError(f"user map: 'shell' of {name!r} must be a string, 'groups' a list")
    return UserIdentity(name, uid, gid, home, shell, frozenset(groups))


def _id_field(name: str, what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32 - 1:
        raise ConfigError(f"user map: {what} of {name!r} must be an integer id")
    return value


class PasswdUserMap(UserMap):
    """Users from the host's passwd and group databases (NSS included)."""

    def __init__(
        self,
        getpwnam: Callable[[str], Any] = pwd.getpwnam,
        group_names: Callable[[str, int], Iterable[str]] | None = None,
    ):
        self._getpwnam = getpwnam
        self._group_names = group_names or local_group_names

    def lookup(self, name: str) -> UserIdentity:
        try:
            entry = self._getpwnam(name)
        except KeyError:
            raise NotFound(f"no such user: {name!r}") from None
        groups = frozenset(self._group_names(entry.pw_name, entry.pw_gid))
        return UserIdentity(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir,
                            entry.pw_shell or "/bin/sh", groups)


def local_group_names(user: str, gid: int) -> list[str]:
    """Names of the user's groups (primary and supplementary) on this host."""
    names = []
    for group_id in _group_ids(user, gid):
        try:
            names.append(grp.getgrgid(group_id).gr_name)
        except KeyError:
            continue
    return names


def _group_ids(user: str, gid: int) -> list[int]:
    try:
        return os.getgrouplist(user, gid)
    except OSError:
        return [gid]


def parse_passwd(text: str) -> dict[str, UserIdentity]:
    """Parse passwd(5) lines (e.g. a container image's /etc/passwd) into identities."""
    users: dict[str, UserIdentity] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) != 7 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        name, _, uid, gid, _, home, shell = fields
        if is_valid_username(name):
            users[name] = UserIdentity(name, int(uid), int(gid), home, shell or "/bin/sh")
    return users


def user_map_from_config(source: str, static: Mapping[str, Mapping[str, Any]]) -> UserMap:
    """``"passwd"`` (the host's databases) or ``"static"`` (``static`` mapping)."""
    if source == "passwd":
        return PasswdUserMap()
    if source == "static":
        return StaticUserMap(static)
    raise ConfigError(f"user map source must be 'passwd' or 'static', not {source!r}")

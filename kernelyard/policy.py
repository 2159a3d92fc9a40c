"""Launch policy: pure functions, no I/O.

Decides who may launch what and which client-supplied values may reach a
kernel: request validation, the client env, kernelspec access, whom a kernel
runs as (``KERNEL_USERNAME``), kernel quotas, resource limits per group, who
may see a kernel and its env. Every function takes a ``Principal`` and plain
config data and raises a ``kernelyard.errors`` type whose message names the
offending field or limit. ``docs/policy.md`` describes the semantics;
``kernelyard.quotas`` holds the one async helper (count + reserve under a lock).
"""

from __future__ import annotations

import math
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

from .auth.principal import Principal, canonical_username
from .errors import ConfigError, Forbidden, InvalidRequest, LimitReached, NotFound

MAX_ENV_VALUE_LENGTH = 4096
MAX_SESSION_ID = 255  # it becomes a ZMQ routing id (at most 255 bytes)
# Gateway variables that hold secrets: never inherited by, nor settable for, a kernel.
# Every KERNELYARD_* name is treated the same way (``is_gateway_secret``).
DEFAULT_SECRET_ENVS = ("KERNELYARD_AUTH_TOKEN", "KERNELYARD_PROXY_SECRET",
                       "KERNELYARD_STORE_KEY", "JUPYTER_TOKEN", "JUPYTERHUB_API_TOKEN")
GATEWAY_ENV_PREFIX = "KERNELYARD_"
# What a kernel on the gateway's host takes from the gateway's environment, besides
# ``inherited_envs``: where programs are, the locale, the time zone, the terminal and
# the temporary directory, and (for a kernel that runs as the gateway's own account)
# that account's HOME, USER, LOGNAME and SHELL. Nothing else (docs/configuration.md).
BASE_ENV_NAMES = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ",
                  "TERM", "TMPDIR")
BASE_ENV_PREFIXES = ("LC_",)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
V = TypeVar("V")
# Unicode categories no client text may hold: controls (C0, DEL and C1), lone
# surrogates (they cannot be encoded, so exec and the store would fail), and the
# line and paragraph separators (they end a line for many readers of logs and env).
REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
# Shell expansion and command substitution never reach a kernel's env.
_SHELL_CHARACTERS = frozenset("$`")


def unsafe_character(value: str, refused: frozenset[str] = frozenset()) -> str | None:
    """The first character of ``value`` a kernel's env or a log may not hold, else None.

    That is any character of the ``REFUSED_CATEGORIES``, any that does not encode
    as UTF-8, and any of ``refused``. The one character check for client text:
    env values (``check_env_value``), session fields and kernelspec names
    (``check_text``), Spark conf values (``spark_request``).
    """
    for char in value:
        if char in refused or unicodedata.category(char) in REFUSED_CATEGORIES:
            return char
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return value[e.start]
    return None


def _describe(char: str) -> str:
    return f"U+{ord(char):04X}" + (f" ({char!r})" if char in _SHELL_CHARACTERS else "")


def is_gateway_secret(name: str, secret_names: Iterable[str] = ()) -> bool:
    """A gateway variable no kernel may inherit or be given: one of ``DEFAULT_SECRET_ENVS``
    or ``secret_names``, or any ``KERNELYARD_*`` name (the gateway's and the launcher's
    own variables)."""
    return (name.startswith(GATEWAY_ENV_PREFIX) or name in DEFAULT_SECRET_ENVS
            or name in set(secret_names))


def is_base_env_name(name: str) -> bool:
    """Whether a local kernel takes ``name`` from the gateway's env (the base set:
    ``BASE_ENV_NAMES`` and ``LC_*``)."""
    return name in BASE_ENV_NAMES or name.startswith(BASE_ENV_PREFIXES)


def base_env(gateway_env: Mapping[str, str]) -> dict[str, str]:
    """The base set of a local kernel's env: those of ``gateway_env`` that
    ``is_base_env_name`` admits."""
    return {name: value for name, value in gateway_env.items() if is_base_env_name(name)}


@dataclass(frozen=True)
class EnvPolicy:
    """Which names pass from a client's ``env`` and from the gateway's own."""

    client_envs: tuple[str, ...] = ()
    inherited_envs: tuple[str, ...] = ()
    secret_names: frozenset[str] = field(default_factory=frozenset)

    def allows_client_name(self, name: str) -> bool:
        if is_gateway_secret(name, self.secret_names):
            return False
        return name.startswith("KERNEL_") or "*" in self.client_envs or name in self.client_envs


@dataclass(frozen=True)
class LaunchRequest:
    """A validated ``POST /api/kernels`` body."""

    kernel_name: str | None
    path: str | None
    env: dict[str, str]
    kernel_id: str | None


def check_env_value(name: str, value: Any) -> str:
    """Return ``value`` if it may be put in a kernel's env, else raise naming ``name``.

    A string of at most ``MAX_ENV_VALUE_LENGTH`` characters without a character that
    ``unsafe_character`` refuses, ``$`` or a backtick.
    """
    return _checked_text(f"env variable {name!r}", value, _SHELL_CHARACTERS)


def _checked_text(what: str, value: Any, refused: frozenset[str]) -> str:
    """``value`` if it is a safe string (``unsafe_character``), else an InvalidRequest
    naming ``what``."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string")
    if len(value) > MAX_ENV_VALUE_LENGTH:
        raise InvalidRequest(f"{what} is longer than {MAX_ENV_VALUE_LENGTH} characters")
    bad = unsafe_character(value, refused)
    if bad is not None:
        extra = ", '$' or a backtick" if "$" in refused else " or a backtick"
        raise InvalidRequest(f"{what} contains {_describe(bad)}: no control character, "
                             f"surrogate, line or paragraph separator{extra} may appear")
    return value


def check_env_name(name: Any) -> str:
    """An env variable name: letters, digits and '_', not starting with a digit (in full)."""
    if not isinstance(name, str) or _ENV_NAME.fullmatch(name) is None:
        shown = ascii(name) if isinstance(name, str) else type(name).__name__
        raise InvalidRequest(f"env variable name {shown} is not a valid name "
                             "(letters, digits and '_', not starting with a digit)")
    return name


def filter_client_env(env: Any, policy: EnvPolicy) -> dict[str, str]:
    """Validate a client's ``env`` object and keep the names the policy allows.

    Names not allowed are dropped (as Enterprise Gateway does); values of
    allowed names that are unsafe are refused with an error.
    """
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise InvalidRequest("'env' must be a JSON object")
    kept: dict[str, str] = {}
    for name, value in env.items():
        if policy.allows_client_name(check_env_name(name)):
            kept[name] = check_env_value(name, value)
    return kept


def inherited_env(gateway_env: Mapping[str, str], policy: EnvPolicy) -> dict[str, str]:
    """The gateway-process variables that the settings pass on to kernels."""
    return {
        name: gateway_env[name]
        for name in policy.inherited_envs
        if name in gateway_env and not is_gateway_secret(name, policy.secret_names)
    }


def scrub_secrets(env: Mapping[str, str], secret_names: Iterable[str]) -> dict[str, str]:
    """A copy of ``env`` without the gateway's secrets (``is_gateway_secret``), for the
    gateway's own helper processes (spark-submit); a kernel's env is built from an
    allow list instead (``base_env``, ``inherited_env``, the client's names)."""
    secrets = set(secret_names)
    return {k: v for k, v in env.items() if not is_gateway_secret(k, secrets)}


def check_kernel_id(value: Any) -> str:
    """A client-chosen kernel id must be a canonical (lower-case, hyphenated) UUID."""
    if isinstance(value, str):
        try:
            if str(uuid.UUID(value)) == value:
                return value
        except ValueError:
            pass
    raise InvalidRequest("KERNEL_ID must be a canonical UUID such as 'xxxxxxxx-xxxx-...'")


def check_session_id(value: Any) -> str:
    """A websocket client's ``?session_id=``: jupyter_client sends it as ASCII in every
    message header, and jupyter_server makes it the ZMQ identity of the kernel sockets,
    so only printable ASCII of at most 255 characters passes."""
    if not isinstance(value, str) or len(value) > MAX_SESSION_ID or not (
            value.isascii() and value.isprintable()):
        raise InvalidRequest(
            f"'session_id' must be printable ASCII of at most {MAX_SESSION_ID} characters")
    return value


def check_api_path(path: Any, field: str = "path") -> str | None:
    """A notebook path may not climb out of the gateway's root directory."""
    if path is None:
        return None
    check_text(field, path)
    if any(part == ".." for part in path.replace("\\", "/").split("/")):
        raise InvalidRequest(f"{field!r} may not contain '..'")
    return path


def check_text(field: str, value: Any) -> str:
    """A client's string that reaches a kernel's env the way a path does (a session's
    path and name make ``JPY_SESSION_NAME``): at most 4096 characters, nothing
    ``unsafe_character`` refuses, no backtick. ``$`` passes, as file names may hold it."""
    return _checked_text(repr(field), value, frozenset("`"))


def check_session_model(body: Any) -> Mapping[str, Any]:
    """Validate a ``POST /api/sessions`` or ``PATCH /api/sessions/{id}`` body.

    Checks the type of every field present and the characters of those that reach
    the kernel's env; whether ``path`` and ``type`` are there is left to
    jupyter_server. ``name``, ``kernel.id`` and ``kernel.name`` may be null.
    """
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    if "type" in body:
        check_text("type", body["type"])
    if "path" in body:  # a null path is refused too: every session has one
        check_api_path(check_text("path", body["path"]))
    if body.get("name") is not None:
        check_text("name", body["name"])
    kernel = _object_field(body, "kernel")
    for name in ("id", "name"):
        if kernel.get(name) is not None:
            check_text(f"kernel.{name}", kernel[name])
    notebook = _object_field(body, "notebook")  # the old API: its path or name is the path
    for name in ("path", "name"):
        check_api_path(notebook.get(name), f"notebook.{name}")
    return body


def _object_field(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name, {})
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{name!r} must be a JSON object")
    return value


def parse_launch_request(body: Any, policy: EnvPolicy) -> LaunchRequest:
    """Validate a ``POST /api/kernels`` body (``{name, path, env}``)."""
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidRequest("'name' must be a non-empty string")
    if name is not None:
        check_text("name", name)  # it reaches jupyter_client's log lines
    env = filter_client_env(body.get("env"), policy)
    kernel_id = env.pop("KERNEL_ID", None)
    if kernel_id is not None:
        kernel_id = check_kernel_id(kernel_id)
    return LaunchRequest(
        kernel_name=name,
        path=check_api_path(body.get("path")),
        env=env,
        kernel_id=kernel_id,
    )


# --- Kernelspec access ------------------------------------------------------------------


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


ROOT_USER = "root"
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
    if principal.name == ROOT_USER and not policy.allow_root:
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


# --- Whom a kernel runs as ----------------------------------------------------------------

MAX_USERNAME_LENGTH = 32
# POSIX-ish: portable characters, not starting with a digit, '.' or '-' (no '/', '@', '$').
_USERNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_USERNAME_RULE = (
    f"at most {MAX_USERNAME_LENGTH} characters: letters, digits, '_', '.' and '-', "
    "starting with a letter or '_'"
)


def is_valid_username(value: Any) -> bool:
    """Whether ``value`` has the shape of a user name a kernel may run as."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_USERNAME_LENGTH
        and _USERNAME.fullmatch(value) is not None
    )


ANONYMOUS_VIA = "anonymous"


def is_anonymous(principal: Principal) -> bool:
    """Whether ``principal`` is the caller of a gateway without authentication."""
    return principal.via == ANONYMOUS_VIA


def effective_username(principal: Principal, requested: Any = None) -> str:
    """The user a kernel runs as, given the client's ``KERNEL_USERNAME`` (or ``None``).

    Absent (``None`` or ``""``): the principal's own name. Present: it must be a
    valid user name (else ``InvalidRequest``) and equal the principal's name
    unless the principal ``may_act_for_others`` or is the anonymous caller of a
    gateway without authentication (else ``Forbidden``). Without authentication
    there is no identity to protect: the name is the kernel's owner, as in
    Enterprise Gateway, and the gateway refuses to start if a kernelspec would run
    kernels as their owner (``kernelyard.startup_checks``).
    """
    if requested is None or requested == "":
        if not is_valid_username(principal.name):
            raise Forbidden(f"the user name {principal.name!r} is not one a kernel can run as")
        return principal.name
    if not is_valid_username(requested):
        raise InvalidRequest(f"KERNEL_USERNAME must be a user name of {_USERNAME_RULE}")
    requested = canonical_username(requested)
    if requested == principal.name or principal.may_act_for_others or is_anonymous(principal):
        return str(requested)
    raise Forbidden(
        f"KERNEL_USERNAME {requested!r} is not the authenticated user {principal.name!r}; "
        "only a service may start kernels for other users"
    )


def launch_subject(principal: Principal, run_as: str, groups: Iterable[str] = ()) -> Principal:
    """The principal whose rules a launch follows and who owns the kernel.

    The caller itself, or, when a service starts a kernel for ``run_as``, that
    user with the ``groups`` the caller looked up (never an admin or a service).
    """
    if run_as == principal.name:
        return principal
    return Principal(name=run_as, groups=frozenset(groups), via=principal.via)


# --- Kernel quotas ------------------------------------------------------------------------

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


# --- Resource limits per group ------------------------------------------------------------

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


# --- Kernel ownership and what other users see --------------------------------------------

SENSITIVE_NAME_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL")
REDACTED = "<redacted>"
K = TypeVar("K")


def may_access_kernel(principal: Principal, owner: str | None) -> bool:
    """The owner or an admin may connect to, interrupt, restart, delete or list a kernel.

    A kernel without an owner (``None`` or ``""``) is an admin's alone. Without
    authentication every caller is the same anonymous one, and owners (a client's
    ``KERNEL_USERNAME``) are labels: it may access every kernel.
    """
    return principal.admin or is_anonymous(principal) or (
        isinstance(owner, str) and bool(owner) and canonical_username(owner) == principal.name)


def check_kernel_access(principal: Principal, kernel_id: str, owner: str | None) -> None:
    """``NotFound`` (as for a missing kernel) unless ``principal`` may access the kernel."""
    if not may_access_kernel(principal, owner):
        raise NotFound(f"no such kernel: {kernel_id}")


def owner_of(kernel: Any) -> str | None:
    """The ``owner`` of a kernel model dict or record object (``None`` if absent)."""
    owner = kernel.get("owner") if isinstance(kernel, Mapping) else getattr(kernel, "owner", None)
    return owner if isinstance(owner, str) and owner else None


def visible_kernels(
    principal: Principal, kernels: Iterable[K], owner: Callable[[K], str | None] = owner_of
) -> list[K]:
    """The kernels ``principal`` may list, in their order."""
    return [k for k in kernels if may_access_kernel(principal, owner(k))]


def is_sensitive_env_name(name: str, secret_names: Iterable[str] = DEFAULT_SECRET_ENVS) -> bool:
    """A gateway secret, or a name containing TOKEN, SECRET, PASSWORD, PASSWD, KEY or CREDENTIAL."""
    upper = name.upper()
    return name in set(secret_names) or any(part in upper for part in SENSITIVE_NAME_PARTS)


def redact_env_for(
    viewer: Principal,
    owner: str | None,
    env: Mapping[str, str] | None,
    secret_names: Iterable[str] = DEFAULT_SECRET_ENVS,
) -> dict[str, str]:
    """The env of a kernel as ``viewer`` may see it in a kernel model.

    Only the owner sees it (an admin or another user gets ``{}``), with the
    values of sensitive names replaced by ``REDACTED``.
    """
    if not env or not owner or viewer.name != canonical_username(owner):
        return {}
    secrets = set(secret_names)
    return {
        name: REDACTED if is_sensitive_env_name(name, secrets) else value
        for name, value in env.items()
    }


# --- All of it for one launch -------------------------------------------------------------


@dataclass(frozen=True)
class LaunchPolicy:
    """The settings ``authorize`` applies (quotas are the ``QuotaGate``'s)."""

    access: AccessPolicy = field(default_factory=AccessPolicy)
    resource_limits: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchPlan:
    """What a launch may do: whom it runs as, who owns it, with which env."""

    subject: Principal
    run_as: str
    kernel_name: str
    env: dict[str, str]


def authorize(
    principal: Principal,
    request: LaunchRequest,
    kernel_name: str,
    spec_metadata: Mapping[str, Any],
    settings: LaunchPolicy,
    *,
    run_as_groups: Iterable[str] = (),
) -> LaunchPlan:
    """Run-as, kernelspec access and resource limits for a parsed launch request.

    ``kernel_name`` is the resolved kernelspec (the request's or the default);
    ``run_as_groups`` are the groups of the user a service starts a kernel for.
    The plan's ``env`` carries ``KERNEL_USERNAME`` set to ``run_as``.
    """
    run_as = effective_username(principal, request.env.get("KERNEL_USERNAME"))
    subject = launch_subject(principal, run_as, run_as_groups)
    check_kernelspec_access(subject, kernel_name, spec_metadata, settings.access)
    check_resources(subject, request.env, settings.resource_limits)
    env = {**request.env, "KERNEL_USERNAME": run_as}
    return LaunchPlan(subject=subject, run_as=run_as, kernel_name=kernel_name, env=env)

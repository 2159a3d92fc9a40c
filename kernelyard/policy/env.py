"""The client env and the gateway env: which names and values may reach a kernel."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequest

MAX_ENV_VALUE_LENGTH = 4096
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

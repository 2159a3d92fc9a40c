"""The client env and the gateway env: which names and values may reach a kernel.

The rules a provisioner needs too (the gateway's secrets, the base set, the character
check) are ``kernelyard.kernel_env``'s, a leaf below the provisioners.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequest
from ..kernel_env import (
    is_gateway_secret,
    unsafe_character,
)

MAX_ENV_VALUE_LENGTH = 4096
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Shell expansion and command substitution never reach a kernel's env.
_SHELL_CHARACTERS = frozenset("$`")


def _describe(char: str) -> str:
    return f"U+{ord(char):04X}" + (f" ({char!r})" if char in _SHELL_CHARACTERS else "")


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

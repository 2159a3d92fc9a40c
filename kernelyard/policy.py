"""Launch policy: pure functions, no I/O.

Decides which client-supplied values may reach a kernel. The API layer calls
these with the gateway's settings; they raise ``InvalidRequest`` naming the
offending field so the client gets a precise 400.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequest

MAX_ENV_VALUE_LENGTH = 4096
# Gateway variables that hold secrets: never inherited by, nor settable for, a kernel.
DEFAULT_SECRET_ENVS = ("KERNELYARD_AUTH_TOKEN", "JUPYTER_TOKEN", "JUPYTERHUB_API_TOKEN")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Control characters, shell expansion and command substitution never reach a kernel.
_FORBIDDEN_IN_VALUE = re.compile(r"[\x00-\x1f\x7f$`]")


@dataclass(frozen=True)
class EnvPolicy:
    """Which names pass from a client's ``env`` and from the gateway's own."""

    client_envs: tuple[str, ...] = ()
    inherited_envs: tuple[str, ...] = ()
    secret_names: frozenset[str] = field(default_factory=frozenset)

    def allows_client_name(self, name: str) -> bool:
        if name in self.secret_names:
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
    """Return ``value`` if it may be put in a kernel's env, else raise naming ``name``."""
    if not isinstance(value, str):
        raise InvalidRequest(f"env variable {name!r} must be a string")
    if len(value) > MAX_ENV_VALUE_LENGTH:
        raise InvalidRequest(
            f"env variable {name!r} is longer than {MAX_ENV_VALUE_LENGTH} characters"
        )
    if _FORBIDDEN_IN_VALUE.search(value):
        raise InvalidRequest(
            f"env variable {name!r} contains a control character, '$' or a backtick"
        )
    return value


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
        if not _ENV_NAME.match(name):
            raise InvalidRequest(f"env variable name {name!r} is not a valid name")
        if policy.allows_client_name(name):
            kept[name] = check_env_value(name, value)
    return kept


def inherited_env(gateway_env: Mapping[str, str], policy: EnvPolicy) -> dict[str, str]:
    """The gateway-process variables that the settings pass on to kernels."""
    return {
        name: gateway_env[name]
        for name in policy.inherited_envs
        if name in gateway_env and name not in policy.secret_names
    }


def scrub_secrets(env: Mapping[str, str], secret_names: Iterable[str]) -> dict[str, str]:
    """A copy of ``env`` without the gateway's secrets."""
    secrets = set(secret_names)
    return {k: v for k, v in env.items() if k not in secrets}


def check_kernel_id(value: Any) -> str:
    """A client-chosen kernel id must be a canonical (lower-case, hyphenated) UUID."""
    if isinstance(value, str):
        try:
            if str(uuid.UUID(value)) == value:
                return value
        except ValueError:
            pass
    raise InvalidRequest("KERNEL_ID must be a canonical UUID such as 'xxxxxxxx-xxxx-...'")


def check_api_path(path: Any) -> str | None:
    """A notebook path may not climb out of the gateway's root directory."""
    if path is None:
        return None
    if not isinstance(path, str):
        raise InvalidRequest("'path' must be a string")
    if any(part == ".." for part in path.replace("\\", "/").split("/")):
        raise InvalidRequest("'path' may not contain '..'")
    if _FORBIDDEN_IN_VALUE.search(path.replace("$", "")):
        raise InvalidRequest("'path' contains a control character")
    return path


def parse_launch_request(body: Any, policy: EnvPolicy) -> LaunchRequest:
    """Validate a ``POST /api/kernels`` body (``{name, path, env}``)."""
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidRequest("'name' must be a non-empty string")
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


def user_may_use_kernelspec(
    user: str,
    spec_metadata: Mapping[str, Any],
    *,
    authorized_users: Iterable[str] = (),
    unauthorized_users: Iterable[str] = (),
) -> bool:
    """Whether ``user`` may see and launch a kernelspec.

    The kernelspec's own lists (``metadata.kernelyard`` or, for Enterprise
    Gateway kernelspecs, ``metadata.process_proxy.config``) refine the
    gateway-wide ones. An unauthorized listing always wins.
    """
    spec_cfg = _spec_access_config(spec_metadata)
    denied = set(unauthorized_users) | set(spec_cfg.get("unauthorized_users", ()))
    if user in denied:
        return False
    allowed = set(spec_cfg.get("authorized_users", ())) or set(authorized_users)
    return not allowed or user in allowed


def _spec_access_config(metadata: Mapping[str, Any]) -> Mapping[str, Any]:
    own = metadata.get("kernelyard")
    if isinstance(own, Mapping):
        return own
    proxy = metadata.get("process_proxy")
    if isinstance(proxy, Mapping) and isinstance(proxy.get("config"), Mapping):
        return proxy["config"]
    return {}

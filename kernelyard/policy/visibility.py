"""Kernel ownership and what other users see of a kernel."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ..errors import NotFound
from ..identity import Principal, canonical_username
from ..kernel_env import DEFAULT_SECRET_ENVS
from .runas import is_anonymous

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

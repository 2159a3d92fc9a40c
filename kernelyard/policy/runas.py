"""Whom a kernel runs as: ``effective_username`` (the ``KERNEL_USERNAME`` rule) and the
launch subject; the user-name check itself is ``kernelyard.identity``'s."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import Forbidden, InvalidRequest
from ..identity import (
    USERNAME_RULE,
    Principal,
    canonical_username,
    is_valid_username,
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
        raise InvalidRequest(f"KERNEL_USERNAME must be a user name of {USERNAME_RULE}")
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

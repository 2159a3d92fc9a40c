"""Who a request is and whom a kernel runs as: the leaf every layer shares.

Holds the one identity type (``Principal``), the one form of a user name
(``canonical_username``), the one user-name check (``is_valid_username``), the
one kernel-id check (``check_kernel_id``) and the one refusal of root
(``is_root`` / ``refuse_root``). Stdlib and ``kernelyard.errors`` only: the
run-as helper (``python -I -m kernelyard.runas``, a separate privileged
process) imports it too.
"""

from __future__ import annotations

import getpass
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from .errors import Forbidden, InvalidRequest, KernelStartFailed

ROOT_USER = "root"
MAX_USERNAME_LENGTH = 32
# POSIX-ish: portable characters, not starting with a digit, '.' or '-' (no '/', '@', '$').
_USERNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
USERNAME_RULE = (
    f"at most {MAX_USERNAME_LENGTH} characters: letters, digits, '_', '.' and '-', "
    "starting with a letter or '_'"
)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``name`` is the user kernels run as (an OS / Kerberos short name such as
    ``alice``), in its canonical form (``canonical_username``). ``via`` names
    the authenticator that vouched for it (``token``,
    ``api-token``, ``jupyterhub``, ``kerberos``, ``proxy-header``, ``mtls``).
    ``may_act_for_others`` marks a service (JupyterHub, a trusted proxy) whose
    ``KERNEL_USERNAME`` is honoured; for everyone else it must equal ``name``.
    """

    name: str
    groups: frozenset[str] = field(default_factory=frozenset)
    admin: bool = False
    via: str = ""
    may_act_for_others: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", canonical_username(self.name))


def canonical_username(name: str) -> str:
    """The one form of a user name that rules, quotas, owners and audit lines use.

    User names compare without regard to letter case (as JupyterHub's do, and as
    directory services such as Active Directory sign users in): ``Alice`` is
    ``alice``. Every ``Principal``, ``KERNEL_USERNAME`` and user name in the
    settings goes through this, so no spelling escapes a rule keyed by a name.
    """
    return name.lower() if isinstance(name, str) else name


def gateway_user() -> str:
    """The OS user the gateway runs as (``kernelyard`` when it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "kernelyard"


def is_valid_username(value: Any) -> bool:
    """Whether ``value`` has the shape of a user name (``USERNAME_RULE``): the one check
    for the user a kernel runs as, a YARN proxy user, a user map entry, a token's owner."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_USERNAME_LENGTH
        and _USERNAME.fullmatch(value) is not None
    )


class RunAsRefused(Forbidden, KernelStartFailed):
    """A kernel may not run as this user; the message says why (no secrets in it).

    A ``Forbidden`` (the client sees 403) that is also a failed start, so the
    kernel manager forgets the start as it does any other that failed.
    """


def is_root(name: Any, uid: int | None = None) -> bool:
    """Whether a user is root: the name ``root`` (in any case) or the uid 0."""
    return uid == 0 or (isinstance(name, str) and canonical_username(name) == ROOT_USER)


def refuse_root(name: str, uid: int | None = None,
                error: type[Forbidden] = RunAsRefused, hint: str = "") -> None:
    """The one refusal of root: raise ``error`` if ``is_root(name, uid)``.

    ``hint`` (say, the setting that allows it) ends the message.
    """
    if is_root(name, uid):
        raise error(f"refusing to run a kernel as root (user {name!r}{hint})")


def check_kernel_id(value: Any) -> str:
    """A client-chosen kernel id must be a canonical (lower-case, hyphenated) UUID."""
    if isinstance(value, str):
        try:
            if str(uuid.UUID(value)) == value:
                return value
        except ValueError:
            pass
    raise InvalidRequest("KERNEL_ID must be a canonical UUID such as 'xxxxxxxx-xxxx-...'")

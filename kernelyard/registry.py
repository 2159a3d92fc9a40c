"""Plugins by entry-point name: the groups kernelyard reads, each read and loaded once.

- ``jupyter_client.kernel_provisioners`` (``PROVISIONERS``): the backends' provisioners,
  named by a kernelspec's ``metadata.kernel_provisioner.provisioner_name``. kernelyard's
  are those of kernelyard itself and of any installed distribution that depends on
  kernelyard (a third-party backend); jupyter_client's own and other projects' entries
  are not kernelyard's, so they are not loaded here.
- ``kernelyard.authenticators`` (``AUTHENTICATORS``): how callers are identified,
  named by ``KernelyardApp.authenticators``.
- ``kernelyard.kernelspec_backends`` (``KERNELSPEC_BACKENDS``): what each backend adds
  to ``kernelyard kernelspec install`` and the pip extra it needs
  (``kernelyard.provisioners.kernelspec_backend.KernelspecBackend``).

The configurable classes (``generate-config``, ``--help-all``, the command line) are
the core classes plus every provisioner and authenticator found here, so a setting of
an installed backend is documented by construction. Nothing is loaded at import; an
entry point that cannot be loaded raises ``EntryPointError``, which names it.
A backend module must therefore import without its extra (import it where it is used).
"""

from __future__ import annotations

import functools
import re
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import ConfigError

PROVISIONERS = "jupyter_client.kernel_provisioners"
AUTHENTICATORS = "kernelyard.authenticators"
KERNELSPEC_BACKENDS = "kernelyard.kernelspec_backends"
GROUPS = (PROVISIONERS, AUTHENTICATORS, KERNELSPEC_BACKENDS)
PROJECT = "kernelyard"
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class EntryPointError(ConfigError):
    """An entry point that cannot be loaded, or names the wrong kind of object."""


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def describe(group: str, ep: EntryPoint) -> str:
    """``entry point 'ssh' = mod:obj (group G, distribution D)``, for error messages."""
    dist = ep.dist.metadata["Name"] if ep.dist is not None else "unknown"
    return f"entry point {ep.name!r} = {ep.value} (group {group}, distribution {dist})"


def is_kernelyard_entry(ep: EntryPoint) -> bool:
    """Whether ``ep`` comes from kernelyard or from a distribution that depends on it."""
    if ep.dist is None:
        return False
    if _normal(ep.dist.metadata["Name"] or "") == PROJECT:
        return True
    for requirement in ep.dist.requires or ():
        m = _REQUIREMENT_NAME.match(requirement.strip())
        if m and _normal(m.group(0)) == PROJECT:
            return True
    return False


@functools.cache
def group(name: str, *, kernelyard_only: bool = False) -> tuple[EntryPoint, ...]:
    """The entry points of group ``name``, by name (read once)."""
    found = {ep.name: ep for ep in entry_points(group=name)
             if not kernelyard_only or is_kernelyard_entry(ep)}
    return tuple(found[key] for key in sorted(found))


@functools.cache
def load(name: str, ep: EntryPoint) -> Any:
    """The object entry point ``ep`` of group ``name`` names (loaded once)."""
    try:
        return ep.load()
    except Exception as e:  # an import error or anything the module raises
        raise EntryPointError(f"{describe(name, ep)} cannot be loaded: "
                              f"{type(e).__name__}: {e}") from e


def load_group(name: str, *, kind: type | None = None,
               kernelyard_only: bool = False) -> dict[str, Any]:
    """entry-point name -> loaded object, for every entry point of group ``name``;
    ``EntryPointError`` naming the entry point when one is not a ``kind``."""
    found = {}
    for ep in group(name, kernelyard_only=kernelyard_only):
        found[ep.name] = obj = load(name, ep)
        if kind is not None and not isinstance(obj, kind):
            raise EntryPointError(f"{describe(name, ep)} is not a {kind.__name__}")
    return found


def find(name: str, entry: str) -> Any | None:
    """The object entry point ``entry`` of group ``name`` names, or None if none does."""
    for ep in group(name):
        if ep.name == entry:
            return load(name, ep)
    return None


def configurable_classes() -> list[type]:
    """kernelyard's provisioners, then the authenticators, each once."""
    found: list[type] = []
    for name in (PROVISIONERS, AUTHENTICATORS):
        kernelyard_only = name == PROVISIONERS
        for ep in group(name, kernelyard_only=kernelyard_only):
            cls = load(name, ep)
            if not (isinstance(cls, type) and hasattr(cls, "class_traits")):
                raise EntryPointError(f"{describe(name, ep)} is not a configurable class")
            if cls not in found:
                found.append(cls)
    return found


def clear() -> None:
    """Forget what was read (for a test that installs a distribution in-process)."""
    group.cache_clear()
    load.cache_clear()

"""The gateway's kernelspec manager: jupyter_client's, refusing EG remote kernelspecs
and kernelspecs whose backend's pip extra is missing.

An Enterprise Gateway kernelspec for remote kernels names a process proxy
(``metadata.process_proxy.class_name``: ``DistributedProcessProxy``,
``YarnClusterProcessProxy``, ...) and a ``run.sh`` argv that EG's process proxy
runs on a cluster node. kernelyard has no process proxies: jupyter_client would
ignore the stanza and run that argv on the gateway host with the local
provisioner. So such a kernelspec is refused everywhere: the gateway does not
start with one (``kernelyard.startup_checks``), ``GET /api/kernelspecs`` omits
one added while the gateway runs, and any use of it by name is a 400 whose
message names the ``kernelyard kernelspec install`` command to use instead.

EG's ``LocalProcessProxy`` runs the argv on the gateway host, as kernelyard
does, and a ``process_proxy`` without a ``class_name`` is only a source of
access lists (``metadata.process_proxy.config``, see ``kernelyard.policy``):
those kernelspecs are served.

A kernelspec whose backend needs a pip extra that is not installed (an ``ssh``
kernelspec without ``kernelyard[ssh]``: ``KernelspecBackend.extra``) is refused
the same way, with a message naming the kernelspec and the ``pip install``
command: the gateway does not start with one, the listing omits one added later,
and its use by name is a 500 (``ConfigError``: the gateway's install is at fault).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel

from .errors import ConfigError, Forbidden, InvalidRequest
from .provisioners.kernelspec_backend import missing_extra_message

# EG's process proxies by their class's last name -> the kernelyard backend to use instead.
LOCAL_PROXY = "LocalProcessProxy"
EG_BACKENDS = {
    "DistributedProcessProxy": "ssh",
    "YarnClusterProcessProxy": "yarn",
}
INSTALL_HINTS = {
    "ssh": "kernelyard kernelspec install ssh --name {name} --hosts HOST1,HOST2",
    "yarn": "kernelyard kernelspec install yarn --name {name}",
}


def eg_process_proxy(metadata: Mapping[str, Any] | None) -> str | None:
    """The EG process proxy class a kernelspec's metadata names, unless it is none or
    ``LocalProcessProxy`` (a kernel on the gateway host, which kernelyard runs as EG does)."""
    proxy = (metadata or {}).get("process_proxy")
    name = proxy.get("class_name") if isinstance(proxy, Mapping) else None
    if not isinstance(name, str) or not name.strip():
        return None
    return None if name.rsplit(".", 1)[-1] == LOCAL_PROXY else name


def eg_kernelspec_message(name: str, class_name: str) -> str:
    """Why kernelspec ``name`` (naming EG's ``class_name``) is refused, and what to run."""
    backend = EG_BACKENDS.get(class_name.rsplit(".", 1)[-1])
    if backend:
        command = f"`{INSTALL_HINTS[backend].format(name=name)}`"
    else:
        command = ("one of `" + "`, `".join(h.format(name=name) for h in
                                            (INSTALL_HINTS["ssh"], INSTALL_HINTS["yarn"]))
                   + "` (kernelyard has no backend for this process proxy)")
    return (f"kernelspec {name!r} is an Enterprise Gateway kernelspec "
            f"(metadata.process_proxy.class_name {class_name!r}): kernelyard does not run EG "
            "process proxies, and would run its argv (run.sh) on the gateway host instead. "
            f"Replace it with a kernelyard kernelspec: {command} (README: Migrating from "
            "Enterprise Gateway), and remove this one.")


def missing_extra(name: str, metadata: Mapping[str, Any] | None) -> str | None:
    """Why kernelspec ``name`` can't run for want of its backend's pip extra, or None."""
    stanza = (metadata or {}).get("kernel_provisioner")
    provisioner = stanza.get("provisioner_name") if isinstance(stanza, Mapping) else None
    return missing_extra_message(name, provisioner) if isinstance(provisioner, str) else None


class KernelyardKernelSpecManager(KernelSpecManager):  # type: ignore[misc]
    """Lists and finds kernelspecs as jupyter_client does, refusing EG remote kernelspecs."""

    #: Set at startup (``KernelyardApp.init_startup_checks``): why a kernelspec found
    #: later may not be used (a 403 naming the settings), or None when it may.
    refuse: Callable[[str, KernelSpec], str | None] | None = None

    def refused_kernelspecs(self) -> dict[str, str]:
        """name -> why, for every kernelspec found that the gateway refuses."""
        refused = {}
        for name, (info, class_name) in self._all_specs().items():
            why = (eg_kernelspec_message(name, class_name) if class_name
                   else missing_extra(name, info["spec"].get("metadata")))
            if why:
                refused[name] = why
        return refused

    def get_all_specs(self) -> dict[str, Any]:
        """Every kernelspec (as jupyter_client lists them) but the refused ones."""
        return {name: info for name, (info, class_name) in self._all_specs().items()
                if not class_name and not missing_extra(name, info["spec"].get("metadata"))
                and not self._refusal(name, info)}

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        """The kernelspec; ``InvalidRequest`` (400) naming the replacement for a refused one."""
        spec = super().get_kernel_spec(kernel_name)
        class_name = eg_process_proxy(spec.metadata)
        if class_name is not None:
            raise InvalidRequest(eg_kernelspec_message(kernel_name, class_name))
        missing = missing_extra(kernel_name, spec.metadata)
        if missing:
            raise ConfigError(missing)
        why = self.refuse(kernel_name, spec) if self.refuse else None
        if why:
            raise Forbidden(why)
        return spec

    def _refusal(self, name: str, info: dict[str, Any]) -> str | None:
        if self.refuse is None:
            return None
        return self.refuse(name, KernelSpec(resource_dir=info["resource_dir"], **info["spec"]))

    def _all_specs(self) -> dict[str, tuple[dict[str, Any], str | None]]:
        """name -> (its get_all_specs entry, the EG process proxy it names or None)."""
        found: dict[str, tuple[dict[str, Any], str | None]] = {}
        for name, resource_dir in self.find_kernel_specs().items():
            try:
                spec = super().get_kernel_spec(name)
            except NoSuchKernel:
                continue
            except Exception:
                self.log.warning("Error loading kernelspec %r", name, exc_info=True)
                continue
            found[name] = ({"resource_dir": resource_dir, "spec": spec.to_dict()},
                           eg_process_proxy(spec.metadata))
        return found

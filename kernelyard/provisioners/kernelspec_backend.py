"""What a backend contributes to ``kernelyard kernelspec install`` and to the extras check.

Each backend registers one ``KernelspecBackend`` under the entry-point group
``kernelyard.kernelspec_backends``; the entry point's name is the ``BACKEND``
argument of ``kernelyard kernelspec install BACKEND``. The CLI (``kernelyard.cli.
kernelspec``) owns the options every backend shares (``--name``, ``--python``,
``--kernel-cmd``, ``--env``, ``--curve``, ``--launch-timeout``, ...) and the
kernel.json around the backend's part; the backend adds its own options and
builds its ``argv`` and ``metadata.kernel_provisioner.config`` from them.

``extra`` and ``modules`` say which pip extra the backend needs and which modules
it installs: the gateway refuses a kernelspec of the backend while one is missing,
with a message that names the kernelspec and ``pip install 'kernelyard[EXTRA]'``
(``kernelyard.kernelspecs``).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LAUNCHER = "kernelyard-launcher"

#: (opts, the kernel's own command) -> (the kernelspec's argv, the provisioner's config)
Builder = Callable[[argparse.Namespace, list[str]], tuple[list[str], dict[str, Any]]]


class KernelspecOptions:
    """The install parser as backends see it: titled option groups, each flag added once.

    An option that two backends both read (``--spark-conf``) is declared by both and
    added by the first; the later declaration is skipped.
    """

    def __init__(self, parser: argparse.ArgumentParser):
        self._parser = parser
        self._groups: dict[str, Any] = {}
        self._flags: set[str] = set()

    def add(self, group: str, *flags: str, **kwargs: Any) -> None:
        """Add option ``flags`` to the group titled ``group`` unless a backend did."""
        if self._flags.intersection(flags):
            return
        self._flags.update(flags)
        if group not in self._groups:
            self._groups[group] = self._parser.add_argument_group(group)
        self._groups[group].add_argument(*flags, **kwargs)


def _no_options(_: KernelspecOptions) -> None:
    """A backend without options of its own."""


@dataclass(frozen=True)
class KernelspecBackend:
    """One backend of ``kernelyard kernelspec install`` (see the module docstring)."""

    provisioner: str  # its jupyter_client.kernel_provisioners entry-point name
    build: Builder
    add_options: Callable[[KernelspecOptions], None] = _no_options
    remote: bool = True  # kernels run off the gateway host (CurveZMQ applies)
    kernel_python: str = ""  # the Python of the default kernel command ('': --python)
    extra: str = ""  # the pip extra it needs ('' : none)
    modules: tuple[str, ...] = ()  # the modules that extra installs

    def missing(self) -> str:
        """Why the extra's modules can't be imported here ('' when they can)."""
        for name in self.modules:
            try:
                importlib.import_module(name)
            except ImportError as e:
                return f"{type(e).__name__}: {e}"
        return ""

    def install_hint(self) -> str:
        return f"pip install 'kernelyard[{self.extra}]'" if self.extra else ""


def spark_options(options: KernelspecOptions) -> None:
    """``--spark-session`` and ``--spark-conf``, read by every Spark-capable backend."""
    group = "Spark (yarn; ssh with --spark-master)"
    options.add(group, "--spark-session", choices=["lazy", "eager", "none"], default=None,
                help="when `spark` and `sc` are created (default lazy)")
    options.add(group, "--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                help="Spark conf for every kernel of the spec (repeatable)")


def backend_for(provisioner: str) -> tuple[str, KernelspecBackend] | None:
    """The registered backend (name, backend) whose provisioner is ``provisioner``."""
    from .. import registry

    found = registry.load_group(registry.KERNELSPEC_BACKENDS, kind=KernelspecBackend)
    return next(((name, b) for name, b in found.items() if b.provisioner == provisioner), None)


def missing_extra_message(kernelspec: str, provisioner: str) -> str | None:
    """Why kernelspec ``kernelspec`` can't run here for want of its backend's pip extra,
    naming the command that installs it; None when nothing is missing."""
    found = backend_for(provisioner)
    if found is None:
        return None
    name, backend = found
    missing = backend.missing()
    if not missing:
        return None
    return (f"kernelspec {kernelspec!r} uses the {name} backend ({provisioner}), whose "
            f"dependencies are not installed ({missing}): {backend.install_hint()}, then "
            "restart the gateway")

"""The ``local`` backend of ``kernelyard kernelspec install``: kernels on the gateway host.

The kernel's own command is the argv (no launcher); ``LocalKernelProvisioner``
has no kernelspec options beyond the shared ones. It needs no extra.
"""

from __future__ import annotations

import argparse
from typing import Any

from .kernelspec_backend import KernelspecBackend


def build(_: argparse.Namespace, kernel_cmd: list[str]) -> tuple[list[str], dict[str, Any]]:
    """A local kernelspec runs the kernel's command as is."""
    return kernel_cmd, {}


BACKEND = KernelspecBackend(provisioner="kernelyard-local", build=build, remote=False)

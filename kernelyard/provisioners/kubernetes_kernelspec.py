"""The ``kubernetes`` backend of ``kernelyard kernelspec install``: each kernel in a pod.

Its options (``--image``, ``--namespace``, ``--cpu``/``--memory``/``--gpus`` limits,
``--default-memory``/``--default-cpus``) become the config of ``KubernetesProvisioner``.
The kernel command runs in the image with its ``python3`` (``{python}``, the
provisioner's ``python`` setting). It needs the ``kubernetes`` extra (kubernetes_asyncio).
"""

from __future__ import annotations

import argparse
from typing import Any

from .kernelspec_backend import LAUNCHER, KernelspecBackend, KernelspecOptions

GROUP = "kubernetes"


def add_options(options: KernelspecOptions) -> None:
    options.add(GROUP, "--image", default="", help="kubernetes: the kernel image")
    options.add(GROUP, "--namespace", default="", help="kubernetes: the kernel namespace "
                "(default kernelyard-kernels)")
    options.add(GROUP, "--pull-policy", default="", choices=["", "Always", "IfNotPresent",
                                                              "Never"],
                help="kubernetes: the image pull policy")
    options.add(GROUP, "--cpu", default="", help="kubernetes: the most CPUs a client may ask "
                "for (KERNEL_CPUS), e.g. 4")
    options.add(GROUP, "--memory", default="", help="kubernetes: the most memory a client may "
                "ask for (KERNEL_MEMORY), e.g. 8g")
    options.add(GROUP, "--gpus", type=int, default=None, help="kubernetes: the most GPUs a "
                "client may ask for (KERNEL_GPUS)")
    options.add(GROUP, "--default-memory", default="", help="kubernetes: memory of a kernel "
                "whose client asks for none, e.g. 1g")
    options.add(GROUP, "--default-cpus", default="", help="kubernetes: CPUs of a kernel whose "
                "client asks for none, e.g. 0.5")


def build(opts: argparse.Namespace, kernel_cmd: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The launcher argv and the KubernetesProvisioner config of a kubernetes kernelspec."""
    if not opts.image:
        raise SystemExit("kernelyard kernelspec install kubernetes needs --image")
    config: dict[str, Any] = {"image": opts.image}
    for option, setting in (("namespace", "namespace"), ("pull_policy", "image_pull_policy"),
                            ("default_memory", "default_memory"),
                            ("default_cpus", "default_cpus")):
        if getattr(opts, option):
            config[setting] = getattr(opts, option)
    limits = {var: value for var, value in (("KERNEL_CPUS", opts.cpu),
                                            ("KERNEL_MEMORY", opts.memory),
                                            ("KERNEL_GPUS", opts.gpus))
              if value not in ("", None)}
    if limits:
        config["resource_limits"] = limits
    return [LAUNCHER, "--", *kernel_cmd], config


BACKEND = KernelspecBackend(provisioner="kernelyard-kubernetes", build=build,
                            add_options=add_options, kernel_python="{python}",
                            extra="kubernetes", modules=("kubernetes_asyncio",))

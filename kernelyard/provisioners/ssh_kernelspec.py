"""The ``ssh`` backend of ``kernelyard kernelspec install``: kernels on a pool of SSH hosts.

Its options (``--hosts``, ``--placement``, ``--remote-user``, ``--port-range`` and,
for a Spark client-mode driver, ``--spark-master``) become the config of
``SSHProvisioner``; the kernel runs through the launcher. It needs the ``ssh``
extra (asyncssh).
"""

from __future__ import annotations

import argparse
from typing import Any

from .kernelspec_backend import (
    LAUNCHER,
    KernelspecBackend,
    KernelspecOptions,
    spark_options,
)


def add_options(options: KernelspecOptions) -> None:
    options.add("ssh", "--hosts", default="", help="ssh: comma-separated hosts")
    options.add("ssh", "--placement", default="round-robin",
                choices=["round-robin", "least-loaded"])
    options.add("ssh", "--remote-user", default="", help="ssh: the user kernels run as")
    options.add("ssh", "--port-range", default="", help="kernel ports on the node, 'LO..HI'")
    options.add("Spark (yarn; ssh with --spark-master)", "--spark-master", default="",
                help="ssh: run the kernel as a Spark client-mode driver of this master "
                "(spark://host:port, yarn)")
    spark_options(options)


def build(opts: argparse.Namespace, kernel_cmd: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The launcher argv and the SSHProvisioner config of an ssh kernelspec."""
    if not opts.hosts:
        raise SystemExit("kernelyard kernelspec install ssh needs --hosts h1,h2")
    config: dict[str, Any] = {"hosts": opts.hosts.split(","), "remote_python": opts.python,
                              "placement": opts.placement}
    if opts.remote_user:
        config["username"] = opts.remote_user
    if opts.port_range:
        config["port_range"] = opts.port_range
    return [LAUNCHER, *spark_client_options(opts), "--", *kernel_cmd], config


def spark_client_options(opts: argparse.Namespace) -> list[str]:
    """Launcher options for a Spark driver in client mode on the kernel's host."""
    if not opts.spark_master:
        if opts.spark_conf:
            raise SystemExit("--spark-conf needs --spark-master (or the yarn backend)")
        return []
    mode = opts.spark_session or "lazy"
    args = ["--spark-session", mode, "--spark-master", opts.spark_master]
    for entry in opts.spark_conf:
        args += ["--spark-conf", entry]
    return args


BACKEND = KernelspecBackend(provisioner="kernelyard-ssh", build=build, add_options=add_options,
                            extra="ssh", modules=("asyncssh",))

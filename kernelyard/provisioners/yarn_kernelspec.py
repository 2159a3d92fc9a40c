"""The ``yarn`` backend of ``kernelyard kernelspec install``: Spark kernels in YARN cluster mode.

Its options (``--queue``, the driver and executor sizes, ``--rm-urls`` and the
Spark options) become the config of ``YarnProvisioner``. The kernel command's
Python is ``{python}``, which the provisioner fills in (``YarnProvisioner.python``).
The ``yarn`` extra installs nothing beyond the core: spark-submit comes from the
cluster's own Spark (``YarnProvisioner.spark_home``).
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

GROUP = "Spark (yarn; ssh with --spark-master)"


def add_options(options: KernelspecOptions) -> None:
    spark_options(options)
    options.add(GROUP, "--queue", default="default", help="yarn: the default queue")
    options.add(GROUP, "--driver-memory", default="", help="yarn: e.g. 1g")
    options.add(GROUP, "--executor-memory", default="", help="yarn: e.g. 1g")
    options.add(GROUP, "--num-executors", type=int, default=None,
                help="yarn: fixed executors (0: dynamic allocation)")
    options.add(GROUP, "--rm-urls", default="",
                help="yarn: the ResourceManagers' web URLs, comma-separated "
                "(default: from yarn-site.xml)")


def build(opts: argparse.Namespace, kernel_cmd: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The launcher argv and the YarnProvisioner config of a cluster-mode kernelspec."""
    return [LAUNCHER, "--", *kernel_cmd], yarn_config(opts)


def yarn_config(opts: argparse.Namespace) -> dict[str, Any]:
    """The YARN provisioner's settings for a cluster-mode Spark kernelspec."""
    if opts.spark_session == "none":
        raise SystemExit("--spark-session none needs Spark client mode: in YARN cluster mode "
                         "the application fails when its driver makes no SparkContext")
    config: dict[str, Any] = {"python": opts.python, "queue": opts.queue,
                              "spark_session": opts.spark_session or "lazy",
                              "spark_conf": dict(_conf_pair(e) for e in opts.spark_conf)}
    for name in ("driver_memory", "executor_memory"):
        if getattr(opts, name):
            config[name] = getattr(opts, name)
    if opts.num_executors is not None:
        config["num_executors"] = opts.num_executors
    if opts.rm_urls:
        config["rm_urls"] = opts.rm_urls.split(",")
    return config


def _conf_pair(entry: str) -> tuple[str, str]:
    key, sep, value = entry.partition("=")
    if not sep or not key.startswith("spark."):
        raise SystemExit(f"--spark-conf {entry!r}: expected spark.KEY=VALUE")
    return key, value


BACKEND = KernelspecBackend(provisioner="kernelyard-yarn", build=build, add_options=add_options,
                            kernel_python="{python}", extra="yarn")

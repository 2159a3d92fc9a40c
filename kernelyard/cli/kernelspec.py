"""``kernelyard kernelspec install|list``: kernelspecs for each backend."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager

BACKENDS = {"ssh": "kernelyard-ssh", "local": "kernelyard-local", "yarn": "kernelyard-yarn"}
LAUNCHER = "kernelyard-launcher"


def kernel_json(opts: argparse.Namespace) -> dict[str, Any]:
    """The kernel.json for ``opts`` (a pure function, tested with golden outputs)."""
    python = "{python}" if opts.backend == "yarn" else opts.python
    kernel_cmd = (shlex.split(opts.kernel_cmd) if opts.kernel_cmd
                  else [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    if "{connection_file}" not in " ".join(kernel_cmd):
        raise SystemExit("--kernel-cmd must contain {connection_file}")
    config: dict[str, Any] = {}
    argv = kernel_cmd
    if opts.backend == "ssh":
        if not opts.hosts:
            raise SystemExit("kernelyard kernelspec install ssh needs --hosts h1,h2")
        config = {"hosts": opts.hosts.split(","), "remote_python": opts.python,
                  "placement": opts.placement}
        if opts.remote_user:
            config["username"] = opts.remote_user
        if opts.port_range:
            config["port_range"] = opts.port_range
        argv = [LAUNCHER, *spark_client_options(opts), "--", *kernel_cmd]
    if opts.backend == "yarn":
        config = yarn_config(opts)
        argv = [LAUNCHER, "--", *kernel_cmd]
    if opts.launch_timeout:
        config["launch_timeout"] = opts.launch_timeout
    if opts.curve:
        if opts.backend == "local":
            raise SystemExit("--curve is for remote kernels (ssh, yarn)")
        config["curve_encryption"] = True
    spec: dict[str, Any] = {
        "argv": argv,
        "display_name": opts.display_name or opts.name,
        "language": opts.language,
        "interrupt_mode": "signal",
        "metadata": {"kernel_provisioner": {"provisioner_name": BACKENDS[opts.backend],
                                            "config": config}},
    }
    if opts.env:
        spec["env"] = dict(_env_pair(entry) for entry in opts.env)
    return spec


def _env_pair(entry: str) -> tuple[str, str]:
    name, sep, value = entry.partition("=")
    if not sep or not name.replace("_", "a").isalnum() or name[0].isdigit():
        raise SystemExit(f"--env {entry!r}: expected NAME=VALUE")
    return name, value


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


def install(opts: argparse.Namespace) -> int:
    spec = kernel_json(opts)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        dest = KernelSpecManager().install_kernel_spec(
            tmp, opts.name, user=opts.user, prefix=None if opts.user else opts.prefix
        )
    print(f"Installed kernelspec {opts.name} ({opts.backend}) in {dest}")
    return 0


def list_specs(_: argparse.Namespace) -> int:
    specs = KernelSpecManager().get_all_specs()
    rows = [("NAME", "BACKEND", "DISPLAY NAME", "DIRECTORY")]
    for name, info in sorted(specs.items()):
        meta = info["spec"].get("metadata", {}).get("kernel_provisioner", {})
        rows.append((name, meta.get("provisioner_name", "local"),
                     info["spec"].get("display_name", ""), info["resource_dir"]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)), row[3])
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kernelyard kernelspec")
    sub = top.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="write a kernelspec for a backend")
    inst.add_argument("backend", choices=sorted(BACKENDS))
    inst.add_argument("--name", required=True)
    inst.add_argument("--display-name", default="")
    inst.add_argument("--language", default="python")
    inst.add_argument("--hosts", default="", help="ssh: comma-separated hosts")
    inst.add_argument("--placement", default="round-robin",
                      choices=["round-robin", "least-loaded"])
    inst.add_argument("--remote-user", default="", help="ssh: the user kernels run as")
    inst.add_argument("--port-range", default="", help="kernel ports on the node, 'LO..HI'")
    inst.add_argument("--python", default="/usr/bin/python3",
                      help="the Python on the node that runs the launcher (and the kernel)")
    inst.add_argument("--kernel-cmd", default="",
                      help="the kernel's own command, with {connection_file} "
                      "(default: ipykernel of --python)")
    inst.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                      help="an environment variable of the kernel (repeatable)")
    inst.add_argument("--curve", action="store_true",
                      help="encrypt the kernel's ZMQ traffic with CurveZMQ (ssh, yarn)")
    inst.add_argument("--launch-timeout", type=float, default=0.0,
                      help="seconds a start may take (remote backends)")
    spark = inst.add_argument_group("Spark (yarn; ssh with --spark-master)")
    spark.add_argument("--spark-master", default="",
                       help="ssh: run the kernel as a Spark client-mode driver of this master "
                       "(spark://host:port, yarn)")
    spark.add_argument("--spark-session", choices=["lazy", "eager", "none"], default=None,
                       help="when `spark` and `sc` are created (default lazy)")
    spark.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                       help="Spark conf for every kernel of the spec (repeatable)")
    spark.add_argument("--queue", default="default", help="yarn: the default queue")
    spark.add_argument("--driver-memory", default="", help="yarn: e.g. 1g")
    spark.add_argument("--executor-memory", default="", help="yarn: e.g. 1g")
    spark.add_argument("--num-executors", type=int, default=None,
                       help="yarn: fixed executors (0: dynamic allocation)")
    spark.add_argument("--rm-urls", default="",
                       help="yarn: the ResourceManagers' web URLs, comma-separated "
                       "(default: from yarn-site.xml)")
    inst.add_argument("--user", action="store_true", help="install for the current user")
    inst.add_argument("--prefix", default=sys.prefix, help="install under PREFIX/share/jupyter")
    inst.set_defaults(run=install)
    lst = sub.add_parser("list", help="list kernelspecs and their backends")
    lst.set_defaults(run=list_specs)
    return top


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    return int(opts.run(opts))

"""``kernelyard kernelspec install|list``: kernelspecs for each backend.

The backends, their options and their part of kernel.json come from the entry-point
group ``kernelyard.kernelspec_backends`` (``kernelyard.provisioners.kernelspec_backend``);
this module owns the options they share and the kernel.json around their part.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager

from .. import registry
from ..provisioners.kernelspec_backend import KernelspecBackend, KernelspecOptions


def backends() -> dict[str, KernelspecBackend]:
    """name -> backend, from the entry-point group ``kernelyard.kernelspec_backends``."""
    found = registry.load_group(registry.KERNELSPEC_BACKENDS, kind=KernelspecBackend)
    if not found:
        raise registry.EntryPointError(
            f"no backend is registered under the entry-point group "
            f"{registry.KERNELSPEC_BACKENDS}: kernelyard's metadata is stale or broken "
            "(reinstall it: pip install kernelyard, or pip install -e . in a clone)")
    return found


def kernel_json(opts: argparse.Namespace) -> dict[str, Any]:
    """The kernel.json for ``opts`` (a pure function, tested with golden outputs)."""
    known = backends()
    backend = known[opts.backend]
    python = backend.kernel_python or opts.python
    kernel_cmd = (shlex.split(opts.kernel_cmd) if opts.kernel_cmd
                  else [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    if "{connection_file}" not in " ".join(kernel_cmd):
        raise SystemExit("--kernel-cmd must contain {connection_file}")
    argv, config = backend.build(opts, kernel_cmd)
    if opts.launch_timeout:
        config["launch_timeout"] = opts.launch_timeout
    if opts.curve:
        if not backend.remote:
            remote = ", ".join(name for name, b in known.items() if b.remote)
            raise SystemExit(f"--curve is for remote kernels ({remote})")
        config["curve_encryption"] = True
    spec: dict[str, Any] = {
        "argv": argv,
        "display_name": opts.display_name or opts.name,
        "language": opts.language,
        "interrupt_mode": "signal",
        "metadata": {"kernel_provisioner": {"provisioner_name": backend.provisioner,
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
    known = backends()
    inst.add_argument("backend", choices=sorted(known))
    inst.add_argument("--name", required=True)
    inst.add_argument("--display-name", default="")
    inst.add_argument("--language", default="python")
    inst.add_argument("--python", default="/usr/bin/python3",
                      help="the Python on the node that runs the launcher (and the kernel)")
    inst.add_argument("--kernel-cmd", default="",
                      help="the kernel's own command, with {connection_file} "
                      "(default: ipykernel of --python)")
    inst.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                      help="an environment variable of the kernel (repeatable)")
    remote = ", ".join(name for name, b in known.items() if b.remote)
    inst.add_argument("--curve", action="store_true",
                      help=f"encrypt the kernel's ZMQ traffic with CurveZMQ ({remote})")
    inst.add_argument("--launch-timeout", type=float, default=0.0,
                      help="seconds a start may take (remote backends)")
    options = KernelspecOptions(inst)
    for backend in known.values():
        backend.add_options(options)
    inst.add_argument("--user", action="store_true", help="install for the current user")
    inst.add_argument("--prefix", default=sys.prefix, help="install under PREFIX/share/jupyter")
    inst.set_defaults(run=install)
    lst = sub.add_parser("list", help="list kernelspecs and their backends")
    lst.set_defaults(run=list_specs)
    return top


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    return int(opts.run(opts))

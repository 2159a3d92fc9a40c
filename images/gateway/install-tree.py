#!/usr/bin/env python3
"""Lay kernelyard out as an installed distribution under ROOT, without pip or a network.

usage: install-tree.py REPO ROOT SITE_PACKAGES BIN_DIR PYTHON

What ``pip install --no-deps REPO`` would put in a venv, for the "cached base layer + appended
files" build of ci/kubernetes/build-images.sh: the package (REPO/kernelyard, minus caches),
a dist-info with METADATA and entry_points.txt made from REPO/pyproject.toml (so the entry
points of provisioners and authenticators resolve), and the console scripts in BIN_DIR, run by
PYTHON. SITE_PACKAGES, BIN_DIR and PYTHON are paths inside the image; files go to ROOT + path.
"""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import tomllib

SCRIPT = """#!{python}
import sys
from {module} import {func}
if __name__ == "__main__":
    sys.exit({func}())
"""


def version(repo: Path) -> str:
    """``__version__`` of kernelyard/_version.py, read without importing it."""
    tree = ast.parse((repo / "kernelyard" / "_version.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__version__":
            return str(ast.literal_eval(node.value))
    raise SystemExit("kernelyard/_version.py has no __version__")


def entry_points(project: dict) -> str:
    """entry_points.txt: console_scripts from [project.scripts], then every group."""
    groups = {"console_scripts": project.get("scripts", {}), **project.get("entry-points", {})}
    lines = []
    for group, entries in groups.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    repo, root = Path(sys.argv[1]), Path(sys.argv[2])
    site, bindir, python = sys.argv[3].lstrip("/"), sys.argv[4].lstrip("/"), sys.argv[5]
    with open(repo / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    name, ver = project["name"], version(repo)
    shutil.copytree(repo / "kernelyard", root / site / "kernelyard",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    info = root / site / f"{name}-{ver}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n")
    (info / "entry_points.txt").write_text(entry_points(project))
    (info / "INSTALLER").write_text("kernelyard-build-images\n")
    (info / "top_level.txt").write_text("kernelyard\n")
    (root / bindir).mkdir(parents=True, exist_ok=True)
    for script, target in project.get("scripts", {}).items():
        module, func = target.split(":")
        path = root / bindir / script
        path.write_text(SCRIPT.format(python=python, module=module, func=func))
        path.chmod(0o755)
    print(f"{name} {ver} -> {site}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write the pinned requirements of an image, resolved by pip for the image's Python.

usage: pin-requirements.py [--pyproject FILE [--extra NAME]...] [--python-version 3.11.2]
                           [REQUIREMENT...] > images/NAME/requirements.txt

The roots (the requirements given, and with ``--pyproject`` the project's dependencies and
those of each ``--extra``) are pinned to the versions installed in this Python (the venv the
tests pass in) when they are installed; pip then resolves everything they need for the
image's Python (``pip install --dry-run --report``, binary wheels only), so a release that
needs a newer Python than the image's is not picked. Needs the package index. The output is
``name==version``, sorted; build-images.sh caches the image's layer by a hash of it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from importlib import metadata

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

IMAGE_PYTHON = "3.11.2"  # Debian 12's python3, the images' base (ci/kubernetes/mkimage.sh)


def project_roots(pyproject: str, extras: list[str]) -> list[str]:
    """The dependencies of a pyproject.toml and of its ``extras``."""
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional = project.get("optional-dependencies", {})
    roots = list(project.get("dependencies", []))
    for extra in extras:
        roots += [r for r in optional.get(extra, []) if not r.startswith(project["name"])]
    return roots


def pinned_root(text: str) -> str:
    """``text`` pinned to the installed version, when there is one."""
    req = Requirement(text)
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return text
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}=={version}"


def resolve(roots: list[str], python_version: str) -> list[str]:
    """What pip would install for ``roots`` on ``python_version``, as name==version."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
                        "--ignore-installed", "--only-binary=:all:",
                        f"--python-version={python_version}", "--report", report.name,
                        *roots], check=True)
        installs = json.load(open(report.name))["install"]
    pins = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    ap.add_argument("--pyproject")
    ap.add_argument("--extra", action="append", default=[])
    ap.add_argument("--python-version", default=IMAGE_PYTHON)
    ap.add_argument("requirements", nargs="*")
    a = ap.parse_args()
    roots = (project_roots(a.pyproject, a.extra) if a.pyproject else []) + a.requirements
    args = " ".join(([f"--pyproject {a.pyproject}"] if a.pyproject else [])
                    + [f"--extra {e}" for e in a.extra] + a.requirements)
    print(f"# pinned by images/pin-requirements.py {args} (Python {a.python_version})")
    for line in resolve([pinned_root(r) for r in roots], a.python_version):
        print(line)


if __name__ == "__main__":
    main()

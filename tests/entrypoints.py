"""Entry points for a gateway process that the installed distribution may not have yet.

An editable install keeps the entry points of the pyproject.toml it was installed
from: a checkout with new ones (the testing backends) would not find them until it
is reinstalled. ``provisioner_path`` gives a folder to put first on the gateway's
PYTHONPATH that declares them when the install does not.
"""

from __future__ import annotations

import shutil
from importlib.metadata import entry_points
from pathlib import Path

GROUP = "jupyter_client.kernel_provisioners"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def declared_provisioners(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """The provisioner entry points a pyproject.toml (kernelyard's) declares, name ->
    'module:Class'; read without a TOML parser, which Python 3.10 lacks."""
    lines = pyproject.read_text().splitlines()
    start = lines.index(f'[project.entry-points."{GROUP}"]') + 1
    found: dict[str, str] = {}
    for line in lines[start:]:
        if line.startswith("["):
            break
        if "=" in line and not line.startswith("#"):
            name, value = (part.strip() for part in line.split("=", 1))
            found[name] = value.strip('"')
    return found


def write_dist_info(target: Path, name: str, group_entries: dict[str, dict[str, str]],
                    requires: tuple[str, ...] = ()) -> Path:
    """A minimal ``NAME-0.dist-info`` under ``target`` declaring these entry points and
    these requirements (``Requires-Dist``)."""
    info = target / f"{name}-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0\n"
                                   + "".join(f"Requires-Dist: {r}\n" for r in requires))
    lines = []
    for group, entries in group_entries.items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return target


def provisioner_path(tmp: Path) -> str:
    """'' if the install declares every provisioner of pyproject.toml, else a folder
    (under ``tmp``) whose dist-info declares the missing ones."""
    installed = {ep.name for ep in entry_points(group=GROUP)}
    missing = {k: v for k, v in declared_provisioners().items() if k not in installed}
    if not missing:
        return ""
    return str(write_dist_info(tmp / "entry-points", "kernelyard_checkout", {GROUP: missing}))


def install_package(source: Path, target: Path) -> Path:
    """Install the one-package project at ``source`` into ``target`` as pip --target
    would: the package folder and a dist-info with its provisioner entry points (the
    tests' venv has no ``wheel`` to build one with)."""
    name = source.name
    shutil.copytree(source / name, target / name)
    pyproject = source / "pyproject.toml"
    return write_dist_info(target, name, {GROUP: declared_provisioners(pyproject)},
                           requires=declared_dependencies(pyproject))


def declared_dependencies(pyproject: Path) -> tuple[str, ...]:
    """The ``dependencies = [...]`` of a one-line list in a pyproject.toml."""
    for line in pyproject.read_text().splitlines():
        if line.startswith("dependencies = ["):
            return tuple(part.strip().strip('"') for part in
                         line.split("[", 1)[1].rstrip("]").split(",") if part.strip())
    return ()

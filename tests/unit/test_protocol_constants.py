"""The launcher protocol's names are defined once, in the launcher, and imported elsewhere.

The launcher is shipped alone (stdlib only), so it holds the names: the kernel's
port names, the control path, the signature header and the callback fields. No
other module of the package spells them out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kernelyard
from kernelyard import launcher

PACKAGE = Path(kernelyard.__file__).parent
PROTOCOL_NAMES = {*launcher.KERNEL_PORT_NAMES, launcher.CONTROL_PATH,
                  launcher.SIGNATURE_HEADER}


def _literals(path: Path) -> set[str]:
    """Every string constant in a module, the pieces of f-strings included."""
    tree = ast.parse(path.read_text(), str(path))
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_only_the_launcher_spells_the_protocols_names() -> None:
    spelled = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "launcher.py":
            continue
        found = {name for name in PROTOCOL_NAMES
                 if any(name in literal for literal in _literals(path))}
        if found:
            spelled[str(path.relative_to(PACKAGE))] = sorted(found)
    assert spelled == {}


def test_the_callback_fields_are_built_from_the_port_names() -> None:
    ports = [name for name, kind in launcher.CALLBACK_FIELDS.items() if name.endswith("_port")]
    assert ports == list(launcher.CALLBACK_PORT_NAMES)
    assert launcher.CALLBACK_PORT_NAMES[:5] == launcher.KERNEL_PORT_NAMES
    assert all(launcher.CALLBACK_FIELDS[name] is int for name in ports)

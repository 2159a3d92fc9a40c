"""``kernelyard generate-config``: a commented config file with every setting."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jupyter_core.paths import jupyter_config_dir


def default_config_path() -> Path:
    return Path(jupyter_config_dir()) / "kernelyard_config.py"


def generate_config(argv: list[str]) -> int:
    """Write the config file; refuse to overwrite one unless ``--force``. Returns an exit code."""
    parser = argparse.ArgumentParser(prog="kernelyard generate-config")
    parser.add_argument("--output", type=Path, default=None, help="where to write it")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    opts = parser.parse_args(argv)
    target: Path = opts.output or default_config_path()
    if target.exists() and not opts.force:
        print(f"{target} exists; use --force to overwrite it", file=sys.stderr)
        return 1
    from ..app import KernelyardApp

    text = KernelyardApp().generate_config_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"Wrote {target}")
    return 0

"""Reading the end of a kernel's log, for error messages."""

from __future__ import annotations

import os
from pathlib import Path

_TAIL_BYTES = 16384


def tail_lines(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file (at most 16 KiB read), or ''."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])

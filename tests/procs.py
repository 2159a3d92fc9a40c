"""Process-table checks: nothing may be left behind."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def children_of(pid: int) -> set[int]:
    """All descendants of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents[int(entry.name)] = ppid
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def pgrep(pattern: str) -> set[int]:
    """Processes whose command line matches ``pattern`` (``pgrep -f``), this one left out."""
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()} - {os.getpid()}


def tagged_pids(tag: str) -> set[int]:
    """Processes whose command line holds ``tag`` (read from /proc), this one left out."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if tag.encode() in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: set[int], timeout: float = 15) -> set[int]:
    """Wait until none of ``pids`` runs; return the ones still running."""
    deadline = time.monotonic() + timeout
    left = {p for p in pids if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if alive(p)}
    return left


@dataclass(frozen=True)
class Proc:
    """One row of the process table."""

    pid: int
    ppid: int
    start: int  # clock ticks after boot: with pid, names one process even if pids wrap
    cmdline: tuple[str, ...]


def process_table() -> dict[int, Proc]:
    """Every process readable in /proc, by pid (kernel threads have an empty cmdline)."""
    table: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        cmdline = tuple(raw.decode(errors="replace").split("\0")[:-1])
        table[int(entry.name)] = Proc(int(entry.name), int(fields[1]), int(fields[19]), cmdline)
    return table


def descendants(table: dict[int, Proc], roots: set[int]) -> set[int]:
    """The pids in ``table`` below any of ``roots`` (the roots not included)."""
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: set[int] = set()
    frontier = list(roots)
    while frontier:
        for child in children.get(frontier.pop(), ()):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found - roots


def environ_of(pid: int) -> dict[str, str] | None:
    """A process's environment as it was exec'd (None if it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    pairs = (item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if item)
    return {p[0]: p[1] if len(p) > 1 else "" for p in pairs}

"""Keep the environment of every kernel the test gateways start, for the secret sweep.

A kernel must never hold a secret of the gateway (its token, the store key, the proxy
secret) nor another kernel's. The processes looked at: every descendant of a
registered gateway process (local kernels, run-as helpers, spark-submit) and every
launcher on this machine with its descendants (SSH kernels on the hosts, which are
network namespaces sharing this process table; YARN drivers), found by their
command line. A watcher thread takes each new process's environment as it appears,
since most kernels are shut down before their gateway stops; ``Gateway.stop`` takes
a last look before it signals the gateway. The environments are matched against the
registered secrets at the end (``tests/gateway.py`` ``SecretRegistry.leaks``), so a
secret registered after a kernel was seen is still looked for.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field

from tests.procs import Proc, descendants, environ_of, process_table

# A launcher's command line: the SSH provisioner's shipped copy, the YARN driver's
# primary resource, the installed script or the module.
LAUNCHER_ARG = re.compile(r"(^|/)(launcher(-[0-9a-f]{16})?\.py|kernelyard-launcher)$")
# Variables of the test run itself that every child of the test process inherits.
IGNORED_NAMES = frozenset({"PYTEST_CURRENT_TEST"})
POLL_SECONDS = 0.5  # kernels in tests live for seconds; a scan of /proc costs ~10 ms


def is_launcher(proc: Proc) -> bool:
    return any(LAUNCHER_ARG.search(a) or a == "kernelyard.launcher" for a in proc.cmdline)


@dataclass
class EnvSweep:
    """The environments seen, by content (each with the first process that had it)."""

    roots: set[int] = field(default_factory=set)  # gateway pids
    seen: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    _checked: set[tuple[int, int, tuple[str, ...]]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def add_root(self, pid: int) -> None:
        """Watch the processes below ``pid`` (a gateway) from now on."""
        with self._lock:
            self.roots.add(pid)
        self.start()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="env-sweep", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.look()

    def look(self) -> None:
        """Take the environment of every kernel process running now."""
        table = process_table()
        with self._lock:
            roots = {pid for pid in self.roots if pid in table}
        roots |= {p.pid for p in table.values() if is_launcher(p)}
        for pid in descendants(table, roots) | (roots - self.roots):
            proc = table[pid]
            parent = table.get(proc.ppid)
            if parent is not None and parent.cmdline == proc.cmdline and (
                    proc.pid not in roots):
                continue  # forked, not exec'd yet: still its parent's environment
            self._take(proc)

    def _take(self, proc: Proc) -> None:
        key = (proc.pid, proc.start, proc.cmdline)
        if key in self._checked:
            return
        env = environ_of(proc.pid)
        if env is None:
            return
        self._checked.add(key)
        env = {k: v for k, v in env.items() if k not in IGNORED_NAMES}
        digest = hashlib.sha256(repr(sorted(env.items())).encode()).hexdigest()
        label = f"the environment of pid {proc.pid} ({' '.join(proc.cmdline)[:120]})"
        with self._lock:
            self.seen.setdefault(digest, (label, env))

    def leaks(self, secrets: dict[str, str]) -> list[tuple[str, str]]:
        """(process, what) for every secret found in a kernel's environment."""
        with self._lock:
            seen = list(self.seen.values())
        found = []
        for label, env in seen:
            text = "\0".join(f"{k}={v}" for k, v in env.items())
            found += [(label, what) for value, what in secrets.items() if value in text]
        return found

"""Waiting in tests: poll a probe until it holds, never a bare sleep (one place for it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(probe: Callable[[], T], timeout: float, interval: float = 0.2) -> T:
    """Call ``probe()`` until it returns something truthy or ``timeout`` seconds pass;
    return that value (or the last, falsy one)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_for(what: str, timeout: float, probe: Callable[[], T], interval: float = 1.0) -> T:
    """``poll``, and fail with ``what`` when nothing truthy came within ``timeout``."""
    value = poll(probe, timeout, interval)
    if not value:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
    return value

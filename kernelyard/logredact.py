"""Secrets never reach a log line, and connection-level errors cannot flood the log.

``install`` sets this up once for the whole process, whatever logger a line
comes from (the app's, ``tornado.access``/``application``/``general``,
``traitlets``, ``asyncio``, the root logger and its last-resort handler):

- ``SecretRedactor`` rewrites a record's message (and formatted traceback) with
  credentials replaced by ``[secret]``: the values of ``Authorization``
  headers, ``token``/``Bearer``/``Negotiate``/``Basic`` credentials quoted in a
  message (tornado's "Malformed HTTP message ... Invalid header value '...'"),
  the whole value of an invalid header, ``?token=`` and similar query
  parameters, and every known secret (the shared token, the gateway's
  ``KERNELYARD_*`` secrets and other secret-named env variables) wherever it
  appears. It runs in the log record factory, so it applies to handlers added
  later too, and is added as a filter to every handler present.
- ``RepeatLimiter`` lets at most ``burst`` lines of one kind (same message
  template) from tornado's and asyncio's code through per ``window`` seconds,
  then says how many it dropped: a client sending bad requests in a loop, or a
  busy accept loop, cannot write 100,000 lines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tornado

REDACTED = "[secret]"  # the marker jupyter_server scrubs URL parameters with
MIN_SECRET = 8  # shorter values would match ordinary words
_SCHEMES = r"(?:token|bearer|negotiate|basic|digest)"
_VALUE = r"[A-Za-z0-9+/=._~:\-]{6,}"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # tornado quotes the whole offending header: nothing of it is kept
    (re.compile(r"(Invalid header (?:value|name) ).*", re.DOTALL), r"\1" + REDACTED),
    (re.compile(r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)[^\r\n\"',}]*"),
     r"\1" + REDACTED),
    # a credential at the start of a quoted value or of the message
    (re.compile(rf"(?i)((?:^|[\"'(\[])\s*{_SCHEMES}\s+){_VALUE}"), r"\1" + REDACTED),
    (re.compile(r"(?i)([?&;](?:token|access_token|api_key|apikey|auth|password|secret)=)"
                r"[^&\s\"'#]+"), r"\1" + REDACTED),
]
_SECRET_ENV_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")


def secret_env_values(environ: dict[str, str] | None = None) -> set[str]:
    """The values of secret-looking env variables: every ``KERNELYARD_*`` name with TOKEN,
    SECRET, KEY, PASSWORD or CREDENTIAL, and any other name with one of those but KEY."""
    env = os.environ if environ is None else environ
    found = set()
    for name, value in env.items():
        upper = name.upper()
        parts = (*_SECRET_ENV_PARTS, "KEY") if upper.startswith("KERNELYARD_") else \
            _SECRET_ENV_PARTS
        if any(part in upper for part in parts) and len(value) >= MIN_SECRET:
            found.add(value)
    return found


class SecretRedactor(logging.Filter):
    """Redacts credentials and known secrets in a record, in place (never drops it)."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Known secrets to redact wherever they appear (longest first)."""
        with self._lock:
            merged = {*self._secrets, *(s for s in secrets if s and len(s) >= MIN_SECRET)}
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_kernelyard_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format: leave it to the handler's error path
            return True
        clean = self.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        record._kernelyard_redacted = True
        return True


_QUIET_SOURCES = tuple(str(Path(m.__file__ or "").parent) for m in (tornado, asyncio))


class RepeatLimiter(logging.Filter):
    """At most ``burst`` records per message template per ``window`` seconds from
    tornado's and asyncio's code; the next one let through says how many were dropped.

    The decision is kept on the record, so a record seen by several handlers counts once.
    """

    def __init__(self, burst: int = 20, window: float = 60.0,
                 sources: tuple[str, ...] = _QUIET_SOURCES):
        super().__init__()
        self.burst, self.window, self.sources = burst, window, sources
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # -> [start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, "_kernelyard_allowed", None)
        if decided is None:
            decided = record._kernelyard_allowed = self._decide(record)
        return bool(decided)

    def _decide(self, record: logging.LogRecord) -> bool:
        if not record.pathname.startswith(self.sources):
            return True
        key = (record.pathname, record.lineno, str(getattr(record, "_template", record.msg)))
        now = time.monotonic()
        with self._lock:
            state = self._seen.get(key)
            if state is None or now - state[0] >= self.window:
                dropped = int(state[2]) if state else 0
                if len(self._seen) >= 1000:
                    self._seen.clear()
                self._seen[key] = [now, 1, 0]
                if dropped:
                    record.msg = f"{record.getMessage()} ({dropped} similar lines dropped)"
                    record.args = ()
                return True
            state[1] += 1
            if state[1] <= self.burst:
                return True
            state[2] += 1
            return False


_INSTALLED: dict[str, Any] = {}


def install(secrets: Iterable[str] = ()) -> SecretRedactor:
    """Redact and rate-limit every log line of this process from now on.

    Idempotent: call it again once more handlers or secrets exist (``KernelyardApp``
    does after logging is configured and after initialisation).
    """
    redactor: SecretRedactor | None = _INSTALLED.get("redactor")
    if redactor is None:
        redactor = SecretRedactor()
        _INSTALLED.update(redactor=redactor, limiter=RepeatLimiter())
        _wrap_record_factory(redactor)
    redactor.add_secrets([*secrets, *secret_env_values()])
    for handler in _all_handlers():
        for one in (redactor, _INSTALLED["limiter"]):
            if one not in handler.filters:
                handler.addFilter(one)
    return redactor


def _wrap_record_factory(redactor: SecretRedactor) -> None:
    """Every record is redacted when it is made, whichever handler writes it."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record._template = record.msg
        redactor.filter(record)
        return record

    logging.setLogRecordFactory(factory)


def _all_handlers() -> list[logging.Handler]:
    loggers: list[Any] = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = [h for lg in loggers for h in getattr(lg, "handlers", [])]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    return list(dict.fromkeys(handlers))

"""The audit log: one JSON line per kernel operation and per refusal.

Each line says who did what to which kernel, from where, and how it ended::

    {"ts": "2026-11-26T11:29:03.412Z", "who": "alice", "via": "api-token",
     "action": "launch", "kernel_id": "0c6e...", "kernelspec": "python3",
     "owner": "alice", "where": {"host": "local", "pid": 4242},
     "result": "ok", "status": 201, "client": "10.0.0.7"}

``action`` is one of ``ACTIONS``: the kernel operations (``launch``, ``connect``,
``interrupt``, ``restart``, ``shutdown``, ``cull``) are always written; the
other requests (listing, reading a kernel or a session, kernelspecs) only when
they are refused. ``result`` is ``ok``, ``denied`` (401, 403 and the 404 a
non-owner gets) or ``error``. ``reason`` carries the client-safe message of a
refusal or a failure (``kernelyard.errors`` messages never hold a secret); no
env value, token or key is ever part of a line.

Where the lines go is ``KernelyardApp.audit_log``: a file (mode 0600, rotated by
size), ``-`` for the application log, or nothing. Writing is ordinary logging:
a line is written before the call returns, as for the access log.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from logging.handlers import RotatingFileHandler
from typing import Any

ACTIONS = frozenset({
    "launch", "connect", "interrupt", "restart", "shutdown", "cull",  # kernel operations
    "list", "get", "session", "kernelspecs", "api",  # written only when refused
})
ALWAYS_WRITTEN = frozenset({"launch", "connect", "interrupt", "restart", "shutdown", "cull"})
OK, DENIED, ERROR = "ok", "denied", "error"
DENIAL_STATUSES = frozenset({401, 403})
FILE_MODE = 0o600
# Keys of a provisioner's state that say where a kernel runs.
WHERE_KEYS = ("host", "hostname", "ip", "app_id", "job_id", "container_id", "pod", "pid")


@dataclass
class AuditEvent:
    """What one line will say; filled in while the request runs, written once.

    ``who``/``via`` are the caller (empty when unauthenticated); ``owner`` is the
    user the kernel belongs to (it differs from ``who`` when a service starts a
    kernel for a user, or an admin acts on someone's kernel). ``transport`` is
    ``websocket`` for a request a client sent over its kernel websocket (a
    control-channel shutdown, restart or interrupt request); the line then has
    ``"transport": "websocket"`` and ``status`` null, since the request is
    forwarded to the kernel and its reply is the client's.
    """

    action: str
    who: str = ""
    via: str = ""
    client: str = ""
    kernel_id: str = ""
    kernelspec: str = ""
    owner: str = ""
    where: dict[str, Any] = field(default_factory=dict)
    transport: str = ""
    ownership_denied: bool = False
    written: bool = False

    def line(self, result: str, status: int | None, reason: str = "",
             now: float | None = None) -> str:
        """The JSON line (without newline) for this event ending with ``result``."""
        record: dict[str, Any] = {
            "ts": iso_utc(time.time() if now is None else now),
            "who": self.who or None,
            "via": self.via or None,
            "action": self.action,
            "kernel_id": self.kernel_id or None,
            "kernelspec": self.kernelspec or None,
            "owner": self.owner or None,
            "where": self.where or None,
            "result": result,
            "status": status,
            "client": self.client or None,
        }
        if reason:
            record["reason"] = reason
        if self.transport:
            record["transport"] = self.transport
        return json.dumps(record, separators=(",", ":"), default=str)


def iso_utc(ts: float) -> str:
    """``2026-11-26T11:29:03.412Z``: UTC, milliseconds."""
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def result_of(status: int, ownership_denied: bool = False) -> str:
    """``ok`` below 400; ``denied`` for 401, 403 and a non-owner's 404; else ``error``."""
    if status < 400:
        return OK
    if status in DENIAL_STATUSES or (status == 404 and ownership_denied):
        return DENIED
    return ERROR


def should_write(action: str, result: str) -> bool:
    """Kernel operations are always written; other requests only when refused."""
    return action in ALWAYS_WRITTEN or result == DENIED


def where_of(kernel_manager: Any) -> dict[str, Any]:
    """Where a kernel runs, from its provisioner: host, app or job id, pid (if known)."""
    provisioner = getattr(kernel_manager, "provisioner", None)
    state = getattr(provisioner, "state", None)
    if isinstance(state, dict) and state:
        return {key: state[key] for key in WHERE_KEYS if state.get(key) not in (None, "")}
    pid = getattr(provisioner, "pid", None)
    return {"host": "local", "pid": pid} if pid else ({"host": "local"} if provisioner else {})


class PrivateRotatingFileHandler(RotatingFileHandler):
    """A ``RotatingFileHandler`` whose files are created (and kept) with mode 0600."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise


class AuditLog:
    """Writes audit lines to a logger, or nowhere (``AuditLog()``)."""

    def __init__(self, logger: logging.Logger | None = None, prefix: str = ""):
        self._logger = logger
        self._prefix = prefix

    @property
    def enabled(self) -> bool:
        return self._logger is not None

    def write(self, event: AuditEvent, result: str, status: int | None,
              reason: str = "") -> None:
        """Write ``event``'s line once; later calls for the same event do nothing."""
        if event.written:
            return
        event.written = True
        if self._logger is not None:
            self._logger.info("%s%s", self._prefix, event.line(result, status, reason))

    def close(self) -> None:
        """Close the file, if this log has one; later lines go nowhere."""
        logger, self._logger = self._logger, None
        if logger is None or self._prefix:
            return  # the application log is not ours to close
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)


def open_audit_log(path: str, max_bytes: int, backups: int,
                   app_log: logging.Logger | None = None) -> AuditLog:
    """The audit log a setting names: ``""`` off, ``"-"`` the app log, else a file.

    A file is opened now (its folder created if missing), with mode 0600, and is
    rotated when it would grow past ``max_bytes`` (0: never), keeping ``backups``
    old files (``audit.log.1`` ...). Raises ``OSError`` if it cannot be opened.
    """
    if not path:
        return AuditLog()
    if path == "-":
        return AuditLog(app_log or logging.getLogger("kernelyard"), prefix="audit ")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    handler = PrivateRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                         encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.Logger(f"kernelyard.audit:{path}", level=logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    return AuditLog(logger)

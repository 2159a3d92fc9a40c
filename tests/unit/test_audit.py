"""The audit log: line format, results, which requests are written, files and rotation."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from kernelyard import audit
from kernelyard.audit import AuditEvent, AuditLog, open_audit_log

KEYS = ["ts", "who", "via", "action", "kernel_id", "kernelspec", "owner", "where", "result",
        "status", "client"]


def _event(**fields: object) -> AuditEvent:
    base: dict[str, object] = dict(action="launch", who="alice", via="api-token",
                                   client="10.0.0.7", kernel_id="k-1", kernelspec="python3",
                                   owner="alice", where={"host": "local", "pid": 42})
    base.update(fields)
    return AuditEvent(**base)  # type: ignore[arg-type]


def test_a_line_has_every_field_in_order() -> None:
    line = _event().line("ok", 201, now=1795000000.25)
    record = json.loads(line)
    assert list(record) == KEYS
    assert record == {
        "ts": "2026-11-18T11:06:40.250Z", "who": "alice", "via": "api-token",
        "action": "launch", "kernel_id": "k-1", "kernelspec": "python3", "owner": "alice",
        "where": {"host": "local", "pid": 42}, "result": "ok", "status": 201,
        "client": "10.0.0.7",
    }
    assert "\n" not in line and ", " not in line  # one compact line


def test_unknown_fields_are_null_and_a_reason_is_added() -> None:
    record = json.loads(AuditEvent("list").line("denied", 401, "authentication required"))
    assert record["who"] is None and record["kernel_id"] is None and record["where"] is None
    assert record["reason"] == "authentication required"
    assert "reason" not in json.loads(AuditEvent("cull").line("ok", None))


def test_timestamps_are_utc_with_milliseconds() -> None:
    assert audit.iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert audit.iso_utc(1.9996) == "1970-01-01T00:00:01.999Z"


@pytest.mark.parametrize(("status", "ownership", "result"), [
    (200, False, "ok"), (201, False, "ok"), (204, False, "ok"), (101, False, "ok"),
    (401, False, "denied"), (403, False, "denied"), (404, True, "denied"),
    (404, False, "error"), (400, False, "error"), (409, False, "error"), (500, False, "error"),
    (503, True, "error"),
])
def test_result_of_a_status(status: int, ownership: bool, result: str) -> None:
    assert audit.result_of(status, ownership) == result


@pytest.mark.parametrize("action", sorted(audit.ALWAYS_WRITTEN))
def test_kernel_operations_are_always_written(action: str) -> None:
    for result in ("ok", "denied", "error"):
        assert audit.should_write(action, result)


@pytest.mark.parametrize("action", ["list", "get", "session", "kernelspecs", "api"])
def test_other_requests_are_written_only_when_refused(action: str) -> None:
    assert audit.should_write(action, "denied")
    assert not audit.should_write(action, "ok") and not audit.should_write(action, "error")


def test_where_a_kernel_runs() -> None:
    remote = SimpleNamespace(provisioner=SimpleNamespace(
        state={"host": "h1", "app_id": "application_1_0002", "launcher_port": 9, "pid": 0}))
    assert audit.where_of(remote) == {"host": "h1", "app_id": "application_1_0002", "pid": 0}
    local = SimpleNamespace(provisioner=SimpleNamespace(pid=4242))
    assert audit.where_of(local) == {"host": "local", "pid": 4242}
    assert audit.where_of(SimpleNamespace(provisioner=None)) == {}
    assert audit.where_of(None) == {}


def _capture(logger: logging.Logger) -> list[str]:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    return lines


def test_an_event_is_written_once() -> None:
    logger = logging.Logger("test-audit-once")
    lines = _capture(logger)
    log = AuditLog(logger)
    event = _event()
    log.write(event, "ok", 201)
    log.write(event, "error", 500)
    assert len(lines) == 1 and json.loads(lines[0])["result"] == "ok"


def test_off_writes_nothing(tmp_path: Path) -> None:
    log = open_audit_log("", 1000, 1)
    assert not log.enabled
    log.write(_event(), "ok", 201)  # no error, nowhere
    assert list(tmp_path.iterdir()) == []


def test_dash_is_the_application_log() -> None:
    app_log = logging.Logger("test-audit-app")
    lines = _capture(app_log)
    log = open_audit_log("-", 1000, 1, app_log)
    log.write(_event(), "denied", 403, "alice already has 2 kernels, the per-user limit (2)")
    assert len(lines) == 1 and lines[0].startswith("audit {")
    record = json.loads(lines[0][len("audit "):])
    assert record["result"] == "denied" and "per-user limit" in record["reason"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_file_is_private_even_with_a_loose_umask(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.log"
    old = os.umask(0o000)
    try:
        log = open_audit_log(str(path), 0, 0)
        log.write(_event(), "ok", 201)
        log.close()
    finally:
        os.umask(old)
    assert _mode(path) == 0o600
    assert json.loads(path.read_text().splitlines()[0])["action"] == "launch"


def test_an_existing_readable_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text("")
    path.chmod(0o644)
    log = open_audit_log(str(path), 0, 0)
    log.close()
    assert _mode(path) == 0o600


def test_files_rotate_by_size_and_keep_the_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = open_audit_log(str(path), 600, 2)
    for i in range(30):
        log.write(_event(kernel_id=f"kernel-{i:02d}"), "ok", 201)
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    seen = []
    for name in ("audit.log.2", "audit.log.1", "audit.log"):
        f = tmp_path / name
        assert _mode(f) == 0o600, name
        assert f.stat().st_size <= 600
        seen += [json.loads(line)["kernel_id"] for line in f.read_text().splitlines()]
    # The newest lines are kept, in order, each whole; the oldest rotated away.
    assert seen == [f"kernel-{i:02d}" for i in range(30 - len(seen), 30)]
    assert "kernel-00" not in seen


def test_an_unopenable_file_is_an_os_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(OSError):
        open_audit_log(str(blocker / "audit.log"), 0, 0)


def test_after_close_lines_go_nowhere(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = open_audit_log(str(path), 0, 0)
    log.close()
    log.write(_event(), "ok", 201)
    assert not log.enabled and path.read_text() == ""


def test_closing_leaves_the_application_log_alone() -> None:
    app_log = logging.Logger("test-audit-app-close")
    lines = _capture(app_log)
    open_audit_log("-", 0, 0, app_log).close()
    app_log.info("still here")
    assert lines == ["still here"]

"""kernelyard.logredact: credentials and known secrets never reach a log line."""

from __future__ import annotations

import logging
import sys

import pytest

from kernelyard.logredact import REDACTED, RepeatLimiter, SecretRedactor, secret_env_values

SECRET = "s3cr3t-Value-0123456789"


@pytest.mark.parametrize("line", [
    f"Malformed HTTP message from 127.0.0.1: Invalid header value 'token {SECRET}\\x01x'",
    f"Invalid header name 'Authorization: Bearer {SECRET}'",
    f"headers: {{'Authorization': 'token {SECRET}', 'Host': 'x'}}",
    f"Authorization: Negotiate {SECRET}",
    f"'Basic {SECRET}' refused",
    f"GET /api/kernels?token={SECRET}&x=1 (127.0.0.1) 2.0ms",
    f"GET /api?a=b&access_token={SECRET}",
    f"proxy-authorization={SECRET}",
])
def test_credentials_are_redacted(line: str) -> None:
    out = SecretRedactor().redact(line)
    assert SECRET not in out
    assert REDACTED in out


def test_known_secret_redacted_anywhere() -> None:
    redactor = SecretRedactor(["known-secret-abc", "short"])
    assert redactor.redact("x=known-secret-abc;y") == f"x={REDACTED};y"
    assert redactor.redact("short words stay") == "short words stay"  # below MIN_SECRET


@pytest.mark.parametrize("line", [
    "JupyterHub token 0123456789ab is alice",
    "API token tok-42 authenticated alice",
    "the 'token' authenticator is enabled",
    "Kernel started: 0b6ae5c4-1f2e-4a55-9d1b-2c3d4e5f6a7b",
])
def test_ordinary_lines_unchanged(line: str) -> None:
    assert SecretRedactor().redact(line) == line


def test_record_args_and_traceback_redacted() -> None:
    try:
        raise ValueError(f"bad header Authorization: token {SECRET}")
    except ValueError:
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "got %s", (SECRET,),
                                   sys.exc_info())
    redactor = SecretRedactor([SECRET])
    assert redactor.filter(record)
    assert SECRET not in record.getMessage()
    assert record.exc_text and SECRET not in record.exc_text
    assert "ValueError" in record.exc_text


def test_secret_env_values() -> None:
    env = {"KERNELYARD_STORE_KEY": "k" * 20, "KERNELYARD_PROXY_SECRET": "p" * 20,
           "MY_API_TOKEN": "t" * 20, "GPG_KEY_ID": "g" * 20, "PATH": "/usr/bin:/bin",
           "KERNELYARD_TOKEN_SHORT": "abc"}
    assert secret_env_values(env) == {"k" * 20, "p" * 20, "t" * 20}


def test_repeated_tornado_lines_are_limited() -> None:
    limiter = RepeatLimiter(burst=3, window=3600, sources=("/tornado/",))

    def record(n: int) -> logging.LogRecord:
        return logging.LogRecord("tornado.general", logging.INFO, "/tornado/http1connection.py",
                                 344, "Malformed HTTP message from %s", (n,), None)

    passed = [limiter.filter(record(n)) for n in range(100)]
    assert passed.count(True) == 3
    other = logging.LogRecord("KernelyardApp", logging.INFO, "/kernelyard/app.py", 1,
                              "Kernel started", (), None)
    assert all(limiter.filter(other) for _ in range(100))
    limiter.window = 0  # the window ends: the next line says how many were dropped
    last = record(1000)
    assert limiter.filter(last)
    assert "97 similar lines dropped" in last.getMessage()

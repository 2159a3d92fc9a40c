"""Fuzz ``POST /kernelyard/callback/{id}`` of a real gateway while two real starts wait.

Two SSH kernels are started; their launchers' callbacks are intercepted
(tests/fuzz/remote.py), so the gateway holds two live registrations and the test
holds their one-time tokens and genuine reports. Then hypothesis sends malformed
bodies with the valid token, valid bodies with wrong tokens, the other kernel's
token, non-UUID ids and wrong methods. The gateway may only answer 400 (bad body,
valid token), 403 (bad token), 404 (no such route) or 405 (method), never 5xx
and never 200. What kernelyard/callbacks.py promises is then checked: a
registration survives every invalid request (the genuine report, forwarded last,
is accepted and the kernel runs), and a token works once.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernelyard.api.callback import MAX_CALLBACK_BODY
from kernelyard.callbacks import check_report
from kernelyard.errors import InvalidRequest
from kernelyard.launcher import CALLBACK_FIELDS
from tests.fuzz.remote import (
    Callback,
    Interceptor,
    raw_request,
    start_ssh_gateway,
    write_ssh_spec,
)
from tests.gateway import Gateway
from tests.procs import wait_gone
from tests.realparts import ssh_hosts

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
JSON_HEADERS = {"Content-Type": "application/json"}
CALLBACK = "/kernelyard/callback/{}"
# Longer than any start may take by the gateway's own bounds (ssh commands, launch
# timeout, ready wait): a start that fails must fail there, with the reason.
START_WAIT = 600


@dataclass
class Pending:
    """A kernel start the gateway is waiting on, and what its launcher sent."""

    callback: Callback
    started: Future[tuple[int, Any]]

    @property
    def kernel_id(self) -> str:
        return self.callback.kernel_id

    @property
    def path(self) -> str:
        return CALLBACK.format(self.kernel_id)

    def bearer(self, token: str | None = None) -> dict[str, str]:
        return {**JSON_HEADERS,
                "Authorization": f"Bearer {self.callback.token if token is None else token}"}


@dataclass
class Setup:
    gw: Gateway
    a: Pending
    b: Pending

    def post(self, path: str, body: bytes | None, headers: dict[str, str],
             method: str = "POST") -> tuple[int, bytes]:
        return raw_request(self.gw.url, method, path, body, headers)


def _start_in_background(gw: Gateway) -> Future[tuple[int, Any]]:
    future: Future[tuple[int, Any]] = Future()

    def run() -> None:
        try:
            status, body, _ = gw.request("POST", "/api/kernels", {"name": "ssh_fuzz"},
                                         timeout=400)
            future.set_result((status, body))
        except BaseException as e:  # handed to the test that waits on it
            future.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return future


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    hosts = ssh_hosts()
    root = tmp_path_factory.mktemp("callback-fuzz")
    h1 = hosts["KY_SSH_HOSTS"].split(",")[0]
    # The gateway waits for the forwarded callback for up to launch_timeout seconds.
    write_ssh_spec(root / "jupyter", "ssh_fuzz", [h1], launch_timeout=400.0)
    interceptor = Interceptor(hosts["KY_SSH_GATEWAY_IP"])
    gw = start_ssh_gateway(root, hosts, callback_url=interceptor.url)
    try:
        # One after the other, so that the n-th callback is the n-th start's.
        pending = []
        for n in (1, 2):
            started = _start_in_background(gw)
            pending.append(Pending(_wait_for_callback(interceptor, n, started), started))
        yield Setup(gw, *pending)
    finally:
        for kernel in gw.request("GET", "/api/kernels")[1] or []:
            gw.request("DELETE", f"/api/kernels/{kernel['id']}")
        gw.stop()
        interceptor.close()


def _wait_for_callback(interceptor: Interceptor, n: int, started: Future[Any]) -> Callback:
    """The n-th kernel's callback; fails at once if its start ended without one."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if started.done():
            pytest.fail(f"the kernel start ended before its callback: {started.result()}")
        try:
            return interceptor.wait(n, timeout=0.5)[n - 1]
        except TimeoutError:
            continue
    pytest.fail(f"no launcher callback in 120 s (kernel start {n})")


# ---- strategies -------------------------------------------------------------------------

JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                | st.text(max_size=40))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5),
                           max_leaves=25)


def _not_of_type(kind: type) -> st.SearchStrategy[Any]:
    return JSON_VALUES.filter(lambda v: not isinstance(v, kind) or isinstance(v, bool))


@st.composite
def mutated_reports(draw: st.DrawFn, report: dict[str, Any]) -> dict[str, Any]:
    """The genuine report with one or more fields dropped, added, retyped or out of range."""
    body = dict(report)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["drop", "add", "retype", "port", "kernel_id"]))
        name = draw(st.sampled_from(sorted(CALLBACK_FIELDS)))
        if how == "drop":
            body.pop(name, None)
        elif how == "add":
            body[draw(st.text(min_size=1, max_size=20).filter(
                lambda k: k not in CALLBACK_FIELDS))] = draw(JSON_VALUES)
        elif how == "retype":
            body[name] = draw(_not_of_type(CALLBACK_FIELDS[name]))
        elif how == "port":
            body[draw(st.sampled_from(["shell_port", "hb_port", "launcher_port"]))] = draw(
                st.integers(max_value=0) | st.integers(min_value=65536))
        else:
            body["kernel_id"] = draw(st.text(max_size=40).filter(
                lambda k: k != report["kernel_id"]))
    return body


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def invalid_bodies(report: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Bodies the callback must refuse with 400 even with the valid token."""
    return st.one_of(
        JSON_VALUES.map(_json),
        mutated_reports(report).map(_json),
        st.binary(max_size=300),  # mostly not JSON, often not UTF-8
        st.text(max_size=300).map(str.encode),
        st.integers(1, 20).map(lambda n: _json({**report, "hostname": "h" * (n * 100_000)})),
        st.sampled_from([b"", b"null", b"{}", b"[]", b'"x"', b"NaN", b"{" * 5, b"\x00" * 8]),
    ).filter(lambda body: not _is_valid(body, report["kernel_id"]))


def _is_valid(body: bytes, kernel_id: str) -> bool:
    """What kernelyard itself would accept: such a body would consume the registration."""
    try:
        check_report(kernel_id, json.loads(body or b"null"))
    except (ValueError, InvalidRequest, RecursionError):
        return False
    return True


def _answer(status: int, body: bytes) -> str:
    return f"{status} {body[:300]!r}"


# ---- the fuzz -----------------------------------------------------------------------------


def test_invalid_bodies_with_the_valid_token_are_400(setup: Setup) -> None:
    report = setup.a.callback.report

    @FUZZ
    @given(body=invalid_bodies(report))
    def fuzz(body: bytes) -> None:
        status, answer = setup.post(setup.a.path, body, setup.a.bearer())
        assert status == 400, _answer(status, answer)
        assert json.loads(answer)["reason"] == "Bad Request"

    fuzz()


def _not_the_token(token: str) -> Any:
    return lambda header: header.strip() != f"Bearer {token}"


def test_wrong_absent_and_foreign_tokens_are_403(setup: Setup) -> None:
    a, b = setup.a, setup.b
    token = a.callback.token
    headers = st.one_of(
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
        st.just(""), st.just("Bearer "), st.just(f"bearer {token}"), st.just(token),
        st.just(f"Token {token}"), st.just(f"Bearer {b.callback.token}"),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                max_size=4).map(lambda junk: f"Bearer {token}{junk}"),
        st.integers(1, len(token) - 1).map(lambda n: f"Bearer {token[:n]}"),
    ).filter(_not_the_token(token))

    @FUZZ
    @given(header=headers, genuine=st.booleans())
    def fuzz(header: str, genuine: bool) -> None:
        body = a.callback.body if genuine else b"{}"
        sent = {**JSON_HEADERS, "Authorization": header} if header else dict(JSON_HEADERS)
        status, answer = setup.post(a.path, body, sent)
        assert status == 403, _answer(status, answer)

    fuzz()
    # no Authorization header at all
    assert setup.post(a.path, a.callback.body, dict(JSON_HEADERS))[0] == 403
    # each kernel's token is refused on the other kernel's URL, with either report
    for pending, other in ((a, b), (b, a)):
        for body in (pending.callback.body, other.callback.body):
            assert setup.post(pending.path, body, other.bearer())[0] == 403


def test_ids_that_are_not_registered_or_not_uuids(setup: Setup) -> None:
    a = setup.a
    ids = st.one_of(
        st.uuids().map(str),
        st.text(st.characters(min_codepoint=33, max_codepoint=126,
                              exclude_characters="/?#%"), min_size=1, max_size=60),
        st.just(a.kernel_id.upper()), st.just(a.kernel_id + "0"),
        st.just(a.kernel_id.replace("-", "")),
    ).filter(lambda kid: kid not in (setup.a.kernel_id, setup.b.kernel_id))

    @FUZZ
    @given(kid=ids)
    def fuzz(kid: str) -> None:
        status, answer = setup.post(CALLBACK.format(kid), a.callback.body, a.bearer())
        assert status in (403, 404), _answer(status, answer)

    fuzz()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
                                    "TRACE", "BREW"])
def test_other_methods_are_refused(setup: Setup, method: str) -> None:
    status, answer = setup.post(setup.a.path, setup.a.callback.body, setup.a.bearer(), method)
    assert 400 <= status < 500 or (method == "OPTIONS" and status in (200, 204)), (
        _answer(status, answer))


def _head_only(setup: Setup, length: int, wait: float, token: str | None = None) -> bytes:
    """Send the headers of a callback with this Content-Length, and no body; the answer.
    The token is kernel a's with a character added, unless one is given."""
    parts = urlsplit(setup.gw.url)
    token = f"{setup.a.callback.token}x" if token is None else token
    with socket.create_connection((parts.hostname or "", parts.port or 80), 10) as s:
        s.sendall(f"POST {setup.a.path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n".encode())
        s.settimeout(wait)
        try:
            return s.recv(4096)
        except TimeoutError:
            return b""


def test_a_body_past_the_servers_size_limit_is_refused_at_once(setup: Setup) -> None:
    """Past KernelyardApp.max_body_size (1 MiB by default): refused before reading too."""
    answer = _head_only(setup, 2 * 1024 ** 3, wait=10)
    assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 413 ")), answer


# ---- found by this fuzzing and fixed since: kept as regression tests --------------------


def test_callback_refuses_a_large_body_before_reading_it(setup: Setup) -> None:
    """The endpoint needs no login: a report is < 1 KiB, a body over 64 KiB is a 413 at
    once (not read, whatever the token), where jupyter_server would read 512 MiB."""
    answer = _head_only(setup, 10 * 1024 ** 2, wait=3)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    answer = _head_only(setup, MAX_CALLBACK_BODY + 1, wait=3, token=setup.a.callback.token)
    assert answer.startswith(b"HTTP/1.1 413 "), answer


def test_a_bad_token_is_refused_before_the_body_is_read(setup: Setup) -> None:
    answer = _head_only(setup, MAX_CALLBACK_BODY, wait=3)
    assert answer.startswith(b"HTTP/1.1 403 "), answer


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(("body", "valid_token", "expected"), [
    (_nested(100_000), False, 413),  # over the size limit
    (_nested(30_000), False, 403),  # the token first
    (_nested(30_000), True, 400),  # json.loads raises RecursionError
])
def test_deeply_nested_callback_body_is_4xx_not_500(setup: Setup, body: bytes,
                                                    valid_token: bool, expected: int) -> None:
    assert len(body) > MAX_CALLBACK_BODY or expected != 413
    headers = setup.a.bearer() if valid_token else dict(JSON_HEADERS)
    status, answer = setup.post(setup.a.path, body, headers)
    assert status == expected, _answer(status, answer)
    assert json.loads(answer)["reason"], answer


# ---- what the code promises: invalid requests leave the registration; a token works once --


def test_the_registrations_survived_and_each_token_works_once(setup: Setup) -> None:
    gw = setup.gw
    for pending in (setup.a, setup.b):
        status, answer = setup.post(pending.path, pending.callback.body, pending.bearer())
        assert status == 200, _answer(status, answer)
    started = [p.started.result(timeout=120) for p in (setup.a, setup.b)]
    assert [s for s, _ in started] == [201, 201], started
    assert {model["id"] for _, model in started} == {setup.a.kernel_id, setup.b.kernel_id}
    for pending in (setup.a, setup.b):
        status, answer = setup.post(pending.path, pending.callback.body, pending.bearer())
        assert status == 403, f"a token worked twice: {_answer(status, answer)}"
    ks = gw.connect(setup.a.kernel_id)
    try:
        assert ks.execute("print(6 * 7)")["stdout"] == "42\n"
    finally:
        ks.close()


def test_the_kernels_go_away(setup: Setup) -> None:
    pids = {p.callback.report["pid"] for p in (setup.a, setup.b)}
    for pending in (setup.a, setup.b):
        assert setup.gw.request("DELETE", f"/api/kernels/{pending.kernel_id}")[0] == 204
    assert wait_gone(pids, 30) == set()
    assert setup.gw.request("GET", "/api/kernels")[1] == []


def test_the_gateway_logged_no_traceback(setup: Setup) -> None:
    """Every refusal above was handled, none was an uncaught exception."""
    log = setup.gw.log()
    blocks = log.split("Uncaught exception")[1:]
    assert not blocks, blocks[0][:2000]
    assert "Traceback" not in log, log[log.index("Traceback"):][:2000]
    assert Path(setup.gw.log_path).exists()


# ---- found while setting up the fuzz, and fixed since: concurrent first starts on a host --


def test_concurrent_first_starts_on_a_host_all_succeed(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    hosts = ssh_hosts()
    h1 = hosts["KY_SSH_HOSTS"].split(",")[0]
    root = tmp_path_factory.mktemp("ship-race")
    gw = start_ssh_gateway(root, hosts)
    try:
        for attempt in range(3):  # each with a launcher that is not on the host yet
            remote = Path(tempfile.mkdtemp(prefix="kernelyard-ship-race-"))
            shutil.chown(remote, user=hosts["KY_SSH_USER"], group=hosts["KY_SSH_USER"])
            write_ssh_spec(root / "jupyter", f"ssh_race{attempt}", [h1], remote_dir=str(remote))
            with ThreadPoolExecutor(4) as pool:  # the gateway's own timeouts answer first
                answers = list(pool.map(lambda _, n=attempt: gw.request(
                    "POST", "/api/kernels", {"name": f"ssh_race{n}"}, timeout=START_WAIT),
                    range(4)))
            for status, model, _ in answers:
                if status == 201:
                    gw.request("DELETE", f"/api/kernels/{model['id']}")
            shutil.rmtree(remote, ignore_errors=True)
            assert [a[0] for a in answers] == [201] * 4, [a[:2] for a in answers]
    finally:
        gw.stop()

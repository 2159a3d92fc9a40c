"""schemathesis against a real gateway, from kernelyard's own OpenAPI spec.

Every operation of kernelyard/api/openapi.yaml gets generated requests (valid and
invalid, with a valid token) sent to a real ``kernelyard serve`` with local
python3 kernels. Checks: no 5xx (one justified exception, below), and the status,
content type, headers and body of each response conform to the spec where it says
something. Operations on ``{kernel_id}`` get a live kernel's id half of the time,
so restart, interrupt, delete and channels are exercised for real. At the end no
kernel is left: the API lists none and no process uses the runtime dir.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.gateway import Gateway, start_gateway
from tests.kernelspecs import make_test_kernelspecs
from tests.launcher_helpers import pids_mentioning, wait_until
from tests.procs import wait_gone

SPEC = Path(__file__).resolve().parents[2] / "kernelyard" / "api" / "openapi.yaml"
# Starting a kernel takes seconds on a busy machine: those operations get few examples
# (and no coverage phase, whose deterministic cases are not bounded by max_examples).
SLOW = ["POST /api/kernels", "POST /api/sessions", "POST /api/kernels/{kernel_id}/restart",
        "DELETE /api/kernels/{kernel_id}", "DELETE /api/sessions/{session_id}",
        "PATCH /api/sessions/{session_id}"]
# A fixed seed keeps CI reproducible; set KERNELYARD_FUZZ_SEED to explore other cases.
SEED = int(os.environ.get("KERNELYARD_FUZZ_SEED", "20260101"))
CONFIG = SchemathesisConfig.from_dict({
    "seed": SEED,
    # Every request carries the valid token (no generated Authorization values)
    "generation": {"max-examples": 50, "with-security-parameters": False, "database": "none"},
    "operations": [{"include-name": SLOW, "generation": {"max-examples": 8},
                    "phases": {"coverage": {"enabled": False}}}],
})
schema = schemathesis.openapi.from_path(SPEC, config=CONFIG)
CHECKS = [status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
# Kernelspecs made to fail at start (tests/kernelspecs.py): their start is a documented 500.
FAILING_SPECS = ("dies_at_start", "no_such_binary")
REAL_SPECS = ("python3", "restricted", *FAILING_SPECS)


class Kernels:
    """The live kernel that {kernel_id} operations may hit, and every kernel made."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.live: str | None = None
        self.created: set[str] = set()
        self.answers: Counter[tuple[str, int]] = Counter()  # (request, status) -> count
        self.seen: Counter[str] = Counter()  # operation -> cases so far

    def live_id(self) -> str:
        if self.live is not None:
            status, _, _ = self.gw.request("GET", f"/api/kernels/{self.live}")
            if status == 200:
                return self.live
        self.live = self.gw.start_kernel()
        self.created.add(self.live)
        return self.live


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("schemathesis")
    make_test_kernelspecs(root / "jupyter")
    gateway = start_gateway(root, env={"JUPYTER_PATH": str(root / "jupyter")})
    yield gateway
    for kernel in gateway.request("GET", "/api/kernels")[1] or []:
        gateway.request("DELETE", f"/api/kernels/{kernel['id']}")
    gateway.stop()


@pytest.fixture(scope="module")
def kernels(gw: Gateway) -> Kernels:
    return Kernels(gw)


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # never through a proxy
        yield session


def steer(case: schemathesis.Case, kernels: Kernels) -> None:
    """Point every other case of an operation at real things: the live kernel, real
    kernelspec names, a well-formed session. The rest go out as generated."""
    kernels.seen[case.operation.label] += 1
    if kernels.seen[case.operation.label] % 2:
        return
    params = case.path_parameters or {}
    if "kernel_id" in params and case.operation.path.startswith("/api/kernels/"):
        params["kernel_id"] = kernels.live_id()
    body = case.body
    if case.operation.label == "POST /api/kernels" and isinstance(body, dict):
        body.clear()
        body["name"] = REAL_SPECS[kernels.seen[case.operation.label] // 2 % len(REAL_SPECS)]
    if case.operation.label == "POST /api/sessions" and isinstance(body, dict):
        body.update(path=f"fuzz-{kernels.seen[case.operation.label]}.ipynb", type="notebook",
                    kernel={"name": "python3"})


def justified_server_error(case: schemathesis.Case, response: schemathesis.Response) -> bool:
    """A 500 for starting a kernelspec whose kernel cannot start: documented, and by design."""
    body = case.body if isinstance(case.body, dict) else {}
    return (case.operation.label == "POST /api/kernels" and response.status_code == 500
            and body.get("name") in FAILING_SPECS
            and "start" in response.json().get("message", ""))


def sent(response: schemathesis.Response) -> str:
    """The request as it went out (the Authorization value left out)."""
    request = response.request
    headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
    return f"{request.method} {request.url} headers={headers} body={request.body!r}"


def known_finding(case: schemathesis.Case, response: schemathesis.Response) -> str | None:
    """Which reported, not yet fixed finding (a strict-xfail ``test_finding_*`` below) this
    response is an instance of: none is open now.

    When the fuzz finds a bug, add a clause matching it narrowly (anything else must
    still fail the fuzz test) with its test_finding_*; remove both once it is fixed.
    """
    return None


def remember(case: schemathesis.Case, response: schemathesis.Response, kernels: Kernels) -> None:
    method = response.request.method or ""
    path = case.operation.path
    kernels.answers[f"{method} {path}", response.status_code] += 1
    if response.status_code != 201:
        return
    model = response.json()
    kid = model.get("id") if case.operation.path == "/api/kernels" else (
        model.get("kernel") or {}).get("id")
    if kid:
        kernels.created.add(kid)


@schema.parametrize()
def test_api_conforms_and_never_fails(case: schemathesis.Case, gw: Gateway, kernels: Kernels,
                                      http: requests.Session) -> None:
    steer(case, kernels)
    headers = {} if case.operation.path.startswith("/kernelyard/") else gw.headers()
    response = case.call(base_url=gw.url, session=http, headers=headers, timeout=120)
    remember(case, response, kernels)
    if known_finding(case, response):
        return
    if response.status_code >= 500 and not justified_server_error(case, response):
        pytest.fail(f"{case.operation.label} answered {response.status_code}: "
                    f"{response.text[:500]}\nreproduce: {sent(response)}")
    case.validate_response(response, checks=CHECKS, headers=headers)


# An example value for each path parameter of the spec.
EXAMPLES = {"kernel_id": "00000000-0000-4000-8000-000000000000",
            "session_id": "00000000-0000-4000-8000-000000000001",
            "kernel_name": "python3", "resource": "logo-64x64.png"}
def test_the_served_spec_is_the_file(gw: Gateway) -> None:
    """The same document, except info.version: the gateway fills in its own version."""
    expected = yaml.safe_load(SPEC.read_text())
    status, text, _ = gw.request("GET", "/api/swagger.yaml")
    assert status == 200
    served_yaml = yaml.safe_load(text)
    status, served_json, _ = gw.request("GET", "/api/swagger.json")
    assert status == 200
    for served in (served_yaml, served_json):
        assert served["info"].pop("version") == gw.request("GET", "/api")[1]["gateway_version"]
        expected["info"].pop("version", None)
        assert served == expected


# Successes the run must have produced: the slow operations ran for real, not only 4xx.
MUST_SUCCEED = [("POST /api/kernels", 201), ("POST /api/sessions", 201),
                ("POST /api/kernels/{kernel_id}/restart", 200),
                ("POST /api/kernels/{kernel_id}/interrupt", 204),
                ("DELETE /api/kernels/{kernel_id}", 204), ("GET /api/kernels/{kernel_id}", 200)]


def test_kernel_operations_were_exercised(kernels: Kernels) -> None:
    summary = "\n".join(f"{n:5d} {label} -> {status}"
                        for (label, status), n in sorted(kernels.answers.items()))
    print(summary)
    missing = [pair for pair in MUST_SUCCEED if not kernels.answers[pair]]
    assert not missing, f"never answered {missing}; answers:\n{summary}"
    assert kernels.created


# ---- found by this fuzzing and fixed since: kept as regression tests --------------------
#
# An open finding is a test_finding_* marked xfail(strict=True): the suite stays green
# while the bug is there, and fails (XPASS) once it is fixed, so that the marker and the
# matching clause of known_finding() get removed.

NON_UTF8_BODIES = [b"\xff", b'{"name": "\xff"}']


@pytest.mark.parametrize("raw", NON_UTF8_BODIES)
@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/kernels"), ("POST", "/api/sessions"),
    ("PATCH", "/api/sessions/00000000-0000-4000-8000-000000000000")])
def test_non_utf8_json_body_is_400_not_500(gw: Gateway, method: str, path: str,
                                           raw: bytes) -> None:
    status, body, _ = gw.request(method, path, raw=raw)
    assert status == 400, (status, body)
    assert body == {"reason": "Bad Request", "message": "the request body is not UTF-8"}


SESSION = {"path": "a.ipynb", "type": "notebook", "kernel": {"name": "python3"}}


@pytest.mark.parametrize(("model", "field"), [
    ([], "body"), ({"path": 5, "type": "notebook", "kernel": {"name": 5}}, "'path'"),
    ({**SESSION, "kernel": []}, "'kernel'"), ({**SESSION, "kernel": None}, "'kernel'"),
    ({**SESSION, "kernel": {"name": 5}}, "'kernel.name'"),
    ({**SESSION, "kernel": {"id": ["x"]}}, "'kernel.id'"), ({**SESSION, "name": 5}, "'name'"),
    ({**SESSION, "type": None}, "'type'"), ({**SESSION, "notebook": "x"}, "'notebook'"),
    ({"notebook": {"path": 5}}, "'notebook.path'")])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_session_of_the_wrong_type_is_400_not_500(gw: Gateway, method: str, model: Any,
                                                  field: str) -> None:
    path = "/api/sessions" + ("/00000000-0000-4000-8000-000000000000" * (method == "PATCH"))
    status, body, _ = gw.request(method, path, model)
    _delete_session(gw, status, body)
    assert status == 400, (status, body)
    assert field in body["message"], body


@pytest.mark.parametrize(("field", "value"), [
    ("name", "x\u0000"), ("name", "x\ny"), ("name", "`x`"), ("name", "x" * 4097),
    ("path", "x\u0000.ipynb"), ("path", "x\ny.ipynb"), ("path", "../x.ipynb")])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_session_name_and_path_are_checked_like_kernel_env(gw: Gateway, method: str,
                                                           field: str, value: str) -> None:
    """Both reach the kernel's env (JPY_SESSION_NAME) as a client's env values do."""
    path = "/api/sessions" + ("/00000000-0000-4000-8000-000000000000" * (method == "PATCH"))
    status, body, _ = gw.request(method, path, {**SESSION, field: value})
    _delete_session(gw, status, body)
    assert status == 400, (status, body)
    assert f"'{field}'" in body["message"], body


WEBSOCKET = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


@pytest.mark.parametrize("session_id", ["%C3%A9", "a%0Ab", "x" * 256])
def test_bad_session_id_on_channels_is_400_not_500(gw: Gateway, kernels: Kernels,
                                                   http: requests.Session,
                                                   session_id: str) -> None:
    kid = kernels.live_id()
    url = f"{gw.url.rstrip('/')}/api/kernels/{kid}/channels?session_id={session_id}"
    response = http.get(url, headers={**gw.headers(), **WEBSOCKET}, timeout=30)
    assert response.status_code == 400, response.text
    assert "session_id" in response.json()["message"], response.text


def test_a_good_session_id_still_connects(gw: Gateway, kernels: Kernels) -> None:
    ks = gw.connect(kernels.live_id(), session_id="x" * 255)
    try:
        assert ks.execute("print(6 * 7)")["stdout"] == "42\n"
    finally:
        ks.close()


def test_channels_without_a_websocket_handshake_is_a_json_400(gw: Gateway,
                                                             kernels: Kernels) -> None:
    status, body, _ = gw.request("GET", f"/api/kernels/{kernels.live_id()}/channels")
    assert status == 400, (status, body)
    assert body["reason"] == "Bad Request" and "Upgrade" in body["message"], body


# Found by this fuzzing and fixed since (b703723): kept as a regression test.
@pytest.mark.parametrize("kernel_id", ["a-b-c-d-e", "../kernel-escape"])
def test_session_kernel_id_is_checked_like_kernel_start(gw: Gateway, kernel_id: str) -> None:
    model = {"path": f"finding-{len(kernel_id)}.ipynb", "type": "notebook",
             "kernel": {"id": kernel_id, "name": "python3"}}
    status, body, _ = gw.request("POST", "/api/sessions", model)
    _delete_session(gw, status, body)
    assert status == 400, (status, body)
    assert str(gw.runtime_dir) not in json.dumps(body)


def test_a_session_without_a_name_has_an_empty_name(gw: Gateway) -> None:
    """jupyter_server answers null; the spec (and JupyterLab's model check) want a string."""
    model = {"path": "unnamed.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
    status, created, _ = gw.request("POST", "/api/sessions", model)
    try:
        assert status == 201, created
        _, listed, _ = gw.request("GET", "/api/sessions")
        _, one, _ = gw.request("GET", f"/api/sessions/{created['id']}")
        _, patched, _ = gw.request("PATCH", f"/api/sessions/{created['id']}", {"name": None})
        for answer in (created, one, patched, *[s for s in listed if s["id"] == created["id"]]):
            assert answer["name"] == "" and answer["notebook"]["name"] == "", answer
    finally:
        _delete_session(gw, status, created)
    name_schema = schema.raw_schema["components"]["schemas"]["Session"]["properties"]["name"]
    assert name_schema["type"] == "string" and not name_schema.get("nullable")


def _operations() -> list[tuple[str, dict[str, Any]]]:
    raw = schema.raw_schema
    return [(f"{method.upper()} {path}", op) for path, ops in raw["paths"].items()
            for method, op in ops.items() if method != "parameters"]


# What the gateway answers besides each operation's own statuses (each seen in the fuzz run).
DOCUMENTED = [
    ("GET /api/kernels/{kernel_id}/channels", "400"),  # a GET without Upgrade: websocket
    ("POST /kernelyard/callback/{kernel_id}", "404"),  # an id that is not UUID-shaped
    ("POST /kernelyard/callback/{kernel_id}", "413"),  # a body over the callback's limit
    *[(label, "401") for label, op in _operations()  # no token: every secured operation
      if op.get("security", schema.raw_schema["security"])],
]


@pytest.mark.parametrize(("operation", "status"), DOCUMENTED)
def test_spec_documents_every_status_answered(operation: str, status: str) -> None:
    method, path = operation.split(" ", 1)
    responses = schema.raw_schema["paths"][path][method.lower()]["responses"]
    assert status in responses, f"{operation} may answer {status}: the spec does not say so"


def test_every_secured_operation_answers_401_without_a_token(gw: Gateway) -> None:
    kid, sid = "00000000-0000-4000-8000-000000000000", "00000000-0000-4000-8000-000000000001"
    for label, op in _operations():
        if not op.get("security", schema.raw_schema["security"]):
            continue
        method, path = label.split(" ", 1)
        url = path.format(kernel_id=kid, session_id=sid, kernel_name="python3",
                          resource="logo-64x64.png")
        status, body, _ = gw.request(method, url, {} if method in ("POST", "PATCH") else None,
                                     token="")
        assert status == 401, (label, status, body)
        if method != "HEAD":  # a HEAD answer has no body
            assert body["reason"] == "Unauthorized", (label, body)


def _delete_session(gw: Gateway, status: int, body: Any) -> None:
    if status == 201 and isinstance(body, dict):
        gw.request("DELETE", f"/api/sessions/{body['id']}")
        gw.request("DELETE", f"/api/kernels/{body['kernel']['id']}")


def test_no_kernel_is_left_running(gw: Gateway, kernels: Kernels) -> None:
    """Delete what the run made; then nothing is listed and nothing runs."""
    _, sessions, _ = gw.request("GET", "/api/sessions")
    for session in sessions or []:
        gw.request("DELETE", f"/api/sessions/{session['id']}")
    for kid in kernels.created | {k["id"] for k in gw.request("GET", "/api/kernels")[1]}:
        status, body, _ = gw.request("DELETE", f"/api/kernels/{kid}")
        assert status in (204, 404), (kid, status, body)
    status, listed, _ = gw.request("GET", "/api/kernels")
    assert status == 200 and listed == []
    runtime = str(gw.runtime_dir)
    assert wait_until(lambda: not pids_mentioning(runtime), timeout=20), (
        f"processes still use {runtime}: {sorted(pids_mentioning(runtime))}")
    assert not wait_gone(pids_mentioning(runtime), 1)
    time.sleep(0.1)


# ---- the whole route table, not only the spec's paths (issue 10, item 1) ----------------

SEGMENTS = ["api", "kernels", "kernelspecs", "sessions", "channels", "restart", "interrupt",
            "swagger.yaml", "files", "static", "contents", "login", "metrics", "kernelyard",
            "callback", "python3", "logo-64x64.png", "kernel.json", "..", ".", "", "%00",
            "%2e%2e", "%2f", "\\", "00000000-0000-4000-8000-000000000000"]
FUZZ_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
                "PROPFIND", "CONNECT-ISH"]


@st.composite
def any_path(draw: st.DrawFn) -> str:
    """A path from route-like segments and arbitrary text, percent-encoded as sent."""
    parts = draw(st.lists(st.one_of(st.sampled_from(SEGMENTS), st.text(max_size=12)),
                          max_size=6))
    path = "/" + "/".join(p if p.startswith("%") else quote(p, safe=".\\") for p in parts)
    query = draw(st.sampled_from(["", "?token=x", "?user=alice", "?a=%ff", "?session_id=%0a"]))
    return path + query


@settings(max_examples=300, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(FUZZ_METHODS), path=any_path(), with_token=st.booleans())
def test_any_path_and_method_is_never_a_server_error(gw: Gateway, http: requests.Session,
                                                     method: str, path: str,
                                                     with_token: bool) -> None:
    """Never a 5xx, never a redirect or a cookie, and every error is JSON."""
    headers = gw.headers() if with_token else {}
    # A body no operation accepts, so that no kernel is started by chance.
    body = b"{" if method in ("POST", "PUT", "PATCH") else None
    response = http.request(method, gw.url.rstrip("/") + path, headers=headers, data=body,
                            allow_redirects=False, timeout=120)
    where = f"{method} {path} token={with_token}: {response.status_code} {response.text[:300]}"
    assert response.status_code < 500, where
    assert not 300 <= response.status_code < 400, where
    assert "Set-Cookie" not in response.headers, where
    if response.status_code >= 400:
        assert response.headers.get("Content-Type", "").startswith("application/json"), where
        if method != "HEAD":
            assert set(response.json()) == {"reason", "message"}, where

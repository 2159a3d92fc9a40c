"""The REST API against a real gateway process: every endpoint and its errors."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.gateway import Gateway, start_gateway
from tests.kernelspecs import make_test_kernelspecs
from tests.procs import children_of, wait_gone


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("api")
    make_test_kernelspecs(root / "jupyter")
    gateway = start_gateway(
        root,
        "--KernelyardApp.client_envs=ALLOWED_VAR",
        env={"JUPYTER_PATH": str(root / "jupyter"), "GATEWAY_ONLY_VAR": "g"},
    )
    yield gateway
    gateway.stop()


def test_version(gw: Gateway) -> None:
    status, body, _ = gw.request("GET", "/api")
    assert status == 200
    assert set(body) == {"version", "gateway_version"}
    assert re.match(r"\d+\.\d+", body["gateway_version"])


@pytest.mark.parametrize("token", ["", "wrong"])
def test_missing_or_wrong_token_is_401(gw: Gateway, token: str) -> None:
    for method, path in [("GET", "/api/kernels"), ("POST", "/api/kernels"),
                         ("GET", "/api/kernelspecs"), ("GET", "/api/sessions")]:
        status, body, _ = gw.request(method, path, {} if method == "POST" else None, token=token)
        assert status == 401, (method, path, body)
        assert body["reason"] == "Unauthorized"


def test_token_in_query_string(gw: Gateway) -> None:
    status, _, _ = gw.request("GET", f"/api/kernelspecs?token={gw.token}", token="")
    assert status == 200


def test_unknown_path_is_json_404(gw: Gateway) -> None:
    status, body, headers = gw.request("GET", "/no/such/thing", token="")
    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    assert body["reason"] == "Not Found" and "/no/such/thing" in body["message"]


def test_kernelspecs(gw: Gateway) -> None:
    status, body, _ = gw.request("GET", "/api/kernelspecs")
    assert status == 200
    assert body["default"] == "python3"
    assert {"python3", "restricted", "no_such_binary"} <= set(body["kernelspecs"])
    logo = body["kernelspecs"]["python3"]["resources"]["logo-64x64"]
    status, data, _ = gw.request("GET", logo)
    assert status == 200 and "PNG" in str(data)


def test_kernelspec_by_name_and_404(gw: Gateway) -> None:
    status, body, _ = gw.request("GET", "/api/kernelspecs/python3")
    assert status == 200 and body["name"] == "python3"
    status, body, _ = gw.request("GET", "/api/kernelspecs/nope")
    assert status == 404 and "nope" in body["message"]
    status, body, _ = gw.request("GET", "/kernelspecs/python3/missing.png")
    assert status == 404


def test_kernelspecs_user_filter(gw: Gateway) -> None:
    _, alice, _ = gw.request("GET", "/api/kernelspecs?user=alice")
    _, bob, _ = gw.request("GET", "/api/kernelspecs?user=bob")
    assert "restricted" in alice["kernelspecs"] and "restricted" not in bob["kernelspecs"]
    assert "eg_restricted" not in alice["kernelspecs"] and "eg_restricted" in bob["kernelspecs"]


def test_start_get_delete_kernel(gw: Gateway) -> None:
    status, model, headers = gw.request("POST", "/api/kernels", {"name": "python3"})
    assert status == 201
    kid = model["id"]
    assert headers["Location"] == f"/api/kernels/{kid}"
    status, got, _ = gw.request("GET", f"/api/kernels/{kid}")
    assert status == 200 and got["id"] == kid and got["name"] == "python3"
    _, listed, _ = gw.request("GET", "/api/kernels")
    assert kid in {k["id"] for k in listed}
    status, _, _ = gw.request("DELETE", f"/api/kernels/{kid}")
    assert status == 204
    status, body, _ = gw.request("GET", f"/api/kernels/{kid}")
    assert status == 404 and kid in body["message"]


def test_default_kernelspec_when_body_is_empty(gw: Gateway) -> None:
    status, model, _ = gw.request("POST", "/api/kernels", raw=b"")
    assert status == 201 and model["name"] == "python3"
    gw.request("DELETE", f"/api/kernels/{model['id']}")


@pytest.mark.parametrize("path", ["/api/kernels/{}", "/api/kernels/{}/interrupt",
                                  "/api/kernels/{}/restart"])
def test_unknown_kernel_is_404(gw: Gateway, path: str) -> None:
    method = "GET" if path.endswith("{}") else "POST"
    body_in = {} if method == "POST" else None
    status, body, _ = gw.request(method, path.format(uuid.uuid4()), body_in)
    assert status == 404, body
    status, _, _ = gw.request("DELETE", f"/api/kernels/{uuid.uuid4()}")
    assert status == 404


def test_unknown_kernelspec_is_404(gw: Gateway) -> None:
    status, body, _ = gw.request("POST", "/api/kernels", {"name": "no-such-spec"})
    assert status == 404 and "no-such-spec" in body["message"]


@pytest.mark.parametrize("raw", [b"{", b"[1,2]", b'{"name": 5}', b'{"env": []}'])
def test_malformed_body_is_400(gw: Gateway, raw: bytes) -> None:
    status, body, _ = gw.request("POST", "/api/kernels", raw=raw)
    assert status == 400, body
    assert body["reason"] == "Bad Request" and body["message"]


@pytest.mark.parametrize(
    ("value", "why"),
    [(5, "string"), ("x" * 4097, "longer"), ("a\nb", "control"), ("$(id)", "'$'"),
     ("`id`", "backtick")],
)
def test_bad_env_value_is_400_naming_the_variable(gw: Gateway, value: object, why: str) -> None:
    status, body, _ = gw.request("POST", "/api/kernels", {"env": {"KERNEL_BAD": value}})
    assert status == 400
    assert "KERNEL_BAD" in body["message"] and why in body["message"]


@pytest.mark.parametrize("kid", ["not-a-uuid", "6BA7B810-9DAD-11D1-80B4-00C04FD430C8",
                                 "6ba7b8109dad11d180b400c04fd430c8"])
def test_non_canonical_kernel_id_is_400(gw: Gateway, kid: str) -> None:
    status, body, _ = gw.request("POST", "/api/kernels", {"env": {"KERNEL_ID": kid}})
    assert status == 400 and "KERNEL_ID" in body["message"]


def test_client_chosen_kernel_id_and_conflict(gw: Gateway) -> None:
    kid = str(uuid.uuid4())
    status, model, _ = gw.request("POST", "/api/kernels", {"env": {"KERNEL_ID": kid}})
    assert status == 201 and model["id"] == kid
    status, body, _ = gw.request("POST", "/api/kernels", {"env": {"KERNEL_ID": kid}})
    assert status == 409 and kid in body["message"]
    gw.request("DELETE", f"/api/kernels/{kid}")


def test_kernel_env_rules(gw: Gateway) -> None:
    kid = gw.start_kernel(env={"KERNEL_FOO": "foo", "ALLOWED_VAR": "yes", "OTHER_VAR": "no"})
    ks = gw.connect(kid)
    try:
        code = ("import os, json; print(json.dumps({k: os.environ.get(k) for k in "
                "['KERNEL_FOO','ALLOWED_VAR','OTHER_VAR','KERNELYARD_AUTH_TOKEN','GATEWAY_ONLY_VAR']}))")
        seen = json.loads(ks.execute(code)["stdout"])
    finally:
        ks.close()
        gw.request("DELETE", f"/api/kernels/{kid}")
    assert seen["KERNEL_FOO"] == "foo" and seen["ALLOWED_VAR"] == "yes"
    assert seen["OTHER_VAR"] is None
    assert seen["KERNELYARD_AUTH_TOKEN"] is None, "the gateway's token reached a kernel"
    assert seen["GATEWAY_ONLY_VAR"] is None, "a gateway variable not in inherited_envs passed"


def test_path_may_not_escape(gw: Gateway) -> None:
    status, body, _ = gw.request("POST", "/api/kernels", {"path": "../../etc/x.ipynb"})
    assert status == 400 and "path" in body["message"]


def test_unstartable_argv_is_500_naming_spec_and_leaves_nothing(gw: Gateway) -> None:
    before = children_of(gw.proc.pid)
    status, body, _ = gw.request("POST", "/api/kernels", {"name": "no_such_binary"})
    assert status == 500
    assert "no_such_binary" in body["message"] and "No such file" in body["message"]
    assert children_of(gw.proc.pid) <= before
    _, listed, _ = gw.request("GET", "/api/kernels")
    assert all(k["name"] != "no_such_binary" for k in listed)


def test_kernel_dying_at_start_reports_its_log(gw: Gateway) -> None:
    status, body, _ = gw.request("POST", "/api/kernels", {"name": "dies_at_start"})
    assert status == 500
    assert "dies_at_start" in body["message"] and "exit code 3" in body["message"]
    assert "kernel config is broken" in body["message"]
    _, listed, _ = gw.request("GET", "/api/kernels")
    assert all(k["name"] != "dies_at_start" for k in listed)
    leftovers = list(gw.runtime_dir.glob("kernel-*.json"))
    running = {k["id"] for k in listed}
    assert all(any(r in p.name for r in running) for p in leftovers), leftovers


def test_port_clash_is_retried_on_new_ports(gw: Gateway) -> None:
    status, model, _ = gw.request("POST", "/api/kernels", {"name": "port_clash_once"})
    assert status == 201, model
    ks = gw.connect(model["id"])
    try:
        assert ks.execute("print(6*7)")["stdout"] == "42\n"
    finally:
        ks.close()
        gw.request("DELETE", f"/api/kernels/{model['id']}")
    assert "port clash" in gw.log()


def test_sessions_crud(gw: Gateway) -> None:
    body = {"path": "work/nb.ipynb", "type": "notebook", "name": "nb",
            "kernel": {"name": "python3"}}
    status, session, headers = gw.request("POST", "/api/sessions", body)
    assert status == 201, session
    sid, kid = session["id"], session["kernel"]["id"]
    assert headers["Location"].endswith(sid)
    status, got, _ = gw.request("GET", f"/api/sessions/{sid}")
    assert status == 200 and got["kernel"]["id"] == kid
    _, listed, _ = gw.request("GET", "/api/sessions")
    assert sid in {s["id"] for s in listed}
    status, patched, _ = gw.request("PATCH", f"/api/sessions/{sid}", {"name": "renamed"})
    assert status == 200 and patched["name"] == "renamed"
    status, _, _ = gw.request("DELETE", f"/api/sessions/{sid}")
    assert status == 204
    status, _, _ = gw.request("GET", f"/api/kernels/{kid}")
    assert status == 404
    status, _, _ = gw.request("GET", f"/api/sessions/{sid}")
    assert status == 404


def test_session_with_unknown_kernelspec(gw: Gateway) -> None:
    body = {"path": "a.ipynb", "type": "notebook", "kernel": {"name": "nope"}}
    status, resp, _ = gw.request("POST", "/api/sessions", body)
    assert status in (404, 501), resp
    status, resp, _ = gw.request("POST", "/api/sessions", raw=b"{")
    assert status == 400


def test_concurrent_starts_all_succeed(gw: Gateway) -> None:
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: gw.request("POST", "/api/kernels", {}), range(6)))
    ids = [model["id"] for status, model, _ in results if status == 201]
    try:
        assert len(ids) == 6, [r[:2] for r in results]
    finally:
        for kid in ids:
            gw.request("DELETE", f"/api/kernels/{kid}")


def test_swagger_served_and_true_to_routes(gw: Gateway) -> None:
    from kernelyard.api.routes import ROUTES

    status, spec_json, _ = gw.request("GET", "/api/swagger.json")
    assert status == 200 and spec_json["openapi"].startswith("3.")
    status, spec_yaml, _ = gw.request("GET", "/api/swagger.yaml")
    assert status == 200 and "openapi:" in spec_yaml
    spec_paths = set(spec_json["paths"])
    route_paths = {path for route in ROUTES for path in _route_to_spec(route[0])}
    assert spec_paths == route_paths


def _route_to_spec(pattern: str) -> set[str]:
    """The OpenAPI paths a route pattern serves: literal alternatives become paths."""
    pattern = pattern.replace("\\.", ".").replace("/?", "")
    literal = re.search(r"\(\?P<\w+>([a-z|]+)\)", pattern)
    if literal:
        return {p for alt in literal.group(1).split("|")
                for p in _route_to_spec(pattern.replace(literal.group(0), alt))}
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
    return {path.replace("/{path}", "/{resource}")}


def test_gateway_stop_leaves_no_kernel_process(tmp_path) -> None:
    gateway = start_gateway(tmp_path)
    kids = [gateway.start_kernel() for _ in range(2)]
    assert kids
    pids = children_of(gateway.proc.pid)
    assert pids
    assert gateway.stop() == 0
    assert wait_gone(pids) == set()

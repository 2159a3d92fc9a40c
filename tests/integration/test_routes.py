"""The gateway serves its own route table and nothing else (issue 10, items 1 and 14).

A real gateway is probed with jupyter_server's leftover routes (files, contents,
static, login, redirects, ...), with and without a token and with several methods:
every answer is a JSON 404 without cookies or redirects, and nothing is logged as
a traceback. Kernelspec resource paths with NUL or traversal are a JSON 4xx.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.gateway import Gateway, start_gateway
from tests.kernelspecs import make_test_kernelspecs

LEFTOVERS = [
    "/files/secret.txt", "/files/jupyter/kernels/restricted/kernel.json", "/", "/?a=b",
    "/static/x", "/static/favicon.ico", "/static/style/index.css", "/favicon.ico",
    "/robots.txt", "/metrics", "/api/metrics/v1", "/\\evil.com/", "//evil.com/",
    "/api/kernels/", "/api/contents", "/api/contents/secret.txt", "/login", "/logout",
    "/api/me", "/api/status", "/api/config/x", "/api/nbconvert", "/api/terminals",
    "/api/events", "/api/spec.yaml", "/api/shutdown", "/lab", "/tree", "/view/secret.txt",
    "/edit/secret.txt", "/nbconvert/html/secret.txt", "/custom/custom.css",
    "/api/kernelspecs/python3/extra", "/kernelspecs", "/kernelyard/callback",
]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "FOO"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("routes")
    make_test_kernelspecs(root / "jupyter")
    (root / "secret.txt").write_text("top secret file content\n")
    gateway = start_gateway(root, env={"JUPYTER_PATH": str(root / "jupyter")})
    yield gateway
    gateway.stop()


def raw(gw: Gateway, method: str, path: str, token: str | None = None,
        body: bytes | None = None) -> tuple[int, dict[str, str], bytes, list[str]]:
    """One request without redirects: (status, headers, body, Set-Cookie values)."""
    url = urlsplit(gw.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, dict(resp.getheaders()), data, resp.headers.get_all("Set-Cookie") or []
    finally:
        conn.close()


def assert_json_404(gw: Gateway, method: str, path: str, token: str | None) -> None:
    status, headers, data, cookies = raw(gw, method, path, token)
    where = (method, path, bool(token))
    assert status == 404, (*where, status, headers, data[:200])
    assert not cookies, where
    assert "Location" not in headers, where
    assert headers["Content-Type"].startswith("application/json"), where
    if method != "HEAD":
        body = json.loads(data)
        assert body["reason"] == "Not Found", where
        assert body["message"], where
    assert b"top secret" not in data


@pytest.mark.parametrize("path", LEFTOVERS)
def test_leftover_jupyter_server_route_is_a_json_404(gw: Gateway, path: str) -> None:
    for token in (None, gw.token, "wrong-token"):
        for method in METHODS:
            assert_json_404(gw, method, path, token)


def test_no_traceback_or_server_error_logged_for_unknown_paths(gw: Gateway) -> None:
    for path in ["/files/secret.txt", "/", "/static/x", "/\\evil.com/"]:
        raw(gw, "GET", path)
    assert gw.log_shows("/static/x")
    log = gw.log()
    assert "Traceback" not in log
    assert " 500 " not in log


def test_own_routes_still_served(gw: Gateway) -> None:
    for path in ["/api", "/api/kernelspecs", "/api/kernels", "/api/sessions",
                 "/api/swagger.yaml", "/api/swagger.json", "/api/kernelspecs/python3",
                 "/api/kernelspecs/python3/"]:
        status, _, _, cookies = raw(gw, "GET", path, gw.token)
        assert status == 200, path
        assert not cookies, path
    status, _, _, _ = raw(gw, "GET", "/api", None)
    assert status == 401


@pytest.mark.parametrize("path", [
    "/kernelspecs/python3/%00", "/kernelspecs/python3/logo%00.png",
    "/kernelspecs/python3/..%2f..%2f..%2fetc%2fpasswd", "/kernelspecs/python3/../kernel.json",
    "/kernelspecs/python3/%2e%2e/restricted/kernel.json", "/kernelspecs/python3/%2fetc%2fpasswd",
    "/kernelspecs/python3/a%5c..%5c..%5cx", "/kernelspecs/%00/logo-64x64.png",
    "/kernelspecs/py%00thon3/kernel.json", "/kernelspecs/python3%00/kernel.json",
    "/api/kernelspecs/%00", "/api/kernelspecs/py%00thon", "/api/kernelspecs/..%2f",
    "/kernelspecs/python3/%01", "/kernelspecs/python3/",
])
def test_bad_kernelspec_resource_path_is_a_clear_json_4xx(gw: Gateway, path: str) -> None:
    status, headers, data, _ = raw(gw, "GET", path, gw.token)
    assert 400 <= status < 500, (path, status, data[:200])
    assert headers["Content-Type"].startswith("application/json"), path
    body = json.loads(data)
    assert "%s" not in body["message"], body
    assert "root static directory" not in body["message"], body
    assert "/etc/passwd" not in data.decode(errors="replace") or status != 200


def test_traversal_message_names_the_problem(gw: Gateway) -> None:
    status, _, data, _ = raw(gw, "GET", "/kernelspecs/python3/..%2fkernel.json", gw.token)
    assert status in (400, 404)
    assert "kernelspec resource" in json.loads(data)["message"]


def test_kernelspec_resource_still_served(gw: Gateway) -> None:
    status, _, data, _ = raw(gw, "GET", "/kernelspecs/python3/kernel.json", gw.token)
    assert status == 200, data[:200]
    assert json.loads(data)["argv"]

"""The live router of a KernelyardApp is exactly the documented route table.

The app is initialised in a child process (as ``kernelyard serve`` would, without
listening) and its tornado routers are dumped: every rule but the final catch-all
404 must be a path of kernelyard/api/openapi.yaml with the same methods, and every
documented path must be routed. jupyter_server's own routes (files, static,
login, redirects, metrics) therefore fail this test if they come back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "kernelyard" / "api" / "openapi.yaml"
SAMPLES = {"kernel_id": "0b6ae5c4-1f2e-4a55-9d1b-2c3d4e5f6a7b",
           "session_id": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
           "kernel_name": "python3", "resource": "logo-64x64.png"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}

DUMP = """
import json, sys
from tornado import web
from kernelyard.app import KernelyardApp
app = KernelyardApp()
app.initialize(["--port=0", "--log-level=CRITICAL", "--base-url=" + sys.argv[1]])
web_app = app.web_app
out = {"default": [[type(r.matcher).__name__, r.target is web_app.wildcard_router]
                   for r in web_app.default_router.rules], "rules": []}
for rule in web_app.wildcard_router.rules:
    handler = rule.target
    methods = [m for m in handler.SUPPORTED_METHODS if getattr(handler, m.lower(), None)
               not in (None, web.RequestHandler._unimplemented_method)]
    out["rules"].append({"pattern": rule.matcher.regex.pattern, "handler": handler.__name__,
                         "methods": methods})
out["settings"] = sorted(k for k in ("static_path", "xsrf_cookies", "login_url")
                         if web_app.settings.get(k))
print("ROUTES=" + json.dumps(out))
"""


def live_routes(tmp_path: Path, base_url: str) -> dict[str, Any]:
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "run"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "KERNELYARD_AUTH_TOKEN": "unit-test-tok",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", DUMP, base_url], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    line = [x for x in proc.stdout.splitlines() if x.startswith("ROUTES=")]
    assert line, proc.stdout + proc.stderr
    return dict(json.loads(line[0][len("ROUTES="):]))


def documented() -> dict[str, set[str]]:
    """OpenAPI path -> its methods, upper case."""
    paths = yaml.safe_load(SPEC.read_text())["paths"]
    return {path: {m.upper() for m in ops if m in HTTP_METHODS} for path, ops in paths.items()}


def sample(path: str, base_url: str) -> str:
    concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], path)
    return base_url.rstrip("/") + concrete


@pytest.mark.parametrize("base_url", ["/", "/gw/"])
def test_live_router_is_the_documented_route_table(tmp_path: Path, base_url: str) -> None:
    routes = live_routes(tmp_path, base_url)
    assert routes["default"] == [["AnyMatches", True]], "a rule outside the route table"
    assert routes["settings"] == [], "static files, XSRF cookies or a login page are set up"
    *served, last = routes["rules"]
    assert (last["pattern"], last["handler"]) == (".*$", "NotFoundHandler")
    docs = documented()
    routed: dict[str, set[str]] = {}
    for rule in served:
        matching = [p for p in docs if re.fullmatch(rule["pattern"], sample(p, base_url))]
        assert matching, f"{rule['pattern']} ({rule['handler']}) is not documented"
        methods = set(rule["methods"]) - {"OPTIONS"}  # the CORS preflight of every API route
        for path in matching:
            assert methods == docs[path], (path, rule["handler"], methods, docs[path])
            routed[path] = methods
    assert set(routed) == set(docs), f"documented but not routed: {set(docs) - set(routed)}"


@pytest.mark.parametrize(("name", "path"), [
    ("python3", "\x00"), ("python3", "logo\x00.png"), ("python3", "../kernel.json"),
    ("python3", "a/../../x"), ("python3", "/etc/passwd"), ("python3", "a\\..\\x"),
    ("python3", ""), ("python3", "a//b"), ("python3", "./x"), ("python3", "x\u2028"),
    ("python3", "x" * 1025), ("\x00", "logo.png"), ("..", "kernel.json"), ("py thon", "x"),
])
def test_bad_resource_paths_are_refused(name: str, path: str) -> None:
    from kernelyard.api.handlers import check_resource_path
    from kernelyard.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="kernelspec") as err:
        check_resource_path(name, path)
    assert "%s" not in err.value.message


@pytest.mark.parametrize("path", ["logo-64x64.png", "kernel.js", "sub/dir/file.txt", "a.b"])
def test_good_resource_paths_pass(path: str) -> None:
    from kernelyard.api.handlers import check_resource_path

    check_resource_path("python3", path)

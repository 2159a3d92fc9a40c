"""Settings that change what the gateway does: limits, listing, security, TLS, base_url."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.gateway import free_port, start_gateway


def test_list_kernels_can_be_disabled(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, "--KernelyardApp.list_kernels=False")
    try:
        status, body, _ = gw.request("GET", "/api/kernels")
        assert status == 403 and "list_kernels" in body["message"]
    finally:
        gw.stop()


def test_max_kernels_counts_starts_in_flight(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, "--max-kernels", "1")
    try:
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: gw.request("POST", "/api/kernels", {}), range(3)))
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [201, 403, 403], [r[:2] for r in results]
        refused = next(body for status, body, _ in results if status == 403)
        assert "limit" in refused["message"] and "1" in refused["message"]
        _, listed, _ = gw.request("GET", "/api/kernels")
        assert len(listed) == 1
    finally:
        gw.stop()


def test_no_token_on_loopback_serves_with_a_warning(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, token=None)
    try:
        assert gw.request("GET", "/api/kernelspecs", token="")[0] == 200
        assert "WITHOUT authentication" in gw.log()
    finally:
        gw.stop()


def _serve(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kernelyard.cli.main", "serve", "--port", str(free_port()), *args],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**(env or {}), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )


def test_refuses_to_serve_unauthenticated_on_a_reachable_address(tmp_path: Path) -> None:
    result = _serve(tmp_path, "--ip", "0.0.0.0")
    assert result.returncode == 1
    assert "Refusing to serve without authentication" in result.stderr
    assert "KernelyardApp.allow_unauthenticated" in result.stderr


def test_unauthenticated_remote_can_be_waived(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, "--ip", "0.0.0.0", "--allow-unauthenticated", token=None)
    try:
        assert "because KernelyardApp.allow_unauthenticated is set" in gw.log()
    finally:
        gw.stop()


def test_base_url(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, "--base-url", "/gw/")
    try:
        assert gw.url.endswith("/gw/")
        status, body, _ = gw.request("GET", "/api")
        assert status == 200 and "gateway_version" in body
        kid = gw.start_kernel()
        ks = gw.connect(kid)
        try:
            assert ks.execute("print(1)")["stdout"] == "1\n"
        finally:
            ks.close()
    finally:
        gw.stop()


def test_cors_allow_origin(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, "--KernelyardApp.allow_origin=https://lab.example.org")
    try:
        req = urllib.request.Request(
            gw.url + "api/kernelspecs",
            headers={**gw.headers(), "Origin": "https://lab.example.org"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "https://lab.example.org"
    finally:
        gw.stop()


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    gw = start_gateway(tmp_path, "--certfile", str(cert), "--keyfile", str(key))
    try:
        assert gw.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        req = urllib.request.Request(gw.url + "api", headers=gw.headers())
        with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
            assert "gateway_version" in json.loads(resp.read())
    finally:
        gw.stop()


@pytest.mark.parametrize("args", [["--version"], ["serve", "--version"]])
def test_version_flag(args: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "kernelyard.cli.main", *args],
                         capture_output=True, text=True, timeout=60)
    from kernelyard import __version__

    assert out.returncode == 0 and __version__ in out.stdout


def test_help_all_lists_settings() -> None:
    out = subprocess.run([sys.executable, "-m", "kernelyard.cli.main", "--help-all"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for setting in ["--KernelyardApp.auth_token", "--KernelyardApp.client_envs",
                    "--GatewayMappingKernelManager.max_kernels",
                    "--GatewayKernelManager.start_timeout",
                    "--GatewayMappingKernelManager.cull_idle_timeout"]:
        assert setting in out.stdout, setting


def test_generate_config(tmp_path: Path) -> None:
    target = tmp_path / "kernelyard_config.py"
    cmd = [sys.executable, "-m", "kernelyard.cli.main", "generate-config", "--output", str(target)]
    assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    text = target.read_text()
    assert "# c.KernelyardApp.auth_token" in text and "# c.KernelyardApp.list_kernels" in text
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "--force" in again.stderr
    # The generated file is valid config that the gateway loads.
    target.write_text(text + "\nc.KernelyardApp.list_kernels = False\n")
    gw = start_gateway(tmp_path, "--config", str(target))
    try:
        assert gw.request("GET", "/api/kernels")[0] == 403
    finally:
        gw.stop()


def test_unknown_command() -> None:
    out = subprocess.run([sys.executable, "-m", "kernelyard.cli.main", "bogus"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown command" in out.stderr


def test_idle_kernels_are_culled(tmp_path: Path) -> None:
    import time

    gw = start_gateway(
        tmp_path,
        "--GatewayMappingKernelManager.cull_idle_timeout=2",
        "--GatewayMappingKernelManager.cull_interval=1",
    )
    try:
        kid = gw.start_kernel()
        deadline = time.monotonic() + 30
        while gw.request("GET", f"/api/kernels/{kid}")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert gw.request("GET", f"/api/kernels/{kid}")[0] == 404
        assert "Culling" in gw.log()
    finally:
        gw.stop()

"""The trusted-proxy-header and client-certificate authenticators, on a real gateway.

jupyter_server's request log names who made each request ("(alice@127.0.0.1)"),
which shows the identity each authenticator established.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway import Gateway, start_gateway

SECRET = "proxy-secret-" + "x" * 24


def _get(gw: Gateway, path: str, headers: dict[str, str] | None = None,
         context: ssl.SSLContext | None = None) -> int:
    req = urllib.request.Request(gw.url.rstrip("/") + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("proxy"),
                       "--KernelyardApp.authenticators=['proxy-header']", "--log-level=DEBUG",
                       "--ProxyHeaderAuthenticator.groups_header=X-Kernelyard-Groups",
                       token=None, env={"KERNELYARD_PROXY_SECRET": SECRET})
    yield gw
    gw.stop()


def test_the_proxy_with_its_secret_names_the_user(proxied: Gateway) -> None:
    headers = {"X-Kernelyard-User": "alice", "X-Kernelyard-Proxy-Secret": SECRET,
               "X-Kernelyard-Groups": "analysts"}
    assert _get(proxied, "/api/kernels", headers) == 200
    assert proxied.log_shows("(alice@127.0.0.1)")


@pytest.mark.parametrize("headers", [
    {"X-Kernelyard-User": "mallory"},
    {"X-Kernelyard-User": "mallory", "X-Kernelyard-Proxy-Secret": SECRET[:-1]},
    {"X-Kernelyard-User": "../root", "X-Kernelyard-Proxy-Secret": SECRET},
    {"X-Kernelyard-Proxy-Secret": SECRET},
    {},
])
def test_without_the_secret_or_a_valid_user_it_is_401(proxied: Gateway,
                                                     headers: dict[str, str]) -> None:
    assert _get(proxied, "/api/kernels", headers) == 401
    assert "mallory@" not in proxied.log() and SECRET not in proxied.log()


def _get_from(gw: Gateway, source: str, headers: dict[str, str]) -> int:
    """GET /api/kernels over a socket bound to ``source`` (any 127.0.0.0/8 address)."""
    parsed = urllib.parse.urlsplit(gw.url)
    conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=30,
                                      source_address=(source, 0))
    try:
        conn.request("GET", "/api/kernels", headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def _proxy_gateway(tmp_path: Path, *args: str, secret: str | None = SECRET) -> Gateway:
    return start_gateway(tmp_path, "--KernelyardApp.authenticators=['proxy-header']",
                         "--log-level=DEBUG", *args, token=None,
                         env={"KERNELYARD_PROXY_SECRET": secret or ""})


def test_trusted_proxies_are_checked_by_address(tmp_path: Path) -> None:
    gw = _proxy_gateway(tmp_path, "--ProxyHeaderAuthenticator.trusted_proxies=10.1.2.3",
                        secret=None)
    try:
        assert _get(gw, "/api/kernels", {"X-Kernelyard-User": "alice"}) == 401
    finally:
        gw.stop()
    gw = _proxy_gateway(tmp_path, "--ProxyHeaderAuthenticator.trusted_proxies=127.0.0.1/32")
    try:
        assert _get(gw, "/api/kernels", {"X-Kernelyard-User": "bob",
                                         "X-Kernelyard-Proxy-Secret": SECRET}) == 200
        assert gw.log_shows("(bob@127.0.0.1)")
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def behind_xheaders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """trust_xheaders on, the proxy on 127.0.0.2 (with the secret, which the attacker
    below also has: the address must still decide)."""
    gw = _proxy_gateway(tmp_path_factory.mktemp("xheaders"), "--KernelyardApp.trust_xheaders=True",
                        "--ProxyHeaderAuthenticator.trusted_proxies=127.0.0.2")
    yield gw
    gw.stop()


@pytest.mark.parametrize("forged", [
    {"X-Forwarded-For": "127.0.0.2"},
    {"X-Real-Ip": "127.0.0.2"},
    {"X-Forwarded-For": "10.9.9.9, 127.0.0.2", "X-Real-Ip": "127.0.0.2"},
])
def test_forwarded_for_headers_do_not_make_a_client_the_proxy(behind_xheaders: Gateway,
                                                            forged: dict[str, str]) -> None:
    headers = {"X-Kernelyard-User": "alice", "X-Kernelyard-Proxy-Secret": SECRET, **forged}
    assert _get_from(behind_xheaders, "127.0.0.1", headers) == 401
    assert "(alice@" not in behind_xheaders.log()


def test_the_proxy_is_recognised_by_its_socket_address(behind_xheaders: Gateway) -> None:
    headers = {"X-Kernelyard-User": "bob", "X-Kernelyard-Proxy-Secret": SECRET}
    assert _get_from(behind_xheaders, "127.0.0.2", headers) == 200
    # The proxy's own X-Forwarded-For is only a log label: it decides nothing.
    headers["X-Forwarded-For"] = "10.9.9.9"
    assert _get_from(behind_xheaders, "127.0.0.2", headers) == 200
    assert behind_xheaders.log_shows("(bob@10.9.9.9)")
    del headers["X-Kernelyard-Proxy-Secret"]
    assert _get_from(behind_xheaders, "127.0.0.2", headers) == 401


@pytest.mark.parametrize(("args", "secret", "names"), [
    (["--ProxyHeaderAuthenticator.trusted_proxies=0.0.0.0/0"], SECRET, "0.0.0.0/0"),
    (["--ProxyHeaderAuthenticator.trusted_proxies=::/0"], SECRET, "::/0"),
    (["--ProxyHeaderAuthenticator.trusted_proxies=10.0.0.0/8"], None, "10.0.0.0/8"),
    (["--ProxyHeaderAuthenticator.trusted_proxies=127.0.0.1"], None, "secret"),
    (["--ProxyHeaderAuthenticator.trusted_proxies=127.0.0.0/28",
      "--KernelyardApp.trust_xheaders=True"], None, "secret"),
    (["--ProxyHeaderAuthenticator.trusted_proxies=::ffff:10.1.2.3"], None, "IPv4"),
    ([], None, "ProxyHeaderAuthenticator.secret"),
], ids=["everyone-v4", "everyone-v6", "a-/8", "loopback-no-secret", "loopback-net-xheaders",
        "v4-mapped", "nothing"])
def test_a_spoofable_proxy_configuration_stops_the_gateway(tmp_path: Path, args: list[str],
                                                          secret: str | None,
                                                          names: str) -> None:
    with pytest.raises(RuntimeError, match="gateway did not start") as failed:
        _proxy_gateway(tmp_path, *args, secret=secret).stop()
    assert "ProxyHeaderAuthenticator" in str(failed.value) and names in str(failed.value)
    assert "Traceback" not in str(failed.value)


# ---- mutual TLS -------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert))
    return cert, key


def _signed(folder: Path, name: str, subject: str, ca: tuple[Path, Path],
            ext: str = "") -> tuple[Path, Path]:
    cert, key, csr = folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr"
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
             "-keyout", str(key), "-out", str(csr))
    args = ["x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-CAcreateserial", "-days", "1", "-out", str(cert)]
    if ext:
        ext_file = folder / f"{name}.ext"
        ext_file.write_text(ext)
        args += ["-extfile", str(ext_file)]
    _openssl(*args)
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("pki")
    ca, rogue = _ca(folder, "ky-test-ca"), _ca(folder, "rogue-ca")
    return {
        "ca": ca,
        "server": _signed(folder, "server", "/CN=127.0.0.1", ca,
                          "subjectAltName=IP:127.0.0.1\n"),
        "alice": _signed(folder, "alice", "/CN=alice/OU=analysts", ca),
        "spaces": _signed(folder, "spaces", "/CN=Alice Smith", ca),
        "mallory": _signed(folder, "mallory", "/CN=mallory", rogue),
    }


def _client(pki: dict[str, tuple[Path, Path]], who: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["ca"][0]))
    if who:
        ctx.load_cert_chain(str(pki[who][0]), str(pki[who][1]))
    return ctx


def test_client_certificate_names_the_user(tmp_path: Path,
                                           pki: dict[str, tuple[Path, Path]]) -> None:
    gw = start_gateway(tmp_path, "--KernelyardApp.authenticators=['mtls']", "--log-level=DEBUG",
                       "--certfile", str(pki["server"][0]), "--keyfile", str(pki["server"][1]),
                       "--client-ca", str(pki["ca"][0]), token=None)
    try:
        assert gw.url.startswith("https://")
        assert _get(gw, "/api/kernels", context=_client(pki, "alice")) == 200
        assert gw.log_shows("(alice@127.0.0.1)")
        assert _get(gw, "/api/kernels", context=_client(pki, "spaces")) == 401
        for who in ("mallory", None):  # a foreign CA, or no certificate: no TLS session
            with pytest.raises(OSError):  # a TLS alert (URLError or SSLError)
                _get(gw, "/api", context=_client(pki, who))
        status = _get(gw, "/api", context=_client(pki, "alice"))
        assert status == 200, json.dumps(status)
    finally:
        gw.stop()

"""Kerberos sign-in to a real gateway: kinit, then SPNEGO over HTTP (ci/kdc's KDC).

The keytab holds HTTP/127.0.0.1 and HTTP/localhost, and the KDC's krb5.conf turns
DNS canonicalisation off, so a client asks for a ticket to the host in the URL:
the gateway's URL uses 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket

from tests import realparts
from tests.gateway import Gateway, start_gateway


@pytest.fixture(scope="module")
def kdc() -> dict[str, str]:
    return realparts.env("kdc")


@pytest.fixture(scope="module")
def gw(kdc: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("krb-gw"),
                            "--KernelyardApp.authenticators=['kerberos']", "--log-level=DEBUG",
                            f"--KerberosAuthenticator.keytab={kdc['KY_KDC_KEYTAB']}",
                            token=None, env={"KRB5_CONFIG": kdc["KRB5_CONFIG"]})
    yield gateway
    gateway.stop()


def _kinit(kdc: dict[str, str], user: str, ccache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRB5_CONFIG", kdc["KRB5_CONFIG"])
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{ccache}")
    password = Path(kdc[f"KY_KDC_{user.upper()}_PASSWORD_FILE"]).read_bytes().strip()
    proc = subprocess.run(["kinit", user], input=password + b"\n", capture_output=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, f"kinit {user} failed: {proc.stderr.decode()}"


def _get(gw: Gateway, authorization: str | None) -> int:
    headers = {"Authorization": authorization} if authorization else {}
    req = urllib.request.Request(gw.url + "api/kernels", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_a_kerberos_ticket_signs_the_user_in(gw: Gateway, kdc: dict[str, str], user: str,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from kernelyard.auth.spnego import negotiate_header

    _kinit(kdc, user, tmp_path / "ccache", monkeypatch)
    assert _get(gw, negotiate_header("127.0.0.1")) == 200
    assert gw.log_shows(f"({user}@127.0.0.1)")


def test_no_or_a_forged_ticket_is_401(gw: Gateway) -> None:
    assert _get(gw, None) == 401
    assert _get(gw, "Negotiate YIIBhwYGKwYBBQUCoIIBezCCAXegDTAL") == 401
    assert _get(gw, "Negotiate not-base64!") == 401


def test_a_replayed_header_is_401(gw: Gateway, kdc: dict[str, str], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from kernelyard.auth.spnego import negotiate_header

    _kinit(kdc, "alice", tmp_path / "ccache", monkeypatch)
    header = negotiate_header("127.0.0.1")
    assert _get(gw, header) == 200
    assert _get(gw, header) == 401


def test_an_unknown_principal_gets_no_ticket(kdc: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run(["kinit", "mallory"], input=b"guess\n", capture_output=True,
                          env={"KRB5_CONFIG": kdc["KRB5_CONFIG"],
                               "KRB5CCNAME": f"FILE:{tmp_path / 'cc'}", "PATH": "/usr/bin:/bin"},
                          timeout=30, check=False)
    assert proc.returncode != 0 and b"not found" in proc.stderr


# ---- real clients: RFC 4559's 401 challenge and the mutual-authentication token ----


def _challenges(headers: object) -> list[str]:
    """Every WWW-Authenticate value of a response (http.client / urllib headers)."""
    return list(headers.get_all("WWW-Authenticate") or [])  # type: ignore[attr-defined]


def test_a_401_offers_negotiate(gw: Gateway) -> None:
    req = urllib.request.Request(gw.url + "api/kernels")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30)
    assert refused.value.code == 401
    assert _challenges(refused.value.headers) == ["Negotiate"]
    # A refused ticket and a refused websocket handshake offer it too.
    req = urllib.request.Request(gw.url + "api/kernels",
                                 headers={"Authorization": "Negotiate not-base64!"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30)
    assert refused.value.code == 401 and _challenges(refused.value.headers) == ["Negotiate"]
    with pytest.raises(websocket.WebSocketBadStatusException) as handshake:
        websocket.create_connection(
            f"{gw.ws_url}api/kernels/{uuid.uuid4()}/channels", timeout=30)
    assert handshake.value.status_code == 401
    assert "Negotiate" in (handshake.value.resp_headers or {}).get("www-authenticate", "")


def _client_env(kdc: dict[str, str], ccache: Path) -> dict[str, str]:
    return {**os.environ, "KRB5_CONFIG": kdc["KRB5_CONFIG"], "KRB5CCNAME": f"FILE:{ccache}"}


def _curl(gw: Gateway, kdc: dict[str, str], ccache: Path, headers: Path,
          *how: str) -> str:
    """GET /api/kernels with curl, the response headers of every round trip in ``headers``;
    the body."""
    proc = subprocess.run(
        ["curl", *how, "-u", ":", "-sS", "--fail", "-D", str(headers), gw.url + "api/kernels"],
        capture_output=True, timeout=60, env=_client_env(kdc, ccache), check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


@pytest.mark.parametrize("how", [["--negotiate"], ["--anyauth"]],
                         ids=["negotiate", "anyauth-like-a-browser"])
def test_curl_signs_in_and_lists_kernels(gw: Gateway, kdc: dict[str, str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         how: list[str]) -> None:
    """``--negotiate`` sends a ticket at once (the README's command); ``--anyauth``
    first asks without one and picks Negotiate from the 401's challenge, as a browser
    does. Either way the accepted answer carries the server's mutual-auth token."""
    ccache, headers = tmp_path / "ccache", tmp_path / "headers"
    _kinit(kdc, "alice", ccache, monkeypatch)
    before = gw.log().count("(alice@127.0.0.1)")
    assert json.loads(_curl(gw, kdc, ccache, headers, *how)) == []
    assert gw.log_shows("(alice@127.0.0.1)", count=before + 1)
    responses = headers.read_text().lower().split("http/1.1 ")[1:]
    assert responses[-1].startswith("200")
    assert "www-authenticate: negotiate " in responses[-1]
    if how == ["--anyauth"]:
        assert responses[0].startswith("401")
        assert "www-authenticate: negotiate\n" in responses[0]


def test_requests_gssapi_with_mutual_auth_required_signs_in(gw: Gateway,
                                                            kdc: dict[str, str],
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            ) -> None:
    import requests
    from requests_gssapi import REQUIRED, HTTPSPNEGOAuth

    _kinit(kdc, "bob", tmp_path / "ccache", monkeypatch)
    auth = HTTPSPNEGOAuth(mutual_authentication=REQUIRED)
    resp = requests.get(gw.url + "api/kernels", auth=auth, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json() == []
    assert resp.headers["WWW-Authenticate"].startswith("Negotiate ")
    assert gw.log_shows("(bob@127.0.0.1)")
    # An error after a successful sign-in still carries the server's token, so the
    # client gets the JSON error, not a response it has to sanitize.
    resp = requests.get(f"{gw.url}api/kernels/{uuid.uuid4()}",
                        auth=HTTPSPNEGOAuth(mutual_authentication=REQUIRED), timeout=60)
    assert resp.status_code == 404
    assert resp.headers["WWW-Authenticate"].startswith("Negotiate ")
    assert resp.json()["reason"] == "Not Found"


def test_the_websocket_handshake_carries_the_mutual_auth_token(gw: Gateway,
                                                               kdc: dict[str, str],
                                                               tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               ) -> None:
    import requests
    from requests_gssapi import REQUIRED, HTTPSPNEGOAuth

    from kernelyard.auth.spnego import negotiate_header

    _kinit(kdc, "alice", tmp_path / "ccache", monkeypatch)
    auth = HTTPSPNEGOAuth(mutual_authentication=REQUIRED)
    resp = requests.post(gw.url + "api/kernels", json={"name": "python3"}, auth=auth,
                         timeout=120)
    assert resp.status_code == 201, resp.text
    kernel_id = resp.json()["id"]
    try:
        ws = websocket.create_connection(
            f"{gw.ws_url}api/kernels/{kernel_id}/channels",
            header=[f"Authorization: {negotiate_header('127.0.0.1')}"], timeout=60)
        try:
            assert ws.getstatus() == 101
            assert (ws.getheaders() or {}).get("www-authenticate", "").startswith("Negotiate ")
        finally:
            ws.close()
    finally:
        requests.delete(f"{gw.url}api/kernels/{kernel_id}", timeout=60,
                        auth=HTTPSPNEGOAuth(mutual_authentication=REQUIRED))


def test_a_401_offers_every_enabled_scheme_in_chain_order(kdc: dict[str, str],
                                                           tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, "--KernelyardApp.authenticators=['kerberos', 'token']",
                            f"--KerberosAuthenticator.keytab={kdc['KY_KDC_KEYTAB']}",
                            env={"KRB5_CONFIG": kdc["KRB5_CONFIG"]})
    try:
        status, _, _ = gateway.request("GET", "/api/kernels", token="")
        assert status == 401
        req = urllib.request.Request(gateway.url + "api/kernels")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=30)
        assert _challenges(refused.value.headers) == ["Negotiate", "Bearer"]
        # An accepted token answers without any challenge.
        status, _, headers = gateway.request("GET", "/api/kernels")
        assert status == 200 and "WWW-Authenticate" not in headers
    finally:
        gateway.stop()

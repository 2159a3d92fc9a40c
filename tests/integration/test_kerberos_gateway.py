"""Kerberos sign-in to a real gateway: kinit, then SPNEGO over HTTP (ci/kdc's KDC)."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway import Gateway, start_gateway
from tests.realparts import state_env

STATE = Path("/tmp/kernelyard-kdc")


@pytest.fixture(scope="module")
def kdc() -> dict[str, str]:
    return state_env(STATE / "env", "bash ci/kdc/install.sh && bash ci/kdc/start.sh")


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

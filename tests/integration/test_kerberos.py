"""SPNEGO against the real KDC of ci/kdc: tickets from kinit, a keytab from kadmin.

Needs `bash ci/kdc/install.sh && bash ci/kdc/start.sh`, which write $KY_KDC_STATE/env.
Every test gets its own credential cache (KRB5CCNAME in a tmp dir); the module points
KRB5_CONFIG at the KDC's private krb5.conf. No password, ticket or token is printed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from kernelyard.auth.kerberos import KerberosAuthenticator, www_authenticate
from kernelyard.auth.spnego import accept_negotiate, negotiate_header, principal_to_user
from kernelyard.errors import ConfigError, Unauthorized
from kernelyard.identity import Principal
from tests import realparts


class Hidden(str):
    """A token that pytest's failure reports (which show fixtures and locals) don't print."""

    def __repr__(self) -> str:
        return "<hidden token>"


class HiddenBytes(bytes):
    """A password that failure reports don't print."""

    def __repr__(self) -> str:
        return "<hidden password>"


@pytest.fixture(scope="module")
def kdc() -> Iterator[dict[str, str]]:
    """The KDC's env file, with KRB5_CONFIG set for this module."""
    env = realparts.env("kdc")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KRB5_CONFIG", env["KRB5_CONFIG"])
        yield env


@pytest.fixture
def ccache(kdc: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private, empty credential cache that is this process's default."""
    path = f"FILE:{tmp_path / 'ccache'}"
    monkeypatch.setenv("KRB5CCNAME", path)
    return path


def kinit(kdc: dict[str, str], user: str, password: bytes, *extra: str) -> None:
    """kinit into the current KRB5CCNAME; the password goes through stdin only."""
    proc = _kinit(kdc, user, password, *extra)
    assert proc.returncode == 0, f"kinit {user} failed: {proc.stderr.decode()}"


def _kinit(kdc: dict[str, str], user: str, password: bytes,
           *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["kinit", *extra, user], input=password + b"\n",
                          capture_output=True, timeout=30, env=os.environ.copy())


def password(kdc: dict[str, str], user: str) -> bytes:
    return HiddenBytes(Path(kdc[f"KY_KDC_{user.upper()}_PASSWORD_FILE"]).read_bytes().strip())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- the round trip ---------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_alice_round_trip(kdc: dict[str, str], ccache: str, host: str) -> None:
    kinit(kdc, "alice", password(kdc, "alice"))
    header = Hidden(negotiate_header(host))
    assert header.startswith("Negotiate ")
    principal, out = accept_negotiate(header, kdc["KY_KDC_KEYTAB"])
    assert principal == f"alice@{kdc['KY_KDC_REALM']}"
    assert out is not None  # the mutual authentication token
    assert base64.b64decode(out, validate=True)
    assert principal_to_user(principal, {kdc["KY_KDC_REALM"]}) == "alice"


def test_bob_is_bob(kdc: dict[str, str], ccache: str) -> None:
    kinit(kdc, "bob", password(kdc, "bob"))
    principal, _ = accept_negotiate(negotiate_header("localhost"), kdc["KY_KDC_KEYTAB"])
    assert principal == f"bob@{kdc['KY_KDC_REALM']}"
    assert principal_to_user(principal, {kdc["KY_KDC_REALM"]}) == "bob"


# ---- who gets no ticket -------------------------------------------------------------


def test_unknown_principal_gets_no_ticket(kdc: dict[str, str], ccache: str) -> None:
    proc = _kinit(kdc, "mallory", b"whatever")
    assert proc.returncode != 0
    assert b"not found in Kerberos database" in proc.stderr


def test_wrong_password_gets_no_ticket(kdc: dict[str, str], ccache: str) -> None:
    proc = _kinit(kdc, "alice", password(kdc, "bob"))
    assert proc.returncode != 0
    assert b"incorrect" in proc.stderr.lower()


def test_no_ticket_is_a_config_error(kdc: dict[str, str], ccache: str) -> None:
    with pytest.raises(ConfigError, match="no valid Kerberos ticket"):
        negotiate_header("localhost")


def test_unknown_service_host_is_a_config_error(kdc: dict[str, str], ccache: str) -> None:
    kinit(kdc, "alice", password(kdc, "alice"))
    with pytest.raises(ConfigError, match=r"HTTP/nohost.*not found"):
        negotiate_header("nohost")


# ---- tokens the acceptor refuses ----------------------------------------------------


@pytest.fixture
def alice_header(kdc: dict[str, str], ccache: str) -> str:
    kinit(kdc, "alice", password(kdc, "alice"))
    return Hidden(negotiate_header("localhost"))


@pytest.mark.parametrize("mangle", [
    lambda h: "Negotiate " + _b64(b"garbage"),
    lambda h: h[: len(h) // 2].rstrip("=") + "==",  # truncated, still valid base64
    lambda h: h[:-8] + "AAAAAAA=",  # the end of the ticket overwritten
    lambda h: "Negotiate not*base64",
    lambda h: "Negotiate",
    lambda h: "Negotiate " + _b64(b""),
    lambda h: "Basic " + h.split()[1],
], ids=["garbage", "truncated", "corrupted", "not-base64", "no-token", "empty", "basic"])
def test_bad_tokens_are_refused(kdc: dict[str, str], alice_header: str, mangle) -> None:
    bad = Hidden(mangle(alice_header))
    with pytest.raises(Unauthorized) as info:
        accept_negotiate(bad, kdc["KY_KDC_KEYTAB"])
    assert alice_header.split()[1][:16] not in info.value.message


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag, len(body)]) + body


def test_offer_without_a_ticket_is_refused(kdc: dict[str, str]) -> None:
    # A SPNEGO NegTokenInit that lists Kerberos but carries no ticket: GSSAPI wants a
    # second round trip, which HTTP Negotiate with Kerberos never needs.
    krb5_oid = bytes.fromhex("06092a864886f712010202")
    offer = _der(0x60, bytes.fromhex("06062b0601050502")
                 + _der(0xA0, _der(0x30, _der(0xA0, _der(0x30, krb5_oid)))))
    with pytest.raises(Unauthorized, match="did not complete"):
        accept_negotiate("Negotiate " + _b64(offer), kdc["KY_KDC_KEYTAB"])


def test_replayed_token_is_refused(kdc: dict[str, str], alice_header: str) -> None:
    accept_negotiate(alice_header, kdc["KY_KDC_KEYTAB"])
    with pytest.raises(Unauthorized) as info:
        accept_negotiate(alice_header, kdc["KY_KDC_KEYTAB"])
    assert "replay" in str(info.value.__cause__)


def test_expired_ticket_is_refused(kdc: dict[str, str], ccache: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    kinit(kdc, "alice", password(kdc, "alice"), "-l", "2s")
    header = Hidden(negotiate_header("localhost"))
    # The acceptor allows 5 minutes of clock skew by default: make it 1 s.
    conf = Path(kdc["KRB5_CONFIG"]).read_text().replace(
        "[libdefaults]", "[libdefaults]\n  clockskew = 1", 1)
    (tmp_path / "krb5.conf").write_text(conf)
    monkeypatch.setenv("KRB5_CONFIG", str(tmp_path / "krb5.conf"))
    time.sleep(4)
    with pytest.raises(Unauthorized) as info:
        accept_negotiate(header, kdc["KY_KDC_KEYTAB"])
    assert "expired" in str(info.value.__cause__)


def _two_service_keytab(kdc: dict[str, str], path: Path) -> str:
    """A keytab with host/localhost's key as well as HTTP/localhost's (keys unchanged)."""
    kadmin = shutil.which("kadmin.local") or "/usr/sbin/kadmin.local"
    for principal in ("HTTP/localhost", "host/localhost"):
        proc = subprocess.run(
            [kadmin, "-r", kdc["KY_KDC_REALM"], "-q", f"ktadd -norandkey -k {path} {principal}"],
            capture_output=True, timeout=30,
            env={**os.environ, "KRB5_KDC_PROFILE": kdc["KRB5_KDC_PROFILE"]})
        assert proc.returncode == 0 and path.is_file(), proc.stderr.decode()
    return str(path)


def test_ticket_for_another_service_is_refused(kdc: dict[str, str], ccache: str,
                                               tmp_path: Path) -> None:
    kinit(kdc, "alice", password(kdc, "alice"))
    header = Hidden(negotiate_header("localhost", service="host"))
    # The gateway's keytab has no key for host/localhost: GSSAPI refuses it.
    with pytest.raises(Unauthorized) as info:
        accept_negotiate(header, kdc["KY_KDC_KEYTAB"])
    assert "host/localhost" in str(info.value.__cause__)
    # A keytab that can decrypt it: the service check refuses it.
    both = _two_service_keytab(kdc, tmp_path / "both.keytab")
    with pytest.raises(Unauthorized, match="not for the HTTP service"):
        accept_negotiate(header, both)
    # ...and it was only the service check: asked for "host", the same keytab accepts.
    principal, _ = accept_negotiate(negotiate_header("localhost", service="host"), both, "host")
    assert principal == f"alice@{kdc['KY_KDC_REALM']}"


def test_missing_keytab_is_a_config_error(kdc: dict[str, str], alice_header: str,
                                          tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keytab"):
        accept_negotiate(alice_header, str(tmp_path / "none.keytab"))


def test_missing_gssapi_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gssapi", None)  # makes `import gssapi` fail
    with pytest.raises(ConfigError, match=r"kernelyard\[kerberos\]"):
        negotiate_header("localhost")


# ---- principal_to_user --------------------------------------------------------------


@pytest.mark.parametrize(("principal", "user"), [
    ("alice@R.TEST", "alice"),
    ("bob.smith@R.TEST", "bob.smith"),
    ("svc_1@OTHER.TEST", "svc_1"),
])
def test_principal_to_user(principal: str, user: str) -> None:
    assert principal_to_user(principal, {"R.TEST", "OTHER.TEST"}) == user


@pytest.mark.parametrize(("principal", "why"), [
    ("alice@EVIL.TEST", "realm 'EVIL.TEST'"),
    ("alice@r.test", "realm 'r.test'"),  # realms are case-sensitive
    ("alice", "no realm"),
    ("alice@", "no realm"),
    ("HTTP/localhost@R.TEST", "service principals"),
    ("alice/admin@R.TEST", "service principals"),
    ("@R.TEST", "not a valid user name"),
    ("al\\@ice@R.TEST", "not a valid user name"),
    ("-alice@R.TEST", "not a valid user name"),
    (".alice@R.TEST", "not a valid user name"),
    ("al ice@R.TEST", "not a valid user name"),
])
def test_principal_to_user_refuses(principal: str, why: str) -> None:
    with pytest.raises(Unauthorized, match=why):
        principal_to_user(principal, {"R.TEST"})


def test_instance_principals_only_when_allowed() -> None:
    assert principal_to_user("HTTP/hub@R.TEST", {"R.TEST"}, allow_instance=True) == "HTTP/hub"
    with pytest.raises(Unauthorized, match="not a valid user name"):
        principal_to_user("a/b/c@R.TEST", {"R.TEST"}, allow_instance=True)


# ---- KerberosAuthenticator ----------------------------------------------------------


def _request(authorization: str | None) -> HTTPServerRequest:
    headers = HTTPHeaders({"Host": "localhost"})
    if authorization:
        headers["Authorization"] = authorization
    start = RequestStartLine("GET", "/api/kernels", "HTTP/1.1")
    return HTTPServerRequest(start_line=start, headers=headers)


def _authenticate(auth: KerberosAuthenticator, request: HTTPServerRequest) -> Principal | None:
    return asyncio.run(auth.authenticate(request))


@pytest.mark.parametrize("authorization", [None, "token abc", "Bearer abc", "Basic YTpi"])
def test_authenticator_ignores_other_schemes(kdc: dict[str, str],
                                             authorization: str | None) -> None:
    auth = KerberosAuthenticator(keytab=kdc["KY_KDC_KEYTAB"])
    assert _authenticate(auth, _request(authorization)) is None


def test_authenticator_accepts_alice(kdc: dict[str, str], alice_header: str) -> None:
    auth = KerberosAuthenticator(keytab=kdc["KY_KDC_KEYTAB"])  # realms: the default realm
    request = _request(alice_header)
    assert _authenticate(auth, request) == Principal(name="alice", via="kerberos")
    answer = Hidden(www_authenticate(request) or "")
    assert answer.startswith("Negotiate ")
    assert www_authenticate(_request(alice_header)) is None  # per request


def test_authenticator_refuses_bad_token(kdc: dict[str, str], alice_header: str) -> None:
    auth = KerberosAuthenticator(keytab=kdc["KY_KDC_KEYTAB"])
    with pytest.raises(Unauthorized):
        _authenticate(auth, _request("Negotiate " + _b64(b"garbage")))


def test_authenticator_refuses_other_realms(kdc: dict[str, str], alice_header: str) -> None:
    auth = KerberosAuthenticator(keytab=kdc["KY_KDC_KEYTAB"], realms=["OTHER.TEST"])
    with pytest.raises(Unauthorized, match="realm"):
        _authenticate(auth, _request(alice_header))

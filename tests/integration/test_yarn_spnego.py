"""kernelyard's SPNEGO client against a real Kerberized YARN ResourceManager.

The RM of ci/yarn/start-kerberized-rm.sh (Hadoop's own AuthenticationFilter, type
kerberos, principal HTTP/127.0.0.1) and the KDC of ci/kdc: tickets come from kinit,
the header from the function YarnProvisioner uses with ``rm_auth = "kerberos"``.
Every test gets its own credential cache (KRB5CCNAME in a tmp dir). No password,
ticket or token is printed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernelyard.errors import BackendUnavailable, ConfigError
from kernelyard.provisioners import yarn, yarn_backend
from kernelyard.provisioners.yarn_rm import ResourceManager
from tests import realparts


class Hidden(str):
    """A header that pytest's failure reports (fixtures, locals) don't print."""

    def __repr__(self) -> str:
        return "<hidden token>"


@pytest.fixture(scope="module")
def krb_rm() -> Iterator[dict[str, str]]:
    """The Kerberized RM's env plus the KDC's, with KRB5_CONFIG set for this module."""
    try:
        import gssapi  # noqa: F401
    except ImportError as e:
        realparts.missing("kdc", f"gssapi does not import ({e}): pip install "
                          "'kernelyard[kerberos]'")
    env = realparts.env("kerberized-rm")
    env |= realparts.env("kdc")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KRB5_CONFIG", env["KRB5_CONFIG"])
        yield env


@pytest.fixture
def ccache(krb_rm: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty credential cache that is this process's default."""
    path = tmp_path / "ccache"
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{path}")
    return path


def kinit(env: dict[str, str], user: str, *extra: str) -> None:
    """kinit ``user`` into the current KRB5CCNAME; the password goes through stdin only."""
    password = Path(env[f"KY_KDC_{user.upper()}_PASSWORD_FILE"]).read_bytes().strip()
    proc = subprocess.run(["kinit", *extra, user], input=password + b"\n",
                          capture_output=True, timeout=30, env=os.environ.copy())
    assert proc.returncode == 0, f"kinit {user} failed: {proc.stderr.decode()}"


@pytest.fixture
def alice(krb_rm: dict[str, str], ccache: Path) -> None:
    kinit(krb_rm, "alice")


class Recorder:
    """The provisioner's SPNEGO header function, counting calls and keeping each header."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.headers: list[str] = []

    def __call__(self, host: str) -> str:
        self.hosts.append(host)
        header = Hidden(yarn_backend._spnego_header(host))
        self.headers.append(header)
        return header


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def rm_client(env: dict[str, str], auth: Callable[[str], str] | None = yarn_backend._spnego_header,
              host: str = "127.0.0.1") -> ResourceManager:
    url = urllib.parse.urlsplit(env["KY_YARN_KRB_RM_URL"])
    return ResourceManager([f"http://{host}:{url.port}"], timeout=15, auth_header=auth)


def assert_no_token(message: str, headers: list[str]) -> None:
    # A bool first: pytest's assertion report would otherwise print the token.
    tokens = [header.split()[-1] for header in headers]
    leaked = any(t[:16] in message or t[-16:] in message for t in tokens)
    assert not leaked, "a Negotiate token is in the error message"


# ---- with a ticket ----------------------------------------------------------------------


def test_the_provisioner_uses_spnego(krb_rm: dict[str, str], alice: None) -> None:
    provisioner = yarn.YarnProvisioner(rm_urls=[krb_rm["KY_YARN_KRB_RM_URL"]],
                                       rm_auth="kerberos")
    client = provisioner.rm_for()
    assert client.auth_header is yarn_backend._spnego_header
    assert run(client.leaf_queues()) == {"default", "root.default"}


def test_leaf_queues_with_alice_ticket(krb_rm: dict[str, str], alice: None) -> None:
    assert run(rm_client(krb_rm).leaf_queues()) == {"default", "root.default"}


def test_apps_by_tag_with_alice_ticket(krb_rm: dict[str, str], alice: None) -> None:
    assert run(rm_client(krb_rm).apps(f"kernelyard-spnego-{uuid.uuid4().hex[:8]}")) == []


def test_bob_ticket_works_too(krb_rm: dict[str, str], ccache: Path) -> None:
    kinit(krb_rm, "bob")
    assert "default" in run(rm_client(krb_rm).leaf_queues())


def test_a_fresh_header_per_request(krb_rm: dict[str, str], alice: None) -> None:
    # Tickets expire and each SPNEGO token carries a new authenticator: none is reused.
    recorder = Recorder()
    client = rm_client(krb_rm, recorder)

    async def three() -> None:
        await client.leaf_queues()
        await client.apps("kernelyard-spnego-fresh")
        await client.leaf_queues()

    run(three())
    assert recorder.hosts == ["127.0.0.1"] * 3  # HTTP/<the URL's host>, as the RM's key
    assert len(set(recorder.headers)) == 3
    assert all(h.startswith("Negotiate ") for h in recorder.headers)


def test_a_reused_header_is_refused_as_a_replay(krb_rm: dict[str, str], alice: None) -> None:
    # Why the header must be fresh: Hadoop's acceptor keeps a replay cache.
    once = Hidden(yarn_backend._spnego_header("127.0.0.1"))
    client = rm_client(krb_rm, lambda host: once)

    async def twice() -> None:
        assert "default" in await client.leaf_queues()
        await client.leaf_queues()

    with pytest.raises(BackendUnavailable, match=r"\(403 .*Request is a replay") as info:
        run(twice())
    assert_no_token(info.value.message, [once])


def test_a_new_ticket_is_picked_up(krb_rm: dict[str, str], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # The credential cache is read per request: an expired ticket fails the next call,
    # and a renewed one (kinit again, as k5start would) works without a restart.
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'short'}")
    kinit(krb_rm, "alice", "-l", "3s")
    client = rm_client(krb_rm)
    assert "default" in run(client.leaf_queues())
    time.sleep(4)
    # The expired TGT is still in the cache, so GSSAPI fails at the ticket request.
    with pytest.raises(ConfigError, match=r"ticket for HTTP/127\.0\.0\.1: Ticket expired"):
        run(client.leaf_queues())
    kinit(krb_rm, "alice")
    assert "default" in run(client.leaf_queues())


# ---- without a (usable) ticket ------------------------------------------------------


def test_no_header_is_refused_with_401(krb_rm: dict[str, str]) -> None:
    client = rm_client(krb_rm, auth=None)
    with pytest.raises(BackendUnavailable) as info:
        run(client.leaf_queues())
    assert "refused GET /ws/v1/cluster/scheduler (401" in info.value.message
    assert info.value.__cause__ is None


def test_empty_ccache_fails_before_calling_the_rm(krb_rm: dict[str, str], ccache: Path) -> None:
    # No ticket, no request: negotiate_header says what to do instead.
    with pytest.raises(ConfigError, match=r"no valid Kerberos ticket.*run kinit"):
        run(rm_client(krb_rm).apps("kernelyard-spnego-none"))


def test_ticket_for_another_service_is_refused(krb_rm: dict[str, str], alice: None) -> None:
    # Through http://localhost the client asks for HTTP/localhost, whose key the RM
    # doesn't have (it holds HTTP/127.0.0.1 only): Hadoop answers 403.
    recorder = Recorder()
    with pytest.raises(BackendUnavailable) as info:
        run(rm_client(krb_rm, recorder, host="localhost").leaf_queues())
    assert recorder.hosts == ["localhost"]
    assert "refused GET /ws/v1/cluster/scheduler (403" in info.value.message
    assert_no_token(info.value.message, recorder.headers)
    assert_no_token(repr(info.value.args), recorder.headers)
    assert info.value.__cause__ is None


def test_forged_token_is_refused(krb_rm: dict[str, str], alice: None) -> None:
    recorder = Recorder()

    def forged(host: str) -> str:
        real = recorder(host)
        return Hidden(real[:-24] + "A" * 20 + real[-4:])  # the ticket's end overwritten

    with pytest.raises(BackendUnavailable) as info:
        run(rm_client(krb_rm, forged).apps("kernelyard-spnego-forged"))
    assert "refused GET /ws/v1/cluster/apps (403" in info.value.message
    assert_no_token(info.value.message, recorder.headers)

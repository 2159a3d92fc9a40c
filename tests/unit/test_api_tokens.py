"""Per-user API tokens: format, hashing, expiry, revocation, the CLI, and what never leaks."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from kernelyard.auth import api_tokens
from kernelyard.auth.api_tokens import (
    ApiTokenAuthenticator,
    check,
    derive_pepper,
    issue,
    parse_token,
    token_digest,
)
from kernelyard.auth.base import Authenticator
from kernelyard.auth.provider import (
    GatewayIdentityProvider,
    PrincipalUser,
    authenticator_class,
    principal_of,
    user_for,
)
from kernelyard.auth.token import SharedTokenAuthenticator
from kernelyard.cli import token as token_cli
from kernelyard.errors import ConfigError, Unauthorized
from kernelyard.identity import Principal
from kernelyard.store.tokens import SQLiteTokenStore

PEPPER = derive_pepper(b"a store key for tests")
LOG = "kernelyard.test-api-tokens"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteTokenStore]:
    s = SQLiteTokenStore(tmp_path / "k.db")
    yield s
    asyncio.run(s.close())


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def request(authorization: str = "", query: str = "") -> HTTPServerRequest:
    headers = HTTPHeaders({"Host": "gw.example.org"})
    if authorization:
        headers["Authorization"] = authorization
    line = RequestStartLine("GET", f"/api/kernels{query}", "HTTP/1.1")
    return HTTPServerRequest(start_line=line, headers=headers)


# --- format and hashing -------------------------------------------------------------------


def test_minted_tokens_have_the_format_and_differ() -> None:
    seen = set()
    for _ in range(50):
        token_id, secret, text = api_tokens.mint()
        assert text == f"ky_{token_id}_{secret}"
        assert parse_token(text) == (token_id, secret)
        seen.add(text)
    assert len(seen) == 50


@pytest.mark.parametrize("text", [
    "", "ky_", "ky_0123456789ab", "kx_0123456789ab_" + "a" * 43,
    "ky_0123456789AB_" + "a" * 43,  # the id is lower-case hex
    "ky_0123456789ab_" + "a" * 42,  # secret too short
    "ky_0123456789ab_" + "a" * 44,  # too long
    "ky_0123456789ab_" + "a" * 42 + "=",
])
def test_malformed_tokens_do_not_parse(text: str) -> None:
    assert parse_token(text) is None


def test_digest_is_keyed_salted_and_not_the_secret() -> None:
    token_id, secret, _ = api_tokens.mint()
    digest = token_digest(PEPPER, token_id, secret)
    assert secret not in digest and len(digest) == 64
    assert digest == token_digest(PEPPER, token_id, secret)
    assert digest != token_digest(derive_pepper(b"another key"), token_id, secret)
    assert digest != token_digest(PEPPER, "0" * 12, secret)  # the id salts it
    assert digest != token_digest(PEPPER, token_id, secret[:-1] + "x")


def test_the_database_holds_no_secret(store: SQLiteTokenStore, tmp_path: Path) -> None:
    issued = run(issue(store, PEPPER, "alice", groups=["b", "a", "a"], admin=True))
    _, secret = parse_token(issued.text) or ("", "")
    assert secret and secret not in repr(issued)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("k.db*"))  # the file and its WAL
    assert issued.record.token_id.encode() in raw
    assert secret.encode() not in raw and issued.text.encode() not in raw
    assert stat.S_IMODE((tmp_path / "k.db").stat().st_mode) == 0o600
    got = run(store.get(issued.record.token_id))
    assert got == issued.record
    assert got is not None and got.groups == ("a", "b") and got.admin is True


# --- checking: valid, wrong, unknown, revoked, expired ------------------------------------


def test_a_valid_token_checks_and_a_changed_one_does_not(store: SQLiteTokenStore) -> None:
    issued = run(issue(store, PEPPER, "alice"))
    assert run(check(store, PEPPER, issued.text, now=issued.record.created)) == issued.record
    forged = issued.text[:-1] + ("A" if issued.text[-1] != "A" else "B")
    with pytest.raises(Unauthorized):
        run(check(store, PEPPER, forged, now=issued.record.created))
    with pytest.raises(Unauthorized):  # a database copied to a gateway with another key
        run(check(store, derive_pepper(b"other"), issued.text, now=issued.record.created))


def test_unknown_and_malformed_tokens_are_refused(store: SQLiteTokenStore) -> None:
    _, _, unknown = api_tokens.mint()
    for text in (unknown, "ky_nonsense"):
        with pytest.raises(Unauthorized) as e:
            run(check(store, PEPPER, text, now=0))
        assert text not in e.value.message


def test_expiry(store: SQLiteTokenStore) -> None:
    issued = run(issue(store, PEPPER, "alice", expires_in=3600, now=1000.0))
    assert issued.record.expires == 4600.0
    assert run(check(store, PEPPER, issued.text, now=4599.0)).username == "alice"
    with pytest.raises(Unauthorized):
        run(check(store, PEPPER, issued.text, now=4600.0))
    assert issued.record.status(4600.0) == "expired"


def test_issue_refuses_a_lifetime_that_is_over_already(store: SQLiteTokenStore) -> None:
    with pytest.raises(ValueError, match="positive"):
        run(issue(store, PEPPER, "alice", expires_in=0))
    assert run(store.all()) == []


def test_revocation_by_id_and_by_user(store: SQLiteTokenStore) -> None:
    a1 = run(issue(store, PEPPER, "alice"))
    a2 = run(issue(store, PEPPER, "alice"))
    b = run(issue(store, PEPPER, "bob"))
    assert run(store.revoke(a1.record.token_id, when=5.0)) is True
    assert run(store.revoke(a1.record.token_id, when=6.0)) is False  # already revoked
    with pytest.raises(Unauthorized):
        run(check(store, PEPPER, a1.text, now=7.0))
    assert run(store.revoke_user("alice", when=8.0)) == [a2.record.token_id]
    with pytest.raises(Unauthorized):
        run(check(store, PEPPER, a2.text, now=9.0))
    assert run(check(store, PEPPER, b.text, now=9.0)).username == "bob"
    statuses = {r.token_id: (r.status(9.0), r.revoked) for r in run(store.all())}
    assert statuses[a1.record.token_id] == ("revoked", 5.0)
    assert statuses[b.record.token_id] == ("active", None)


# --- the authenticator ----------------------------------------------------------------------


def _authenticator(store: SQLiteTokenStore) -> ApiTokenAuthenticator:
    return ApiTokenAuthenticator(tokens=store, pepper=PEPPER, log=logging.getLogger(LOG))


def test_authenticator_maps_a_token_to_its_principal(store: SQLiteTokenStore) -> None:
    auth = _authenticator(store)
    issued = run(issue(store, PEPPER, "alice", groups=["analysts"], admin=True))
    for scheme in ("token", "bearer", "Bearer"):
        principal = run(auth.authenticate(request(f"{scheme} {issued.text}")))
        assert principal == Principal(name="alice", groups=frozenset({"analysts"}), admin=True,
                                      via="api-token", may_act_for_others=False)


def test_authenticator_leaves_other_credentials_to_the_chain(store: SQLiteTokenStore) -> None:
    auth = _authenticator(store)
    issued = run(issue(store, PEPPER, "alice"))
    assert run(auth.authenticate(request())) is None
    assert run(auth.authenticate(request("token some-shared-token"))) is None
    assert run(auth.authenticate(request("Negotiate abc"))) is None
    # Not from the query string: a personal token does not belong in URLs.
    assert run(auth.authenticate(request(query=f"?token={issued.text}"))) is None


def test_authenticator_refuses_bad_tokens_and_never_logs_them(
    store: SQLiteTokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    auth = _authenticator(store)
    good = run(issue(store, PEPPER, "alice"))
    revoked = run(issue(store, PEPPER, "bob"))
    run(store.revoke(revoked.record.token_id, when=1.0))
    _, _, unknown = api_tokens.mint()
    caplog.set_level(logging.DEBUG, logger=LOG)
    assert run(auth.authenticate(request(f"token {good.text}"))) is not None
    for bad in (revoked.text, unknown, "ky_short"):
        with pytest.raises(Unauthorized):
            run(auth.authenticate(request(f"token {bad}")))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert revoked.record.token_id in logged  # the log says which token was refused...
    for text in (good.text, revoked.text, unknown):
        secret = (parse_token(text) or ("", "?"))[1]
        assert secret not in logged  # ...but never its secret


# --- the chain, with the shared token -----------------------------------------------------


def _chain(store: SQLiteTokenStore, shared: str = "shared") -> GatewayIdentityProvider:
    provider = GatewayIdentityProvider(token=shared)
    provider._chain = [_authenticator(store), SharedTokenAuthenticator(parent=provider,
                                                                       user="svc")]
    return provider


def test_the_first_authenticator_that_knows_the_caller_wins(store: SQLiteTokenStore) -> None:
    provider = _chain(store)
    issued = run(issue(store, PEPPER, "alice"))
    found = run(provider.identify(request(f"token {issued.text}")))
    assert found is not None and found[0].name == "alice" and found[0].via == "api-token"
    found = run(provider.identify(request("token shared")))
    assert found is not None and found[0] == Principal(
        name="svc", admin=True, via="token", may_act_for_others=True)
    assert run(provider.identify(request("token wrong"))) is None
    assert provider.auth_enabled


def test_unauthorized_ends_the_chain(store: SQLiteTokenStore) -> None:
    # Even a shared token equal to the refused API token does not get a second chance.
    _, _, unknown = api_tokens.mint()
    provider = _chain(store, shared=unknown)
    with pytest.raises(Unauthorized):
        run(provider.identify(request(f"token {unknown}")))


def test_without_a_shared_token_the_chain_still_authenticates(
    store: SQLiteTokenStore,
) -> None:
    assert _chain(store, shared="").auth_enabled  # api-token is on: no anonymous access
    only_shared = GatewayIdentityProvider(token="")
    only_shared._chain = [SharedTokenAuthenticator(parent=only_shared)]
    assert not only_shared.auth_enabled
    assert run(only_shared.identify(request("token anything"))) is None


def test_unknown_authenticator_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"KernelyardApp\.authenticators.*'nope'"):
        authenticator_class("nope")
    assert authenticator_class("api-token") is ApiTokenAuthenticator
    assert authenticator_class("token") is SharedTokenAuthenticator
    assert issubclass(authenticator_class("token"), Authenticator)
    provider = GatewayIdentityProvider()
    with pytest.raises(ConfigError, match="twice"):
        provider.load_authenticators(["token", "token"])


def test_principal_of_a_user_or_handler() -> None:
    alice = Principal(name="alice", via="api-token")
    user = user_for(alice)
    assert isinstance(user, PrincipalUser) and user.username == "alice"
    assert principal_of(user) is alice

    class Handler:
        current_user = user

    assert principal_of(Handler()) is alice
    assert "principal" not in GatewayIdentityProvider().identity_model(user)
    Handler.current_user = None  # type: ignore[assignment]
    with pytest.raises(Unauthorized):
        principal_of(Handler())


# --- the CLI ------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.delenv("KERNELYARD_STORE_KEY", raising=False)
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "cfg"))
    return ["--store-url", f"sqlite:///{tmp_path / 'cli.db'}"]


def test_cli_issue_prints_only_the_token(
    cli_env: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = token_cli.main([*cli_env, "issue", "alice", "--groups", "analysts,x", "--admin",
                         "--expires-in", "30d"])
    out, err = capsys.readouterr()
    assert rc == 0
    text = out.strip()
    assert out == text + "\n" and parse_token(text) is not None
    token_id, secret = parse_token(text) or ("", "")
    assert token_id in err and secret not in err
    key = (tmp_path / "kernelyard_store.key").read_bytes().strip()
    tokens = SQLiteTokenStore(tmp_path / "cli.db")
    try:
        record = run(check(tokens, derive_pepper(key), text, now=0))
    finally:
        run(tokens.close())
    assert (record.username, record.groups, record.admin) == ("alice", ("analysts", "x"), True)
    assert record.expires is not None and round(record.expires - record.created) == 30 * 86400


def test_cli_list_and_revoke_show_no_secret(
    cli_env: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert token_cli.main([*cli_env, "issue", "alice"]) == 0
    assert token_cli.main([*cli_env, "issue", "bob"]) == 0
    alice_text, bob_text = (line for line in capsys.readouterr().out.splitlines())
    alice_id, alice_secret = parse_token(alice_text) or ("", "")
    assert token_cli.main([*cli_env, "list"]) == 0
    assert token_cli.main([*cli_env, "list", "--json"]) == 0
    listed = capsys.readouterr().out
    assert alice_id in listed and "alice" in listed and "bob" in listed
    assert alice_secret not in listed and "digest" not in listed
    db = sqlite3.connect(tmp_path / "cli.db")
    digests = [row[0] for row in db.execute("SELECT digest FROM api_tokens")]
    db.close()
    assert digests and not any(d in listed for d in digests)

    assert token_cli.main([*cli_env, "revoke", alice_id]) == 0
    assert token_cli.main([*cli_env, "revoke", "bob"]) == 0
    assert token_cli.main([*cli_env, "revoke", "bob"]) == 1  # nothing left to revoke
    assert token_cli.main([*cli_env, "list", "--json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("["):])
    assert {r["user"]: r["status"] for r in rows} == {"alice": "revoked", "bob": "revoked"}
    assert bob_text not in out


def test_cli_reads_the_store_url_from_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KERNELYARD_STORE_KEY", raising=False)
    db = tmp_path / "from-config.db"
    config = tmp_path / "kernelyard_config.py"
    config.write_text(f"c.StoreFactory.url = 'sqlite:///{db}'\n")
    assert token_cli.main(["--config", str(config), "issue", "carol"]) == 0
    assert db.exists() and (tmp_path / "kernelyard_store.key").exists()
    assert token_cli.main(["--config", str(config), "list"]) == 0
    assert "carol" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("45m", 2700), ("12h", 43200), ("30d", 2592000), ("2w", 1209600)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert token_cli.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "0d", "-1d", "1y", "1.5h", "d"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        token_cli.parse_duration(text)


def test_cli_refuses_bad_names(cli_env: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["issue", "al ice"], ["issue", "alice", "--groups", "ok,b@d"]):
        with pytest.raises(SystemExit) as e:
            token_cli.main([*cli_env, *args])
        assert e.value.code == 2
    assert "not a name" in capsys.readouterr().err

"""Store key rotation: several keys, `kernelyard store rotate-key` / `drop-old-keys`, a live
gateway and a concurrent writer, API tokens that survive it, and no key in any output."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken

from kernelyard.auth.api_tokens import ApiTokenAuthenticator, check, derive_pepper, issue
from kernelyard.cli import store as store_cli
from kernelyard.errors import ConfigError
from kernelyard.store import StoreFactory, rotation
from kernelyard.store.base import KernelRecord
from kernelyard.store.secrets import SecretBox, key_id, parse_keys
from kernelyard.store.sqlite import SQLiteKernelStore
from kernelyard.store.tokens import SQLiteTokenStore
from tests.gateway import start_gateway

REPO = Path(__file__).resolve().parents[2]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERNELYARD_STORE_KEY", raising=False)
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "cfg"))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "k.db"


def key_file(db: Path) -> Path:
    return db.with_name("kernelyard_store.key")


def keys_in(db: Path) -> list[bytes]:
    return [k for k in key_file(db).read_bytes().split(b"\n") if k]


def factory(db: Path) -> StoreFactory:
    return StoreFactory(url=f"sqlite:///{db}")


def cli(db: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run ``kernelyard store ARGS`` in-process; (exit code, stdout + stderr)."""
    rc = store_cli.main(["--store-url", f"sqlite:///{db}", *args])
    out, err = capsys.readouterr()
    return rc, out + err


def raw_sealed(db: Path) -> dict[str, str]:
    """Every sealed value in the file, read with plain SQL (not the code under test)."""
    conn = sqlite3.connect(db)
    try:
        found = {}
        for kid, connection in conn.execute("SELECT kernel_id, connection FROM kernels"):
            info = json.loads(connection)
            found.update({f"{kid}.{f}": info[f] for f in ("key", "curve_secretkey")
                          if info.get(f)})
        found.update({f"secret.{name}": value for name, value
                      in conn.execute("SELECT name, value FROM store_secrets")})
        return found
    finally:
        conn.close()


def opens_all(key: bytes, sealed: dict[str, str]) -> bool:
    """Whether ``key`` alone opens every value (False if it opens none; error if some)."""
    results = []
    for token in sealed.values():
        try:
            Fernet(key).decrypt(token.encode())
            results.append(True)
        except InvalidToken:
            results.append(False)
    assert len(set(results)) == 1, f"mixed keys: {results}"
    return results[0]


KERNELS = {f"k{n}": {"key": f"hmac-key-{n}-{'x' * 20}", "curve_secretkey": f"curve-sk-{n}-zz",
                     "shell_port": 5000 + n} for n in range(5)}


def fill(db: Path) -> StoreFactory:
    """A store with five kernels (HMAC + CurveZMQ keys) and an issued API token."""
    f = factory(db)
    for kid, connection in KERNELS.items():
        run(f.store.put(KernelRecord(kid, "python3", "kernelyard-ssh", owner="alice",
                                     connection=dict(connection))))
    return f


def stored_connections(db: Path) -> dict[str, dict[str, Any]]:
    """The connection info of every kernel, read back by a freshly opened store."""
    f = factory(db)
    try:
        return {r.kernel_id: r.connection for r in run(f.store.all())}
    finally:
        f.close_blocking()


# --- the key ring ---------------------------------------------------------------------------


def test_parse_keys_newest_first_and_never_shows_a_key() -> None:
    a, b = Fernet.generate_key(), Fernet.generate_key()
    text = f"# rotated today\n{a.decode()}\n\n{b.decode()}  # previous\n{a.decode()}\n"
    assert parse_keys(text, "S") == [a, b]
    assert parse_keys(f"{a.decode()},{b.decode()}", "S") == [a, b]
    with pytest.raises(ConfigError, match="S holds no key"):
        parse_keys("# nothing\n\n", "S")
    bad = "not-a-key-but-a-secret-looking-string"
    with pytest.raises(ConfigError, match="S: key 2 is not a valid key") as e:
        parse_keys(f"{a.decode()}\n{bad}", "S")
    assert bad not in e.value.message and a.decode() not in e.value.message


def test_newest_key_seals_and_every_key_opens() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    sealed_old = SecretBox([old], "S").seal("s3cret")
    box = SecretBox([new, old], "S")
    assert box.open(sealed_old) == "s3cret"
    assert box.which_key(sealed_old) == 1
    assert box.which_key(box.seal("x")) == 0
    assert Fernet(new).decrypt(box.reseal(sealed_old).encode()) == b"s3cret"
    with pytest.raises(ConfigError, match="cannot be decrypted with S"):
        SecretBox([new], "S").open(sealed_old)


# --- rotate-key and drop-old-keys --------------------------------------------------------


def test_rotate_key_re_encrypts_every_secret(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(db).close_blocking()
    (old,) = keys_in(db)
    before = raw_sealed(db)
    assert len(before) == 11 and opens_all(old, before)  # 5 x 2 kernel fields + the pepper

    rc, out = cli(db, capsys, "rotate-key")
    assert rc == 0, out
    new, kept = keys_in(db)
    assert kept == old and new != old
    after = raw_sealed(db)
    assert after.keys() == before.keys()
    assert all(after[k] != before[k] for k in after)
    assert opens_all(new, after) and not opens_all(old, after)
    assert key_id(new) in out and "5 kernel(s) and 1 store secret(s)" in out
    assert stored_connections(db) == KERNELS


def test_drop_old_keys_leaves_the_newest_alone(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(db).close_blocking()
    (first,) = keys_in(db)
    assert cli(db, capsys, "rotate-key")[0] == 0
    assert cli(db, capsys, "rotate-key")[0] == 0
    newest, middle, oldest = keys_in(db)
    assert oldest == first

    rc, out = cli(db, capsys, "drop-old-keys")
    assert rc == 0, out
    assert keys_in(db) == [newest]
    assert f"Dropped 2 old key(s): {key_id(middle)}, {key_id(first)}" in out
    assert opens_all(newest, raw_sealed(db))
    assert stored_connections(db) == KERNELS
    rc, out = cli(db, capsys, "drop-old-keys")
    assert rc == 0 and "No old key to drop" in out
    rc, out = cli(db, capsys, "status")
    assert rc == 0 and f"{key_id(newest)}  seals new secrets  opens 11 sealed value(s)" in out


def test_drop_old_keys_re_encrypts_what_a_stale_writer_sealed_under_an_old_key(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gateway that sealed a record with the old key while the rotation ran."""
    fill(db).close_blocking()
    (old,) = keys_in(db)
    stale = SQLiteKernelStore(db, SecretBox([old], "stale"))  # no key file: never refreshes
    assert cli(db, capsys, "rotate-key")[0] == 0
    run(stale.put(KernelRecord("late", "py", "p", connection={"key": "late-hmac-key"})))
    stale.close_blocking()
    rc, out = cli(db, capsys, "status")
    assert rc == 0 and f"{key_id(old)}  read only          opens 1 sealed value(s)" in out

    assert cli(db, capsys, "drop-old-keys")[0] == 0
    (new,) = keys_in(db)
    assert opens_all(new, raw_sealed(db))
    assert stored_connections(db)["late"] == {"key": "late-hmac-key"}


def test_a_running_store_follows_the_rotation(
    db: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    live = fill(db)  # stays open, as in a running gateway
    (old,) = keys_in(db)
    caplog.set_level(logging.DEBUG)
    assert cli(db, capsys, "rotate-key")[0] == 0
    new, _ = keys_in(db)
    assert run(live.store.get("k1")).connection == KERNELS["k1"]
    assert f"sealing with key {key_id(new)}, 1 older key(s) for reading" in caplog.text
    run(live.store.put(KernelRecord("after", "py", "p", connection={"key": "after-key"})))
    assert Fernet(new).decrypt(raw_sealed(db)["after.key"].encode()) == b"after-key"

    assert cli(db, capsys, "drop-old-keys")[0] == 0
    assert {r.kernel_id for r in run(live.store.all())} == {*KERNELS, "after"}
    run(live.store.update("k2", connection={"key": "changed"}))
    assert opens_all(new, raw_sealed(db)) and not opens_all(old, raw_sealed(db))
    live.close_blocking()


def test_reads_while_the_rotation_transaction_is_open(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the re-encryption and its commit, a gateway still reads every record."""
    live = fill(db)
    seen: list[Any] = []
    real = rotation.reseal_all

    def reseal_then_read(conn: sqlite3.Connection, box: SecretBox) -> tuple[int, int]:
        counts = real(conn, box)

        def read() -> None:  # another connection, as a gateway's, in another thread
            try:
                seen.append({r.kernel_id: r.connection for r in run(live.store.all())})
            except Exception as e:
                seen.append(e)

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(30)
        return counts

    monkeypatch.setattr(rotation, "reseal_all", reseal_then_read)
    assert cli(db, capsys, "rotate-key")[0] == 0
    assert cli(db, capsys, "drop-old-keys")[0] == 0
    assert seen == [KERNELS, KERNELS]
    live.close_blocking()


WORKER = textwrap.dedent("""
    import asyncio, json, os, sys
    from kernelyard.store import StoreFactory
    from kernelyard.store.base import KernelRecord

    url, stop, out = sys.argv[1:4]

    async def main():
        factory = StoreFactory(url=url)
        store, box = factory.store, factory.secret_box()
        seen, errors, n = set(), [], 0
        print("ready", flush=True)
        while not os.path.exists(stop):
            n += 1
            try:
                await store.put(KernelRecord(f"w{n}", "py", "p", connection={
                    "key": f"hmac-{n}", "curve_secretkey": f"curve-{n}"}))
                await store.update(f"w{n}", connection={"key": f"hmac2-{n}"})
                for record in await store.all():
                    if record.kernel_id.startswith("w"):
                        assert record.connection["key"].startswith("hmac"), record.kernel_id
                got = await store.get(f"w{n}")
                assert got.connection == {"key": f"hmac2-{n}"}, got
                if n > 20:
                    await store.delete(f"w{n - 20}")
                seen.add(box.key_ids[0])
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
        with open(out, "w") as f:
            json.dump({"ops": n, "seen": sorted(seen), "errors": errors}, f)
        await factory.close()

    asyncio.run(main())
""")


def test_rotation_with_a_concurrent_writer_process(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another process writes and reads in a loop (SQLite locking) through 3 rotations."""
    fill(db).close_blocking()
    stop, out = tmp_path / "stop", tmp_path / "worker.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, f"sqlite:///{db}", str(stop),
                               str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        ids = []
        for _ in range(3):
            time.sleep(0.3)
            rc, text = cli(db, capsys, "rotate-key")
            assert rc == 0, text
            ids.append(key_id(keys_in(db)[0]))
        time.sleep(0.3)
        rc, text = cli(db, capsys, "drop-old-keys")
        assert rc == 0, text
        time.sleep(0.3)
    finally:
        stop.touch()
        worker.wait(60)
    report = json.loads(out.read_text())
    assert report["errors"] == []
    assert report["ops"] > 10
    assert len(set(report["seen"]) & set(ids)) >= 2  # it followed the rotations live
    (final,) = keys_in(db)
    sealed = raw_sealed(db)
    assert any(k.startswith("w") for k in sealed) and opens_all(final, sealed)
    assert {k: v for k, v in stored_connections(db).items() if k in KERNELS} == KERNELS


# --- API tokens -----------------------------------------------------------------------------


def test_api_tokens_survive_rotation(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = fill(db)
    pepper = f.token_pepper()
    before = run(issue(f.tokens, pepper, "alice", groups=["analysts"]))
    f.close_blocking()
    digests = _digests(db)
    assert cli(db, capsys, "rotate-key")[0] == 0
    assert cli(db, capsys, "drop-old-keys")[0] == 0
    assert _digests(db) == digests  # no token row is touched: the pepper is the same

    f = factory(db)
    try:
        assert f.token_pepper() == pepper
        assert run(check(f.tokens, f.token_pepper(), before.text, now=0)).username == "alice"
        after = run(issue(f.tokens, f.token_pepper(), "bob"))
        auth = ApiTokenAuthenticator(tokens=f.tokens, pepper=f.token_pepper())
        for text in (before.text, after.text):
            assert run(check(f.tokens, auth._pepper, text, now=0)).status(0) == "active"
    finally:
        f.close_blocking()


def _digests(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT digest FROM api_tokens")]
    finally:
        conn.close()


def test_the_authenticator_reads_the_kept_pepper(db: Path) -> None:
    """ApiTokenAuthenticator() with no arguments: the process's StoreFactory pepper."""
    f = fill(db)
    issued = run(issue(f.tokens, f.token_pepper(), "carol"))
    f.close_blocking()
    assert rotation.rotate_key(factory(db)).kernels == 5
    StoreFactory.clear_instance()
    try:
        StoreFactory.instance(url=f"sqlite:///{db}")
        auth = ApiTokenAuthenticator()
        assert run(check(auth._tokens, auth._pepper, issued.text, now=0)).username == "carol"
    finally:
        StoreFactory.instance().close_blocking()
        StoreFactory.clear_instance()


def _legacy_store(db: Path) -> tuple[bytes, str]:
    """A store as the code before key rotation left it: one key, tokens hashed with the
    pepper derived from it, no store_secrets table."""
    key = Fernet.generate_key()
    db.parent.mkdir(parents=True)
    key_file(db).write_bytes(key)
    key_file(db).chmod(0o600)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE kernels (kernel_id TEXT PRIMARY KEY, kernel_name TEXT NOT NULL, "
                 "provisioner TEXT NOT NULL, owner TEXT NOT NULL DEFAULT '', state TEXT NOT "
                 "NULL DEFAULT '{}', connection TEXT NOT NULL DEFAULT '{}', created REAL NOT "
                 "NULL, updated REAL NOT NULL)")
    sealed = Fernet(key).encrypt(b"legacy-hmac-key").decode()
    conn.execute("INSERT INTO kernels VALUES ('old', 'py', 'p', 'alice', '{}', ?, 0, 0)",
                 (json.dumps({"key": sealed}),))
    conn.commit()
    conn.close()
    tokens = SQLiteTokenStore(db)
    issued = run(issue(tokens, derive_pepper(key), "dave"))
    tokens.close_blocking()
    return key, issued.text


def test_tokens_from_before_the_kept_pepper_stay_valid(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, text = _legacy_store(db)
    assert cli(db, capsys, "rotate-key")[0] == 0
    assert cli(db, capsys, "drop-old-keys")[0] == 0
    assert keys_in(db) != [key]
    f = factory(db)
    try:
        assert run(check(f.tokens, f.token_pepper(), text, now=0)).username == "dave"
    finally:
        f.close_blocking()
    assert stored_connections(db)["old"] == {"key": "legacy-hmac-key"}


def test_a_first_rotation_by_environment_keeps_legacy_tokens(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """KERNELYARD_STORE_KEY=new,old before the new code ever ran: the pepper comes from
    the oldest key, the one the tokens were hashed with."""
    old, text = _legacy_store(db)
    new = Fernet.generate_key()
    monkeypatch.setenv("KERNELYARD_STORE_KEY", f"{new.decode()},{old.decode()}")
    rc, out = cli(db, capsys, "re-encrypt")
    assert rc == 0, out
    assert opens_all(new, raw_sealed(db)) and not opens_all(old, raw_sealed(db))
    monkeypatch.setenv("KERNELYARD_STORE_KEY", new.decode())
    f = factory(db)
    try:
        assert run(check(f.tokens, f.token_pepper(), text, now=0)).username == "dave"
    finally:
        f.close_blocking()


# --- keys from the environment --------------------------------------------------------------


def test_environment_keys_rotate_by_hand(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    monkeypatch.setenv("KERNELYARD_STORE_KEY", old.decode())
    fill(db).close_blocking()
    assert not key_file(db).exists()
    for command in ("rotate-key", "drop-old-keys"):
        rc, out = cli(db, capsys, command)
        assert rc == 1 and "KERNELYARD_STORE_KEY" in out and "re-encrypt" in out
    monkeypatch.setenv("KERNELYARD_STORE_KEY", f" {new.decode()}, {old.decode()} ")
    assert stored_connections(db) == KERNELS
    rc, out = cli(db, capsys, "re-encrypt")
    assert rc == 0 and "remove them" in out
    assert opens_all(new, raw_sealed(db))
    monkeypatch.setenv("KERNELYARD_STORE_KEY", new.decode())
    assert stored_connections(db) == KERNELS


# --- wrong or missing keys: errors that name the setting -------------------------------------


def test_a_wrong_key_file_stops_the_store_naming_the_setting(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(db).close_blocking()
    key_file(db).write_bytes(Fernet.generate_key())
    with pytest.raises(ConfigError, match=r"cannot be decrypted with StoreFactory\.key_file"):
        factory(db).store  # noqa: B018
    with pytest.raises(ConfigError, match=r"StoreFactory\.key_file"):
        factory(db).token_pepper()
    wrong = keys_in(db)
    rc, out = cli(db, capsys, "rotate-key")
    assert rc == 1 and "StoreFactory.key_file" in out
    assert keys_in(db) == wrong  # refused before changing anything


def test_a_missing_key_file_is_not_recreated_over_sealed_secrets(db: Path) -> None:
    fill(db).close_blocking()
    key_file(db).unlink()
    with pytest.raises(ConfigError, match=r"StoreFactory\.key_file .* does not exist, but "
                       "the store .* holds secrets"):
        factory(db).store  # noqa: B018
    assert not key_file(db).exists()


def test_a_wrong_or_bad_environment_key_names_the_variable(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(db).close_blocking()
    monkeypatch.setenv("KERNELYARD_STORE_KEY", Fernet.generate_key().decode())
    with pytest.raises(ConfigError, match="cannot be decrypted with KERNELYARD_STORE_KEY"):
        factory(db).store  # noqa: B018
    monkeypatch.setenv("KERNELYARD_STORE_KEY", "too-short")
    with pytest.raises(ConfigError, match="KERNELYARD_STORE_KEY: key 1 is not a valid key"):
        factory(db).store  # noqa: B018


def test_a_broken_key_file_does_not_stop_a_running_store(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = fill(db)
    (key,) = keys_in(db)
    caplog.set_level(logging.DEBUG)
    key_file(db).write_text("garbage-that-is-no-key\n")
    assert run(live.store.get("k0")).connection == KERNELS["k0"]
    assert "Keeping the store keys in memory" in caplog.text
    assert "garbage" not in caplog.text
    key_file(db).write_bytes(key + b"\n")
    assert run(live.store.get("k0")).connection == KERNELS["k0"]
    live.close_blocking()


def test_rotation_refuses_a_key_file_of_another_user(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run as root, a rotation would leave a key file the gateway's user cannot read.

    Giving the file away needs root: instead the command runs as another user id (the
    unit tier runs without root)."""
    fill(db).close_blocking()
    owner = key_file(db).stat().st_uid
    monkeypatch.setattr(rotation.os, "geteuid", lambda: owner + 4242)
    keys = keys_in(db)
    rc, out = cli(db, capsys, "rotate-key")
    assert rc == 1 and "StoreFactory.key_file" in out and f"user id {owner}:" in out
    assert keys_in(db) == keys


# --- files and what is shown ----------------------------------------------------------------


def test_key_files_are_0600_and_replaced_whole(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.umask(0o022)
    fill(db).close_blocking()
    modes = {}
    for command in ("rotate-key", "rotate-key", "drop-old-keys"):
        assert cli(db, capsys, command)[0] == 0
        modes[command] = stat.S_IMODE(key_file(db).stat().st_mode)
    assert set(modes.values()) == {0o600}
    for path in db.parent.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert not [p for p in db.parent.iterdir() if p.name.endswith(".tmp")]


def test_no_key_or_secret_in_output_or_logs(
    db: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    live = fill(db)
    pepper = live.token_pepper()
    token = run(issue(live.tokens, pepper, "erin")).text
    seen_keys = set(keys_in(db))
    outputs = []
    for command in ("status", "rotate-key", "status", "rotate-key", "drop-old-keys", "status",
                    "re-encrypt"):
        rc, out = cli(db, capsys, command)
        assert rc == 0, out
        outputs.append(out)
        seen_keys.update(keys_in(db))
        run(live.store.all())  # the live store re-reads the key file and logs the key id
    live.close_blocking()
    text = "\n".join(outputs) + caplog.text
    assert len(seen_keys) == 3
    assert all(key_id(k) in text for k in seen_keys)  # keys are named, by id only
    secrets = [k.decode() for k in seen_keys] + [pepper.hex(), token, token[16:]]
    secrets += [v for c in KERNELS.values() for k, v in c.items() if k != "shell_port"]
    secrets += list(raw_sealed(db).values())
    leaked = [s for s in secrets if s in text]
    assert leaked == []


# --- a real gateway -------------------------------------------------------------------------


def _token_cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JUPYTER_DATA_DIR": str(data)}
    return subprocess.run([sys.executable, "-m", "kernelyard.cli.main", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_rotation_under_a_running_gateway(tmp_path: Path) -> None:
    """Tokens keep working across rotate-key and drop-old-keys on a live gateway and its
    restart; a wrong key file then stops the gateway at start, naming the setting."""
    gateway_tmp = tmp_path / "gw"
    chain = ("--KernelyardApp.authenticators=api-token", "--KernelyardApp.authenticators=token")
    gw = start_gateway(gateway_tmp, *chain, "--debug")
    data = gateway_tmp / "data"
    try:
        first = _token_cli(data, "token", "issue", "alice")
        assert first.returncode == 0, first.stderr
        before = first.stdout.strip()
        keys = set((data / "kernelyard_store.key").read_text().split())
        assert gw.request("GET", "/api/kernels", token=before)[0] == 200

        rotated = _token_cli(data, "store", "rotate-key")
        assert rotated.returncode == 0, rotated.stderr
        assert "kernelyard_store.key" in rotated.stdout
        keys |= set((data / "kernelyard_store.key").read_text().split())
        assert gw.request("GET", "/api/kernels", token=before)[0] == 200
        second = _token_cli(data, "token", "issue", "bob")
        assert second.returncode == 0, second.stderr
        after = second.stdout.strip()
        assert gw.request("GET", "/api/kernels", token=after)[0] == 200

        dropped = _token_cli(data, "store", "drop-old-keys")
        assert dropped.returncode == 0, dropped.stderr
        for token in (before, after):
            assert gw.request("GET", "/api/kernels", token=token)[0] == 200
        forged = before[:-1] + ("A" if before[-1] != "A" else "B")
        assert gw.request("GET", "/api/kernels", token=forged)[0] == 401
    finally:
        gw.stop()
    log = gw.log()
    assert len(keys) == 2
    leaked = [s for s in [*keys, before, after, before[16:], after[16:]] if s in log]
    assert leaked == []

    gw = start_gateway(gateway_tmp, *chain)
    try:
        assert gw.request("GET", "/api/kernels", token=before)[0] == 200
    finally:
        gw.stop()

    (data / "kernelyard_store.key").write_bytes(Fernet.generate_key())
    with pytest.raises(RuntimeError, match=r"cannot be decrypted with StoreFactory\.key_file"):
        start_gateway(gateway_tmp, *chain, wait=240)


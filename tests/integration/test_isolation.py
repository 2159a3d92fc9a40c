"""Tenants against a real gateway: ownership of kernels and sessions (REST and websocket),
KERNEL_USERNAME, kernelspec access, quotas, resource limits, the audit log and secrets.

Callers: per-user API tokens from ``kernelyard token issue`` (alice in the group
analysts, bob, quinn, root, and the admin ops) and the shared token, which is a
service that may act for others. Kernels are local (the harness's python3
kernelspec), so no cluster is needed. The gateway logs at debug level, so the
secrets check covers every log line.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import websocket

from tests import realparts
from tests.gateway import Gateway, audit_lines, issue, start_gateway, wait_for_audit
from tests.kernelspecs import IPYKERNEL, make_test_kernelspecs, write_spec
from tests.realparts import ssh_hosts

PER_USER_LIMIT = 2
CLIENT_SECRET = "s3cret-value-" + uuid.uuid4().hex  # a client env value that must stay hidden
CONFIG = """
c.KernelyardApp.authenticators = ["api-token", "token"]
c.KernelyardApp.audit_log = {audit!r}
c.KernelyardApp.max_kernels_per_user = {limit}
c.KernelyardApp.kernelspec_access = {{"analysts_only": {{"authorized_groups": ["analysts"]}}}}
c.KernelyardApp.group_resource_limits = {{
    "*": {{"KERNEL_DRIVER_MEMORY": "1g"}},
    "analysts": {{"KERNEL_DRIVER_MEMORY": "4g"}},
}}
"""


@dataclasses.dataclass
class Tenants:
    gw: Gateway  # the shared token: a service (admin, may act for others)
    audit: Path
    alice: Gateway
    bob: Gateway
    quinn: Gateway
    root: Gateway
    ops: Gateway  # an admin with a personal API token
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def t(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    tmp = tmp_path_factory.mktemp("isolation")
    specs = make_test_kernelspecs(tmp / "jupyter")
    write_spec(specs, "analysts_only", IPYKERNEL)
    audit = tmp / "audit" / "audit.log"
    config = tmp / "kernelyard_config.py"
    config.write_text(CONFIG.format(audit=str(audit), limit=PER_USER_LIMIT))
    gw = start_gateway(tmp, "--config", str(config), "--debug",
                       env={"JUPYTER_PATH": str(specs)})
    data = tmp / "data"
    tokens = {"alice": issue(data, "alice", "--groups", "analysts"), "bob": issue(data, "bob"),
              "quinn": issue(data, "quinn"), "root": issue(data, "root"),
              "ops": issue(data, "ops", "--admin")}
    yield Tenants(gw, audit, *(gw.as_caller(tokens[u]) for u in
                               ("alice", "bob", "quinn", "root", "ops")), tokens)
    gw.stop()


@pytest.fixture(scope="module")
def alices_kernel(t: Tenants) -> Iterator[str]:
    """A kernel of alice's, holding state (x = 41) that a restart would lose."""
    kid = t.alice.start_kernel(env={"KERNEL_MY_SECRET_TOKEN": CLIENT_SECRET})
    ks = t.alice.connect(kid)
    try:
        assert ks.execute("x = 41")["reply"]["status"] == "ok"
    finally:
        ks.close()
    yield kid
    t.alice.request("DELETE", f"/api/kernels/{kid}")


def _missing_body(gw: Gateway, method: str, path: str) -> tuple[int, Any]:
    """What any caller gets for a kernel id that does not exist."""
    missing = str(uuid.uuid4())
    status, body, _ = gw.request(method, path.format(missing), {} if method == "POST" else None)
    return status, {**body, "message": body["message"].replace(missing, "{id}")}


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/kernels/{}"), ("DELETE", "/api/kernels/{}"),
    ("POST", "/api/kernels/{}/interrupt"), ("POST", "/api/kernels/{}/restart"),
])
def test_a_non_owner_gets_the_404_of_a_missing_kernel(
    t: Tenants, alices_kernel: str, method: str, path: str
) -> None:
    status, body, _ = t.bob.request(method, path.format(alices_kernel),
                                    {} if method == "POST" else None)
    assert status == 404, body
    body["message"] = body["message"].replace(alices_kernel, "{id}")
    assert (status, body) == _missing_body(t.bob, method, path)


def test_a_non_owner_cannot_open_the_websocket(t: Tenants, alices_kernel: str) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        t.bob.connect(alices_kernel)
    assert refused.value.status_code == 404


def test_listings_show_only_the_callers_kernels(t: Tenants, alices_kernel: str) -> None:
    bobs = t.bob.start_kernel()
    try:
        _, alice_sees, _ = t.alice.request("GET", "/api/kernels")
        _, bob_sees, _ = t.bob.request("GET", "/api/kernels")
        assert {k["id"] for k in alice_sees} == {alices_kernel}
        assert {k["id"] for k in bob_sees} == {bobs}
        assert {k["owner"] for k in bob_sees} == {"bob"}
        for caller in (t.ops, t.gw):  # admins: a personal admin token, the shared token
            _, everything, _ = caller.request("GET", "/api/kernels")
            owners = {k["id"]: k["owner"] for k in everything}
            assert owners[alices_kernel] == "alice" and owners[bobs] == "bob"
    finally:
        assert t.bob.request("DELETE", f"/api/kernels/{bobs}")[0] == 204


def test_the_kernel_is_unharmed_after_the_attempts(t: Tenants, alices_kernel: str) -> None:
    # Runs after the refused DELETE / restart / interrupt / websocket above.
    status, model, _ = t.alice.request("GET", f"/api/kernels/{alices_kernel}")
    assert status == 200 and model["owner"] == "alice" and model["execution_state"] != "dead"
    ks = t.alice.connect(alices_kernel)
    try:
        assert ks.execute("print(x + 1)")["stdout"] == "42\n"  # not restarted
    finally:
        ks.close()


def test_an_admin_may_do_everything(t: Tenants, alices_kernel: str) -> None:
    status, model, _ = t.ops.request("GET", f"/api/kernels/{alices_kernel}")
    assert status == 200 and model["owner"] == "alice"
    assert t.ops.request("POST", f"/api/kernels/{alices_kernel}/interrupt", {})[0] == 204
    ks = t.ops.connect(alices_kernel)
    try:
        assert ks.execute("print(x)")["stdout"] == "41\n"
    finally:
        ks.close()


def test_models_never_show_the_kernel_env(t: Tenants, alices_kernel: str) -> None:
    for caller in (t.alice, t.ops, t.gw):
        for path in (f"/api/kernels/{alices_kernel}", "/api/kernels"):
            status, body, _ = caller.request("GET", path)
            assert status == 200 and CLIENT_SECRET not in json.dumps(body)
            assert "KERNEL_MY_SECRET_TOKEN" not in json.dumps(body)


def test_sessions_belong_to_their_kernels_owner(t: Tenants, alices_kernel: str) -> None:
    body = {"path": "shared/nb.ipynb", "type": "notebook", "name": "nb",
            "kernel": {"id": alices_kernel}}
    status, session, _ = t.alice.request("POST", "/api/sessions", body)
    assert status == 201 and session["kernel"]["id"] == alices_kernel, session
    sid = session["id"]
    for method, payload in (("GET", None), ("PATCH", {"name": "mine now"}), ("DELETE", None)):
        status, refused, _ = t.bob.request(method, f"/api/sessions/{sid}", payload)
        assert status == 404 and alices_kernel not in json.dumps(refused), (method, refused)
    _, bob_lists, _ = t.bob.request("GET", "/api/sessions")
    assert sid not in {s["id"] for s in bob_lists}
    # Attaching a session to alice's kernel, or to alice's path, gives bob nothing of hers.
    status, refused, _ = t.bob.request("POST", "/api/sessions", {**body, "path": "bob.ipynb"})
    assert status == 404 and "no such kernel" in refused["message"], refused
    status, refused, _ = t.bob.request("POST", "/api/sessions",
                                       {**body, "path": "bob.ipynb", "kernel": {"id": "../x"}})
    assert status == 400 and "KERNEL_ID" in refused["message"], refused
    _, admin_lists, _ = t.ops.request("GET", "/api/sessions")
    assert sid in {s["id"] for s in admin_lists}
    status, mine, _ = t.alice.request("GET", f"/api/sessions/{sid}")
    assert status == 200 and mine["name"] == "nb"
    t.alice.request("PATCH", f"/api/sessions/{sid}", {"name": "still nb"})


def test_a_session_at_someone_elses_path_is_a_new_one(t: Tenants) -> None:
    body = {"path": "same/path.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
    status, alices, _ = t.alice.request("POST", "/api/sessions", body)
    assert status == 201, alices
    try:
        status, bobs, _ = t.bob.request("POST", "/api/sessions", body)
        assert status == 201, bobs
        try:
            assert bobs["id"] != alices["id"]
            assert bobs["kernel"]["id"] != alices["kernel"]["id"]
            assert bobs["kernel"]["owner"] == "bob" and alices["kernel"]["owner"] == "alice"
        finally:
            assert t.bob.request("DELETE", f"/api/sessions/{bobs['id']}")[0] == 204
    finally:
        assert t.alice.request("DELETE", f"/api/sessions/{alices['id']}")[0] == 204


def test_a_new_kernel_for_a_session_is_launched_and_the_old_one_audited(t: Tenants) -> None:
    body = {"path": "switch.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
    status, session, _ = t.bob.request("POST", "/api/sessions", body)
    assert status == 201, session
    old, sid = session["kernel"]["id"], session["id"]
    # alice may not do that to bob's session; bob may not switch to a kernelspec he may
    # not use.
    assert t.alice.request("PATCH", f"/api/sessions/{sid}", {"kernel": {"name": "python3"}}
                           )[0] == 404
    status, refused, _ = t.bob.request("PATCH", f"/api/sessions/{sid}",
                                       {"kernel": {"name": "analysts_only"}})
    assert status == 403 and "analysts_only" in refused["message"], refused
    status, patched, _ = t.bob.request("PATCH", f"/api/sessions/{sid}",
                                       {"kernel": {"name": "python3"}})
    try:
        assert status == 200 and patched["kernel"]["id"] != old, patched
        assert patched["kernel"]["owner"] == "bob"
        assert t.bob.request("GET", f"/api/kernels/{old}")[0] == 404
        line = wait_for_audit(t.audit, action="shutdown", kernel_id=old)
        assert line["who"] == "bob" and line["result"] == "ok" and line["owner"] == "bob"
        new = wait_for_audit(t.audit, action="launch", kernel_id=patched["kernel"]["id"])
        assert new["who"] == "bob" and new["result"] == "ok"
    finally:
        assert t.bob.request("DELETE", f"/api/sessions/{sid}")[0] == 204


def test_kernel_username_is_the_callers_unless_a_service_asks(t: Tenants) -> None:
    status, body, _ = t.bob.request("POST", "/api/kernels", {"env": {"KERNEL_USERNAME": "alice"}})
    assert status == 403 and "KERNEL_USERNAME" in body["message"], body
    status, body, _ = t.bob.request("POST", "/api/kernels", {"env": {"KERNEL_USERNAME": "../x"}})
    assert status == 400 and "KERNEL_USERNAME" in body["message"], body
    # The shared token is a service: it starts a kernel for alice, which alice then owns.
    status, model, _ = t.gw.request("POST", "/api/kernels", {"env": {"KERNEL_USERNAME": "alice"}})
    assert status == 201 and model["owner"] == "alice", model
    kid = model["id"]
    try:
        assert t.bob.request("GET", f"/api/kernels/{kid}")[0] == 404
        ks = t.alice.connect(kid)
        try:
            out = ks.execute("import os; print(os.environ['KERNEL_USERNAME'])")
        finally:
            ks.close()
        assert out["stdout"] == "alice\n"
    finally:
        assert t.alice.request("DELETE", f"/api/kernels/{kid}")[0] == 204


def test_kernel_username_is_set_to_the_caller(t: Tenants) -> None:
    kid = t.bob.start_kernel()
    try:
        ks = t.bob.connect(kid)
        try:
            out = ks.execute("import os; print(os.environ['KERNEL_USERNAME'])")
        finally:
            ks.close()
        assert out["stdout"] == "bob\n"
    finally:
        t.bob.request("DELETE", f"/api/kernels/{kid}")


def test_root_is_refused_a_kernelspec_by_default(t: Tenants) -> None:
    status, body, _ = t.root.request("POST", "/api/kernels", {"name": "python3"})
    assert status == 403 and "root" in body["message"] and "python3" in body["message"], body
    status, listing, _ = t.root.request("GET", "/api/kernelspecs")
    assert status == 200 and listing["kernelspecs"] == {}
    # A service may not start a kernel as root either.
    status, body, _ = t.gw.request("POST", "/api/kernels", {"env": {"KERNEL_USERNAME": "root"}})
    assert status == 403 and "root" in body["message"], body


def test_kernelspecs_are_filtered_per_user(t: Tenants) -> None:
    _, alice, _ = t.alice.request("GET", "/api/kernelspecs")
    _, bob, _ = t.bob.request("GET", "/api/kernelspecs")
    assert {"python3", "restricted", "analysts_only"} <= set(alice["kernelspecs"])
    assert "eg_restricted" not in alice["kernelspecs"]
    assert "python3" in bob["kernelspecs"] and "eg_restricted" in bob["kernelspecs"]
    assert not {"restricted", "analysts_only"} & set(bob["kernelspecs"])
    status, hidden, _ = t.bob.request("GET", "/api/kernelspecs/analysts_only")
    _, missing, _ = t.bob.request("GET", "/api/kernelspecs/no_such_spec")
    assert status == 404
    assert hidden["message"].replace("analysts_only", "X") == \
        missing["message"].replace("no_such_spec", "X")
    assert t.bob.request("GET", "/kernelspecs/python3/logo-64x64.png")[0] == 200
    status, body, _ = t.bob.request("POST", "/api/kernels", {"name": "analysts_only"})
    assert status == 403 and "analysts_only" in body["message"], body
    _, admin, _ = t.ops.request("GET", "/api/kernelspecs")
    assert {"restricted", "analysts_only", "eg_restricted"} <= set(admin["kernelspecs"])


def test_resource_limits_per_group(t: Tenants) -> None:
    env = {"KERNEL_DRIVER_MEMORY": "2g"}
    status, body, _ = t.bob.request("POST", "/api/kernels", {"env": env})
    assert status == 403, body
    assert "KERNEL_DRIVER_MEMORY=2g" in body["message"] and "1g" in body["message"]
    status, body, _ = t.bob.request("POST", "/api/kernels",
                                    {"env": {"KERNEL_DRIVER_MEMORY": "lots"}})
    assert status == 400 and "KERNEL_DRIVER_MEMORY" in body["message"], body
    kid = t.alice.start_kernel(env=env)  # analysts may ask for up to 4g
    assert t.alice.request("DELETE", f"/api/kernels/{kid}")[0] == 204


def test_parallel_starts_stop_exactly_at_the_per_user_limit(t: Tenants) -> None:
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: t.quinn.request("POST", "/api/kernels", {}),
                                range(20)))
    started = [body["id"] for status, body, _ in results if status == 201]
    try:
        refused = [body for status, body, _ in results if status == 403]
        assert len(started) == PER_USER_LIMIT, [r[:2] for r in results]
        assert len(refused) == 20 - PER_USER_LIMIT, [r[:2] for r in results]
        for body in refused:
            assert body["message"] == (f"quinn already has {PER_USER_LIMIT} kernels, the "
                                       f"per-user limit ({PER_USER_LIMIT})"), body
        _, listed, _ = t.quinn.request("GET", "/api/kernels")
        assert sorted(k["id"] for k in listed) == sorted(started)
        # Other users are not held back by quinn's kernels.
        kid = t.bob.start_kernel()
        t.bob.request("DELETE", f"/api/kernels/{kid}")
    finally:
        for kid in started:
            t.quinn.request("DELETE", f"/api/kernels/{kid}")
    # With quinn's kernels gone, quinn may start again.
    kid = t.quinn.start_kernel()
    assert t.quinn.request("DELETE", f"/api/kernels/{kid}")[0] == 204


def test_the_audit_log_has_the_operations_and_the_refusals(
    t: Tenants, alices_kernel: str
) -> None:
    assert t.gw.request("GET", "/api/kernels", token="ky_0123456789ab_" + "C" * 43)[0] == 401
    launch = wait_for_audit(t.audit, action="launch", kernel_id=alices_kernel)
    assert launch["who"] == "alice" and launch["via"] == "api-token"
    assert launch["owner"] == "alice" and launch["kernelspec"] == "python3"
    assert launch["result"] == "ok" and launch["status"] == 201
    assert launch["where"]["host"] == "local" and launch["where"]["pid"] > 0
    assert launch["client"] == "127.0.0.1" and launch["ts"].endswith("Z")
    connect = wait_for_audit(t.audit, action="connect", who="alice", kernel_id=alices_kernel)
    assert connect["result"] == "ok" and connect["status"] == 101
    for action in ("get", "shutdown", "interrupt", "restart", "connect"):
        denied = wait_for_audit(t.audit, action=action, who="bob", kernel_id=alices_kernel)
        assert denied["result"] == "denied" and denied["status"] == 404, denied
        assert denied["owner"] == "alice"
    interrupt = wait_for_audit(t.audit, action="interrupt", who="ops", kernel_id=alices_kernel)
    assert interrupt["result"] == "ok" and interrupt["status"] == 204
    quota = wait_for_audit(t.audit, action="launch", who="quinn", result="denied")
    assert quota["status"] == 403 and "per-user limit" in quota["reason"]
    as_other = wait_for_audit(t.audit, action="launch", who="bob", status=403,
                              reason="KERNEL_USERNAME 'alice' is not the authenticated user "
                                     "'bob'; only a service may start kernels for other users")
    assert as_other["result"] == "denied"
    root = wait_for_audit(t.audit, action="launch", who="root", via="api-token")
    assert root["result"] == "denied" and root["kernelspec"] == "python3"
    for_alice = wait_for_audit(t.audit, action="launch", via="token", owner="alice")
    assert for_alice["result"] == "ok" and for_alice["who"] != "alice"
    unauthenticated = wait_for_audit(t.audit, action="list", status=401)
    assert unauthenticated["who"] is None and unauthenticated["result"] == "denied"
    session_denied = wait_for_audit(t.audit, action="get", who="bob", status=404,
                                    result="denied")
    assert session_denied["client"] == "127.0.0.1"
    quinns = [r for r in audit_lines(t.audit) if r["who"] == "quinn"]
    assert sum(1 for r in quinns if r["action"] == "launch" and r["result"] == "ok") == 3
    assert sum(1 for r in quinns if r["action"] == "shutdown" and r["result"] == "ok") == 3
    # Reading one's own kernel is not an operation worth a line; refusing it is.
    assert not [r for r in audit_lines(t.audit) if r["action"] == "get" and r["result"] == "ok"]


def test_no_secret_in_any_log(t: Tenants, alices_kernel: str) -> None:
    """Tokens, kernel keys and a client's secret env value appear in no log, at debug
    level, nor in the audit log."""
    key = json.loads((t.gw.runtime_dir / f"kernel-{alices_kernel}.json").read_text())["key"]
    assert len(key) >= 32
    secrets = {"shared token": t.gw.token, "kernel key": key, "client env": CLIENT_SECRET}
    for user, token in t.tokens.items():
        secrets[f"{user}'s token"] = token
        secrets[f"{user}'s token secret"] = token.split("_", 2)[2]
    log, audit = t.gw.log(), t.audit.read_text()
    assert "[D " in log  # the gateway does log at debug level
    for what, value in secrets.items():
        assert value not in log, f"{what} is in the gateway log"
        assert value not in audit, f"{what} is in the audit log"
    assert t.audit.stat().st_mode & 0o777 == 0o600


def test_culling_is_audited_as_cull(tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    gw = start_gateway(tmp_path, f"--KernelyardApp.audit_log={audit}",
                       "--GatewayMappingKernelManager.cull_idle_timeout=2",
                       "--GatewayMappingKernelManager.cull_interval=1")
    try:
        kid = gw.start_kernel()
        line = wait_for_audit(audit, action="cull", kernel_id=kid)
        assert line["result"] == "ok" and line["via"] == "culler" and line["who"] is None
        assert line["owner"] and line["kernelspec"] == "python3"
        assert gw.request("GET", f"/api/kernels/{kid}")[0] == 404
        assert not [r for r in audit_lines(audit) if r["action"] == "shutdown"]
    finally:
        gw.stop()


def test_a_bad_policy_setting_stops_the_gateway(tmp_path: Path) -> None:
    config = tmp_path / "kernelyard_config.py"
    config.write_text('c.KernelyardApp.group_resource_limits = {"*": {"KERNEL_GPUS": "two"}}\n')
    with pytest.raises(RuntimeError) as failed:
        start_gateway(tmp_path, "--config", str(config))
    assert "KernelyardApp.group_resource_limits" in str(failed.value)
    assert "KERNEL_GPUS" in str(failed.value)


def test_the_owner_survives_a_gateway_restart(tmp_path: Path) -> None:
    hosts = ssh_hosts()
    write_spec(tmp_path / "jupyter", "ssh_py",
               ["kernelyard-launcher", "--", "/usr/bin/python3", "-m", "ipykernel_launcher",
                "-f", "{connection_file}"],
               metadata={"kernel_provisioner": {"provisioner_name": "kernelyard-ssh", "config": {
                   "hosts": [hosts["KY_SSH_HOSTS"].split(",")[0]]}}})
    args = ("--KernelyardApp.authenticators=api-token", "--KernelyardApp.authenticators=token",
            "--ip", hosts["KY_SSH_GATEWAY_IP"],
            *realparts.ssh_login_args(hosts),
            "--SSHProvisioner.poll_interval=1")
    env = {"JUPYTER_PATH": str(tmp_path / "jupyter")}
    first = start_gateway(tmp_path, *args, env=env)
    alice = first.as_caller(issue(tmp_path / "data", "alice"))
    bob_token = issue(tmp_path / "data", "bob")
    try:
        kid = alice.start_kernel("ssh_py")
    finally:
        assert first.stop() == 0
    with sqlite3.connect(tmp_path / "data" / "kernelyard.db") as db:
        assert db.execute("SELECT owner FROM kernels WHERE kernel_id=?", (kid,)).fetchall() == \
            [("alice",)]
    second = start_gateway(tmp_path, *args, env=env)
    alice, bob = second.as_caller(alice.token), second.as_caller(bob_token)
    try:
        assert "re-adopted" in second.log()
        status, model, _ = alice.request("GET", f"/api/kernels/{kid}")
        assert status == 200 and model["owner"] == "alice"
        assert bob.request("GET", f"/api/kernels/{kid}")[0] == 404
        assert kid not in {k["id"] for k in bob.request("GET", "/api/kernels")[1]}
        assert bob.request("DELETE", f"/api/kernels/{kid}")[0] == 404
    finally:
        assert alice.request("DELETE", f"/api/kernels/{kid}")[0] == 204
        second.stop()

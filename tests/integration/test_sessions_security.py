"""Kernel ids can't be probed and sessions can't be taken over (issue 10, item 11).

A real gateway with per-user API tokens (alice, bob, the admin ops) and local
kernels. For bob, another user's kernel id must answer exactly like an id that
names no kernel he may see, in every place an id can be sent: ``PATCH`` and
``POST /api/sessions`` and a ``KERNEL_ID`` in ``POST /api/kernels``. And the
takeover of the review fails: after alice deletes her kernel, bob can't start
one under its id, and even where he could (the gateway forgot the id), alice's
session went with her kernel and never becomes his.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway import Gateway, issue, start_gateway
from tests.kernelspecs import make_test_kernelspecs

CONFIG = 'c.KernelyardApp.authenticators = ["api-token", "token"]\n'
# Without the memory of used ids, only the session rules stand between bob and alice's rows.
FORGETFUL = CONFIG + "c.GatewayMappingKernelManager.remembered_kernel_ids = 0\n"


def _tenants(tmp: Path, config: str) -> tuple[Gateway, dict[str, Gateway]]:
    specs = make_test_kernelspecs(tmp / "jupyter")
    (tmp / "kernelyard_config.py").write_text(config)
    gw = start_gateway(tmp, "--config", str(tmp / "kernelyard_config.py"),
                       env={"JUPYTER_PATH": str(specs)})
    data = tmp / "data"
    callers = {user: gw.as_caller(issue(data, user, *extra))
               for user, extra in (("alice", ()), ("bob", ()), ("ops", ("--admin",)))}
    return gw, callers


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Gateway]]:
    gw, callers = _tenants(tmp_path_factory.mktemp("sessions"), CONFIG)
    yield callers
    gw.stop()


@pytest.fixture(scope="module")
def forgetful(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Gateway]]:
    gw, callers = _tenants(tmp_path_factory.mktemp("forgetful"), FORGETFUL)
    yield callers
    gw.stop()


def _answer(gw: Gateway, method: str, path: str, body: Any, kid: str) -> tuple[int, Any]:
    """The status and body of a request, with ``kid`` replaced by a placeholder."""
    status, reply, _ = gw.request(method, path, body)
    return status, json.loads(json.dumps(reply).replace(kid, "{id}"))


def _cleanup(gw: Gateway) -> None:
    """Delete every kernel ``gw``'s caller has (a probe that wrongly succeeded made one)."""
    _, kernels, _ = gw.request("GET", "/api/kernels")
    for kernel in kernels or []:
        gw.request("DELETE", f"/api/kernels/{kernel['id']}")


def _session(gw: Gateway, path: str, **kernel: str) -> dict[str, Any]:
    body = {"path": path, "type": "notebook", "name": Path(path).name,
            "kernel": kernel or {"name": "python3"}}
    status, session, _ = gw.request("POST", "/api/sessions", body)
    assert status == 201, session
    return session


def test_a_foreign_kernel_id_answers_like_a_missing_one(users: dict[str, Gateway]) -> None:
    alice, bob = users["alice"], users["bob"]
    theirs = alice.start_kernel()
    gone = alice.start_kernel()  # a kernel alice had: its id is known but names nothing now
    assert alice.request("DELETE", f"/api/kernels/{gone}")[0] == 204
    never = str(uuid.uuid4())
    bobs = _session(bob, "bob/own.ipynb")
    try:
        for method, path, body in [
            ("PATCH", f"/api/sessions/{bobs['id']}", lambda k: {"kernel": {"id": k}}),
            ("POST", "/api/sessions",
             lambda k: {"path": "bob/p.ipynb", "type": "notebook", "kernel": {"id": k}}),
        ]:
            answers = {kid: _answer(bob, method, path, body(kid), kid)
                       for kid in (theirs, gone, never)}
            assert answers[theirs] == answers[gone] == answers[never], (method, answers)
            assert answers[theirs][0] == 404, answers
        # A client-chosen KERNEL_ID: alice's live kernel's is refused exactly like the
        # id of a kernel that is gone (both are known ids; neither is given out again).
        answers = {kid: _answer(bob, "POST", "/api/kernels", {"env": {"KERNEL_ID": kid}}, kid)
                   for kid in (theirs, gone)}
        assert answers[theirs] == answers[gone], answers
        assert answers[theirs][0] == 400 and "KERNEL_ID" in answers[theirs][1]["message"]
        # The owner still gets the 409 of her own kernel; alice's kernel is untouched.
        status, body, _ = alice.request("POST", "/api/kernels", {"env": {"KERNEL_ID": theirs}})
        assert status == 409 and theirs in body["message"], body
        assert alice.request("GET", f"/api/kernels/{theirs}")[0] == 200
        assert bob.request("GET", f"/api/sessions/{bobs['id']}")[1]["kernel"]["id"] == \
            bobs["kernel"]["id"]
    finally:
        _cleanup(bob)
        _cleanup(alice)


def _alice_leaves_a_session(alice: Gateway) -> tuple[str, dict[str, Any]]:
    kid = str(uuid.uuid4())
    status, _, _ = alice.request("POST", "/api/kernels", {"env": {"KERNEL_ID": kid}})
    assert status == 201
    session = _session(alice, "alice/secret-plan.ipynb", id=kid)
    assert alice.request("DELETE", f"/api/kernels/{kid}")[0] == 204
    return kid, session


def _bob_sees_nothing_of(bob: Gateway, session: dict[str, Any]) -> None:
    _, listed, _ = bob.request("GET", "/api/sessions")
    assert "secret-plan" not in json.dumps(listed), listed
    for method in ("GET", "PATCH", "DELETE"):
        status, body, _ = bob.request(method, f"/api/sessions/{session['id']}",
                                      {"name": "bob's"} if method == "PATCH" else None)
        assert status == 404, (method, body)


def test_a_deleted_kernels_id_is_not_given_out_again(users: dict[str, Gateway]) -> None:
    alice, bob = users["alice"], users["bob"]
    kid, session = _alice_leaves_a_session(alice)
    try:
        status, body, _ = bob.request("POST", "/api/kernels", {"env": {"KERNEL_ID": kid}})
        assert status == 400 and "KERNEL_ID" in body["message"], body
        _bob_sees_nothing_of(bob, session)
    finally:
        _cleanup(bob)


def test_a_session_goes_with_its_kernel_and_is_never_inherited(
        forgetful: dict[str, Gateway]) -> None:
    alice, bob, ops = forgetful["alice"], forgetful["bob"], forgetful["ops"]
    kid, session = _alice_leaves_a_session(alice)
    try:
        # This gateway remembers no ids, so bob gets a kernel under alice's old id...
        status, model, _ = bob.request("POST", "/api/kernels", {"env": {"KERNEL_ID": kid}})
        assert status == 201 and model["id"] == kid, model
        # ... and nothing of her session: its row went with her kernel.
        _bob_sees_nothing_of(bob, session)
        _, everything, _ = ops.request("GET", "/api/sessions")
        assert session["id"] not in {s["id"] for s in everything}, everything
        assert alice.request("GET", f"/api/sessions/{session['id']}")[0] == 404
        assert bob.request("GET", f"/api/kernels/{kid}")[0] == 200  # bob's kernel lives on
    finally:
        _cleanup(bob)


def test_a_session_has_its_own_owner(users: dict[str, Gateway]) -> None:
    """A session the admin made on bob's kernel is the admin's, not bob's."""
    bob, ops = users["bob"], users["ops"]
    kid = bob.start_kernel()
    try:
        admins = _session(ops, "ops/audit.ipynb", id=kid)
        _, listed, _ = bob.request("GET", "/api/sessions")
        assert admins["id"] not in {s["id"] for s in listed}, listed
        assert bob.request("DELETE", f"/api/sessions/{admins['id']}")[0] == 404
        assert ops.request("GET", f"/api/sessions/{admins['id']}")[0] == 200
        # Bob's own session on his kernel is his.
        mine = _session(bob, "bob/mine.ipynb", id=kid)
        assert bob.request("GET", f"/api/sessions/{mine['id']}")[0] == 200
    finally:
        _cleanup(bob)

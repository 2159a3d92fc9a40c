"""Canonical names before policy (issue 10, item 4), against a real gateway.

jupyter_client finds a kernelspec whatever the letter case of its name, so every
rule keyed by a kernelspec's name (kernelspec_access, kernelspec_max_kernels) must
be looked up by the canonical (listed) name, on every way in: POST /api/kernels,
POST and PATCH /api/sessions, GET /api/kernelspecs/{name}, /kernelspecs/{name}/...
User names are canonical (lower case) too: 'Alice' is alice for the quotas.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.gateway import Gateway, issue, start_gateway
from tests.kernelspecs import IPYKERNEL, make_test_kernelspecs, write_spec

CONFIG = """
c.KernelyardApp.authenticators = ["api-token", "token"]
c.KernelyardApp.kernelspec_access = {"symspec": {"authorized_users": ["alice"]}}
c.KernelyardApp.kernelspec_max_kernels = {"python3": 1, "Limited": 1}
c.KernelyardApp.user_max_kernels = {"carol": 1}
"""
SPELLINGS = ["SYMSPEC", "SymSpec", "symspec"]


@dataclass
class Users:
    gw: Gateway
    alice: Gateway
    bob: Gateway
    carol_upper: Gateway  # a token issued to 'Carol': the same user as carol


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Users]:
    tmp = tmp_path_factory.mktemp("canonical")
    specs = make_test_kernelspecs(tmp / "jupyter")
    write_spec(specs, "symspec", IPYKERNEL)
    write_spec(specs, "open_spec", IPYKERNEL)
    write_spec(specs, "limited", IPYKERNEL)
    config = tmp / "kernelyard_config.py"
    config.write_text(CONFIG)
    gw = start_gateway(tmp, "--config", str(config), env={"JUPYTER_PATH": str(specs)})
    data = tmp / "data"
    yield Users(gw, gw.as_caller(issue(data, "alice")), gw.as_caller(issue(data, "bob")),
                gw.as_caller(issue(data, "Carol")))
    for kernel in gw.request("GET", "/api/kernels")[1] or []:
        gw.request("DELETE", f"/api/kernels/{kernel['id']}")
    gw.stop()


def delete_all(gw: Gateway) -> None:
    for kernel in gw.request("GET", "/api/kernels")[1] or []:
        gw.request("DELETE", f"/api/kernels/{kernel['id']}")


@pytest.mark.parametrize("name", SPELLINGS)
def test_a_restricted_kernelspec_in_any_case_is_refused_on_post_kernels(
        users: Users, name: str) -> None:
    status, body, _ = users.bob.request("POST", "/api/kernels", {"name": name})
    assert status == 403, body
    assert "symspec" in body["message"]
    assert users.gw.request("GET", "/api/kernels")[1] == []


@pytest.mark.parametrize("name", SPELLINGS)
def test_a_restricted_kernelspec_in_any_case_is_refused_on_post_sessions(
        users: Users, name: str) -> None:
    status, body, _ = users.bob.request("POST", "/api/sessions", {
        "path": f"b-{name}.ipynb", "type": "notebook", "kernel": {"name": name}})
    assert status == 403, body
    assert users.gw.request("GET", "/api/kernels")[1] == []


@pytest.mark.parametrize("name", SPELLINGS)
def test_a_restricted_kernelspec_in_any_case_is_refused_on_patch_sessions(
        users: Users, name: str) -> None:
    status, session, _ = users.bob.request("POST", "/api/sessions", {
        "path": f"p-{name}.ipynb", "type": "notebook", "kernel": {"name": "open_spec"}})
    assert status == 201, session
    try:
        status, body, _ = users.bob.request("PATCH", f"/api/sessions/{session['id']}",
                                            {"kernel": {"name": name}})
        assert status == 403, body
        _, kernels, _ = users.gw.request("GET", "/api/kernels")
        assert [k["name"] for k in kernels] == ["open_spec"]
    finally:
        users.bob.request("DELETE", f"/api/sessions/{session['id']}")
        delete_all(users.gw)


@pytest.mark.parametrize("name", SPELLINGS)
def test_a_restricted_kernelspec_in_any_case_is_hidden(users: Users, name: str) -> None:
    for path in (f"/api/kernelspecs/{name}", f"/kernelspecs/{name}/kernel.json"):
        status, body, _ = users.bob.request("GET", path)
        assert status == 404, (path, body)
        status, body, _ = users.alice.request("GET", path)
        assert status == 200, (path, body)


def test_a_kernel_started_by_another_spelling_is_recorded_by_the_listed_name(
        users: Users) -> None:
    status, model, _ = users.alice.request("POST", "/api/kernels", {"name": "SymSpec"})
    assert status == 201, model
    try:
        assert model["name"] == "symspec"
    finally:
        users.alice.request("DELETE", f"/api/kernels/{model['id']}")


def test_a_kernelspec_quota_counts_every_spelling(users: Users) -> None:
    first = users.alice.start_kernel("Python3")
    try:
        for name in ("PYTHON3", "python3", "Python3"):
            status, body, _ = users.bob.request("POST", "/api/kernels", {"name": name})
            assert status == 403, (name, body)
            assert "python3" in body["message"] and "limit" in body["message"]
        status, body, _ = users.bob.request("POST", "/api/sessions", {
            "path": "q.ipynb", "type": "notebook", "kernel": {"name": "PYTHON3"}})
        assert status == 403, body
    finally:
        users.alice.request("DELETE", f"/api/kernels/{first}")
    delete_all(users.gw)


def test_a_user_name_in_another_case_is_the_same_user(users: Users) -> None:
    """A token issued to 'Carol' is carol's: her limit (1) holds, her kernel is hers."""
    status, model, _ = users.carol_upper.request("POST", "/api/kernels", {"name": "open_spec"})
    assert status == 201, model
    try:
        assert model["owner"] == "carol"
        status, body, _ = users.carol_upper.request("POST", "/api/kernels",
                                                    {"name": "open_spec"})
        assert status == 403 and "carol" in body["message"], body
    finally:
        users.carol_upper.request("DELETE", f"/api/kernels/{model['id']}")


def test_a_setting_keyed_by_another_spelling_applies_to_the_listed_kernelspec(
        users: Users) -> None:
    """kernelspec_max_kernels {"Limited": 1} limits 'limited' (with a warning at start)."""
    assert users.gw.log_shows("kernelspec_max_kernels['Limited'] is taken as the kernelspec "
                              "'limited'")
    first = users.alice.start_kernel("limited")
    try:
        status, body, _ = users.bob.request("POST", "/api/kernels", {"name": "LIMITED"})
        assert status == 403 and "limited" in body["message"], body
    finally:
        users.alice.request("DELETE", f"/api/kernels/{first}")

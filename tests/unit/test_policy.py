"""The launch policy's pure functions."""

from __future__ import annotations

import pytest

from kernelyard import policy
from kernelyard.errors import InvalidRequest

P = policy.EnvPolicy(client_envs=("ALLOWED",), inherited_envs=("HOME", "SECRET"),
                     secret_names=frozenset({"SECRET"}))


def test_kernel_names_always_pass_others_only_when_allowed() -> None:
    env = policy.filter_client_env({"KERNEL_A": "1", "ALLOWED": "2", "OTHER": "3"}, P)
    assert env == {"KERNEL_A": "1", "ALLOWED": "2"}


def test_star_allows_every_name_but_secrets() -> None:
    star = policy.EnvPolicy(client_envs=("*",), secret_names=frozenset({"SECRET"}))
    assert policy.filter_client_env({"ANY": "x", "SECRET": "y"}, star) == {"ANY": "x"}


@pytest.mark.parametrize("bad", [1, None, ["x"], "x" * 4097, "a\tb", "a\x00", "$HOME", "`ls`"])
def test_unsafe_values_are_refused_with_the_name(bad: object) -> None:
    with pytest.raises(InvalidRequest, match="KERNEL_V"):
        policy.filter_client_env({"KERNEL_V": bad}, P)


def test_exactly_4096_characters_pass() -> None:
    assert policy.filter_client_env({"KERNEL_V": "x" * 4096}, P)["KERNEL_V"] == "x" * 4096


@pytest.mark.parametrize("name", ["1X", "A-B", "A B", ""])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequest):
        policy.filter_client_env({name: "v"}, P)


def test_inherited_env_never_passes_secrets() -> None:
    assert policy.inherited_env({"HOME": "/h", "SECRET": "s", "X": "x"}, P) == {"HOME": "/h"}


def test_kernel_id_must_be_canonical() -> None:
    good = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    assert policy.check_kernel_id(good) == good
    for bad in [good.upper(), good.replace("-", ""), "{" + good + "}", 5, "x"]:
        with pytest.raises(InvalidRequest, match="KERNEL_ID"):
            policy.check_kernel_id(bad)


def test_launch_request_takes_kernel_id_out_of_env() -> None:
    kid = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    req = policy.parse_launch_request({"name": "py", "env": {"KERNEL_ID": kid}}, P)
    assert req.kernel_id == kid and "KERNEL_ID" not in req.env and req.kernel_name == "py"


@pytest.mark.parametrize("path", ["../x.ipynb", "a/../../b", "a\\..\\b"])
def test_paths_may_not_climb(path: str) -> None:
    with pytest.raises(InvalidRequest, match="path"):
        policy.check_api_path(path)


def test_kernelspec_access_lists() -> None:
    own = {"kernelyard": {"authorized_users": ["alice"]}}
    eg = {"process_proxy": {"config": {"unauthorized_users": ["bob"]}}}
    assert policy.user_may_use_kernelspec("alice", own)
    assert not policy.user_may_use_kernelspec("bob", own)
    assert not policy.user_may_use_kernelspec("bob", eg)
    assert policy.user_may_use_kernelspec("carol", eg)
    assert not policy.user_may_use_kernelspec("carol", {}, authorized_users=["alice"])
    assert not policy.user_may_use_kernelspec("alice", own, unauthorized_users=["alice"])

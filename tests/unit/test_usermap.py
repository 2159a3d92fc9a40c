"""The user map and the run-as rules (pure: no real users needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kernelyard.errors import ConfigError, Forbidden, KernelStartFailed, NotFound
from kernelyard.usermap import (
    PasswdUserMap,
    RunAsRefused,
    RunAsRules,
    StaticUserMap,
    UserIdentity,
    check_run_as,
    parse_passwd,
    user_map_from_config,
)

ALICE = UserIdentity("alice", 1002, 1002, "/home/alice", "/bin/bash", frozenset({"alice", "ds"}))
PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
alice:x:1002:1002:Alice,,,:/home/alice:/bin/bash
broken line
bad/name:x:1003:1003::/home/x:/bin/sh
bob:x:1003:1003::/home/bob:
"""


def test_parse_passwd_keeps_well_formed_entries_only() -> None:
    users = parse_passwd(PASSWD)
    assert sorted(users) == ["alice", "bob", "daemon", "root"]
    assert users["alice"] == UserIdentity("alice", 1002, 1002, "/home/alice", "/bin/bash")
    assert users["bob"].shell == "/bin/sh"


def test_static_map_with_defaults() -> None:
    users = StaticUserMap({"alice": {"uid": 2001}, "bob": {"uid": 2002, "gid": 100,
                                                           "home": "/data/bob",
                                                           "groups": ["ds"]}})
    assert users.lookup("alice") == UserIdentity("alice", 2001, 2001, "/home/alice")
    assert users.lookup("bob") == UserIdentity("bob", 2002, 100, "/data/bob", "/bin/sh",
                                               frozenset({"ds"}))
    with pytest.raises(NotFound, match="not in the user map"):
        users.lookup("carol")


@pytest.mark.parametrize(("entry", "words"), [
    ({"uid": "1000"}, "uid of 'u' must be an integer"),
    ({"uid": True}, "uid of 'u' must be an integer"),
    ({"uid": -1}, "uid of 'u'"),
    ({"uid": 1000, "gid": 1.5}, "gid of 'u'"),
    ({"uid": 1000, "home": "relative"}, "absolute path"),
    ({"uid": 1000, "groups": "ds"}, "'groups' a list"),
    ({"uid": 1000, "shell_": "/bin/sh"}, "unknown field"),
    ("1000", "must be a mapping"),
])
def test_static_map_names_the_bad_field(entry: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        StaticUserMap({"u": entry})  # type: ignore[dict-item]


def test_static_map_refuses_bad_user_names() -> None:
    with pytest.raises(ConfigError, match="not a valid user name"):
        StaticUserMap({"../x": {"uid": 1000}})


def test_passwd_map_uses_the_injected_lookups() -> None:
    entries = {"alice": SimpleNamespace(pw_name="alice", pw_uid=1002, pw_gid=1002,
                                        pw_dir="/home/alice", pw_shell="/bin/bash")}

    def getpwnam(name: str) -> SimpleNamespace:
        return entries[name]

    users = PasswdUserMap(getpwnam, lambda user, gid: ["alice", "ds"])
    assert users.lookup("alice") == ALICE
    with pytest.raises(NotFound, match="no such user: 'zed'"):
        users.lookup("zed")


def test_root_is_never_allowed() -> None:
    for identity in (UserIdentity("root", 0, 0, "/root"), UserIdentity("toor", 0, 5, "/"),
                     UserIdentity("x", 2000, 0, "/home/x")):
        with pytest.raises(RunAsRefused):
            check_run_as(identity, RunAsRules(min_uid=1))


def test_min_uid_and_allow_lists() -> None:
    assert check_run_as(ALICE, RunAsRules()) is ALICE
    with pytest.raises(RunAsRefused, match="below the minimum 1500"):
        check_run_as(ALICE, RunAsRules(min_uid=1500))
    assert check_run_as(ALICE, RunAsRules(allowed_users=frozenset({"alice"}))) is ALICE
    assert check_run_as(ALICE, RunAsRules(allowed_groups=frozenset({"ds"}))) is ALICE
    with pytest.raises(RunAsRefused, match="not allowed"):
        check_run_as(ALICE, RunAsRules(allowed_users=frozenset({"bob"}),
                                       allowed_groups=frozenset({"ops"})))


@pytest.mark.parametrize("min_uid", [0, -5, True, "1000"])
def test_min_uid_must_keep_root_out(min_uid: object) -> None:
    with pytest.raises(ConfigError, match="min_uid"):
        RunAsRules(min_uid=min_uid)  # type: ignore[arg-type]


def test_refusal_is_a_forbidden_failed_start() -> None:
    error = RunAsRefused("no")
    assert isinstance(error, Forbidden) and isinstance(error, KernelStartFailed)


def test_resolve_checks_the_name_then_the_rules() -> None:
    users = StaticUserMap({"alice": {"uid": 1002}, "svc": {"uid": 100}})
    assert users.resolve("alice", RunAsRules()).uid == 1002
    with pytest.raises(RunAsRefused, match="not a valid user name"):
        users.resolve("alice;id", RunAsRules())
    with pytest.raises(RunAsRefused, match="below the minimum"):
        users.resolve("svc", RunAsRules())


def test_user_map_from_config() -> None:
    assert isinstance(user_map_from_config("passwd", {}), PasswdUserMap)
    assert user_map_from_config("static", {"a": {"uid": 5000}}).lookup("a").uid == 5000
    with pytest.raises(ConfigError, match="'passwd' or 'static'"):
        user_map_from_config("ldap", {})

"""The launch policy's pure functions: env, kernelspec access, run-as, resources, ownership."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernelyard import policy
from kernelyard.errors import ConfigError, Forbidden, InvalidRequest, LimitReached, NotFound
from kernelyard.identity import Principal
from kernelyard.resources import Limit, parse_request

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


@pytest.mark.parametrize("path", ["a\x00.ipynb", "a\nb", "`x`", "x" * 4097, 5])
def test_paths_are_checked_like_env_values(path: object) -> None:
    with pytest.raises(InvalidRequest, match="'path'"):
        policy.check_api_path(path)


def test_a_path_may_hold_a_dollar() -> None:
    assert policy.check_api_path("cost$.ipynb") == "cost$.ipynb"


SESSION = {"path": "a.ipynb", "type": "notebook", "name": "a.ipynb",
           "kernel": {"name": "python3", "id": None}}


@pytest.mark.parametrize("body", [
    SESSION, {**SESSION, "name": None}, {**SESSION, "name": "cost$.ipynb"}, {"name": "b"},
    {"kernel": {}}, {"notebook": {"path": "a.ipynb"}}, {}])
def test_good_session_models_pass(body: dict[str, Any]) -> None:
    assert policy.check_session_model(body) is body


@pytest.mark.parametrize(("body", "field"), [
    (None, "body"), ([], "body"), ("x", "body"),
    ({**SESSION, "path": 5}, "'path'"), ({**SESSION, "path": None}, "'path'"),
    ({**SESSION, "path": "../a"}, "'path'"), ({**SESSION, "path": "a\x00"}, "'path'"),
    ({**SESSION, "type": []}, "'type'"), ({**SESSION, "type": None}, "'type'"),
    ({**SESSION, "name": 5}, "'name'"), ({**SESSION, "name": "a\x00"}, "'name'"),
    ({**SESSION, "name": "a\nb"}, "'name'"), ({**SESSION, "name": "x" * 4097}, "'name'"),
    ({**SESSION, "kernel": []}, "'kernel'"), ({**SESSION, "kernel": None}, "'kernel'"),
    ({**SESSION, "kernel": {"name": 5}}, "'kernel.name'"),
    ({**SESSION, "kernel": {"id": {}}}, "'kernel.id'"),
    ({**SESSION, "notebook": "x"}, "'notebook'"),
    ({"notebook": {"name": "a\x00"}}, "'notebook.name'"),
    ({"notebook": {"path": "../a"}}, "'notebook.path'")])
def test_bad_session_models_are_refused_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidRequest, match=field):
        policy.check_session_model(body)


@given(st.text(max_size=300))
def test_session_ids_are_printable_ascii_of_a_bounded_length(value: str) -> None:
    ok = len(value) <= 255 and all(" " <= c <= "~" for c in value)
    try:
        assert policy.check_session_id(value) == value and ok
    except InvalidRequest:
        assert not ok


def test_kernelspec_access_lists() -> None:
    own = {"kernelyard": {"authorized_users": ["alice"]}}
    eg = {"process_proxy": {"config": {"unauthorized_users": ["bob"]}}}
    assert policy.user_may_use_kernelspec("alice", own)
    assert not policy.user_may_use_kernelspec("bob", own)
    assert not policy.user_may_use_kernelspec("bob", eg)
    assert policy.user_may_use_kernelspec("carol", eg)
    assert not policy.user_may_use_kernelspec("carol", {}, authorized_users=["alice"])
    assert not policy.user_may_use_kernelspec("alice", own, unauthorized_users=["alice"])


# --- Kernelspec access --------------------------------------------------------------------

ALICE = Principal("alice", frozenset({"analysts"}))
BOB = Principal("bob", frozenset({"students"}))
CAROL = Principal("carol")
DAVE = Principal("dave", frozenset({"ops"}), admin=True)
ROOT = Principal("root", frozenset({"wheel"}))
ADMIN_ROOT = Principal("root", admin=True)
HUB = Principal("hub", via="jupyterhub", may_act_for_others=True)


def rules(**lists: Any) -> policy.AccessRules:
    return policy.AccessRules(**{k: frozenset(v) for k, v in lists.items()})


def decide(
    who: Principal,
    *,
    gateway: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    name: str = "py",
    **flags: Any,
) -> bool:
    access = policy.AccessPolicy(
        rules=rules(**(gateway or {})),
        kernelspec_rules={name: rules(**(config or {}))} if config is not None else {},
        **flags,
    )
    return policy.may_use_kernelspec(who, name, {"kernelyard": spec or {}}, access)


AU, UU = "authorized_users", "unauthorized_users"
AG, UG = "authorized_groups", "unauthorized_groups"

ACCESS_CASES: list[tuple[str, Principal, dict[str, Any], bool]] = [
    ("no lists admit everyone", CAROL, {}, True),
    ("no lists admit a grouped user", ALICE, {}, True),
    ("gateway user allow admits", ALICE, {"gateway": {AU: ["alice"]}}, True),
    ("gateway user allow refuses others", BOB, {"gateway": {AU: ["alice"]}}, False),
    ("gateway group allow admits members", ALICE, {"gateway": {AG: ["analysts"]}}, True),
    ("gateway group allow refuses others", BOB, {"gateway": {AG: ["analysts"]}}, False),
    ("gateway group allow refuses the groupless", CAROL, {"gateway": {AG: ["analysts"]}}, False),
    ("user or group allow: user", CAROL, {"gateway": {AU: ["carol"], AG: ["analysts"]}}, True),
    ("user or group allow: group", ALICE, {"gateway": {AU: ["carol"], AG: ["analysts"]}}, True),
    ("user or group allow: neither", BOB, {"gateway": {AU: ["carol"], AG: ["analysts"]}}, False),
    ("gateway user deny", ALICE, {"gateway": {UU: ["alice"]}}, False),
    ("gateway user deny spares others", BOB, {"gateway": {UU: ["alice"]}}, True),
    ("gateway group deny", BOB, {"gateway": {UG: ["students"]}}, False),
    ("gateway group deny spares others", ALICE, {"gateway": {UG: ["students"]}}, True),
    ("deny beats allow, same user", ALICE, {"gateway": {AU: ["alice"], UU: ["alice"]}}, False),
    ("group deny beats user allow", BOB, {"gateway": {AU: ["bob"], UG: ["students"]}}, False),
    ("user deny beats group allow", ALICE, {"gateway": {AG: ["analysts"], UU: ["alice"]}}, False),
    ("spec allow admits", BOB, {"spec": {AU: ["bob"]}}, True),
    ("spec allow refuses others", ALICE, {"spec": {AU: ["bob"]}}, False),
    ("spec allow replaces gateway allow (admits)", BOB,
     {"gateway": {AU: ["alice"]}, "spec": {AU: ["bob"]}}, True),
    ("spec allow replaces gateway allow (refuses)", ALICE,
     {"gateway": {AU: ["alice"]}, "spec": {AU: ["bob"]}}, False),
    ("spec group allow replaces gateway user allow", BOB,
     {"gateway": {AU: ["alice"]}, "spec": {AG: ["students"]}}, True),
    ("spec deny alone leaves the gateway allow list", CAROL,
     {"gateway": {AU: ["alice"]}, "spec": {UU: ["bob"]}}, False),
    ("gateway deny holds despite spec allow", BOB,
     {"gateway": {UU: ["bob"]}, "spec": {AU: ["bob"]}}, False),
    ("spec deny holds despite gateway allow", BOB,
     {"gateway": {AU: ["bob"]}, "spec": {UU: ["bob"]}}, False),
    ("spec group deny", ALICE, {"spec": {UG: ["analysts"]}}, False),
    ("config allow replaces spec allow (admits)", CAROL,
     {"spec": {AU: ["bob"]}, "config": {AU: ["carol"]}}, True),
    ("config allow replaces spec allow (refuses)", BOB,
     {"spec": {AU: ["bob"]}, "config": {AU: ["carol"]}}, False),
    ("config deny adds to spec allow", BOB,
     {"spec": {AU: ["bob"]}, "config": {UU: ["bob"]}}, False),
    ("config group deny", BOB, {"config": {UG: ["students"]}}, False),
    ("empty config rules leave spec allow", BOB, {"spec": {AU: ["bob"]}, "config": {}}, True),
    ("admin skips a gateway allow list", DAVE, {"gateway": {AU: ["alice"]}}, True),
    ("admin skips a spec allow list", DAVE, {"spec": {AG: ["analysts"]}}, True),
    ("admin denied by name", DAVE, {"gateway": {UU: ["dave"]}}, False),
    ("admin denied by group", DAVE, {"spec": {UG: ["ops"]}}, False),
    ("admin denied in config", DAVE, {"config": {UU: ["dave"]}}, False),
    ("admin follows allow lists when told", DAVE,
     {"gateway": {AU: ["alice"]}, "admins_bypass_allow_lists": False}, False),
    ("admin in allow list when told", DAVE,
     {"gateway": {AU: ["dave"]}, "admins_bypass_allow_lists": False}, True),
    ("root refused", ROOT, {}, False),
    ("root refused though allowed by name", ROOT, {"gateway": {AU: ["root"]}}, False),
    ("root refused though allowed by group", ROOT, {"spec": {AG: ["wheel"]}}, False),
    ("admin root refused", ADMIN_ROOT, {}, False),
    ("allow_root lifts the root rule", ROOT, {"allow_root": True}, True),
    ("allow_root keeps allow lists", ROOT, {"allow_root": True, "gateway": {AU: ["alice"]}}, False),
    ("allow_root keeps deny lists", ROOT, {"allow_root": True, "spec": {UU: ["root"]}}, False),
    ("allow_root, admin root", ADMIN_ROOT, {"allow_root": True}, True),
    ("a user called rooter is no root", Principal("rooter"), {}, True),
]


@pytest.mark.parametrize(("who", "setup", "expected"), [c[1:] for c in ACCESS_CASES],
                         ids=[c[0] for c in ACCESS_CASES])
def test_kernelspec_access_matrix(who: Principal, setup: dict[str, Any], expected: bool) -> None:
    assert decide(who, **setup) is expected


def test_config_rules_of_another_kernelspec_do_not_apply() -> None:
    access = policy.AccessPolicy(kernelspec_rules={"spark": rules(unauthorized_users=["bob"])})
    assert policy.may_use_kernelspec(BOB, "py", {}, access)
    assert not policy.may_use_kernelspec(BOB, "spark", {}, access)


@pytest.mark.parametrize("metadata", [
    {"process_proxy": {"config": {"authorized_users": ["alice"]}}},
    {"process_proxy": {"config": {"authorized_groups": ["analysts"]}}},
    {"kernelyard": {"authorized_users": "alice"}},  # one name for a list
])
def test_spec_metadata_forms(metadata: dict[str, Any]) -> None:
    access = policy.AccessPolicy()
    assert policy.may_use_kernelspec(ALICE, "py", metadata, access)
    assert not policy.may_use_kernelspec(BOB, "py", metadata, access)


def test_kernelyard_metadata_wins_over_process_proxy() -> None:
    metadata = {"kernelyard": {"authorized_users": ["bob"]},
                "process_proxy": {"config": {"authorized_users": ["alice"]}}}
    assert policy.may_use_kernelspec(BOB, "py", metadata, policy.AccessPolicy())
    assert not policy.may_use_kernelspec(ALICE, "py", metadata, policy.AccessPolicy())


@pytest.mark.parametrize("bad", [5, ["alice", 5], {"alice": True}, [None], True])
@pytest.mark.parametrize("key", [AU, UU, AG, UG])
def test_malformed_spec_lists_admit_no_one(key: str, bad: Any) -> None:
    metadata = {"kernelyard": {key: bad}}
    for who in (ALICE, CAROL, DAVE):
        assert not policy.may_use_kernelspec(who, "py", metadata, policy.AccessPolicy())
    assert not policy.user_may_use_kernelspec("alice", metadata)


def test_access_rules_from_config() -> None:
    got = policy.AccessRules.from_config({AU: ["a"], UG: "g"}, "kernelspec_access['py']")
    assert got == rules(authorized_users=["a"], unauthorized_groups=["g"])
    for bad in ({AU: 5}, {"authorised_users": ["a"]}, {AG: [1]}):
        with pytest.raises(ConfigError, match=r"kernelspec_access\['py'\]"):
            policy.AccessRules.from_config(bad, "kernelspec_access['py']")


def test_null_spec_lists_are_empty() -> None:
    assert policy.may_use_kernelspec(CAROL, "py", {"kernelyard": {AU: None}}, policy.AccessPolicy())


@pytest.mark.parametrize("metadata", [{}, {"kernelyard": "x"}, {"process_proxy": "x"},
                                      {"process_proxy": {"config": 3}}])
def test_odd_metadata_shapes_carry_no_lists(metadata: dict[str, Any]) -> None:
    assert policy.may_use_kernelspec(CAROL, "py", metadata, policy.AccessPolicy())


def test_check_kernelspec_access_names_user_and_kernelspec() -> None:
    access = policy.AccessPolicy(rules=rules(unauthorized_users=["bob"]))
    policy.check_kernelspec_access(ALICE, "spark", {}, access)
    with pytest.raises(Forbidden, match="bob may not use the kernelspec 'spark'"):
        policy.check_kernelspec_access(BOB, "spark", {}, access)


def test_kernelspecs_for_filters_every_listing_shape() -> None:
    from jupyter_client.kernelspec import KernelSpec

    only_bob = {"kernelyard": {"authorized_users": ["bob"]}}
    listing = {
        "open": {"resource_dir": "/k/open", "spec": {"argv": ["x"], "metadata": {}}},
        "bobs": {"resource_dir": "/k/bobs", "spec": {"argv": ["x"], "metadata": only_bob}},
        "json": {"argv": ["x"], "metadata": only_bob},
        "object": KernelSpec(argv=["x"], display_name="o", metadata=only_bob),
        "bare": {"spec": None},
    }
    access = policy.AccessPolicy()
    assert list(policy.kernelspecs_for(ALICE, listing, access)) == ["open", "bare"]
    assert list(policy.kernelspecs_for(BOB, listing, access)) == list(listing)
    assert policy.kernelspecs_for(ROOT, listing, access) == {}


def test_legacy_form_keeps_its_behaviour_and_takes_groups() -> None:
    assert policy.user_may_use_kernelspec("root", {})  # no root rule in this form
    groups_only = {"kernelyard": {"authorized_groups": ["analysts"]}}
    assert policy.user_may_use_kernelspec("alice", groups_only, groups=["analysts"])
    assert not policy.user_may_use_kernelspec("alice", groups_only)
    assert not policy.user_may_use_kernelspec(
        "alice", {}, groups=["analysts"], unauthorized_groups=["analysts"])
    assert policy.user_may_use_kernelspec("bob", {}, authorized_groups=["students"],
                                          groups=["students"])
    assert policy.user_may_use_kernelspec("alice", {"kernelyard": {AU: "alice"}})
    assert not policy.user_may_use_kernelspec("a", {"kernelyard": {AU: "alice"}})


USERS = st.sampled_from(["alice", "bob", "root"])
GROUPS = st.sampled_from(["g1", "g2", "wheel"])
RULES = st.builds(
    policy.AccessRules,
    authorized_users=st.frozensets(USERS), unauthorized_users=st.frozensets(USERS),
    authorized_groups=st.frozensets(GROUPS), unauthorized_groups=st.frozensets(GROUPS),
)
PRINCIPALS = st.builds(Principal, name=USERS, groups=st.frozensets(GROUPS), admin=st.booleans())


def _as_metadata(r: policy.AccessRules) -> dict[str, Any]:
    return {"kernelyard": {k: sorted(getattr(r, k)) for k in (AU, UU, AG, UG)}}


@given(PRINCIPALS, RULES, RULES, RULES, st.booleans(), st.booleans())
def test_access_properties(who: Principal, gateway: policy.AccessRules, own: policy.AccessRules,
                           config: policy.AccessRules, allow_root: bool, bypass: bool) -> None:
    access = policy.AccessPolicy(rules=gateway, kernelspec_rules={"k": config},
                                 allow_root=allow_root, admins_bypass_allow_lists=bypass)
    result = policy.may_use_kernelspec(who, "k", _as_metadata(own), access)
    denied = any(level.denies(who) for level in (gateway, own, config))
    if denied or (who.name == "root" and not allow_root):
        assert result is False
    elif who.admin and bypass:
        assert result is True
    elif not any(level.has_allow_list for level in (gateway, own, config)):
        assert result is True
    # Adding the user to any deny list never grants access.
    stricter = policy.AccessPolicy(
        rules=policy.AccessRules(gateway.authorized_users, gateway.unauthorized_users | {who.name},
                                 gateway.authorized_groups, gateway.unauthorized_groups),
        kernelspec_rules={"k": config}, allow_root=allow_root, admins_bypass_allow_lists=bypass)
    assert policy.may_use_kernelspec(who, "k", _as_metadata(own), stricter) is False


# --- KERNEL_USERNAME ----------------------------------------------------------------------

@pytest.mark.parametrize("requested", [None, "", "alice"])
def test_own_name_or_nothing_runs_as_the_caller(requested: str | None) -> None:
    assert policy.effective_username(ALICE, requested) == "alice"


@pytest.mark.parametrize("who", [ALICE, DAVE])  # admins do not act for others either
def test_another_name_is_forbidden_and_names_the_variable(who: Principal) -> None:
    with pytest.raises(Forbidden, match="KERNEL_USERNAME 'bob'"):
        policy.effective_username(who, "bob")


@pytest.mark.parametrize("requested", ["bob", "root", "a" * 32, "_svc", "john.smith", "x-1",
                                       "Bob"])
def test_a_service_may_act_for_any_valid_name(requested: str) -> None:
    assert policy.effective_username(HUB, requested) == requested.lower()  # canonical
    assert policy.effective_username(HUB, None) == "hub"


JUNK_NAMES = ["../etc", "a/b", "a\\b", "a b", " alice", "alice\n", "-x", ".x", "..", "1abc",
              "a" * 33, "ali$ce", "al@ice", "al:ice", "é", "ali\x00ce", "a;b", "`id`", 5,
              ["alice"], {"name": "alice"}, True]


@pytest.mark.parametrize("who", [ALICE, HUB])
@pytest.mark.parametrize("junk", JUNK_NAMES)
def test_junk_names_are_invalid_requests(who: Principal, junk: Any) -> None:
    with pytest.raises(InvalidRequest, match="KERNEL_USERNAME"):
        policy.effective_username(who, junk)


def test_a_caller_whose_own_name_is_not_a_user_name_is_refused() -> None:
    with pytest.raises(Forbidden, match=r"alice@example\.com"):  # in canonical case
        policy.effective_username(Principal("alice@EXAMPLE.COM"), None)


@given(st.text(max_size=40))
def test_effective_username_is_a_safe_name_or_an_error(requested: str) -> None:
    try:
        name = policy.effective_username(HUB, requested)
    except (InvalidRequest, Forbidden):
        return
    assert policy.is_valid_username(name) and "/" not in name and len(name) <= 32


def test_launch_subject() -> None:
    assert policy.launch_subject(DAVE, "dave") is DAVE
    bob = policy.launch_subject(HUB, "bob", ["students"])
    assert bob == Principal("bob", frozenset({"students"}), via="jupyterhub")
    assert not bob.admin and not bob.may_act_for_others
    assert not policy.launch_subject(Principal("svc", admin=True, may_act_for_others=True),
                                     "bob").admin


# --- Resource limits ----------------------------------------------------------------------

# The grammar's golden tables are tests/unit/test_resources.py's (kernelyard.resources).


def check(who: Principal, env: dict[str, Any], limits: Any) -> None:
    """The group level, as ``authorize`` applies it: the request parsed once, then limited."""
    policy.check_resources(who, parse_request(env), limits)


LIMITS: dict[str, dict[str, Any]] = {
    "*": {"KERNEL_DRIVER_MEMORY": "2g", "KERNEL_NUM_EXECUTORS": 2, "KERNEL_GPUS": "0"},
    "analysts": {"KERNEL_DRIVER_MEMORY": "8g", "KERNEL_NUM_EXECUTORS": "10"},
    "students": {"KERNEL_DRIVER_MEMORY": "1g"},
    "gpu": {"KERNEL_GPUS": 2, "KERNEL_EXECUTOR_MEMORY": 4096},
}
GPU_ANALYST = Principal("erin", frozenset({"analysts", "gpu"}))

RESOURCE_CASES: list[tuple[Principal, str, str, bool]] = [
    (CAROL, "KERNEL_DRIVER_MEMORY", "2g", True),
    (CAROL, "KERNEL_DRIVER_MEMORY", "2048m", True),
    (CAROL, "KERNEL_DRIVER_MEMORY", "2049m", False),
    (CAROL, "KERNEL_DRIVER_MEMORY", "2.5g", False),
    (CAROL, "KERNEL_DRIVER_MEMORY", "2097153k", False),  # 1 KiB over
    (CAROL, "KERNEL_DRIVER_MEMORY", "2097152k", True),
    (CAROL, "KERNEL_NUM_EXECUTORS", "2", True),
    (CAROL, "KERNEL_NUM_EXECUTORS", "3", False),
    (CAROL, "KERNEL_GPUS", "0", True),
    (CAROL, "KERNEL_GPUS", "1", False),
    (CAROL, "KERNEL_EXECUTOR_MEMORY", "64g", True),  # only group gpu limits it
    (BOB, "KERNEL_DRIVER_MEMORY", "2g", True),  # '*' (2g) is more generous than students (1g)
    (BOB, "KERNEL_DRIVER_MEMORY", "2049m", False),
    (ALICE, "KERNEL_DRIVER_MEMORY", "8g", True),
    (ALICE, "KERNEL_DRIVER_MEMORY", "8193m", False),
    (ALICE, "KERNEL_NUM_EXECUTORS", "10", True),
    (ALICE, "KERNEL_NUM_EXECUTORS", "11", False),
    (ALICE, "KERNEL_GPUS", "1", False),
    (GPU_ANALYST, "KERNEL_GPUS", "2", True),
    (GPU_ANALYST, "KERNEL_GPUS", "3", False),
    (GPU_ANALYST, "KERNEL_EXECUTOR_MEMORY", "4g", True),
    (GPU_ANALYST, "KERNEL_EXECUTOR_MEMORY", "4097m", False),
    (GPU_ANALYST, "KERNEL_DRIVER_MEMORY", "8g", True),
    (DAVE, "KERNEL_DRIVER_MEMORY", "3g", False),  # admins follow the same limits
    (CAROL, "KERNEL_OTHER_MEMORY", "junk", True),  # not a limited variable
]


@pytest.mark.parametrize(("who", "name", "value", "ok"), RESOURCE_CASES)
def test_resource_limits_matrix(who: Principal, name: str, value: str, ok: bool) -> None:
    if ok:
        check(who, {name: value}, LIMITS)
    else:
        with pytest.raises(LimitReached, match=f"{name}={value} is more than {who.name}"):
            check(who, {name: value}, LIMITS)


def test_resource_message_names_limit_and_group() -> None:
    with pytest.raises(LimitReached, match=r"\(8g, the limit of group 'analysts'\)"):
        check(ALICE, {"KERNEL_DRIVER_MEMORY": "9g"}, LIMITS)
    with pytest.raises(LimitReached, match=r"\(2g, the limit of group '\*'\)"):
        check(CAROL, {"KERNEL_MEMORY": "9g"}, LIMITS)  # either spelling of the kernel's memory


@pytest.mark.parametrize(("name", "junk"), [
    ("KERNEL_DRIVER_MEMORY", "lots"), ("KERNEL_DRIVER_MEMORY", "-1g"), ("KERNEL_MEMORY", "1 g"),
    ("KERNEL_NUM_EXECUTORS", "1.5"), ("KERNEL_NUM_EXECUTORS", "-1"), ("KERNEL_NUM_EXECUTORS", "x"),
    ("KERNEL_NUM_EXECUTORS", "+2"), ("KERNEL_GPUS", "\u0661"),
    ("KERNEL_EXECUTOR_MEMORY", "4 g"),  # limited for group gpu only: junk is junk for everyone
    ("KERNEL_EXECUTOR_CORES", "x"),  # limited by no group: parsed once, junk all the same
])
def test_junk_resource_values_name_the_variable(name: str, junk: Any) -> None:
    with pytest.raises(InvalidRequest, match=name):
        check(CAROL, {name: junk}, LIMITS)


def test_no_limits_allow_anything() -> None:
    check(CAROL, {"KERNEL_DRIVER_MEMORY": "1000t"}, {})
    check(CAROL, {"KERNEL_DRIVER_MEMORY": "1000t"}, {"gpu": {"KERNEL_GPUS": 1}})
    check(CAROL, {}, LIMITS)


def test_equal_limits_are_credited_deterministically() -> None:
    limits = {"b": {"KERNEL_CPUS": 4}, "a": {"KERNEL_CPUS": "4"}}
    got = policy.resource_limits_for(Principal("x", frozenset({"a", "b"})), limits)
    assert got == {"cpus": Limit("cpus", "4", 4, "the limit of group 'a'")}


@pytest.mark.parametrize("limits", [
    {"g": {"KERNEL_DRIVER_MEMORY": "lots"}}, {"g": {"KERNEL_CPUS": -1}},
    {"g": {"KERNEL_CPUS": True}}, {"g": {"KERNEL_CPUS": 1.5}}, {"g": ["KERNEL_CPUS"]},
    {"g": {"KERNEL_DRIVER_MEMORY": -5}}, {"g": {"KERNEL_OTHER_MEMORY": "1g"}},
])
def test_malformed_limits_are_config_errors_naming_the_group(limits: Any) -> None:
    with pytest.raises(ConfigError, match="'g'"):
        policy.validate_resource_limits(limits)
    with pytest.raises(ConfigError):
        check(CAROL, {}, limits)


# --- Ownership and env visibility ---------------------------------------------------------

@pytest.mark.parametrize(("who", "owner", "ok"), [
    (ALICE, "alice", True), (ALICE, "bob", False), (BOB, "alice", False),
    (DAVE, "alice", True), (DAVE, None, True), (DAVE, "", True),
    (ALICE, None, False), (ALICE, "", False), (HUB, "bob", False),
    (Principal(""), "", False), (Principal(""), None, False),
])
def test_kernel_ownership(who: Principal, owner: str | None, ok: bool) -> None:
    assert policy.may_access_kernel(who, owner) is ok
    if ok:
        policy.check_kernel_access(who, "k1", owner)
    else:
        with pytest.raises(NotFound, match=r"^no such kernel: k1$"):
            policy.check_kernel_access(who, "k1", owner)


def test_visible_kernels_from_models_records_and_a_key() -> None:
    from kernelyard.store import KernelRecord

    models = [{"id": "1", "owner": "alice"}, {"id": "2", "owner": "bob"}, {"id": "3"},
              {"id": "4", "owner": "alice"}]
    assert [m["id"] for m in policy.visible_kernels(ALICE, models)] == ["1", "4"]
    assert [m["id"] for m in policy.visible_kernels(DAVE, models)] == ["1", "2", "3", "4"]
    assert policy.visible_kernels(CAROL, models) == []
    records = [KernelRecord("1", "py", "local", owner="bob"), KernelRecord("2", "py", "local")]
    assert [r.kernel_id for r in policy.visible_kernels(BOB, records)] == ["1"]
    pairs = [("k1", "alice"), ("k2", "bob")]
    assert policy.visible_kernels(BOB, pairs, owner=lambda p: p[1]) == [("k2", "bob")]


ENV = {"KERNEL_USERNAME": "alice", "SPARK_HOME": "/opt/spark", "KERNEL_API_TOKEN": "t",
       "aws_secret_access_key": "s", "DB_PASSWORD": "p", "db_passwd": "p", "SSH_KEY": "k",
       "KEYTAB": "k", "GOOGLE_APPLICATION_CREDENTIALS": "/c", "JUPYTERHUB_API_TOKEN": "h",
       "MY_VAR": "m"}
SHOWN = {"KERNEL_USERNAME", "SPARK_HOME", "MY_VAR"}


def test_the_owner_sees_the_env_with_sensitive_values_redacted() -> None:
    seen = policy.redact_env_for(ALICE, "alice", ENV)
    assert seen.keys() == ENV.keys()
    for name, value in seen.items():
        assert value == (ENV[name] if name in SHOWN else policy.REDACTED), name


def test_named_secrets_are_redacted_too() -> None:
    seen = policy.redact_env_for(ALICE, "alice", ENV, secret_names=["MY_VAR"])
    assert seen["MY_VAR"] == policy.REDACTED and seen["SPARK_HOME"] == "/opt/spark"


@pytest.mark.parametrize(("viewer", "owner", "env"), [
    (BOB, "alice", ENV), (DAVE, "alice", ENV), (HUB, "alice", ENV), (ALICE, None, ENV),
    (ALICE, "", ENV), (ALICE, "alice", None), (ALICE, "alice", {}),
])
def test_nobody_else_sees_an_env(viewer: Principal, owner: str | None, env: Any) -> None:
    assert policy.redact_env_for(viewer, owner, env) == {}


# --- authorize ----------------------------------------------------------------------------

SETTINGS = policy.LaunchPolicy(
    access=policy.AccessPolicy(rules=rules(authorized_groups=["analysts", "students"])),
    resource_limits=LIMITS,
)


def launch(env: dict[str, str]) -> policy.LaunchRequest:
    return policy.LaunchRequest(kernel_name="py", path=None, env=env, kernel_id=None)


def test_authorize_runs_the_caller_as_itself() -> None:
    plan = policy.authorize(ALICE, launch({"KERNEL_DRIVER_MEMORY": "4g"}), "py", {}, SETTINGS)
    assert plan == policy.LaunchPlan(ALICE, "alice", "py",
                                     {"KERNEL_DRIVER_MEMORY": "4g", "KERNEL_USERNAME": "alice"},
                                     parse_request({"KERNEL_DRIVER_MEMORY": "4g"}))
    assert plan.resources.memory == 4096
    secret = policy.authorize(ALICE, launch({"KERNEL_API_TOKEN": "s3cret"}), "py", {}, SETTINGS)
    assert "s3cret" not in repr(secret) and "s3cret" not in str(secret)  # plans get logged


def test_authorize_a_service_acting_for_a_user_applies_that_users_rules() -> None:
    plan = policy.authorize(HUB, launch({"KERNEL_USERNAME": "bob"}), "py", {}, SETTINGS,
                            run_as_groups=["students"])
    assert plan.run_as == "bob" and plan.subject.groups == {"students"}
    with pytest.raises(Forbidden, match="bob may not use"):  # bob's groups unknown
        policy.authorize(HUB, launch({"KERNEL_USERNAME": "bob"}), "py", {}, SETTINGS)
    with pytest.raises(LimitReached, match="KERNEL_DRIVER_MEMORY"):
        policy.authorize(HUB, launch({"KERNEL_USERNAME": "bob", "KERNEL_DRIVER_MEMORY": "4g"}),
                         "py", {}, SETTINGS, run_as_groups=["students"])


@pytest.mark.parametrize(("who", "env", "error"), [
    (ALICE, {"KERNEL_USERNAME": "bob"}, Forbidden),
    (ALICE, {"KERNEL_USERNAME": "../x"}, InvalidRequest),
    (CAROL, {}, Forbidden),
    (ALICE, {"KERNEL_DRIVER_MEMORY": "9g"}, LimitReached),
    (ALICE, {"KERNEL_DRIVER_MEMORY": "nine"}, InvalidRequest),
    (HUB, {"KERNEL_USERNAME": "root"}, Forbidden),
])
def test_authorize_refusals(who: Principal, env: dict[str, str], error: type) -> None:
    with pytest.raises(error):
        policy.authorize(who, launch(env), "py", {}, SETTINGS, run_as_groups=["analysts"])


# --- Issue 10: one check for client text (item 10) -----------------------------------------

REFUSED = st.characters(categories=["Cc", "Cs", "Zl", "Zp"])
ALLOWED = st.characters(exclude_categories=["Cc", "Cs", "Zl", "Zp"], exclude_characters="$`")


@given(st.text(ALLOWED, max_size=20), REFUSED, st.text(ALLOWED, max_size=20))
def test_a_refused_character_anywhere_is_a_400_naming_the_variable(
        before: str, bad: str, after: str) -> None:
    value = before + bad + after
    with pytest.raises(InvalidRequest, match="KERNEL_X") as error:
        policy.filter_client_env({"KERNEL_X": value}, P)
    assert f"U+{ord(bad):04X}" in error.value.message
    with pytest.raises(InvalidRequest, match="'path'"):
        policy.check_text("path", value)


@given(st.text(ALLOWED, max_size=50))
def test_other_text_passes_unchanged(value: str) -> None:
    assert policy.check_env_value("KERNEL_X", value) == value
    assert policy.check_text("name", value) == value
    assert policy.unsafe_character(value) is None


@pytest.mark.parametrize("value", ["\ud800", "a\udfff", "\x85", "\x9b[31m", "\u2028",
                                   "\u2029", "\x7f", "\x00", "\r"])
def test_the_values_of_the_review_are_refused(value: str) -> None:
    with pytest.raises(InvalidRequest, match="KERNEL_X"):
        policy.check_env_value("KERNEL_X", value)


@pytest.mark.parametrize("name", ["KERNEL_Y\n", "KERNEL_Y\r", "KERNEL_\u2028", "KERNEL_\ud800",
                                  "KERNEL_É", "\nKERNEL_Y", 5])
def test_env_names_must_match_in_full(name: Any) -> None:
    with pytest.raises(InvalidRequest, match="env variable name"):
        policy.filter_client_env({name: "v"}, P)


@given(st.text(max_size=12))
def test_an_accepted_name_is_an_ascii_identifier(name: str) -> None:
    try:
        policy.check_env_name(name)
    except InvalidRequest:
        return
    assert name.isascii() and name.isidentifier() and "\n" not in name


def test_spark_conf_values_share_the_check() -> None:
    from kernelyard.provisioners import spark_submit

    for bad in ("\\ud800", "\\u2028", "\\u0085"):
        with pytest.raises(InvalidRequest, match="control characters"):
            spark_submit.check(parse_request(
                {"KERNEL_SPARK_CONF": '{"spark.sql.x": "a' + bad + 'b"}'}))


# --- Issue 10: an allow-listed kernel env (item 3) -----------------------------------------

def test_the_base_set_is_all_a_local_kernel_takes_from_the_gateway() -> None:
    gateway = {"PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_TIME": "C", "TZ": "UTC",
               "KERNELYARD_PROXY_SECRET": "p", "KERNELYARD_STORE_KEY": "k",
               "AWS_SECRET_ACCESS_KEY": "a", "GITHUB_TOKEN": "g", "FOO": "f",
               "PYTHONPATH": "/x", "LD_PRELOAD": "/evil.so"}
    assert policy.base_env(gateway) == {"PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8",
                                        "LC_TIME": "C", "TZ": "UTC"}


@pytest.mark.parametrize("name", ["KERNELYARD_PROXY_SECRET", "KERNELYARD_STORE_KEY",
                                  "KERNELYARD_AUTH_TOKEN", "KERNELYARD_ANYTHING", "JUPYTER_TOKEN"])
def test_gateway_secrets_are_never_inherited_nor_set_by_a_client(name: str) -> None:
    env_policy = policy.EnvPolicy(client_envs=("*",), inherited_envs=(name, "HOME"))
    assert policy.is_gateway_secret(name)
    assert policy.inherited_env({name: "s", "HOME": "/h"}, env_policy) == {"HOME": "/h"}
    assert policy.filter_client_env({name: "s", "OTHER": "o"}, env_policy) == {"OTHER": "o"}
    assert policy.scrub_secrets({name: "s", "JAVA_HOME": "/j"}, ()) == {"JAVA_HOME": "/j"}


# --- Issue 10: canonical names before policy (item 4) ---------------------------------------

LISTED = ["python3", "symspec", "spark_yarn"]


@pytest.mark.parametrize(("requested", "canonical"), [
    ("python3", "python3"), ("PYTHON3", "python3"), ("SymSpec", "symspec"),
    ("Spark_YARN", "spark_yarn"), ("python", None), ("symspec ", None), ("", None)])
def test_a_kernelspec_name_resolves_to_the_listed_one(requested: str,
                                                      canonical: str | None) -> None:
    assert policy.canonical_kernelspec_name(requested, LISTED) == canonical


@given(st.text(max_size=12))
def test_a_resolved_kernelspec_name_is_listed_and_equal_but_for_case(requested: str) -> None:
    canonical = policy.canonical_kernelspec_name(requested, LISTED)
    assert canonical is None or (canonical in LISTED
                                 and canonical.lower() == requested.lower())


def test_rules_keyed_by_the_canonical_name_catch_every_spelling() -> None:
    access = policy.AccessPolicy(kernelspec_rules={
        "symspec": policy.AccessRules(authorized_users=frozenset({"alice"}))})
    bob = Principal("bob")
    for spelling in ("SYMSPEC", "SymSpec", "symspec"):
        name = policy.canonical_kernelspec_name(spelling, LISTED)
        assert name == "symspec"
        with pytest.raises(Forbidden):
            policy.check_kernelspec_access(bob, name, {}, access)
        quota = policy.QuotaPolicy(kernelspec_max_kernels={"symspec": 1})
        with pytest.raises(LimitReached):
            policy.check_quota(quota, ALICE, name, policy.KernelCounts.of([("x", "symspec")]))


@pytest.mark.parametrize("spelling", ["Alice", "ALICE", "alice"])
def test_user_names_are_canonical_everywhere(spelling: str) -> None:
    who = Principal(spelling)
    assert who.name == "alice"
    denied = policy.AccessRules(unauthorized_users=frozenset({"ALICE"}))
    assert denied.denies(who) and denied.denies(Principal("alice"))
    assert policy.AccessRules(authorized_users=frozenset({"Alice"})).allows(who)
    quota = policy.QuotaPolicy(user_max_kernels={"Alice": 1})
    assert quota.user_limit(Principal("alice"))[0] == 1
    assert policy.effective_username(Principal("alice"), spelling) == "alice"
    assert policy.may_access_kernel(who, "Alice") and policy.may_access_kernel(who, "alice")
    assert not policy.may_access_kernel(Principal("bob"), spelling)


def test_two_spellings_of_a_user_with_different_limits_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'alice' twice"):
        policy.QuotaPolicy(user_max_kernels={"Alice": 1, "alice": 2})


def test_no_name_validator_accepts_a_trailing_newline() -> None:
    """Every '^...$' check matches in full: '$' alone matches before a final newline."""
    import argparse

    from kernelyard import launcher
    from kernelyard.auth.spnego import principal_to_user
    from kernelyard.errors import Unauthorized

    with pytest.raises(Unauthorized):
        principal_to_user("alice\n@EXAMPLE.COM", {"EXAMPLE.COM"})
    with pytest.raises(argparse.ArgumentTypeError):
        launcher._kernel_id_arg("k1\n")
    with pytest.raises(argparse.ArgumentTypeError):
        launcher._spark_conf_arg("spark.a\n=1")
    for env in ({"KERNEL_SPARK_CONF": '{"spark.sql.x\\n": "1"}'}, {"KERNEL_QUEUE": "default\n"}):
        with pytest.raises(InvalidRequest):
            parse_request(env)


def test_settings_keyed_by_kernelspec_are_rekeyed_by_the_listed_name() -> None:
    table = {"Python3": 1, "SymSpec": 2, "symspec": 3, "not_installed": 4}
    out, renamed = policy.by_canonical_kernelspec(table, LISTED)
    assert out == {"python3": 1, "symspec": 3, "not_installed": 4}
    assert renamed == [("Python3", "python3"), ("SymSpec", "symspec")]

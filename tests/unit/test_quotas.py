"""Kernel quotas: the pure check at every boundary, and the gate under concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernelyard.errors import ConfigError, LimitReached
from kernelyard.identity import Principal
from kernelyard.policy import KernelCounts, QuotaPolicy, check_quota
from kernelyard.quotas import QuotaGate

ALICE = Principal("alice", frozenset({"analysts"}))
BOB = Principal("bob", frozenset({"students", "analysts"}))
CAROL = Principal("carol")
ADMIN = Principal("dave", admin=True)


def counts(total: int = 0, users: dict[str, int] | None = None,
           specs: dict[str, int] | None = None) -> KernelCounts:
    return KernelCounts(total, users or {}, specs or {})


# --- QuotaPolicy and KernelCounts ---------------------------------------------------------

@pytest.mark.parametrize("bad", [-1, 1.5, "2", True, [1]])
@pytest.mark.parametrize(("field", "table"), [
    ("max_kernels", False), ("max_kernels_per_user", False), ("user_max_kernels", True),
    ("group_max_kernels_per_user", True), ("kernelspec_max_kernels", True),
])
def test_malformed_limits_are_config_errors_naming_the_setting(field: str, table: bool,
                                                               bad: Any) -> None:
    with pytest.raises(ConfigError, match=field):
        QuotaPolicy(**{field: {"x": bad} if table else bad})


def test_counts_of_owner_and_kernelspec_pairs() -> None:
    got = KernelCounts.of([("alice", "py"), ("alice", "spark"), ("bob", "py"), ("", "py"),
                           (None, None)])
    assert got == KernelCounts(5, {"alice": 2, "bob": 1}, {"py": 3, "spark": 1})
    assert KernelCounts.of([]) == KernelCounts()


def test_counts_add_up() -> None:
    a = KernelCounts(2, {"alice": 2}, {"py": 2})
    b = KernelCounts(1, {"alice": 1, "bob": 0}, {"r": 1})
    assert a + b == KernelCounts(3, {"alice": 3, "bob": 0}, {"py": 2, "r": 1})


# --- check_quota: boundaries --------------------------------------------------------------

LIMIT_CASES: list[tuple[str, QuotaPolicy, Principal, str, Any, str]] = [
    # id, policy, who, kernelspec, counts at the limit (function of n), message
    ("global", QuotaPolicy(max_kernels=3), CAROL, "py",
     lambda n: counts(n), "the gateway already has {n} kernels, its limit (3)"),
    ("per-user default", QuotaPolicy(max_kernels_per_user=3), CAROL, "py",
     lambda n: counts(n, {"carol": n}), "carol already has {n} kernels, the per-user limit (3)"),
    ("per named user", QuotaPolicy(max_kernels_per_user=1, user_max_kernels={"carol": 3}), CAROL,
     "py", lambda n: counts(n, {"carol": n}),
     "carol already has {n} kernels, the limit set for carol (3)"),
    ("per user of a group", QuotaPolicy(group_max_kernels_per_user={"analysts": 3}), ALICE, "py",
     lambda n: counts(n, {"alice": n}),
     "alice already has {n} kernels, the per-user limit of group 'analysts' (3)"),
    ("per kernelspec", QuotaPolicy(kernelspec_max_kernels={"spark": 3}), CAROL, "spark",
     lambda n: counts(n, {}, {"spark": n}),
     "the kernelspec 'spark' already has {n} kernels, its limit (3)"),
]


@pytest.mark.parametrize(("quota", "who", "spec", "at", "message"),
                         [c[1:] for c in LIMIT_CASES], ids=[c[0] for c in LIMIT_CASES])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 10])
def test_limit_boundaries(quota: QuotaPolicy, who: Principal, spec: str, at: Any, message: str,
                          n: int) -> None:
    if n < 3:
        check_quota(quota, who, spec, at(n))
    else:
        with pytest.raises(LimitReached) as raised:
            check_quota(quota, who, spec, at(n))
        assert raised.value.message == message.format(n=n)


def test_one_kernel_is_singular() -> None:
    with pytest.raises(LimitReached, match=r"^alice already has 1 kernel, the per-user limit"):
        check_quota(QuotaPolicy(max_kernels_per_user=1), ALICE, "py", counts(1, {"alice": 1}))


@pytest.mark.parametrize("quota", [
    QuotaPolicy(max_kernels=0), QuotaPolicy(max_kernels_per_user=0),
    QuotaPolicy(user_max_kernels={"alice": 0}),
    QuotaPolicy(group_max_kernels_per_user={"analysts": 0}),
    QuotaPolicy(kernelspec_max_kernels={"py": 0}),
])
def test_zero_means_no_kernels(quota: QuotaPolicy) -> None:
    with pytest.raises(LimitReached, match="already has 0 kernels"):
        check_quota(quota, ALICE, "py", counts())


def test_no_limits_mean_no_limits() -> None:
    huge = counts(10**6, {"alice": 10**6}, {"py": 10**6})
    check_quota(QuotaPolicy(), ALICE, "py", huge)
    check_quota(QuotaPolicy(user_max_kernels={"alice": None}, max_kernels_per_user=1),
                ALICE, "py", huge)


def test_the_per_user_limit_counts_only_that_user() -> None:
    quota = QuotaPolicy(max_kernels_per_user=1)
    busy = counts(5, {"bob": 4, "carol": 1})
    check_quota(quota, ALICE, "py", busy)
    with pytest.raises(LimitReached, match=r"^bob"):
        check_quota(quota, BOB, "py", busy)


def test_the_kernelspec_limit_counts_only_that_kernelspec() -> None:
    quota = QuotaPolicy(kernelspec_max_kernels={"spark": 1})
    check_quota(quota, ALICE, "py", counts(5, {}, {"py": 5}))
    check_quota(quota, ALICE, "r", counts(5, {}, {"spark": 5}))
    with pytest.raises(LimitReached, match="'spark'"):
        check_quota(quota, ALICE, "spark", counts(1, {}, {"spark": 1}))


@pytest.mark.parametrize(("quota", "who", "limit_of"), [
    # a named user's limit beats groups and the default, in both directions
    (QuotaPolicy(user_max_kernels={"bob": 5}, group_max_kernels_per_user={"students": 1},
                 max_kernels_per_user=1), BOB, 5),
    (QuotaPolicy(user_max_kernels={"bob": 1}, group_max_kernels_per_user={"students": 5},
                 max_kernels_per_user=5), BOB, 1),
    (QuotaPolicy(user_max_kernels={"bob": None}, max_kernels_per_user=1), BOB, None),
    # a group's limit beats the default, in both directions
    (QuotaPolicy(group_max_kernels_per_user={"students": 5}, max_kernels_per_user=1), BOB, 5),
    (QuotaPolicy(group_max_kernels_per_user={"students": 1}, max_kernels_per_user=5), BOB, 1),
    # the most generous of the user's groups
    (QuotaPolicy(group_max_kernels_per_user={"students": 1, "analysts": 4}), BOB, 4),
    (QuotaPolicy(group_max_kernels_per_user={"students": 4, "analysts": 1}), BOB, 4),
    (QuotaPolicy(group_max_kernels_per_user={"students": None, "analysts": 1}), BOB, None),
    (QuotaPolicy(group_max_kernels_per_user={"students": 0, "analysts": 2}), BOB, 2),
    # groups the user is not in do not count
    (QuotaPolicy(group_max_kernels_per_user={"ops": 9}, max_kernels_per_user=2), BOB, 2),
    # admins have no exemption
    (QuotaPolicy(max_kernels_per_user=2), ADMIN, 2),
])
def test_which_per_user_limit_applies(quota: QuotaPolicy, who: Principal,
                                      limit_of: int | None) -> None:
    assert quota.user_limit(who)[0] == limit_of
    if limit_of is None:
        check_quota(quota, who, "py", counts(100, {who.name: 100}))
        return
    if limit_of:
        check_quota(quota, who, "py", counts(limit_of - 1, {who.name: limit_of - 1}))
    with pytest.raises(LimitReached, match=f"^{who.name} already has {limit_of} kernel"):
        check_quota(quota, who, "py", counts(limit_of, {who.name: limit_of}))


def test_the_users_own_limit_is_reported_first() -> None:
    quota = QuotaPolicy(max_kernels=1, max_kernels_per_user=1, kernelspec_max_kernels={"py": 1})
    at_all = counts(1, {"alice": 1}, {"py": 1})
    with pytest.raises(LimitReached, match=r"^alice"):
        check_quota(quota, ALICE, "py", at_all)
    with pytest.raises(LimitReached, match=r"^the kernelspec"):
        check_quota(quota, BOB, "py", at_all)
    with pytest.raises(LimitReached, match=r"^the gateway"):
        check_quota(quota, BOB, "r", at_all)


@given(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20), st.integers(0, 20))
def test_refused_exactly_at_or_over_a_limit(limit: int, total: int, mine: int, spec: int) -> None:
    quota = QuotaPolicy(max_kernels=limit, max_kernels_per_user=limit,
                        kernelspec_max_kernels={"py": limit})
    try:
        check_quota(quota, ALICE, "py", counts(total, {"alice": mine}, {"py": spec}))
    except LimitReached:
        assert max(total, mine, spec) >= limit
    else:
        assert max(total, mine, spec) < limit


# --- QuotaGate ----------------------------------------------------------------------------

class FakeStore:
    """Kernels that exist, counted by a coroutine that yields to other tasks."""

    def __init__(self) -> None:
        self.kernels: list[tuple[str, str]] = []

    async def count(self) -> KernelCounts:
        snapshot = KernelCounts.of(self.kernels)  # read now, answered later, like a database
        await asyncio.sleep(0.002)
        return snapshot

    async def start(self, who: Principal, spec: str) -> None:
        await asyncio.sleep(0.01)
        self.kernels.append((who.name, spec))


async def start_through(gate: QuotaGate, store: FakeStore, who: Principal,
                        spec: str = "py") -> str:
    try:
        async with gate.reserve(who, spec):
            await store.start(who, spec)
    except LimitReached:
        return "refused"
    return "started"


def test_twenty_concurrent_reservations_against_a_limit_of_two_start_exactly_two() -> None:
    async def scenario() -> None:
        store = FakeStore()
        gate = QuotaGate(QuotaPolicy(max_kernels=2), store.count)
        outcomes = await asyncio.gather(*(start_through(gate, store, ALICE) for _ in range(20)))
        assert outcomes.count("started") == 2 and outcomes.count("refused") == 18
        assert len(store.kernels) == 2 and gate.in_flight == 0

    asyncio.run(scenario())


def test_starts_that_finish_while_another_counts_are_still_counted() -> None:
    async def arrive(i: int, gate: QuotaGate, store: FakeStore) -> str:
        await asyncio.sleep(i * 0.001)  # arrivals overlap counts and finishing starts
        return await start_through(gate, store, ALICE)

    async def scenario() -> None:
        store = FakeStore()
        gate = QuotaGate(QuotaPolicy(max_kernels=2), store.count)
        outcomes = await asyncio.gather(*(arrive(i, gate, store) for i in range(20)))
        assert outcomes.count("started") == 2 and len(store.kernels) == 2

    asyncio.run(scenario())


def test_concurrent_per_user_and_per_kernelspec_limits_hold() -> None:
    async def scenario() -> None:
        store = FakeStore()
        gate = QuotaGate(QuotaPolicy(max_kernels_per_user=2, kernelspec_max_kernels={"spark": 1}),
                         store.count)
        starts = [(u, spec) for u in [ALICE, BOB, CAROL] * 10 for spec in ("spark", "py")]
        await asyncio.gather(*(start_through(gate, store, u, spec) for u, spec in starts))
        got = KernelCounts.of(store.kernels)
        assert got == KernelCounts(6, {"alice": 2, "bob": 2, "carol": 2}, {"spark": 1, "py": 5})

    asyncio.run(scenario())


def test_failed_starts_give_their_slot_back() -> None:
    async def scenario() -> None:
        store = FakeStore()
        gate = QuotaGate(QuotaPolicy(max_kernels=2), store.count)
        go = asyncio.Event()

        async def failing_start() -> None:
            async with gate.reserve(ALICE, "py"):
                await go.wait()
                raise RuntimeError("the kernel did not start")

        failing = [asyncio.create_task(failing_start()) for _ in range(2)]
        while gate.in_flight < 2:
            await asyncio.sleep(0)
        outcomes = await asyncio.gather(*(start_through(gate, store, BOB) for _ in range(3)))
        assert outcomes == ["refused"] * 3
        go.set()
        for task in failing:
            with pytest.raises(RuntimeError):
                await task
        assert store.kernels == [] and gate.in_flight == 0
        outcomes = await asyncio.gather(*(start_through(gate, store, BOB) for _ in range(20)))
        assert outcomes.count("started") == 2 and len(store.kernels) == 2

    asyncio.run(scenario())


def test_a_cancelled_start_gives_its_slot_back() -> None:
    async def scenario() -> None:
        store = FakeStore()
        gate = QuotaGate(QuotaPolicy(max_kernels=1), store.count)
        inside = asyncio.Event()

        async def hang() -> None:
            async with gate.reserve(ALICE, "py"):
                inside.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(hang())
        await inside.wait()
        assert gate.in_flight == 1
        assert await start_through(gate, store, BOB) == "refused"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gate.in_flight == 0
        assert await start_through(gate, store, BOB) == "started"

    asyncio.run(scenario())


def test_an_early_release_avoids_counting_a_kernel_twice() -> None:
    async def scenario() -> None:
        store = FakeStore()
        gate = QuotaGate(QuotaPolicy(max_kernels=2), store.count)
        async with gate.reserve(ALICE, "py") as reservation:
            assert reservation.active and (reservation.user, reservation.kernel_name) == (
                "alice", "py")
            store.kernels.append(("alice", "py"))  # e.g. the store record is written
            assert (await gate.snapshot()).total == 2  # counted twice until released
            reservation.release()
            reservation.release()  # idempotent
            assert not reservation.active
            assert (await gate.snapshot()).total == 1
            async with gate.reserve(BOB, "py"):  # the second slot is free
                assert gate.reserved_counts() == KernelCounts(1, {"bob": 1}, {"py": 1})
        assert gate.in_flight == 0

    asyncio.run(scenario())


def test_a_plain_function_may_count_and_the_policy_may_change() -> None:
    async def scenario() -> None:
        kernels = [("alice", "py")]
        gate = QuotaGate(QuotaPolicy(max_kernels=1), lambda: KernelCounts.of(kernels))
        with pytest.raises(LimitReached, match="the gateway already has 1 kernel"):
            async with gate.reserve(BOB, "py"):
                pass
        gate.policy = QuotaPolicy(max_kernels=2)
        async with gate.reserve(BOB, "py"):
            assert gate.in_flight == 1

    asyncio.run(scenario())


def test_the_refusal_happens_before_the_body_runs() -> None:
    async def scenario() -> None:
        gate = QuotaGate(QuotaPolicy(max_kernels=0), KernelCounts)
        ran = False
        with pytest.raises(LimitReached):
            async with gate.reserve(ALICE, "py"):
                ran = True
        assert not ran and gate.in_flight == 0

    asyncio.run(scenario())

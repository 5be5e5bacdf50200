"""The budget ledger: exact division among live replicas, and never more than N possibly in flight, changes included."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
from collections.abc import AsyncIterator

import pytest

from serve_app.budget import BudgetLedger, BudgetMember, division, share
from serve_app.config import Retries
from serve_app.limiter import Limiter
from serve_app.upstreams import Pool, Upstream


def nothing_queued() -> int:
    return 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "total, count, expected",
    [
        (8, 3, [3, 3, 2]),
        (8, 2, [4, 4]),
        (4, 4, [1, 1, 1, 1]),
        (10, 4, [3, 3, 2, 2]),
        (3, 5, [1, 1, 1, 0, 0]),
        (1, 1, [1]),
    ],
)
def test_replica_i_of_r_gets_n_div_r_plus_one_below_n_mod_r(total: int, count: int, expected: list[int]) -> None:
    assert [share(total, count, i) for i in range(count)] == expected
    assert sum(expected) == total


@pytest.mark.parametrize(
    "demands, expected",
    [
        ([0, 0, 0], [3, 3, 2]),  # idle: the equal shares, ready for what comes
        ([80, 80, 80], [3, 3, 2]),  # every replica has work for its share
        ([3, 3, 2], [3, 3, 2]),
        ([1, 3, 40], [1, 3, 4]),  # the end of a run: the unused slot follows the queue
        ([0, 0, 40], [0, 0, 8]),
        ([4, 0, 0], [4, 3, 1]),  # what nobody queues for goes back towards the equal shares
        ([10, 1, 6], [4, 1, 3]),  # two queues share the spare slots by what each queues beyond its share
        ([9, 0, 3], [6, 0, 2]),
    ],
)
def test_slots_a_replica_leaves_unused_go_to_the_replicas_queueing_beyond_their_share(
    demands: list[int], expected: list[int]
) -> None:
    assert division(8, demands) == expected


def test_the_division_always_hands_out_exactly_n_and_never_less_than_a_demand_within_the_share() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        count, total = rng.randint(1, 6), rng.randint(1, 40)
        demands = [rng.choice([0, rng.randint(0, 5), rng.randint(0, 100)]) for _ in range(count)]
        granted = division(total, demands)
        assert sum(granted) == total and min(granted) >= 0
        assert all(g >= min(d, share(total, count, i)) for i, (g, d) in enumerate(zip(granted, demands, strict=True)))


class Replica:
    """A replica as the ledger sees it: capacity it applied and calls it has in flight."""

    def __init__(self, ledger: BudgetLedger, rid: str, rank: int) -> None:
        self.ledger, self.rid, self.rank = ledger, rid, rank
        self.capacity = 0
        self.in_flight = 0
        self.waiting = 0
        self.entitled = 0

    def sync(self, total: int) -> int:
        grant = self.ledger.sync(
            self.rid,
            rank=self.rank,
            total=total,
            capacity=self.capacity,
            in_flight=self.in_flight,
            waiting=self.waiting,
        )
        self.capacity, self.entitled = grant.capacity, grant.entitled
        return grant.capacity

    def fill(self) -> None:
        self.in_flight = max(self.in_flight, self.capacity)


def settle(replicas: list[Replica], total: int, rounds: int = 4) -> None:
    for _ in range(rounds):
        for r in replicas:
            r.sync(total)


def possibly_in_flight(replicas: list[Replica]) -> int:
    return sum(max(r.capacity, r.in_flight) for r in replicas)


def test_replicas_settle_on_the_exact_division_in_rank_order() -> None:
    ledger = BudgetLedger()
    replicas = [Replica(ledger, f"r{i}", rank) for i, rank in enumerate([2, 0, 1])]
    settle(replicas, 8)
    assert {r.rank: r.capacity for r in replicas} == {0: 3, 1: 3, 2: 2}


def test_a_new_replica_waits_for_others_to_shrink_and_drain() -> None:
    ledger = BudgetLedger()
    a, b = Replica(ledger, "a", 0), Replica(ledger, "b", 1)
    settle([a, b], 8)
    a.fill(), b.fill()  # 4 + 4 in flight
    settle([a, b], 8)
    c = Replica(ledger, "c", 2)
    c.waiting = 5  # it has requests for its share
    assert c.sync(8) == 0  # nothing is free yet
    a.sync(8), b.sync(8)  # told to shrink to 3: in flight stays 4 until calls finish
    assert (a.capacity, b.capacity) == (3, 3) and c.sync(8) == 0
    a.in_flight = b.in_flight = 3  # one call each finished
    a.sync(8), b.sync(8)
    assert c.sync(8) == 2 and possibly_in_flight([a, b, c]) == 8


def test_a_shrunk_grant_still_counts_until_the_replica_reports_it_applied() -> None:
    ledger = BudgetLedger()
    a, b = Replica(ledger, "a", 0), Replica(ledger, "b", 1)
    settle([a, b], 4)
    # N drops to 2. Each is told to shrink, but what it reported (2) counts until it says it applied.
    assert ledger.sync("a", rank=0, total=2, capacity=2, in_flight=0).capacity == 0
    assert ledger.sync("b", rank=1, total=2, capacity=2, in_flight=0).capacity == 0
    assert ledger.sync("a", rank=0, total=2, capacity=0, in_flight=0).capacity == 0  # b still reported 2
    assert ledger.sync("b", rank=1, total=2, capacity=0, in_flight=0).capacity == 1
    assert ledger.sync("a", rank=0, total=2, capacity=0, in_flight=0).capacity == 1


def test_n_changes_follow_the_newest_report() -> None:
    ledger = BudgetLedger()
    replicas = [Replica(ledger, f"r{i}", i) for i in range(2)]
    settle(replicas, 8)
    settle(replicas, 4)
    assert [r.capacity for r in replicas] == [2, 2]


def test_a_leaving_replica_frees_its_share() -> None:
    ledger = BudgetLedger()
    replicas = [Replica(ledger, f"r{i}", i) for i in range(3)]
    settle(replicas, 8)
    ledger.leave("r2")
    settle(replicas[:2], 8)
    assert [r.capacity for r in replicas[:2]] == [4, 4]


def test_a_silent_replica_keeps_its_share_until_it_is_proven_stopped() -> None:
    clock = Clock()
    ledger = BudgetLedger(lease_s=10, clock=clock)
    a, b = Replica(ledger, "a", 0), Replica(ledger, "b", 1)
    settle([a, b], 6)
    clock.now += 11
    assert a.sync(6) == 3 and ledger.overdue() == ["b"]  # a stalled `b` may still be running its calls
    ledger.leave("b")  # what the ledger actor does once Ray confirms b's actor is gone
    assert a.sync(6) == 6 and list(ledger.state()["members"]) == ["a"]


def test_a_restarted_ledger_grows_nobody_until_holders_have_had_a_lease_to_report() -> None:
    clock = Clock()
    ledger = BudgetLedger(lease_s=10, clock=clock)
    # `a` held 3 from the previous ledger; `b` (also holding 3) has not reported yet; `c` is new.
    assert ledger.sync("a", rank=0, total=8, capacity=3, in_flight=3).capacity == 3
    assert ledger.sync("c", rank=2, total=8, capacity=0, in_flight=0).capacity == 0
    assert ledger.sync("b", rank=1, total=8, capacity=3, in_flight=1).capacity == 3
    for _ in range(11):
        clock.now += 1
        for rid, rank, capacity in (("a", 0, 3), ("b", 1, 3), ("c", 2, 0)):
            granted = ledger.sync(rid, rank=rank, total=8, capacity=capacity, in_flight=0).capacity
            assert granted <= capacity or clock.now >= 1010  # frozen for one lease
    assert ledger.sync("c", rank=2, total=8, capacity=0, in_flight=0).capacity == 2


def test_a_fresh_ledger_serves_at_once() -> None:
    ledger = BudgetLedger()
    assert ledger.sync("a", rank=0, total=5, capacity=0, in_flight=0).capacity == 5


def test_random_changes_never_let_possibly_in_flight_exceed_n() -> None:
    rng = random.Random(7)
    ledger = BudgetLedger()
    replicas = [Replica(ledger, f"r{i}", i) for i in range(3)]
    total, next_id = 8, 3
    for _step in range(3000):
        r = rng.choice(replicas)
        action = rng.random()
        if action < 0.05:
            total = rng.randint(1, 12)
        elif action < 0.08 and len(replicas) > 1:
            gone = replicas.pop(rng.randrange(len(replicas)))
            gone.capacity = gone.in_flight = 0  # drained and stopped
            ledger.leave(gone.rid)
        elif action < 0.11:
            replicas.append(Replica(ledger, f"r{next_id}", len(replicas)))
            next_id += 1
        elif action < 0.5:
            r.in_flight = rng.randint(0, r.capacity) if r.in_flight <= r.capacity else r.in_flight - 1
        else:
            before = possibly_in_flight(replicas)
            r.sync(total)
            # Growth never takes a slot someone might still be using; totals above N only ever shrink.
            assert possibly_in_flight(replicas) <= max(total, before)
    settle(replicas, total, rounds=len(replicas) + 2)
    for r in replicas:
        r.in_flight = 0
    settle(replicas, total, rounds=len(replicas) + 2)
    assert sum(r.capacity for r in replicas) == total


# --- the replica side ----------------------------------------------------------------------------


async def test_a_member_keeps_its_limiter_at_the_granted_capacity() -> None:
    ledger = BudgetLedger()

    async def sync(rid: str, rank: int, total: int, capacity: int, in_flight: int, waiting: int) -> tuple[int, int]:
        grant = ledger.sync(rid, rank=rank, total=total, capacity=capacity, in_flight=in_flight, waiting=waiting)
        return grant.capacity, grant.entitled

    limiter = Limiter(0)
    member = BudgetMember(limiter, "a", sync, queued=nothing_queued)
    member.configure(total=6, rank=0)
    member.start()
    await asyncio.sleep(0.05)
    assert limiter.capacity == 6
    member.configure(total=2, rank=0)
    await asyncio.sleep(0.05)
    assert limiter.capacity == 2
    await member.leave(lambda rid: asyncio.sleep(0, ledger.leave(rid)))
    assert limiter.capacity == 0 and ledger.idle()


async def test_a_member_that_cannot_reach_the_ledger_for_most_of_a_lease_stops_admitting() -> None:
    clock = Clock()

    async def failing(*args: object) -> tuple[int, int]:
        raise ConnectionError("ledger down")

    limiter = Limiter(4)
    member = BudgetMember(limiter, "a", failing, queued=nothing_queued, lease_s=10, clock=clock)
    with pytest.raises(ConnectionError):
        await member.sync_once()
    assert limiter.capacity == 4  # a short outage: keep serving with what we hold
    clock.now += 9
    with pytest.raises(ConnectionError):
        await member.sync_once()
    assert limiter.capacity == 0


async def test_a_member_whose_ledger_never_answers_gives_up_on_each_call_and_fences_before_its_lease() -> None:
    clock = Clock()

    async def hanging(*args: object) -> tuple[int, int]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    limiter = Limiter(4, clock=clock)
    member = BudgetMember(limiter, "a", hanging, queued=nothing_queued, lease_s=10, call_timeout_s=0.01, clock=clock)
    with pytest.raises(TimeoutError):
        await member.sync_once()
    clock.now += 8.5
    with pytest.raises(TimeoutError):
        await member.sync_once()
    assert limiter.capacity == 0


# --- stalls, on fake clocks: the ledger's, the members' and the capacities' expiry run on one clock ---


class Deployment:
    """Replicas running closed-loop calls against one ledger, any of which can be frozen (as by SIGSTOP).

    Each replica's clients queue as the server's do: in a pool of one upstream, whose limiter its
    member keeps at the granted capacity. `peak` is counted where Azure counts: a call is in flight
    for its duration, whether or not the replica that made it is frozen; a frozen replica frees its
    slot only once it wakes."""

    CALL_S = 1.0
    CLIENTS_PER_REPLICA = 6

    def __init__(self, total: int, replicas: int, lease_s: float = 10.0) -> None:
        self.clock = Clock()
        self.total = total
        self.ledger = BudgetLedger(lease_s=lease_s, clock=self.clock)
        self.ledger_frozen = False
        self.frozen: set[str] = set()
        self.dead: set[str] = set()
        self.peak = 0
        self._calls: list[float] = []
        self.limiters = {f"r{i}": Limiter(clock=self.clock) for i in range(replicas)}
        self.pools = {
            rid: Pool([Upstream(rid, None, limiter)], Retries(), clock=self.clock)
            for rid, limiter in self.limiters.items()
        }
        self.members = {
            rid: BudgetMember(
                limiter,
                rid,
                self._sync,
                queued=functools.partial(self.waiting_in, rid),
                lease_s=lease_s,
                call_timeout_s=0.001,
                clock=self.clock,
            )
            for rid, limiter in self.limiters.items()
        }
        self.ranks = {rid: i for i, rid in enumerate(self.limiters)}
        self._tick = asyncio.Condition()
        self._workers = [
            asyncio.create_task(self._client(rid)) for rid in self.limiters for _ in range(self.CLIENTS_PER_REPLICA)
        ]

    async def _sync(
        self, rid: str, rank: int, total: int, capacity: int, in_flight: int, waiting: int
    ) -> tuple[int, int]:
        if self.ledger_frozen:
            await asyncio.Event().wait()  # the caller's deadline ends this
        grant = self.ledger.sync(rid, rank=rank, total=total, capacity=capacity, in_flight=in_flight, waiting=waiting)
        return grant.capacity, grant.entitled

    def waiting_in(self, rid: str) -> int:
        return self.pools[rid].waiting

    def in_use(self) -> int:
        return sum(limiter.in_use for rid, limiter in self.limiters.items() if rid not in self.dead)

    def upstream(self) -> int:
        return sum(1 for ends in self._calls if ends > self.clock.now)

    async def _client(self, rid: str) -> None:
        pool = self.pools[rid]
        while True:
            upstream = await pool.acquire(math.inf)  # no deadline: a client waits as long as it takes
            ends = self.clock.now + self.CALL_S
            self._calls.append(ends)
            self.peak = max(self.peak, self.upstream())
            async with self._tick:
                await self._tick.wait_for(functools.partial(self._ended, rid, ends))
            pool.release(upstream, None)

    def _ended(self, rid: str, ends: float) -> bool:
        return self.clock.now >= ends and rid not in self.frozen

    async def run(self, seconds: float, step_s: float = 0.25) -> None:
        for _ in range(round(seconds / step_s)):
            self.clock.now += step_s
            async with self._tick:  # calls end first: a frozen replica wakes to its releases
                self._tick.notify_all()
            for _ in range(5):
                await asyncio.sleep(0)
            for rid, member in self.members.items():
                if rid not in self.frozen and rid not in self.dead:
                    with contextlib.suppress(TimeoutError):
                        await member.sync_once()
            if not self.ledger_frozen:  # the ledger actor's reaper, with Ray's answer on who is gone
                for rid in self.ledger.overdue():
                    if rid in self.dead:
                        self.ledger.leave(rid)
            for _ in range(5):
                await asyncio.sleep(0)

    def capacities(self) -> list[int]:
        return [limiter.capacity for rid, limiter in self.limiters.items() if rid not in self.dead]

    async def start(self) -> None:
        for rid, member in self.members.items():
            member.configure(self.total, self.ranks[rid])
        await self.run(2)

    def close(self) -> None:
        for worker in self._workers:
            worker.cancel()


@pytest.fixture
async def deployment() -> AsyncIterator[Deployment]:
    d = Deployment(total=8, replicas=3)
    await d.start()
    assert d.capacities() == [3, 3, 2] and d.in_use() == 8
    yield d
    d.close()


async def test_a_ledger_frozen_past_every_lease_never_lets_the_budget_be_exceeded_and_it_settles_at_once(
    deployment: Deployment,
) -> None:
    deployment.ledger_frozen = True
    await deployment.run(15)  # members fence themselves at 8 s; their calls drain
    assert deployment.in_use() == 0 and deployment.peak == 8
    deployment.ledger_frozen = False
    await deployment.run(1)
    assert deployment.capacities() == [3, 3, 2] and deployment.in_use() == 8
    assert deployment.peak == 8


async def test_a_replica_frozen_past_its_lease_keeps_its_share_and_admits_nothing_on_waking_until_it_syncs(
    deployment: Deployment,
) -> None:
    deployment.frozen.add("r2")
    await deployment.run(15)
    assert deployment.capacities() == [3, 3, 2]  # the others were not grown into r2's share
    deployment.frozen.clear()
    await deployment.run(1)
    assert deployment.capacities() == [3, 3, 2] and deployment.in_use() == 8
    assert deployment.peak == 8


async def test_a_dead_replicas_share_goes_to_the_others_once_its_lease_has_run_out(deployment: Deployment) -> None:
    deployment.dead.add("r2")
    await deployment.run(9)
    assert deployment.capacities() == [3, 3]
    await deployment.run(3)
    assert deployment.capacities() == [4, 4] and deployment.in_use() == 8
    assert deployment.peak == 8


async def test_a_replica_frozen_while_the_ledger_restarts_wakes_fenced_and_admits_nothing_until_it_syncs(
    deployment: Deployment,
) -> None:
    deployment.frozen.add("r2")
    await deployment.run(1)
    deployment.ledger = BudgetLedger(lease_s=10, clock=deployment.clock)  # restarted empty
    await deployment.run(14)  # r2 never reported: after a lease, r0 and r1 take the whole budget
    assert deployment.capacities()[:2] == [4, 4]
    deployment.frozen.clear()
    await deployment.run(3)
    assert deployment.peak == 8
    await deployment.run(12)  # r2 reported holding 2, which holds growth for a lease; then exact again
    assert deployment.capacities() == [3, 3, 2] and deployment.in_use() == 8

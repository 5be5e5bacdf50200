"""The pool of upstreams: spreading by free slots, one queue across the pool, cooldowns and failover, without Ray."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from contextlib import aclosing
from typing import Any

import pytest

from serve_app.config import Retries
from serve_app.errors import InvalidRequest, OpenAIError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from serve_app.limiter import Limiter
from serve_app.upstreams import AllClosed, Pool, QueueFull, QueueTimeout, Upstream, hand_over_rule

QUICK = Retries(backoff_initial_s=0.05, backoff_max_s=0.4, retry_after_max_s=60)


def pool_of(*capacities: int, retries: Retries = QUICK, max_waiting: int | None = None) -> Pool[None]:
    upstreams = [Upstream(f"u{i}", None, Limiter(n)) for i, n in enumerate(capacities)]
    return Pool(upstreams, retries, max_waiting=max_waiting, rng=random.Random(7))


def far() -> float:
    return time.monotonic() + 60


def throttled(seconds: float) -> UpstreamError:
    return UpstreamError("Rate limit", status=429, code="429", headers={"retry-after": str(seconds)})


def server_error() -> UpstreamError:
    return UpstreamError("Internal", status=500)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def named(pool: Pool[None], name: str) -> Upstream[None]:
    return next(u for u in pool.upstreams if u.name == name)


async def test_spreads_calls_by_free_slots() -> None:
    pool = pool_of(30, 10)
    chosen = Counter()
    for _ in range(4000):
        upstream = pool.choose()
        assert upstream is not None
        chosen[upstream.name] += 1
    assert 0.7 < chosen["u0"] / 4000 < 0.8  # 30 of 40 free slots


async def test_a_full_upstream_is_never_chosen_and_the_pool_fills_every_budget() -> None:
    pool = pool_of(3, 1, 2)
    taken = Counter()
    for _ in range(6):
        taken[(await pool.acquire(far())).name] += 1
    assert taken == {"u0": 3, "u1": 1, "u2": 2}
    assert pool.choose() is None


async def test_calls_queue_only_when_every_upstream_is_full_and_take_the_first_slot_any_frees() -> None:
    pool = pool_of(1, 1)
    first, second = await pool.acquire(far()), await pool.acquire(far())
    waiters = [asyncio.create_task(pool.acquire(far())) for _ in range(2)]
    await settle()
    assert pool.waiting == 2 and not any(w.done() for w in waiters)
    pool.release(second, 0.1)
    await settle()
    assert waiters[0].done() and waiters[0].result() is second and not waiters[1].done()
    pool.release(first, 0.1)
    await settle()
    assert waiters[1].result() is first


async def test_a_grown_share_wakes_the_pool_queue() -> None:
    pool = pool_of(0, 0)
    waiter = asyncio.create_task(pool.acquire(far()))
    await settle()
    named(pool, "u1").limiter.resize(1)
    await settle()
    assert waiter.result().name == "u1"


async def test_a_full_queue_refuses_at_once_and_a_wait_ends_at_the_deadline() -> None:
    pool = pool_of(1, max_waiting=1)
    await pool.acquire(far())
    waiter = asyncio.create_task(pool.acquire(time.monotonic() + 0.05))
    await settle()
    with pytest.raises(QueueFull):
        await pool.acquire(far())
    with pytest.raises(QueueTimeout):
        await waiter
    assert pool.waiting == 0


async def test_a_waiter_cancelled_leaves_no_slot_behind() -> None:
    pool = pool_of(1, 1)
    held = [await pool.acquire(far()), await pool.acquire(far())]
    waiter = asyncio.create_task(pool.acquire(far()))
    await settle()
    waiter.cancel()
    pool.release(held[0], None)  # handed to the waiter in the same step it is cancelled
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert sum(u.limiter.in_use for u in pool.upstreams) == 1 and pool.waiting == 0


def _azure_stream(end: BaseException | None, closed: list[str]) -> Any:
    """Azure's stream of two batches, then its end (or `end` raised); notes its closing."""

    async def rest() -> Any:
        try:
            yield [{"choices": [{"delta": {"content": "a"}}]}]
            yield [{"choices": [{"delta": {"content": "b"}}]}]
            if end is not None:
                raise end
        finally:
            closed.append("closed")

    return rest()


@pytest.mark.parametrize(
    ("end", "batches_read", "held_until_closed"),
    [
        (None, 2, False),  # read to its end: given back as Azure's stream ends
        (UpstreamUnavailable("cut", code="upstream_stream_truncated"), 2, False),  # failed by Azure: at once too
        (None, 1, True),  # its reader stopped after one batch: when it is closed
        (None, 0, True),  # never read (the client left before the first event): when it is closed
    ],
)
async def test_a_held_stream_gives_its_slot_back_once_as_soon_as_it_is_over(
    end: BaseException | None, batches_read: int, held_until_closed: bool
) -> None:
    from serve_app.server import _HeldStream
    from serve_app.telemetry import RequestRecord

    pool = pool_of(1)
    upstream = await pool.acquire(far())
    closed: list[str] = []
    azure = _azure_stream(end, closed)
    opened = (upstream, time.monotonic(), (await anext(azure), azure))  # as AzureClient.open_stream opens it
    read = 0
    async with aclosing(_HeldStream(pool, opened, RequestRecord("r", "e"))) as held:
        if batches_read:
            with contextlib.suppress(UpstreamUnavailable):
                async for _ in held:
                    read += 1
                    if read == batches_read and held_until_closed:
                        break
        assert read == batches_read
        assert upstream.limiter.in_use == (1 if held_until_closed else 0)
    assert upstream.limiter.in_use == 0  # and not given back twice
    assert closed == ["closed"]  # Azure's stream too, read or not


async def test_a_lapsed_budget_lease_gives_no_slot() -> None:
    pool = pool_of(2, 2)
    named(pool, "u0").limiter.resize(2, until=time.monotonic() - 1)  # the fence: no confirmed sync for too long
    assert {(await pool.acquire(far())).name for _ in range(2)} == {"u1"}
    assert pool.choose() is None


@pytest.mark.parametrize(
    ("error", "fails_over"),
    [
        (throttled(5), True),
        (server_error(), True),
        (UpstreamError("Unavailable", status=503), True),
        (UpstreamUnavailable("unreachable", code="upstream_unavailable"), True),
        (UpstreamTimeout("silent", code="upstream_timeout"), True),
        (UpstreamError("filtered", status=400, code="content_filter"), False),
        (UpstreamError("bad", status=400, code="invalid_value"), False),
        (UpstreamError("denied", status=401), False),
        (UpstreamError("no deployment", status=404, code="DeploymentNotFound"), False),
        (InvalidRequest("bad", code="unsupported_parameter"), False),
    ],
    ids=lambda v: v.__class__.__name__ if isinstance(v, OpenAIError) else str(v),
)
async def test_only_an_upstreams_own_fault_sends_the_call_elsewhere(error: OpenAIError, fails_over: bool) -> None:
    pool = pool_of(1, 1)
    upstream = await pool.acquire(far())
    pool.release(upstream, None)
    assert pool.failed(upstream, error) is fails_over
    assert (time.monotonic() < upstream.closed_until) is fails_over


async def test_a_pool_of_one_never_closes_its_upstream() -> None:
    pool = pool_of(2)
    upstream = await pool.acquire(far())
    assert pool.failed(upstream, throttled(30)) is False
    assert pool.choose() is upstream and hand_over_rule(1) is None


async def test_a_throttled_upstream_is_closed_for_the_wait_azure_asked_and_calls_go_to_the_others() -> None:
    pool = pool_of(5, 5)
    u0 = named(pool, "u0")
    assert pool.failed(u0, throttled(30))
    assert 29 < u0.closed_until - time.monotonic() <= 30
    assert {(await pool.acquire(far())).name for _ in range(5)} == {"u1"}
    assert pool.choose() is None  # u1 full, u0 closed: the next call waits


async def test_a_failing_upstream_backs_off_exponentially_and_concurrent_failures_count_once() -> None:
    pool = pool_of(5, 5)
    u0 = named(pool, "u0")
    for _ in range(3):  # three calls in flight when it broke
        pool.failed(u0, server_error())
    assert u0.failures == 1 and u0.closed_until - time.monotonic() <= QUICK.backoff_initial_s
    await asyncio.sleep(QUICK.backoff_initial_s)
    pool.failed(u0, server_error())  # its trial call failed too
    assert u0.failures == 2 and QUICK.backoff_initial_s < u0.closed_until - time.monotonic() <= 0.1


async def test_a_reopened_upstream_takes_one_trial_call_then_all_its_slots_once_it_succeeds() -> None:
    pool = pool_of(4, 0)
    u0 = named(pool, "u0")
    pool.failed(u0, server_error())
    waiters = [asyncio.create_task(pool.acquire(far())) for _ in range(3)]
    await asyncio.sleep(QUICK.backoff_initial_s + 0.05)  # reopened by the pool's own timer: nothing was released
    assert [w.done() for w in waiters] == [True, False, False]
    pool.succeeded(u0)
    await settle()
    assert all(w.done() for w in waiters) and u0.limiter.in_use == 3


async def test_with_every_upstream_closed_for_long_a_call_gets_the_soonest_ones_error_at_once() -> None:
    pool = pool_of(1, 1, retries=Retries(retry_after_max_s=60))
    pool.failed(named(pool, "u0"), throttled(3600))
    pool.failed(named(pool, "u1"), throttled(120))
    with pytest.raises(AllClosed) as closed:
        await pool.acquire(far())
    assert closed.value.error.status == 429
    assert 119 <= int(closed.value.error.headers["retry-after"]) <= 120


async def test_with_every_upstream_closed_past_the_deadline_a_call_gets_the_error_at_once() -> None:
    pool = pool_of(1, 1)
    pool.failed(named(pool, "u0"), throttled(10))
    pool.failed(named(pool, "u1"), UpstreamError("Unavailable", status=503, headers={"retry-after": "5"}))
    with pytest.raises(AllClosed) as closed:
        await pool.acquire(time.monotonic() + 3)
    assert closed.value.error.status == 503 and closed.value.error.headers["retry-after"] == "5"


async def test_with_every_upstream_closed_briefly_a_call_waits_for_the_first_to_reopen() -> None:
    pool = pool_of(1, 1)
    pool.failed(named(pool, "u0"), throttled(0.3))
    pool.failed(named(pool, "u1"), throttled(0.1))
    started = time.monotonic()
    upstream = await pool.acquire(far())
    assert upstream.name == "u1" and 0.09 < time.monotonic() - started < 0.3


async def test_calls_queued_behind_full_upstreams_get_the_error_once_every_one_closes_for_long() -> None:
    pool = pool_of(1, 1)
    held = [await pool.acquire(far()), await pool.acquire(far())]
    waiters = [asyncio.create_task(pool.acquire(far())) for _ in range(2)]
    await settle()
    pool.failed(held[0], throttled(3600))
    await settle()
    assert not any(w.done() for w in waiters)  # u1 may still free a slot
    pool.failed(held[1], throttled(600))
    await settle()
    for waiter in waiters:
        with pytest.raises(AllClosed) as closed:
            await waiter
        assert 599 <= int(closed.value.error.headers["retry-after"]) <= 600
    for upstream in held:
        pool.release(upstream, None)
    assert pool.waiting == 0 and all(u.limiter.in_use == 0 for u in pool.upstreams)

"""The resizable limiter: never more holders than capacity, FIFO, resizable while permits are held."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.limiter import Limiter, QueueFull, QueueTimeout


async def hold(limiter: Limiter, started: list[int], i: int, release: asyncio.Event) -> None:
    async with limiter.slot():
        started.append(i)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_admits_up_to_capacity_then_queues_in_order() -> None:
    limiter, started, release = Limiter(2), [], asyncio.Event()
    tasks = [asyncio.create_task(hold(limiter, started, i, release)) for i in range(5)]
    await settle()
    assert started == [0, 1] and limiter.in_use == 2 and limiter.waiting == 3
    release.set()
    await asyncio.gather(*tasks)
    assert started == [0, 1, 2, 3, 4] and limiter.in_use == 0


async def test_shrinking_below_use_lets_holders_finish_and_admits_no_one_until_under_the_new_capacity() -> None:
    limiter = Limiter(3)
    for _ in range(3):
        await limiter.acquire()
    limiter.resize(1)
    waiter = asyncio.create_task(limiter.acquire())
    await settle()
    limiter.release()
    await settle()
    assert not waiter.done() and limiter.in_use == 2  # 2 still held > capacity 1
    limiter.release()
    await settle()
    assert not waiter.done() and limiter.in_use == 1
    limiter.release()
    await settle()
    assert waiter.done() and limiter.in_use == 1


async def test_growing_wakes_waiters_at_once() -> None:
    limiter = Limiter(0)
    waiters = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
    await settle()
    assert limiter.in_use == 0
    limiter.resize(2)
    await settle()
    assert sum(w.done() for w in waiters) == 2 and limiter.in_use == 2


async def test_a_cancelled_waiter_takes_no_permit() -> None:
    limiter = Limiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    assert limiter.in_use == 0 and limiter.waiting == 0


async def test_a_permit_handed_to_a_waiter_cancelled_at_that_moment_is_passed_on() -> None:
    limiter = Limiter(1)
    await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    await settle()
    limiter.release()  # hands the permit to `first`...
    first.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await settle()
    assert second.done() and limiter.in_use == 1


async def test_release_without_acquire_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        Limiter(1).release()


async def test_never_more_holders_than_capacity_under_churn() -> None:
    limiter, peak, current = Limiter(4), 0, 0

    async def work(i: int) -> None:
        nonlocal peak, current
        async with limiter.slot():
            current += 1
            peak = max(peak, current)
            await asyncio.sleep(0.001 * (i % 3))
            current -= 1

    tasks = [asyncio.create_task(work(i)) for i in range(200)]
    for _i, capacity in enumerate([2, 6, 1, 4]):
        await asyncio.sleep(0.01)
        limiter.resize(capacity)
    await asyncio.gather(*tasks)
    assert peak <= 6 and limiter.in_use == 0


async def test_a_full_queue_refuses_newcomers_at_once() -> None:
    limiter = Limiter(1, max_waiting=2)
    await limiter.acquire()
    waiters = [asyncio.create_task(limiter.acquire()) for _ in range(2)]
    await settle()
    with pytest.raises(QueueFull):
        await limiter.acquire()
    limiter.release()
    await settle()
    assert sum(w.done() for w in waiters) == 1 and limiter.waiting == 1


async def test_the_wait_estimate_grows_with_the_queue_and_the_hold_time() -> None:
    limiter = Limiter(2)
    async with limiter.slot():
        await asyncio.sleep(0.05)
    assert limiter.estimated_wait_s() < 0.5  # the slot recorded its ~0.05 s hold into the 1 s prior
    for _ in range(100):
        limiter.record_hold(0.4)
    empty = limiter.estimated_wait_s()
    for _ in range(2):
        await limiter.acquire()
    waiters = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
    await settle()
    assert 0.15 < empty < 0.25  # one mean hold of ~0.4 s over 2 slots
    assert limiter.estimated_wait_s() > 3 * empty
    for w in waiters:
        w.cancel()


async def test_past_its_expiry_a_capacity_admits_nobody_not_even_on_a_release_until_renewed() -> None:
    now = [0.0]
    limiter = Limiter(clock=lambda: now[0])
    limiter.resize(2, until=10.0)
    await limiter.acquire()
    now[0] = 10.0  # e.g. the process was frozen past the lease this capacity was granted under
    waiter = asyncio.create_task(limiter.acquire())
    await settle()
    assert not waiter.done()
    limiter.release()  # a slot frees, but the capacity has expired
    await settle()
    assert not waiter.done() and limiter.in_use == 0
    limiter.resize(2, until=20.0)
    await settle()
    assert waiter.done() and limiter.in_use == 1


async def test_a_slot_waited_for_past_its_timeout_raises_and_leaves_the_queue() -> None:
    limiter = Limiter(1)
    await limiter.acquire()
    with pytest.raises(QueueTimeout):
        async with limiter.slot(timeout_s=0.01):
            raise AssertionError("admitted without a free permit")
    assert limiter.waiting == 0 and limiter.in_use == 1

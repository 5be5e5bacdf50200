"""The limiter, a gauge of permits: never more taken than capacity, resizable while permits are held, and
nothing free past its capacity's expiry, whatever is released. It has no queue (the pool's is: test_upstreams)."""

from __future__ import annotations

from typing import Any

import pytest

from serve_app.limiter import Limiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(limiter: Limiter, clock: Clock, steps: list[tuple[Any, ...]]) -> None:
    """Steps: ("take",), ("release",), ("resize", n) or ("resize", n, until), ("at", time on the clock)."""
    for step in steps:
        match step:
            case ("take",):
                limiter.take()
            case ("release",):
                limiter.release()
            case ("resize", n):
                limiter.resize(n)
            case ("resize", n, until):
                limiter.resize(n, until=until)
            case ("at", now):
                clock.now = now


TAKE, RELEASE = ("take",), ("release",)


@pytest.mark.parametrize(
    "capacity, steps, free, in_use",
    [
        pytest.param(0, [], 0, 0, id="no capacity, nothing free"),
        pytest.param(3, [], 3, 0, id="all free at first"),
        pytest.param(3, [TAKE, TAKE], 1, 2, id="what is taken is not free"),
        pytest.param(3, [TAKE, TAKE, TAKE], 0, 3, id="full"),
        pytest.param(3, [TAKE, TAKE, RELEASE], 2, 1, id="a release frees its permit"),
        pytest.param(0, [("resize", 2)], 2, 0, id="growing frees at once"),
        pytest.param(3, [TAKE, TAKE, TAKE, ("resize", 1)], 0, 3, id="shrinking below use keeps the holders"),
        pytest.param(
            3, [TAKE, TAKE, TAKE, ("resize", 1), RELEASE], 0, 2, id="shrunk: still none free above the new capacity"
        ),
        pytest.param(
            3, [TAKE, TAKE, TAKE, ("resize", 1), RELEASE, RELEASE], 0, 1, id="shrunk: none free at the new capacity"
        ),
        pytest.param(
            3, [TAKE, TAKE, TAKE, ("resize", 1), RELEASE, RELEASE, RELEASE], 1, 0, id="shrunk: free once under it"
        ),
        pytest.param(0, [("resize", 2, 10.0), ("at", 9.9)], 2, 0, id="free until the expiry"),
        pytest.param(0, [("resize", 2, 10.0), ("at", 10.0)], 0, 0, id="nothing free from the expiry on"),
        pytest.param(
            0,
            [("resize", 2, 10.0), TAKE, TAKE, ("at", 10.0), RELEASE, RELEASE],
            0,
            0,
            id="past the expiry even releases free nothing",
        ),
        pytest.param(
            0, [("resize", 2, 10.0), ("at", 10.0), ("resize", 2, 20.0)], 2, 0, id="a renewed capacity frees again"
        ),
        pytest.param(0, [("resize", 2, 10.0), ("at", 10.0), ("resize", 2)], 2, 0, id="a capacity without expiry"),
    ],
)
def test_free_permits_follow_capacity_use_and_expiry(
    capacity: int, steps: list[tuple[Any, ...]], free: int, in_use: int
) -> None:
    clock = Clock()
    limiter = Limiter(capacity, clock=clock)
    run(limiter, clock, steps)
    assert (limiter.free, limiter.in_use) == (free, in_use)


@pytest.mark.parametrize(
    "capacity, steps, wrong",
    [
        pytest.param(0, [TAKE], RuntimeError, id="take with no capacity"),
        pytest.param(1, [TAKE, TAKE], RuntimeError, id="take when full"),
        pytest.param(2, [TAKE, TAKE, ("resize", 1), RELEASE, TAKE], RuntimeError, id="take above a shrunk capacity"),
        pytest.param(0, [("resize", 1, 10.0), ("at", 10.0), TAKE], RuntimeError, id="take past the expiry"),
        pytest.param(1, [RELEASE], RuntimeError, id="release without a take"),
        pytest.param(1, [TAKE, RELEASE, RELEASE], RuntimeError, id="release twice"),
        pytest.param(1, [("resize", -1)], ValueError, id="a negative capacity"),
    ],
)
def test_misuse_is_an_error_and_changes_nothing(
    capacity: int, steps: list[tuple[Any, ...]], wrong: type[Exception]
) -> None:
    clock = Clock()
    limiter = Limiter(capacity, clock=clock)
    run(limiter, clock, steps[:-1])
    before = (limiter.capacity, limiter.free, limiter.in_use)
    with pytest.raises(wrong):
        run(limiter, clock, steps[-1:])
    assert (limiter.capacity, limiter.free, limiter.in_use) == before


def test_a_negative_capacity_is_refused_at_construction() -> None:
    with pytest.raises(ValueError):
        Limiter(-1)


@pytest.mark.parametrize(
    "step, notifies",
    [
        pytest.param(RELEASE, True, id="a release"),
        pytest.param(("resize", 3), True, id="a resize"),
        pytest.param(("resize", 0), True, id="a shrink (the listener finds nothing free)"),
        pytest.param(TAKE, False, id="not a take"),
    ],
)
def test_on_free_tells_the_listener_when_a_permit_may_have_come_free(step: tuple[Any, ...], notifies: bool) -> None:
    clock = Clock()
    limiter = Limiter(2, clock=clock)
    limiter.take()
    seen: list[int] = []
    limiter.on_free = lambda: seen.append(limiter.free)
    run(limiter, clock, [step])
    assert bool(seen) is notifies


def test_a_process_frozen_past_its_expiry_wakes_to_releases_that_free_nothing_until_renewed() -> None:
    # As the pool listens: on each notice, it takes what is free. Frozen (SIGSTOP) past the lease this
    # capacity was granted under, the process's first work on waking may be the releases of calls that
    # ended meanwhile, before any sync could shrink the capacity: the expiry alone must hold the line.
    clock = Clock()
    limiter = Limiter(clock=clock)
    limiter.resize(2, until=10.0)
    limiter.take()
    limiter.take()
    taken_on_notice: list[int] = []

    def listener() -> None:
        n = 0
        while limiter.free:
            limiter.take()
            n += 1
        taken_on_notice.append(n)

    limiter.on_free = listener
    clock.now = 30.0
    limiter.release()
    limiter.release()
    assert taken_on_notice == [0, 0] and limiter.in_use == 0
    limiter.resize(2, until=40.0)
    assert taken_on_notice == [0, 0, 2] and limiter.in_use == 2

"""A model server's pool of upstreams: which Azure deployment takes a call, and which are cooling down.

Plain logic (no Ray, no HTTP); the Serve deployment wires each upstream's client, limiter and
budget member into it.

- Each upstream has its own `Limiter`, held at its granted share of its own budget by its own
  ledger (budget.py), so every upstream's budget is divided exactly across replicas and never
  exceeded, whatever the pool does.
- One FIFO queue for the whole pool: a call takes a free slot of an open upstream, chosen at random
  weighted by free slots (so the load follows free capacity, and equal latencies fill every budget);
  it waits only when no open upstream has one, and then takes the first slot any upstream frees.
- An upstream whose call failed for a reason of its own (`retry.is_upstreams_fault`: 429, 5xx,
  unreachable, timed out, no credential) is closed for the time Azure asked (`Retry-After` and
  kin), else for an exponential backoff growing with consecutive failures. It reopens on trial:
  one call at a time until one succeeds, so a region still down costs one call per cooldown, not
  a burst. The failed call goes to another upstream (`failed` says whether), never to two at once.
- When every upstream is closed for longer than a call may wait, a call gets at once the error of
  the upstream that reopens first, with that wait as its Retry-After; so do the calls already
  queued, once that is longer than `retry_after_max_s`.

A pool of one never closes its upstream: its client retries on its own, as it always has.
"""

from __future__ import annotations

import asyncio
import copy
import math
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from .config import Retries
from .errors import OpenAIError
from .limiter import Limiter
from .retry import MIN_ATTEMPT_S, is_upstreams_fault, retry_after_s

C = TypeVar("C")


class Upstream(Generic[C]):
    """One deployment in the pool: its client, its limiter, and whether it is open."""

    __slots__ = ("client", "closed_until", "failures", "last_error", "limiter", "name", "on_trial")

    def __init__(self, name: str, client: C, limiter: Limiter) -> None:
        self.name = name
        self.client = client
        self.limiter = limiter
        self.closed_until = -math.inf
        self.failures = 0  # consecutive, counting a cooldown's own failures once
        self.on_trial = False
        self.last_error: OpenAIError | None = None

    def open_slots(self, now: float) -> int:
        if now < self.closed_until:
            return 0
        if self.on_trial:  # one call at a time until one succeeds
            return 1 if self.limiter.in_use == 0 and self.limiter.free else 0
        return self.limiter.free


class QueueFull(Exception):
    """The pool's queue is full; the caller should come back after `Pool.estimated_wait_s`."""


class QueueTimeout(Exception):
    """No slot came free by the caller's deadline; it has left the queue."""


class AllClosed(Exception):
    """Every upstream is closed for longer than the call may wait; `error` is the one to give the client."""

    def __init__(self, error: OpenAIError) -> None:
        super().__init__(error.message)
        self.error = error


def hand_over_rule(pool_size: int) -> Callable[[OpenAIError], bool] | None:
    """What an upstream's client should not retry itself but hand back, for the pool to send elsewhere."""
    return is_upstreams_fault if pool_size > 1 else None


class Pool(Generic[C]):
    # Weight of the newest hold time in the running mean behind `estimated_wait_s`.
    _SMOOTHING = 0.1

    def __init__(
        self,
        upstreams: list[Upstream[C]],
        retries: Retries,
        *,
        max_waiting: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not upstreams:
            raise ValueError("a pool needs at least one upstream")
        self.upstreams = upstreams
        self.max_waiting = max_waiting
        self._retries = retries
        self._clock = clock
        self._random = (rng or random.Random()).random
        self._waiters: deque[asyncio.Future[Upstream[C]]] = deque()
        self._mean_hold_s = 1.0
        self._timer: asyncio.TimerHandle | None = None
        for upstream in upstreams:
            upstream.limiter.on_free = self._wake

    @property
    def fails_over(self) -> bool:
        return len(self.upstreams) > 1

    @property
    def capacity(self) -> int:
        return sum(u.limiter.capacity for u in self.upstreams)

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    # --- choosing ----------------------------------------------------------------------------------

    def choose(self) -> Upstream[C] | None:
        """An open upstream with a free slot, at random weighted by free slots; None when there is none."""
        now = self._clock()
        if len(self.upstreams) == 1:
            only = self.upstreams[0]
            return only if only.limiter.free else None
        total = 0
        slots = []
        for upstream in self.upstreams:
            n = upstream.open_slots(now)
            slots.append(n)
            total += n
        if not total:
            return None
        pick = self._random() * total
        for upstream, n in zip(self.upstreams, slots, strict=True):
            pick -= n
            if n and pick < 0:
                return upstream
        return next(u for u, n in zip(self.upstreams, slots, strict=True) if n)  # float rounding at the end

    async def acquire(self, deadline: float, *, again: bool = False) -> Upstream[C]:
        """A slot of some upstream, by `deadline` (the limiters' clock), in the queue's order; a call coming back
        after a failure (`again`) keeps its place at the front. QueueFull, QueueTimeout, or AllClosed."""
        if not self._waiters or again:
            upstream = self.choose()
            if upstream is not None:
                upstream.limiter.take()
                return upstream
        self._check_reopening(deadline)
        if not again and self.max_waiting is not None and len(self._waiters) >= self.max_waiting:
            raise QueueFull()
        waiter: asyncio.Future[Upstream[C]] = asyncio.get_running_loop().create_future()
        if again:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(deadline - self._clock()):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result(), None)  # handed a slot just as the wait ended: pass it on
            else:
                waiter.cancel()
                if waiter in self._waiters:  # a _wake in between may already have dropped it
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise QueueTimeout() from None
            raise

    def release(self, upstream: Upstream[C], held_s: float | None) -> None:
        """Give the slot back (and with it, to the first waiter); `held_s` teaches the queue's wait estimate."""
        if held_s is not None:
            self._mean_hold_s += self._SMOOTHING * (held_s - self._mean_hold_s)
        upstream.limiter.release()

    def estimated_wait_s(self) -> float:
        """How long a newcomer would wait now: the queue ahead of it, drained at the pool's capacity."""
        return self._mean_hold_s * (len(self._waiters) + 1) / max(self.capacity, 1)

    def _wake(self) -> None:
        while self._waiters:
            if self._waiters[0].done():
                self._waiters.popleft()
                continue
            upstream = self.choose()
            if upstream is None:
                return
            upstream.limiter.take()
            self._waiters.popleft().set_result(upstream)

    # --- failures ----------------------------------------------------------------------------------

    def succeeded(self, upstream: Upstream[C]) -> None:
        if upstream.failures or upstream.on_trial:
            upstream.failures, upstream.on_trial = 0, False
            self._wake()  # off trial: all its slots are open again

    def failed(self, upstream: Upstream[C], error: OpenAIError) -> bool:
        """Note a failed call; whether it should go to another upstream (the pool closed this one for a while)."""
        if not self.fails_over or not is_upstreams_fault(error):
            return False
        now = self._clock()
        asked = retry_after_s(error.headers, error.message)
        if now >= upstream.closed_until:  # failures of calls sent before it closed do not lengthen the backoff
            upstream.failures += 1
        backoff = min(self._retries.backoff_initial_s * 2 ** (upstream.failures - 1), self._retries.backoff_max_s)
        upstream.closed_until = max(upstream.closed_until, now + (backoff if asked is None else asked))
        upstream.on_trial = True
        upstream.last_error = error
        self._schedule_reopening()
        self._turn_away_waiters()
        return True

    def _check_reopening(self, deadline: float) -> None:
        """AllClosed when no upstream reopens soon enough for a call to wait for it."""
        closed = self._all_closed(deadline)
        if closed is not None:
            raise closed

    def _all_closed(self, deadline: float = math.inf) -> AllClosed | None:
        now = self._clock()
        if any(now >= u.closed_until for u in self.upstreams):
            return None
        first = min(self.upstreams, key=lambda u: u.closed_until)
        wait = first.closed_until - now
        if wait <= self._retries.retry_after_max_s and wait + MIN_ATTEMPT_S < deadline - now:
            return None
        assert first.last_error is not None  # closed only by `failed`, which keeps the error
        error = copy.copy(first.last_error)  # raised by every call turned away now: each its own
        error.headers = {k: v for k, v in error.headers.items() if k != "retry-after-ms"}
        error.headers["retry-after"] = str(max(1, math.ceil(wait)))
        return AllClosed(error)

    def _turn_away_waiters(self) -> None:
        """Calls queued while every upstream was open but full: when all have closed for longer than any call
        may wait, they get the error now rather than a timeout at their deadline."""
        if not self._waiters or self._all_closed() is None:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            closed = self._all_closed()
            if not waiter.done() and closed is not None:
                waiter.set_exception(closed)

    def _schedule_reopening(self) -> None:
        """Wake the queue when the first closed upstream reopens: no release may come to do it."""
        now = self._clock()
        pending = [u.closed_until for u in self.upstreams if u.closed_until > now]
        if not pending:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(min(pending) - now, self._reopened)

    def _reopened(self) -> None:
        self._timer = None
        self._wake()
        self._schedule_reopening()

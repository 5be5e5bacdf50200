"""A FIFO concurrency limiter whose capacity can change while permits are held, with a bounded queue.

An `asyncio.Semaphore` cannot shrink, and swapping one for a new one while permits are out
loses count of them. Here `resize` only moves the ceiling: when it drops below what is in use,
holders finish normally and nobody new is admitted until usage falls under the new capacity.
When `max_waiting` callers already wait, the next one is refused at once (`QueueFull`) rather
than queued without end; `estimated_wait_s` says how long the queue would have held it.

A capacity can come with an expiry (`resize(n, until=...)`, on the limiter's clock): past it nobody
new is admitted until the next `resize`. The check is made at each admission, so it holds even when
the process was frozen and wakes to releases before anything else could run.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType


class QueueFull(Exception):
    """The limiter's queue is full; the caller should come back after `estimated_wait_s`."""


class QueueTimeout(Exception):
    """No permit came free within the caller's timeout; it has left the queue."""


class Limiter:
    # Weight of the newest hold time in the running average behind `estimated_wait_s`.
    _SMOOTHING = 0.1

    def __init__(
        self, capacity: int = 0, max_waiting: int | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        self._until = math.inf
        self._clock = clock
        self.max_waiting = max_waiting
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._mean_hold_s = 1.0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def resize(self, capacity: int, *, until: float = math.inf) -> None:
        """Admit up to `capacity` at once, until `until` on the limiter's clock."""
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity, self._until = capacity, until
        self._wake()

    def _free(self) -> bool:
        return self._in_use < self._capacity and self._clock() < self._until

    def estimated_wait_s(self) -> float:
        """How long a newcomer would wait now: the queue ahead of it, drained at capacity per mean hold time."""
        return self._mean_hold_s * (len(self._waiters) + 1) / max(self._capacity, 1)

    def record_hold(self, seconds: float) -> None:
        self._mean_hold_s += self._SMOOTHING * (seconds - self._mean_hold_s)

    def try_acquire(self) -> bool:
        """Take a permit if one is free and nobody waits for it; never waits."""
        if not self._waiters and self._free():
            self._in_use += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        if self.max_waiting is not None and len(self._waiters) >= self.max_waiting:
            raise QueueFull()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the permit was handed over just as we were cancelled: pass it on
            elif waiter in self._waiters:  # a release() in between may already have dropped it
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        if self._in_use <= 0:
            raise RuntimeError("release() without a matching acquire()")
        self._in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._free():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_use += 1
                waiter.set_result(None)

    def slot(self, timeout_s: float | None = None) -> _Slot:
        """`async with limiter.slot():` holds one permit and records how long it was held (the one way
        to hold a permit: `estimated_wait_s` learns from every hold).

        With `timeout_s`, waiting longer for the permit raises `QueueTimeout`."""
        return _Slot(self, timeout_s)


class _Slot:
    __slots__ = ("_limiter", "_since", "_timeout_s")

    def __init__(self, limiter: Limiter, timeout_s: float | None) -> None:
        self._limiter = limiter
        self._timeout_s = timeout_s
        self._since = 0.0

    async def __aenter__(self) -> None:
        # A free permit is taken at once: the timeout (a timer armed and cancelled) is only for a wait.
        if not self._limiter.try_acquire():
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._limiter.acquire()
            except TimeoutError:
                raise QueueTimeout() from None
        self._since = time.monotonic()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._limiter.record_hold(time.monotonic() - self._since)
        self._limiter.release()

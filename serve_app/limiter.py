"""A FIFO concurrency limiter whose capacity can change while permits are held.

An `asyncio.Semaphore` cannot shrink, and swapping one for a new one while permits are out
loses count of them. Here `resize` only moves the ceiling: when it drops below what is in use,
holders finish normally and nobody new is admitted until usage falls under the new capacity.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


class Limiter:
    def __init__(self, capacity: int = 0) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def resize(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        self._wake()

    async def acquire(self) -> None:
        if self._in_use < self._capacity and not self._waiters:
            self._in_use += 1
            return
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
        while self._waiters and self._in_use < self._capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_use += 1
                waiter.set_result(None)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

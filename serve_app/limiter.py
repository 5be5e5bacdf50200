"""A gauge of concurrent permits whose capacity can change, and expire, while permits are held.

An `asyncio.Semaphore` cannot shrink, and swapping one for a new one while permits are out
loses count of them. Here `resize` only moves the ceiling: when it drops below what is in use,
holders finish normally and nobody new is admitted until usage falls under the new capacity.

A capacity can come with an expiry (`resize(n, until=...)`, on the limiter's clock): past it nobody
new is admitted until the next `resize`. The check is made at each admission (`free`, `take`), not
by a timer, so it holds even when the process was frozen and wakes to releases before anything
else could run: those releases fire `on_free`, and whoever listens finds nothing free.

It has no queue of its own: the pool of upstreams (upstreams.py) keeps one across several
limiters, takes a permit with `take` when `free` says there is one, and learns from `on_free`
when one may have come free.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Limiter:
    def __init__(self, capacity: int = 0, *, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        self._until = math.inf
        self._clock = clock
        self._in_use = 0
        self.on_free: Callable[[], None] | None = None

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def free(self) -> int:
        """Permits that could be taken now: none past the capacity's expiry."""
        if self._clock() >= self._until:
            return 0
        return max(0, self._capacity - self._in_use)

    def resize(self, capacity: int, *, until: float = math.inf) -> None:
        """Admit up to `capacity` at once, until `until` on the limiter's clock."""
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity, self._until = capacity, until
        self._freed()

    def take(self) -> None:
        """One permit, without waiting: only when `free` says there is one."""
        if not self.free:
            raise RuntimeError("take() with no permit free")
        self._in_use += 1

    def release(self) -> None:
        if self._in_use <= 0:
            raise RuntimeError("release() without a matching take()")
        self._in_use -= 1
        self._freed()

    def _freed(self) -> None:
        if self.on_free is not None:
            self.on_free()

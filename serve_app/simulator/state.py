"""What the simulator's endpoints share: configuration, counters, quotas, injected faults, recent requests."""

from __future__ import annotations

from collections import deque
from typing import Any

from .config import SimulatorConfig
from .faults import FaultQueue, StatusTally
from .ratelimit import Clock, RateLimiter
from .stats import Stats


class SimulatorState:
    def __init__(self, config: SimulatorConfig, clock: Clock) -> None:
        self._clock = clock
        self.stats = Stats()
        self.faults = FaultQueue()
        self.status_tally = StatusTally()
        self.recent_requests: deque[dict[str, Any]] = deque(maxlen=config.recorded_requests)
        self.config = config
        self.limiter = self._new_limiter()

    def configure(self, config: SimulatorConfig) -> None:
        """Switch to `config`; quota windows start afresh."""
        self.config = config
        self.limiter = self._new_limiter()
        self.recent_requests = deque(self.recent_requests, maxlen=config.recorded_requests)

    def reset(self) -> None:
        self.stats.reset()
        self.faults.clear()
        self.status_tally.clear()
        self.recent_requests.clear()
        self.limiter = self._new_limiter()

    def _new_limiter(self) -> RateLimiter:
        config = self.config
        return RateLimiter(rpm=config.rpm, tpm=config.tpm, window_s=config.rate_limit_window_s, clock=self._clock)

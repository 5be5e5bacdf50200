"""Azure-style request and token quotas.

Azure turns per-minute quotas into pro-rata allowances over short windows (1 s or 10 s), per deployment,
and charges a request its prompt tokens plus the whole completion budget it asks for. Windows here are
fixed: they start with the first request after the previous one expired. The clock is injectable so tests
can move time by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Clock = Callable[[], float]


def charged_tokens(body: Mapping[str, Any], prompt_tokens: int, default_max_tokens: int) -> int:
    completion_budget = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    return prompt_tokens + completion_budget * (body.get("n") or 1)


@dataclass(frozen=True)
class Admission:
    allowed: bool
    # None when that quota is unlimited.
    remaining_requests: int | None
    remaining_tokens: int | None
    retry_after_s: float = 0.0
    exceeded: Literal["call", "token"] | None = None


@dataclass
class _Window:
    started: float
    requests: int = 0
    tokens: int = 0


class RateLimiter:
    def __init__(self, *, rpm: int | None, tpm: int | None, window_s: float, clock: Clock = time.monotonic) -> None:
        self._request_allowance = None if rpm is None else max(1, int(rpm * window_s / 60))
        self._token_allowance = None if tpm is None else max(1, int(tpm * window_s / 60))
        self._window_s = window_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    @property
    def enabled(self) -> bool:
        return self._request_allowance is not None or self._token_allowance is not None

    def admit(self, deployment: str, tokens: int) -> Admission:
        now = self._clock()
        window = self._windows.get(deployment)
        if window is None or now >= window.started + self._window_s:
            window = self._windows[deployment] = _Window(now)
        exceeded: Literal["call", "token"] | None = None
        if self._request_allowance is not None and window.requests >= self._request_allowance:
            exceeded = "call"
        # A request larger than a whole window's allowance still gets an empty window, or it could never pass.
        elif self._token_allowance is not None and window.tokens and window.tokens + tokens > self._token_allowance:
            exceeded = "token"
        if exceeded is None:
            window.requests += 1
            window.tokens += tokens
        return Admission(
            allowed=exceeded is None,
            remaining_requests=_remaining(self._request_allowance, window.requests),
            remaining_tokens=_remaining(self._token_allowance, window.tokens),
            retry_after_s=0.0 if exceeded is None else window.started + self._window_s - now,
            exceeded=exceeded,
        )


def _remaining(allowance: int | None, used: int) -> int | None:
    return None if allowance is None else max(0, allowance - used)

"""When an upstream call is tried again, and after how long. Pure: the client runs the loop.

Retried: 408, 409, 429 and 5xx answers, connection failures and timeouts. Never the other 4xx:
the same request would fail the same way. The wait is what Azure asked for (`retry-after-ms`,
else `retry-after` in seconds or as an HTTP date) when it asked; if it asked for longer than
`retry_after_max_s`, we give up at once and hand its answer (with its Retry-After) to the
client, which can wait better than a held connection can. Otherwise the wait is exponential
from `backoff_initial_s`, capped at `backoff_max_s`, with up to 25% jitter so that a burst of
429s does not come back as a burst. The caller's deadline bounds everything, waits included.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

from .config import Retries
from .errors import OpenAIError, UpstreamTimeout, UpstreamUnavailable

RETRYABLE_STATUSES = frozenset({408, 409, 429})


def is_retryable(error: OpenAIError) -> bool:
    if isinstance(error, (UpstreamTimeout, UpstreamUnavailable)):
        return True
    return error.status in RETRYABLE_STATUSES or error.status >= 500


def retry_after_s(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """Azure's requested wait, or None when it gave none (or one we cannot read)."""
    if "retry-after-ms" in headers:
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now())
    except (TypeError, ValueError):
        return None


class RetryPolicy:
    def __init__(self, retries: Retries, rng: random.Random | None = None) -> None:
        self._retries = retries
        self._rng = rng or random.Random()

    def delay(self, attempt: int, error: OpenAIError, remaining_s: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up with `error`."""
        if attempt >= self._retries.max_attempts or not is_retryable(error):
            return None
        asked = retry_after_s(error.headers)
        if asked is not None:
            if asked > self._retries.retry_after_max_s:
                return None
            wait = asked
        else:
            backoff = min(self._retries.backoff_initial_s * 2 ** (attempt - 1), self._retries.backoff_max_s)
            wait = backoff * (1 - 0.25 * self._rng.random())
        return wait if wait < remaining_s else None

"""When an upstream call is tried again, and after how long. Pure: the client runs the loop.

Retried: 408, 409, 429 and 5xx answers, connection failures and timeouts. Never the other 4xx:
the same request would fail the same way. The wait is what Azure asked for, when it asked:
`retry-after-ms`, else `retry-after` (seconds or an HTTP date), else the longest of the reset
times of the exhausted quotas (`x-ratelimit-reset-requests` / `-tokens`, durations such as
`1m30s`) and the message's "retry after N seconds": Azure's 429s sometimes carry only those,
and backing off blindly then spends every attempt before the window reopens. If it asked for longer than
`retry_after_max_s` (a daily quota asks for 86,400 s), we give up at once and hand its answer,
with a Retry-After, to the client, which can wait better than a held connection can. Otherwise
the wait is exponential from `backoff_initial_s`, capped at `backoff_max_s`, with up to 25%
jitter so that a burst of 429s does not come back as a burst. The caller's deadline bounds
everything, waits included, and a retry must leave its attempt at least `MIN_ATTEMPT_S` of it.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

from .config import Retries
from .errors import CredentialUnavailable, OpenAIError, UpstreamTimeout, UpstreamUnavailable

RETRYABLE_STATUSES = frozenset({408, 409, 429})
# A retry must leave its attempt at least this much of the deadline.
MIN_ATTEMPT_S = 1.0


def is_upstreams_fault(error: OpenAIError) -> bool:
    """Whether `error` says the upstream, not the request, is in trouble (throttled, failing, unreachable,
    without a credential): another deployment of the same model may well answer. A 400 (a content filter
    among them), 401/403/404 or 408/409 would fail, or mean the same, wherever it went."""
    return error.status == 429 or error.status >= 500


def is_retryable(error: OpenAIError) -> bool:
    if isinstance(error, CredentialUnavailable):
        return False  # azure-identity retries its own token endpoint; waiting for it again only delays the error
    if isinstance(error, (UpstreamTimeout, UpstreamUnavailable)):
        return True
    return error.status in RETRYABLE_STATUSES or error.status >= 500


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_RETRY_SENTENCE = re.compile(r"retry after (\d+(?:\.\d+)?) seconds?", re.IGNORECASE)


def duration_s(value: str) -> float | None:
    """`1s`, `250ms`, `1m30s`, `6.5s` or a bare number of seconds; None when unreadable."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        return None
    return sum(float(number) * _SECONDS[unit] for number, unit in parts)


def retry_after_s(headers: Mapping[str, str], message: str = "", now: Callable[[], float] = time.time) -> float | None:
    """The wait Azure asked for, or None when it gave none (or none we can read).

    `retry-after-ms` (else `retry-after`) is Azure's own answer to the question, to the millisecond;
    without one, the longest of the exhausted quotas' reset times and the message's sentence."""
    if "retry-after-ms" in headers:
        ms = duration_s(headers["retry-after-ms"])
        if ms is not None:
            return ms / 1000
    if "retry-after" in headers:
        seconds = _seconds_or_date(headers["retry-after"], now)
        if seconds is not None:
            return seconds
    hints: list[float | None] = []
    for quota in ("requests", "tokens"):
        # A quota with some left is not what stopped this call; its reset time does not apply.
        reset = headers.get(f"x-ratelimit-reset-{quota}")
        if reset is not None and _exhausted(headers.get(f"x-ratelimit-remaining-{quota}")):
            hints.append(duration_s(reset))
    sentence = _RETRY_SENTENCE.search(message)
    if sentence:
        hints.append(float(sentence.group(1)))
    waits = [hint for hint in hints if hint is not None]
    return max(waits) if waits else None


def _exhausted(remaining: str | None) -> bool:
    try:
        return remaining is None or int(remaining) <= 0
    except ValueError:
        return True


def _seconds_or_date(value: str, now: Callable[[], float]) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now())
    except (TypeError, ValueError):
        return None


class RetryPolicy:
    """`handed_over`: errors not retried here because the caller has somewhere better to send the call (the
    other upstreams of a pool, upstreams.py)."""

    def __init__(
        self,
        retries: Retries,
        rng: random.Random | None = None,
        handed_over: Callable[[OpenAIError], bool] | None = None,
    ) -> None:
        self._retries = retries
        self._rng = rng or random.Random()
        self._handed_over = handed_over

    def delay(self, attempt: int, error: OpenAIError, remaining_s: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up with `error`."""
        if attempt >= self._retries.max_attempts or not is_retryable(error):
            return None
        if self._handed_over is not None and self._handed_over(error):
            return None
        asked = retry_after_s(error.headers, error.message)
        if asked is not None:
            if asked > self._retries.retry_after_max_s:
                return None
            wait = asked
        else:
            backoff = min(self._retries.backoff_initial_s * 2 ** (attempt - 1), self._retries.backoff_max_s)
            wait = backoff * (1 - 0.25 * self._rng.random())
        # Waking with almost no time left would spend the attempt on a 504 where Azure's answer was the better one.
        return wait if wait + MIN_ATTEMPT_S < remaining_s else None

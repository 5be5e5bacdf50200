"""Observability: Ray Serve metrics and one structured log line per request.

Metrics (exported by Ray with a `ray_` prefix; Serve adds deployment, replica and application tags):

| metric | kind | tags |
|---|---|---|
| serve_app_requests | counter | endpoint, status |
| serve_app_upstream_in_flight / _capacity / _waiting | gauge | |
| serve_app_upstream_attempts | counter | status (Azure's, 502 unreachable, 504 timeout) |
| serve_app_upstream_retries | counter | status that caused it |
| serve_app_upstream_rate_limited | counter | |
| serve_app_upstream_latency_s | histogram | status |
| serve_app_time_to_first_token_s | histogram | endpoint |
| serve_app_tokens | counter | kind (input, output) |

The log line is JSON with the request id (also in the `x-request-id` response header), never a
body or a key. It replaces Serve's access log line, which the Serve config turns off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .limiter import Limiter

logger = logging.getLogger("ray.serve")

LATENCY_BOUNDS_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600]


@dataclass
class RequestRecord:
    """What one request did, filled in as it goes and reported once at its end."""

    request_id: str
    endpoint: str
    stream: bool = False
    started: float = field(default_factory=time.monotonic)
    status: int = 200
    outcome: str | None = None  # for streams: completed, incomplete, failed, or client_closed
    error_code: str | None = None
    ttft_s: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0

    def first_token(self) -> None:
        if self.ttft_s is None:
            self.ttft_s = time.monotonic() - self.started

    def tokens(self, chat_usage: dict[str, Any] | None) -> None:
        if chat_usage:
            self.input_tokens = chat_usage.get("prompt_tokens") or 0
            self.output_tokens = chat_usage.get("completion_tokens") or 0


class Telemetry:
    """Per-replica metrics; also the observer the Azure client reports its attempts to."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Gauge, Histogram

        self._requests = Counter("serve_app_requests", "Requests answered, by endpoint and HTTP status",
                                 tag_keys=("endpoint", "status"))
        self._in_flight = Gauge("serve_app_upstream_in_flight", "Calls to Azure in flight on this replica")
        self._capacity = Gauge("serve_app_upstream_capacity", "This replica's granted share of the budget")
        self._waiting = Gauge("serve_app_upstream_waiting", "Requests waiting for an upstream slot")
        self._attempts = Counter("serve_app_upstream_attempts", "Calls to Azure, by status", tag_keys=("status",))
        self._retries = Counter("serve_app_upstream_retries", "Retried calls, by the status that caused them",
                                tag_keys=("status",))
        self._rate_limited = Counter("serve_app_upstream_rate_limited", "429 answers from Azure")
        self._latency = Histogram("serve_app_upstream_latency_s", "Azure call duration (to headers for streams)",
                                  boundaries=LATENCY_BOUNDS_S, tag_keys=("status",))
        self._ttft = Histogram("serve_app_time_to_first_token_s", "Request start to first streamed token",
                               boundaries=LATENCY_BOUNDS_S, tag_keys=("endpoint",))
        self._tokens = Counter("serve_app_tokens", "Tokens, as Azure counted them", tag_keys=("kind",))

    # --- the Azure client's observer ------------------------------------------------------------

    def attempt(self, status: int, seconds: float) -> None:
        tags = {"status": str(status)}
        self._attempts.inc(tags=tags)
        self._latency.observe(seconds, tags=tags)
        if status == 429:
            self._rate_limited.inc()

    def retry(self, status: int) -> None:
        self._retries.inc(tags={"status": str(status)})

    # --- per request ----------------------------------------------------------------------------

    def finish(self, record: RequestRecord) -> None:
        self._requests.inc(tags={"endpoint": record.endpoint, "status": str(record.status)})
        if record.input_tokens:
            self._tokens.inc(record.input_tokens, tags={"kind": "input"})
        if record.output_tokens:
            self._tokens.inc(record.output_tokens, tags={"kind": "output"})
        if record.ttft_s is not None:
            self._ttft.observe(record.ttft_s, tags={"endpoint": record.endpoint})
        line = {
            "request_id": record.request_id,
            "endpoint": record.endpoint,
            "stream": record.stream,
            "status": record.status,
            "outcome": record.outcome,
            "error_code": record.error_code,
            "duration_ms": round((time.monotonic() - record.started) * 1000, 1),
            "ttft_ms": None if record.ttft_s is None else round(record.ttft_s * 1000, 1),
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
        }
        logger.info("serve_app.request %s", json.dumps(line, separators=(",", ":")))

    async def watch(self, limiter: Limiter, period_s: float = 1.0) -> None:
        """Sample the limiter's gauges (cheaper than touching them on every request)."""
        while True:
            self._in_flight.set(limiter.in_use)
            self._capacity.set(limiter.capacity)
            self._waiting.set(limiter.waiting)
            await asyncio.sleep(period_s)

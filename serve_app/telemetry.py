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

The request log is one JSON line per request, with the request id (also in the `x-request-id`
response header), never a body or a key, in `requests_<app>_<replica>.log` beside the replica's
Serve log.

Both are kept off the request path, measured (tests/benchmark/RESULTS.md, variants): per-request
metric updates and a per-request `logging` call cost about 80 µs of replica CPU per request at 64
clients, a sixth of all our work. So counters add up in this process and reach Ray, and log lines
reach their file, once a second (`watch`) and at shutdown (`close`); histograms, which Ray cannot
take in bulk, are observed as they come.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from . import jsonwire
from .limiter import Limiter

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
    tools_left_out: tuple[str, ...] = ()  # hosted tool types the config leaves out (ignored_hosted_tools)

    def first_token(self) -> None:
        if self.ttft_s is None:
            self.ttft_s = time.monotonic() - self.started

    def tokens(self, chat_usage: dict[str, Any] | None) -> None:
        if chat_usage:
            self.input_tokens = chat_usage.get("prompt_tokens") or 0
            self.output_tokens = chat_usage.get("completion_tokens") or 0

    def line(self) -> bytes:
        return jsonwire.dumps(
            {
                "time": round(time.time(), 3),
                "request_id": self.request_id,
                "endpoint": self.endpoint,
                "stream": self.stream,
                "status": self.status,
                "outcome": self.outcome,
                "error_code": self.error_code,
                "duration_ms": round((time.monotonic() - self.started) * 1000, 1),
                "ttft_ms": None if self.ttft_s is None else round(self.ttft_s * 1000, 1),
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
            }
        )


def request_log_path(app: str, replica: str) -> str:
    from ray.serve._private.logging_utils import get_serve_logs_dir

    return os.path.join(get_serve_logs_dir(), f"requests_{app}_{replica}.log")


class Telemetry:
    """Per-replica metrics and request log; also the observer the Azure client reports its attempts to."""

    def __init__(self, log_path: str | None) -> None:
        from ray.serve.metrics import Counter as RayCounter
        from ray.serve.metrics import Gauge, Histogram

        self._counters = {
            "requests": RayCounter(
                "serve_app_requests", "Requests answered, by endpoint and HTTP status", tag_keys=("endpoint", "status")
            ),
            "attempts": RayCounter("serve_app_upstream_attempts", "Calls to Azure, by status", tag_keys=("status",)),
            "retries": RayCounter(
                "serve_app_upstream_retries", "Retried calls, by the status that caused them", tag_keys=("status",)
            ),
            "rate_limited": RayCounter("serve_app_upstream_rate_limited", "429 answers from Azure"),
            "tokens": RayCounter("serve_app_tokens", "Tokens, as Azure counted them", tag_keys=("kind",)),
            "tools_left_out": RayCounter(
                "serve_app_hosted_tools_left_out", "Hosted tools left out of requests, by type", tag_keys=("type",)
            ),
        }
        self._gauges = {
            "in_use": Gauge("serve_app_upstream_in_flight", "Calls to Azure in flight on this replica"),
            "capacity": Gauge("serve_app_upstream_capacity", "This replica's granted share of the budget"),
            "waiting": Gauge("serve_app_upstream_waiting", "Requests waiting for an upstream slot"),
        }
        self._latency = Histogram(
            "serve_app_upstream_latency_s",
            "Azure call duration (to headers for streams)",
            boundaries=LATENCY_BOUNDS_S,
            tag_keys=("status",),
        )
        self._ttft = Histogram(
            "serve_app_time_to_first_token_s",
            "Request start to first streamed token",
            boundaries=LATENCY_BOUNDS_S,
            tag_keys=("endpoint",),
        )
        # (counter, tags) -> what to add at the next flush
        self._pending: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._lines: list[bytes] = []
        self._log: IO[bytes] | None = open(log_path, "ab") if log_path else None

    # --- the Azure client's observer ------------------------------------------------------------

    def attempt(self, status: int, seconds: float) -> None:
        self._pending["attempts", (("status", str(status)),)] += 1
        self._latency.observe(seconds, tags={"status": str(status)})
        if status == 429:
            self._pending["rate_limited", ()] += 1

    def retry(self, status: int) -> None:
        self._pending["retries", (("status", str(status)),)] += 1

    # --- per request ----------------------------------------------------------------------------

    def finish(self, record: RequestRecord) -> None:
        self._pending["requests", (("endpoint", record.endpoint), ("status", str(record.status)))] += 1
        if record.input_tokens:
            self._pending["tokens", (("kind", "input"),)] += record.input_tokens
        if record.output_tokens:
            self._pending["tokens", (("kind", "output"),)] += record.output_tokens
        for kind in record.tools_left_out:
            self._pending["tools_left_out", (("type", kind),)] += 1
        if record.ttft_s is not None:
            self._ttft.observe(record.ttft_s, tags={"endpoint": record.endpoint})
        self._lines.append(record.line())

    # --- off the request path -------------------------------------------------------------------

    def flush(self, limiter: Limiter | None = None) -> None:
        pending, self._pending = self._pending, Counter()
        for (name, tags), value in pending.items():
            self._counters[name].inc(value, tags=dict(tags) or None)
        if limiter is not None:
            self._gauges["in_use"].set(limiter.in_use)
            self._gauges["capacity"].set(limiter.capacity)
            self._gauges["waiting"].set(limiter.waiting)
        lines, self._lines = self._lines, []
        if self._log is not None and lines:
            self._log.write(b"\n".join(lines) + b"\n")
            self._log.flush()

    async def watch(self, limiter: Limiter, period_s: float = 1.0) -> None:
        while True:
            self.flush(limiter)
            await asyncio.sleep(period_s)

    def close(self) -> None:
        self.flush()
        if self._log is not None:
            self._log.close()
            self._log = None

"""Observability: Ray Serve metrics and one structured log line per request.

Metrics (exported by Ray with a `ray_` prefix; Serve adds deployment, replica and application tags):

| metric | kind | tags |
|---|---|---|
| serve_app_requests | counter | endpoint, status |
| serve_app_upstream_in_flight / _capacity / _open | gauge | upstream |
| serve_app_upstream_waiting | gauge | (one queue for the pool) |
| serve_app_upstream_attempts | counter | upstream, status (Azure's, 502 unreachable, 504 timeout) |
| serve_app_upstream_retries | counter | upstream, status that caused it |
| serve_app_upstream_rate_limited | counter | upstream |
| serve_app_upstream_cooldowns | counter | upstream, status that closed it (its call went to another) |
| serve_app_upstream_latency_s | histogram | upstream, status |
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
from typing import IO, TYPE_CHECKING, Any

from . import jsonwire

if TYPE_CHECKING:
    from .upstreams import Pool

LATENCY_BOUNDS_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600]


@dataclass(slots=True)  # one per call in flight
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
    upstream: str | None = None  # the pool's upstream that took the call (the last one tried)

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
                "upstream": self.upstream,
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
                "serve_app_requests",
                "Requests answered, by endpoint and HTTP status",
                tag_keys=("endpoint", "status"),  # type: ignore[arg-type]  # Ray types tag_keys as a 1-tuple
            ),
            "attempts": RayCounter(
                "serve_app_upstream_attempts",
                "Calls to Azure, by upstream and status",
                tag_keys=("upstream", "status"),  # type: ignore[arg-type]
            ),
            "retries": RayCounter(
                "serve_app_upstream_retries",
                "Retried calls, by upstream and the status that caused them",
                tag_keys=("upstream", "status"),  # type: ignore[arg-type]
            ),
            "rate_limited": RayCounter(
                "serve_app_upstream_rate_limited", "429 answers from Azure, by upstream", tag_keys=("upstream",)
            ),
            "cooldowns": RayCounter(
                "serve_app_upstream_cooldowns",
                "Calls that closed their upstream for a while and went to another, by upstream and status",
                tag_keys=("upstream", "status"),  # type: ignore[arg-type]
            ),
            "tokens": RayCounter("serve_app_tokens", "Tokens, as Azure counted them", tag_keys=("kind",)),
            "tools_left_out": RayCounter(
                "serve_app_hosted_tools_left_out", "Hosted tools left out of requests, by type", tag_keys=("type",)
            ),
        }
        self._gauges = {
            "in_use": Gauge(
                "serve_app_upstream_in_flight", "Calls to Azure in flight on this replica", tag_keys=("upstream",)
            ),
            "capacity": Gauge(
                "serve_app_upstream_capacity", "This replica's granted share of the budget", tag_keys=("upstream",)
            ),
            "open": Gauge(
                "serve_app_upstream_open", "1 while the upstream takes calls, 0 cooling down", tag_keys=("upstream",)
            ),
        }
        self._waiting = Gauge("serve_app_upstream_waiting", "Requests waiting for an upstream slot")
        self._latency = Histogram(
            "serve_app_upstream_latency_s",
            "Azure call duration (to headers for streams)",
            boundaries=LATENCY_BOUNDS_S,
            tag_keys=("upstream", "status"),  # type: ignore[arg-type]
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
        # Open for the replica's life, closed in close().
        self._log: IO[bytes] | None = open(log_path, "ab") if log_path else None  # noqa: SIM115

    # --- what the upstreams' clients and the pool report -------------------------------------------

    def upstream(self, name: str) -> UpstreamTelemetry:
        """The observer of one upstream's Azure client (azure.UpstreamObserver)."""
        return UpstreamTelemetry(self, name)

    def attempt(self, upstream: str, status: int, seconds: float) -> None:
        self._pending["attempts", (("upstream", upstream), ("status", str(status)))] += 1
        self._latency.observe(seconds, tags={"upstream": upstream, "status": str(status)})
        if status == 429:
            self._pending["rate_limited", (("upstream", upstream),)] += 1

    def retry(self, upstream: str, status: int) -> None:
        self._pending["retries", (("upstream", upstream), ("status", str(status)))] += 1

    def cooldown(self, upstream: str, status: int) -> None:
        self._pending["cooldowns", (("upstream", upstream), ("status", str(status)))] += 1

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

    def flush(self, pool: Pool[Any] | None = None) -> None:
        pending, self._pending = self._pending, Counter()
        for (name, tags), value in pending.items():
            self._counters[name].inc(value, tags=dict(tags))  # Ray reads empty tags as none
        if pool is not None:
            now = time.monotonic()
            for upstream in pool.upstreams:
                named = {"upstream": upstream.name}
                self._gauges["in_use"].set(upstream.limiter.in_use, tags=named)
                self._gauges["capacity"].set(upstream.limiter.capacity, tags=named)
                self._gauges["open"].set(0 if now < upstream.closed_until else 1, tags=named)
            self._waiting.set(pool.waiting)
        lines, self._lines = self._lines, []
        if self._log is not None and lines:
            self._log.write(b"\n".join(lines) + b"\n")
            self._log.flush()

    async def watch(self, pool: Pool[Any], period_s: float = 1.0) -> None:
        while True:
            self.flush(pool)
            await asyncio.sleep(period_s)

    def close(self) -> None:
        self.flush()
        if self._log is not None:
            self._log.close()
            self._log = None


class UpstreamTelemetry:
    """One upstream's Azure client reports here; its figures carry the upstream's name."""

    __slots__ = ("_name", "_telemetry")

    def __init__(self, telemetry: Telemetry, name: str) -> None:
        self._telemetry, self._name = telemetry, name

    def attempt(self, status: int, seconds: float) -> None:
        self._telemetry.attempt(self._name, status, seconds)

    def retry(self, status: int) -> None:
        self._telemetry.retry(self._name, status)

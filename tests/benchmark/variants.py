"""Benchmark-only variants of our model server, each with one part swapped, to price that part.

Each is a subclass of the real deployment (routes, translation, limiter, budget unchanged) that
replaces one component after the real constructor has run:

- `canned`: no upstream HTTP at all; the client answers a fixed completion (parsed from JSON
  each time, as a real answer would be). What everything except the upstream hop costs.
- `nolog`: the request log switched off (lines are still made, not written).
- `nometrics`: the Ray metrics updated per request (counters, histograms) switched off.
- `lean`: `nolog` and `nometrics` together.
- `defaultgc`: Python's default collector threshold instead of ours (server.GC_GEN0_THRESHOLD).

Only the non-streaming path is changed; streams still use the real client. They exist to show,
in the same run, what a product change would buy; they are not proposals for code to copy as is.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any

import orjson
from ray import serve
from ray.serve import Application

from serve_app import telemetry
from serve_app.azure import AzureClient
from serve_app.server import AzureModelServer

_CANNED = orjson.dumps(
    {
        "id": "chatcmpl-0123456789abcdef0123456789abcdef",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-2024-11-20",
        "system_fingerprint": "fp_0123456789",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": "hello", "refusal": None, "annotations": []},
                "content_filter_results": {},
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        "prompt_filter_results": [],
    }
)


class CannedClient:
    def __init__(self, real: AzureClient) -> None:
        self._real = real

    async def complete(self, body: Mapping[str, Any], *_: Any, **__: Any) -> dict[str, Any]:
        self._real._observer.attempt(200, 0.0)
        return orjson.loads(_CANNED)

    async def open_stream(self, body: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        return await self._real.open_stream(body, *args, **kwargs)

    def start(self) -> None:
        self._real.start()

    async def aclose(self) -> None:
        await self._real.aclose()


class _NoMetric:
    def inc(self, *args: Any, **kwargs: Any) -> None:
        pass

    observe = set = inc


def _silence_log(tel: telemetry.Telemetry) -> None:
    # This replica only: the request log goes nowhere.
    tel._log = None


def _silence_metrics(tel: telemetry.Telemetry) -> None:
    from ray.util.metrics import Metric

    for name, value in list(vars(tel).items()):
        if isinstance(value, Metric):
            setattr(tel, name, _NoMetric())
        elif isinstance(value, dict):
            for key, metric in list(value.items()):
                if isinstance(metric, Metric):
                    value[key] = _NoMetric()


_Base: Any = AzureModelServer.func_or_class


class Variant(_Base):  # type: ignore[misc, valid-type]
    async def __init__(self, args: dict[str, Any], variant: str) -> None:
        await super().__init__(args)
        if variant in ("nolog", "lean"):
            _silence_log(self._telemetry)
        if variant in ("nometrics", "lean"):
            _silence_metrics(self._telemetry)
        if variant == "canned":
            for upstream in self._pool.upstreams:
                upstream.client = CannedClient(upstream.client)
        if variant == "defaultgc":
            gc.set_threshold(700, *gc.get_threshold()[1:])


VariantServer = serve.deployment(
    Variant, name="AzureModelServer", max_ongoing_requests=100_000, graceful_shutdown_timeout_s=5
)


def build_app(args: dict[str, Any]) -> Application:
    args = dict(args)
    variant = args.pop("variant")
    return VariantServer.bind(args, variant)

"""Benchmark-only variants of our model server, each with one part swapped, to price that part.

Each is a subclass of the real deployment (routes, translation, limiter, budget unchanged) that
replaces one component after the real constructor has run:

- `canned`: no upstream HTTP at all; the client answers a fixed completion (parsed from JSON
  each time, as a real answer would be). What everything except the upstream hop costs.
- `aiohttp`: the Azure client's single non-streaming attempt goes straight to aiohttp instead
  of httpx over the httpx-aiohttp transport (retry loop, deadline, errors unchanged).
- `nolog`: the per-request log line switched off (the logger call returns at once).
- `nometrics`: the Ray metrics updated per request (counters, histograms) switched off.
- `lean`: `aiohttp`, `nolog` and `nometrics` together.

Only the non-streaming path is changed; streams still use the real client. They exist to show,
in the same run, what a product change would buy; they are not proposals for code to copy as is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Mapping
from urllib.parse import urlencode

import aiohttp
from ray import serve
from ray.serve import Application

from serve_app import telemetry
from serve_app.azure import AzureClient, upstream_error
from serve_app.errors import UpstreamTimeout, UpstreamUnavailable
from serve_app.server import AzureModelServer

_CANNED = json.dumps({
    "id": "chatcmpl-0123456789abcdef0123456789abcdef", "object": "chat.completion", "created": 1700000000,
    "model": "gpt-4o-2024-11-20", "system_fingerprint": "fp_0123456789",
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                 "message": {"role": "assistant", "content": "hello", "refusal": None, "annotations": []},
                 "content_filter_results": {}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, "prompt_filter_results": [],
}).encode()


class CannedClient:
    def __init__(self, real: AzureClient) -> None:
        self._real = real

    async def complete(self, body: Mapping[str, Any], **_: Any) -> dict[str, Any]:
        self._real._observer.attempt(200, 0.0)
        return json.loads(_CANNED)

    def stream(self, body: Mapping[str, Any], **kwargs: Any) -> Any:
        return self._real.stream(body, **kwargs)

    async def aclose(self) -> None:
        await self._real.aclose()


class AiohttpAzureClient(AzureClient):
    """AzureClient whose non-streaming attempt uses one aiohttp session directly."""

    def __init__(self, *, api_key: Any, query: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(api_key=api_key, query=query, **kwargs)
        self._direct_url = f"{self._url}?{urlencode(dict(query))}"
        self._direct_headers = {"api-key": api_key.get_secret_value(), "content-type": "application/json"}
        self._session: aiohttp.ClientSession | None = None

    async def _complete_once(self, payload: bytes) -> dict[str, Any]:
        if self._session is None:
            timeouts = self._timeouts
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(connect=timeouts.connect_s, sock_read=timeouts.read_s))
        started = time.monotonic()
        try:
            async with self._session.post(self._direct_url, data=payload, headers=self._direct_headers) as response:
                content = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            timed_out = isinstance(exc, asyncio.TimeoutError)
            error = (UpstreamTimeout if timed_out else UpstreamUnavailable)(
                f"Could not complete the call to Azure ({type(exc).__name__}).",
                code="upstream_timeout" if timed_out else "upstream_unavailable")
            self._observer.attempt(error.status, time.monotonic() - started)
            raise error from None
        self._observer.attempt(response.status, time.monotonic() - started)
        if response.status >= 400:
            raise upstream_error(response.status, content, response.headers)
        try:
            return json.loads(content)
        except ValueError:
            raise UpstreamUnavailable("Azure answered with a body that is not JSON.", code="upstream_invalid_response") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        await super().aclose()


class _NoMetric:
    def inc(self, *args: Any, **kwargs: Any) -> None:
        pass

    observe = set = inc


def _silence_log() -> None:
    # This replica only: the module's logger becomes one that drops everything.
    quiet = logging.getLogger("serve_app.bench.silent")
    quiet.disabled = True
    telemetry.logger = quiet


def _silence_metrics(tel: telemetry.Telemetry) -> None:
    from ray.util.metrics import Metric

    for name, value in list(vars(tel).items()):
        if isinstance(value, Metric):
            setattr(tel, name, _NoMetric())


_Base: Any = AzureModelServer.func_or_class


class Variant(_Base):  # type: ignore[misc, valid-type]
    async def __init__(self, args: dict[str, Any], variant: str) -> None:
        await super().__init__(args)
        if variant in ("nolog", "lean"):
            _silence_log()
        if variant in ("nometrics", "lean"):
            _silence_metrics(self._telemetry)
        if variant in ("aiohttp", "lean"):
            a = self._args
            real, self._client = self._client, AiohttpAzureClient(
                base_url=a.openai_base_url, deployment=self._model, query=a.default_query, api_key=a.api_key(),
                timeouts=a.timeouts, retries=a.retries, observer=self._telemetry)
            await real.aclose()
        if variant == "canned":
            self._client = CannedClient(self._client)


VariantServer = serve.deployment(Variant, name="AzureModelServer", max_ongoing_requests=100_000,
                                 graceful_shutdown_timeout_s=5)


def build_app(args: dict[str, Any]) -> Application:
    args = dict(args)
    variant = args.pop("variant")
    return VariantServer.bind(args, variant)

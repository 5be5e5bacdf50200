"""The Azure OpenAI Chat Completions client: knows HTTP and Azure, nothing of Responses.

One instance per replica. It never limits concurrency itself (the caller's limiter does, so
that no request ever waits inside the HTTP pool), and it turns every upstream failure into a
typed `OpenAIError` carrying Azure's status and code.

It speaks aiohttp directly. Measured (tests/benchmark/RESULTS.md): httpx's own pool burns
CPU quadratically in waiting requests, and httpx over the aiohttp transport still costs about
235 µs more replica CPU per request than aiohttp alone, a third of our whole per-request cost.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp
from pydantic import SecretStr

from . import jsonwire
from .config import Retries, Timeouts, is_v1_url
from .errors import OpenAIError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from .retry import RetryPolicy

if sys.version_info >= (3, 11):
    from asyncio import timeout as deadline_after
else:  # pragma: no cover
    from async_timeout import timeout as deadline_after

# Headers of an Azure error answer that a client needs to back off correctly.
_FORWARDED_ERROR_HEADERS = ("retry-after", "retry-after-ms")


class UpstreamObserver(Protocol):
    """Told about every attempt (Azure's status, or 502/504 for transport failures) and every retry."""

    def attempt(self, status: int, seconds: float) -> None: ...

    def retry(self, status: int) -> None: ...


class _Unobserved:
    def attempt(self, status: int, seconds: float) -> None:
        pass

    def retry(self, status: int) -> None:
        pass


class AzureClient:
    def __init__(
        self,
        *,
        base_url: str,
        deployment: str,
        query: Mapping[str, str],
        api_key: SecretStr,
        timeouts: Timeouts,
        retries: Retries | None = None,
        observer: UpstreamObserver | None = None,
    ) -> None:
        self.deployment = deployment
        base = base_url.rstrip("/")
        # The v1 API names the deployment in the body; the classic one in the path (and ignores the body's).
        self._v1 = is_v1_url(base)
        path = (
            f"{base}/chat/completions"
            if self._v1
            else f"{base}/openai/deployments/{quote(deployment, safe='')}/chat/completions"
        )
        self._url = f"{path}?{urlencode(dict(query))}" if query else path
        self._headers = {"api-key": api_key.get_secret_value(), "content-type": "application/json"}
        self._timeouts = timeouts
        self._http_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.connect_s, sock_read=timeouts.read_s
        )
        self._policy = RetryPolicy(retries or Retries())
        self._observer = observer or _Unobserved()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AzureClient(url={self._url!r})"

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop that will run it. limit=0: the replica's limiter
        # is the only gate (aiohttp's default of 100 would queue calls inside the pool).
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300),
                timeout=self._http_timeout,
                headers=self._headers,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def complete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """One non-streaming Chat Completions call, retried per policy within `timeouts.total_s`."""
        payload = jsonwire.dumps(self._addressed(body))
        deadline = asyncio.get_running_loop().time() + self._timeouts.total_s
        async with aclosing(self._retried(lambda: self._complete_once(payload, deadline), deadline)) as answers:
            return await anext(answers)

    async def stream(self, body: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Stream Chat Completions chunks, retried per policy until the first chunk arrives (after
        that a retry would repeat what the client already has). The HTTP stream lives inside
        this generator, so closing the generator (normally, by error, or because our client went
        away) closes it upstream. The total deadline is checked between chunks; a silent Azure
        is cut off by the read timeout."""
        payload = jsonwire.dumps({**self._addressed(body), "stream": True, "stream_options": {"include_usage": True}})
        deadline = asyncio.get_running_loop().time() + self._timeouts.total_s
        async with aclosing(self._retried(lambda: self._stream_once(payload, deadline), deadline)) as chunks:
            async for chunk in chunks:
                yield chunk

    def _addressed(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        return {**body, "model": self.deployment} if self._v1 else body

    async def _retried(
        self, attempt_once: Callable[[], AsyncGenerator[dict[str, Any], None]], deadline: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        """What `attempt_once()` yields, its attempts retried per policy until the first item is out:
        a non-streaming call yields one item, a stream its chunks."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            started = False
            try:
                async with aclosing(attempt_once()) as items:
                    async for item in items:
                        started = True
                        yield item
                return
            except OpenAIError as error:
                wait = None if started else self._policy.delay(attempt, error, deadline - loop.time())
                if wait is None:
                    raise
                self._observer.retry(error.status)
            await asyncio.sleep(wait)

    async def _complete_once(self, payload: bytes, deadline: float) -> AsyncGenerator[dict[str, Any], None]:
        try:
            async with deadline_after(deadline - asyncio.get_running_loop().time()):
                answer = await self._post(payload)
        except TimeoutError:
            raise self._total_timeout() from None
        yield answer

    async def _post(self, payload: bytes) -> dict[str, Any]:
        started = time.monotonic()
        try:
            async with self._http().post(self._url, data=payload) as response:
                status, content, headers = response.status, await response.read(), response.headers
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            error = transport_error(exc, self._timeouts)
            self._observer.attempt(error.status, time.monotonic() - started)
            raise error from None
        self._observer.attempt(status, time.monotonic() - started)
        if status >= 400:
            raise upstream_error(status, content, headers)
        try:
            answer: dict[str, Any] = jsonwire.loads(content)
            return answer
        except jsonwire.JSONDecodeError:
            raise UpstreamUnavailable(
                "Azure answered with a body that is not JSON.", code="upstream_invalid_response"
            ) from None

    async def _stream_once(self, payload: bytes, deadline: float) -> AsyncGenerator[dict[str, Any], None]:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        answered = False
        try:
            async with self._http().post(self._url, data=payload) as response:
                answered = True
                self._observer.attempt(response.status, time.monotonic() - started)
                if response.status >= 400:
                    raise upstream_error(response.status, await response.read(), response.headers)
                async for data in _sse_data(response.content):
                    if data == b"[DONE]":
                        return
                    chunk = jsonwire.loads(data)
                    if "error" in chunk:
                        raise upstream_error(500, data, {})
                    yield chunk
                    if loop.time() > deadline:
                        raise self._total_timeout()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            error = transport_error(exc, self._timeouts)
            if not answered:
                self._observer.attempt(error.status, time.monotonic() - started)
            raise error from None
        except jsonwire.JSONDecodeError:
            raise UpstreamUnavailable(
                "Azure sent a stream frame that is not JSON.", code="upstream_invalid_response"
            ) from None
        raise UpstreamUnavailable("Azure's stream ended before [DONE].", code="upstream_stream_truncated")

    def _total_timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(
            f"Azure did not finish within the total timeout ({self._timeouts.total_s:g} s).", code="upstream_timeout"
        )


async def _sse_data(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The `data:` payloads of a server-sent-event stream, as they arrive. Lines are split here rather
    than with `readline`, which refuses lines over 64 KiB (a tool call's arguments can be longer)."""
    pending = b""
    async for received in content.iter_any():
        lines = (pending + received).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()  # blank separators, comments and `event:` lines carry nothing for us
    if pending.startswith(b"data:"):
        yield pending[5:].strip()


def upstream_error(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """Azure's error answer, in the OpenAI envelope, with Azure's status, code and backoff headers kept."""
    try:
        data = jsonwire.loads(body) if body else None
    except jsonwire.JSONDecodeError:
        data = None
    # Azure wraps errors in {"error": {...}}, except Entra auth failures: {"statusCode", "message"}.
    error = data.get("error", data) if isinstance(data, dict) else {}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    message = (
        error.get("message")
        or (body.decode(errors="replace")[:500] if body else "")
        or f"Azure answered HTTP {status}."
    )
    code = error.get("code")
    param = error.get("param")
    kind = error.get("type")
    return UpstreamError(
        str(message),
        status=status,
        code=None if code is None else str(code),
        param=param if isinstance(param, str) else None,
        type=kind if isinstance(kind, str) and kind else None,
        headers={k: headers[k] for k in _FORWARDED_ERROR_HEADERS if k in headers},
    )


def transport_error(exc: BaseException, timeouts: Timeouts) -> OpenAIError:
    # aiohttp's timeouts (connect, socket read) are asyncio.TimeoutError subclasses.
    reason = type(exc).__name__
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return UpstreamTimeout(
            f"Azure did not answer in time (connect timeout {timeouts.connect_s:g} s, "
            f"read timeout {timeouts.read_s:g} s; {reason}).",
            code="upstream_timeout",
        )
    return UpstreamUnavailable(f"Could not complete the call to Azure ({reason}).", code="upstream_unavailable")

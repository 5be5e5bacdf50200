"""The Azure OpenAI Chat Completions client: knows HTTP and Azure, nothing of Responses.

One instance per replica. It never limits concurrency itself (the caller's pool and limiters do, so
that no request ever waits inside the HTTP pool), and it turns every upstream failure into a
typed `OpenAIError` carrying Azure's status and code. It speaks both of Azure's URL forms
(classic, with an api-version; v1), authenticates with a key or Entra ID tokens (entra.py),
passes Azure's quota and trace headers on, and keeps the parameters its deployment refuses.

HTTP itself is http_client.py's (a lean keep-alive pool; why not aiohttp or httpx is said there
and measured in tests/benchmark/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlencode

from pydantic import SecretStr

from . import jsonwire
from .config import Retries, Timeouts, is_v1_url
from .entra import EntraTokens
from .errors import OpenAIError, RefusedParameter, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from .http_client import Answer, ConnectTimeout, DeadlinePassed, Endpoint, HTTPClient, HTTPError, ReadTimeout
from .retry import RetryPolicy, retry_after_s

T = TypeVar("T")
C = TypeVar("C", bound=dict[str, Any])  # a stream chunk, as `decode` reads it
# A stream as `open_stream` opens it: its first batch (None: Azure sent [DONE] before any chunk), and the rest.
OpenedStream = tuple[list[C] | None, AsyncGenerator[list[C], None]]

# Azure's answer headers that our client is told too: when to retry, the quota left (every
# `x-ratelimit-*`), and what Azure support asks for to trace a call. None carries a secret.
_FORWARDED_HEADERS = ("retry-after", "retry-after-ms", "x-ms-region", "apim-request-id")
_FORWARDED_PREFIX = "x-ratelimit-"
# How gpt-5.4 and later refuse function tools beside a reasoning effort on Chat Completions.
_TOOLS_WITH_EFFORT = "Function tools with reasoning_effort are not supported"


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of Azure's answer (names in lower case, as http_client gives them) that go on to our client."""
    return {
        name: value
        for name, value in headers.items()
        if name in _FORWARDED_HEADERS or name.startswith(_FORWARDED_PREFIX)
    }


class UpstreamObserver(Protocol):
    """Told about every attempt (Azure's status, or 502/504 for transport failures) and every retry."""

    def attempt(self, status: int, seconds: float) -> None: ...

    def retry(self, status: int) -> None: ...


class _Unobserved:
    def attempt(self, status: int, seconds: float) -> None:
        pass

    def retry(self, status: int) -> None:
        pass


# The documented default of each parameter that some deployments refuse and that clients send at its
# default anyway (NeMo Gym datasets send `parallel_tool_calls: true` beside tools; o-series refuse it).
# Left out, a parameter at its default changes nothing, so it is left out rather than refused.
PARAMETER_DEFAULTS: dict[str, Any] = {
    "parallel_tool_calls": True,
    "temperature": 1,
    "top_p": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
}


def is_default(name: str, value: Any) -> bool:
    if name not in PARAMETER_DEFAULTS:
        return False
    default = PARAMETER_DEFAULTS[name]
    # True == 1 in Python; a boolean default is met only by a boolean, a number only by a number.
    return isinstance(value, bool) == isinstance(default, bool) and value == default


class RejectedParameters:
    """The Chat Completions parameters this deployment refuses: configured, or learned from Azure's first
    `unsupported_parameter` answer naming one (a 400 that cost no tokens; one client per replica, so
    each replica learns each parameter once). A refused parameter at its default is left out of the
    call; at any other value the request is refused, naming it: never dropped silently."""

    def __init__(self, deployment: str, configured: Iterable[str] = ()) -> None:
        self._deployment = deployment
        self._configured = frozenset(configured)
        self._learned: set[str] = set()

    @property
    def learned(self) -> frozenset[str]:
        return frozenset(self._learned)

    def fit(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """`body` without its refused parameters; RefusedParameter if one is set to other than its default."""
        refused = [name for name in body if name in self._configured or name in self._learned]
        if not refused:
            return body
        fitted = dict(body)
        for name in refused:
            value = fitted.pop(name)
            if value is not None and not is_default(name, value):
                source = "configured in rejected_parameters" if name in self._configured else "Azure refused it"
                raise RefusedParameter(
                    name, value, self._deployment, source=source, default=PARAMETER_DEFAULTS.get(name)
                )
        return fitted

    def learn(self, error: OpenAIError, body: Mapping[str, Any]) -> bool:
        """Whether `error` is Azure refusing a parameter of `body` that was not known to be refused (now it is)."""
        name = error.param
        if error.status != 400 or error.code != "unsupported_parameter" or name is None or name not in body:
            return False
        if name in self._configured or name in self._learned:
            return False
        self._learned.add(name)
        return True


# What a call's body gets on its way to Azure: nothing, or what makes it a stream that reports its usage.
_AS_IS: Mapping[str, Any] = MappingProxyType({})
_STREAMED: Mapping[str, Any] = MappingProxyType({"stream": True, "stream_options": {"include_usage": True}})


class AzureClient:
    def __init__(
        self,
        *,
        base_url: str,
        deployment: str,
        query: Mapping[str, str],
        api_key: SecretStr | None = None,
        tokens: EntraTokens | None = None,
        timeouts: Timeouts,
        retries: Retries | None = None,
        observer: UpstreamObserver | None = None,
        rejected_parameters: Iterable[str] = (),
        handed_over: Callable[[OpenAIError], bool] | None = None,
    ) -> None:
        self.deployment = deployment
        self.parameters = RejectedParameters(deployment, rejected_parameters)
        base = base_url.rstrip("/")
        # The v1 API names the deployment in the body; the classic one in the path (and ignores the body's).
        self._v1 = is_v1_url(base)
        path = (
            f"{base}/chat/completions"
            if self._v1
            else f"{base}/openai/deployments/{quote(deployment, safe='')}/chat/completions"
        )
        self._url = f"{path}?{urlencode(dict(query))}" if query else path
        if (api_key is None) == (tokens is None):
            raise ValueError("an AzureClient authenticates with exactly one of api_key and tokens")
        self._tokens = tokens
        self._headers = {"content-type": "application/json"}
        if api_key is not None:
            self._headers["api-key"] = api_key.get_secret_value()
        self._timeouts = timeouts
        self._endpoint = Endpoint.of(self._url)
        # No limit on connections: the replica's limiters are the only gate, so no call waits inside the pool.
        self._http = HTTPClient(
            connect_timeout_s=timeouts.connect_s, read_timeout_s=timeouts.read_s, headers=self._headers
        )
        # `handed_over`: failures its caller sends elsewhere rather than have them retried here (retry.RetryPolicy).
        self._policy = RetryPolicy(retries or Retries(), handed_over=handed_over)
        self._observer = observer or _Unobserved()

    def __repr__(self) -> str:
        return f"AzureClient(url={self._url!r})"

    def start(self) -> None:
        """Begin fetching an Entra ID token, if that is the auth, before the first call needs it."""
        if self._tokens is not None:
            self._tokens.start()

    async def _auth(self) -> Mapping[str, str] | None:
        """Per-call auth headers: an Entra token changes hourly; a key travels in the client's own headers."""
        if self._tokens is None:
            return None
        return {"authorization": await self._tokens.authorization()}

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._tokens is not None:
            await self._tokens.aclose()

    # `complete` and `open_stream` return `_retried`'s coroutine rather than await it: a frame less for each
    # of the thousands of calls a replica can hold in flight.

    def complete(
        self, body: Mapping[str, Any], headers: dict[str, str] | None = None, *, deadline: float | None = None
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        """One non-streaming Chat Completions call, retried per policy within `timeouts.total_s`, or by
        `deadline` (event-loop time) when the caller already counts the call's time (a replica, from the
        moment the call queued for its slot). `headers`, when given, receives the headers of Azure's
        answer that a client should see."""
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self._timeouts.total_s
        return self._retried(body, deadline, self._complete_once, headers)

    def open_stream(
        self,
        body: Mapping[str, Any],
        headers: dict[str, str] | None,
        decode: Callable[[bytes], C],
    ) -> Coroutine[Any, Any, OpenedStream[C]]:
        """A Chat Completions stream opened to its first batch (None: Azure sent [DONE] before any chunk), and the
        batches after it, in order: the chunks that arrived together (never an empty batch), so that whatever
        handles each item on the way to our client does it once per read from Azure rather than once per token.
        Retried per policy until the first batch is in (after that a retry would repeat what the client already
        has), so Azure's errors before its first chunk are raised from here. The HTTP stream lives
        inside the rest, so closing it (normally, by error, or because our client went away) closes it upstream.
        The total deadline, counted from this call, is checked between chunks; a silent Azure is cut off by the
        read timeout. `headers` as for `complete`, filled before the first chunk. `decode` parses each chunk (a
        caller that reads only some fields may build only those: jsonwire.LoadsOnly)."""
        deadline = asyncio.get_running_loop().time() + self._timeouts.total_s
        return self._retried(body, deadline, self._open_stream, headers, decode, extra=_STREAMED)

    async def _retried(
        self,
        body: Mapping[str, Any],
        deadline: float,
        send: Callable[..., Awaitable[T]],
        *args: Any,
        extra: Mapping[str, Any] = _AS_IS,
    ) -> T:
        """`await send(payload, deadline, *args)`, tried again per policy while it fails: a non-streaming call to
        its answer, a stream to its first chunk; the payload is `body` with `extra`'s keys, as sent to Azure.
        (Arguments, not a closure: its function and cells were a quarter of a kilobyte of every call in
        flight; and the body as sent is made for each attempt, not kept beside the caller's while Azure works.)"""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            payload = jsonwire.dumps(self.parameters.fit(self._addressed(body, extra)))
            attempt += 1
            try:
                return await send(payload, deadline, *args)
            except OpenAIError as error:
                if self.parameters.learn(error, self._addressed(body, extra)):
                    # Azure refused one parameter before doing any work; asking without it is no retry.
                    attempt -= 1
                    continue
                wait = self._policy.delay(attempt, error, deadline - loop.time())
                if wait is None:
                    raise
                self._observer.retry(error.status)
            await asyncio.sleep(wait)

    def _addressed(self, body: Mapping[str, Any], extra: Mapping[str, Any]) -> Mapping[str, Any]:
        if self._v1:
            return {**body, **extra, "model": self.deployment}
        return {**body, **extra} if extra else body

    async def _complete_once(self, payload: bytes, deadline: float, into: dict[str, str] | None) -> dict[str, Any]:
        started = time.monotonic()
        try:
            reply = await self._http.post(self._endpoint, payload, await self._auth(), deadline)
            status, headers, content = reply.status, reply.headers, await reply.read()
        except DeadlinePassed:
            raise self._total_timeout() from None
        except HTTPError as exc:
            raise self._attempt_failed(exc, started) from None
        self._observer.attempt(status, time.monotonic() - started)
        if status >= 400:
            raise upstream_error(status, content, headers)
        try:
            answer: dict[str, Any] = jsonwire.loads(content)
        except jsonwire.JSONDecodeError:
            raise UpstreamUnavailable(
                "Azure answered with a body that is not JSON.", code="upstream_invalid_response"
            ) from None
        if into is not None:
            into.update(forwarded_headers(headers))
        return answer

    async def _open_stream(
        self, payload: bytes, deadline: float, into: dict[str, str] | None, decode: Callable[[bytes], C]
    ) -> OpenedStream[C]:
        """One attempt's stream, to its first batch (None: Azure sent [DONE] before any chunk) and the rest.
        Azure's answer is awaited here and its generator made once it has come: a stream waiting for Azure (a
        reasoning model's, for minutes) holds no generator frame."""
        started = time.monotonic()
        try:
            answer = await self._http.post(self._endpoint, payload, await self._auth())
        except HTTPError as exc:
            raise self._attempt_failed(exc, started) from None
        self._observer.attempt(answer.status, time.monotonic() - started)
        chunks = self._chunks(answer, deadline, into, decode)
        try:
            return await anext(chunks, None), chunks
        except BaseException:
            await chunks.aclose()
            raise

    async def _chunks(
        self, answer: Answer, deadline: float, into: dict[str, str] | None, decode: Callable[[bytes], C]
    ) -> AsyncGenerator[list[C], None]:
        loop = asyncio.get_running_loop()
        try:
            try:
                if answer.status >= 400:
                    raise upstream_error(answer.status, await answer.read(), answer.headers)
                if into is not None:
                    into.update(forwarded_headers(answer.headers))
                async for frames in _sse_data(answer):
                    chunks: list[C] = []
                    for data in frames:
                        if data == b"[DONE]":
                            if chunks:
                                yield chunks
                            return
                        chunk = decode(data)
                        if "error" in chunk:
                            if chunks:
                                yield chunks  # what came before the error is the client's
                            raise upstream_error(500, data, {})
                        chunks.append(chunk)
                    if chunks:
                        yield chunks
                    if loop.time() > deadline:
                        raise self._total_timeout()
            finally:
                answer.close()
        except HTTPError as exc:
            raise transport_error(exc, self._timeouts) from None
        except jsonwire.JSONDecodeError:
            raise UpstreamUnavailable(
                "Azure sent a stream frame that is not JSON, or not of the Chat Completions chunk's shape.",
                code="upstream_invalid_response",
            ) from None
        raise UpstreamUnavailable("Azure's stream ended before [DONE].", code="upstream_stream_truncated")

    def _attempt_failed(self, exc: HTTPError, started: float) -> OpenAIError:
        """What an attempt that got no answer from Azure fails with, counted as that attempt's outcome."""
        error = transport_error(exc, self._timeouts)
        self._observer.attempt(error.status, time.monotonic() - started)
        return error

    def _total_timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(
            f"Azure did not finish within the total timeout ({self._timeouts.total_s:g} s, counted from the call's "
            "start; on a replica, from when it queued for its upstream slot).",
            code="upstream_timeout",
        )


async def _sse_data(answer: Answer) -> AsyncIterator[list[bytes]]:
    """The `data:` payloads of a server-sent-event stream, those complete in each read together, however
    long a line is (a tool call's arguments can be longer than any line limit a reader might set)."""
    pending = b""
    while received := await answer.next_chunk():
        lines = (pending + received if pending else received).split(b"\n")
        pending = lines.pop()
        # Blank separators, comments and `event:` lines carry nothing for us.
        frames = [line[5:].strip() for line in lines if line[:5] == b"data:"]
        if frames:
            yield frames
    if pending.startswith(b"data:"):
        yield [pending[5:].strip()]


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
    if param == "reasoning_effort" and str(message).startswith(_TOOLS_WITH_EFFORT):
        # Azure's remedy (its own /v1/responses) is not one a client of ours has; ours is.
        message = f"{message} Through this server: leave the reasoning effort out, or set it to 'none', to call tools."
    forwarded = forwarded_headers(headers)
    if status == 429 and "retry-after" not in forwarded:
        # Azure sometimes says when only in its reset headers or its message; tell our client in the usual way.
        asked = retry_after_s(forwarded, str(message))
        if asked is not None:
            forwarded["retry-after"] = str(max(1, math.ceil(asked)))
    return UpstreamError(
        str(message),
        status=status,
        code=None if code is None else str(code),
        param=param if isinstance(param, str) else None,
        type=kind if isinstance(kind, str) and kind else None,
        headers=forwarded,
    )


def transport_error(exc: HTTPError, timeouts: Timeouts) -> OpenAIError:
    if isinstance(exc, (ConnectTimeout, ReadTimeout)):
        return UpstreamTimeout(
            f"Azure did not answer in time (connect timeout {timeouts.connect_s:g} s, "
            f"read timeout {timeouts.read_s:g} s; {exc}).",
            code="upstream_timeout",
        )
    return UpstreamUnavailable(f"Could not complete the call to Azure ({exc}).", code="upstream_unavailable")

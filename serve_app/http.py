"""The HTTP edge: inbound auth, reading bodies (size, JSON), error responses and server-sent events.

Nothing here knows Azure or the Responses API; the deployment calls these around its work.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from . import jsonwire
from .errors import InvalidRequest, OpenAIError, RequestTooLarge, Unauthorized


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=jsonwire.dumps(data), status_code=status, headers=headers, media_type="application/json")


def error_response(error: OpenAIError) -> Response:
    """The one place an error becomes HTTP."""
    return json_response(error.body(), error.status, error.headers)


def install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> Response:
        return error_response(exc)

    @api.exception_handler(RequestValidationError)
    async def _invalid_route_arguments(request: Request, exc: RequestValidationError) -> Response:
        # Routes read their bodies themselves; this only fires on a malformed query or path.
        return error_response(InvalidRequest("The request does not match this endpoint."))


class Gate:
    """Inbound auth: when keys are configured, only `Authorization: Bearer <one of them>` gets in.

    Every key is compared, in constant time, whatever matches first, so timing reveals neither a
    key nor which one matched."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    def check(self, request: Request) -> None:
        if not self._keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        offered = token.strip().encode() if scheme.lower() == "bearer" else b""
        if not any([hmac.compare_digest(offered, key) for key in self._keys]):
            raise Unauthorized(
                "Missing or invalid API key: send 'Authorization: Bearer <key>'.", code="invalid_api_key"
            )


async def read_json(request: Request, max_bytes: int) -> Any:
    """The body as JSON; 413 past `max_bytes` (checked as it arrives, not after), 400 if not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    try:
        return jsonwire.loads(b"".join(chunks))
    except jsonwire.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.", code="invalid_json") from None


def _too_large(max_bytes: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"The request body is larger than this server accepts ({max_bytes} bytes).", code="request_too_large"
    )


class EventStreamResponse(StreamingResponse):
    """A server-sent-event response that always closes its source, even when the client leaves
    while the source waits at a `yield` (Starlette would leave it suspended until GC)."""

    def __init__(self, events: AsyncGenerator[bytes, None], headers: dict[str, str] | None = None) -> None:
        super().__init__(
            events, media_type="text/event-stream", headers={"cache-control": "no-cache", **(headers or {})}
        )
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()


async def response_sse(events: AsyncGenerator[dict[str, Any], None]) -> AsyncGenerator[bytes, None]:
    """Responses events on the wire: `event: <type>` and `data: <json>`."""
    async with aclosing(events):
        async for event in events:
            yield b"event: " + event["type"].encode() + b"\ndata: " + jsonwire.dumps(event) + b"\n\n"


async def chat_sse(chunks: AsyncGenerator[dict[str, Any], None]) -> AsyncGenerator[bytes, None]:
    """Chat chunks on the wire; a failure after the first byte is an error frame, and [DONE] always ends it."""
    async with aclosing(chunks):
        try:
            async for chunk in chunks:
                yield b"data: " + jsonwire.dumps(chunk) + b"\n\n"
        except OpenAIError as exc:
            yield b"data: " + jsonwire.dumps(exc.body()) + b"\n\n"
        yield b"data: [DONE]\n\n"


async def prepend(first: Any, rest: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
    async with aclosing(rest):
        yield first
        async for item in rest:
            yield item


async def answer(
    body: Any,
    complete: Callable[[Any, dict[str, str]], Awaitable[dict[str, Any]]],
    stream: Callable[[Any, dict[str, str]], AsyncGenerator[dict[str, Any], None]],
    sse: Callable[[AsyncGenerator[dict[str, Any], None]], AsyncGenerator[bytes, None]],
) -> Response:
    """One endpoint's answer, from the operation that makes it: a JSON body, or an event stream.

    The operation fills in the headers of Azure's answer that the client should see. The stream's first
    item is awaited before the answer is committed, so an error before Azure's first byte is a plain HTTP
    error (raised from here); later errors travel in-band (`sse`)."""
    headers: dict[str, str] = {}
    if not (isinstance(body, dict) and body.get("stream")):
        return json_response(await complete(body, headers), headers=headers)
    items = stream(body, headers)
    first = await anext(items, None)
    return EventStreamResponse(sse(prepend(first, items) if first is not None else items), headers)

"""The HTTP edge: inbound auth, reading bodies (size, JSON), error responses and server-sent events.

Nothing here knows Azure or the Responses API; the deployment calls these around its work.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import traceback
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any, TypeVar, cast

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import jsonwire
from .errors import InvalidRequest, OpenAIError, RequestTooLarge, Unauthorized

Item = TypeVar("Item")  # what a stream yields in batches
Chunk = bytes | dict[str, Any]  # a Chat Completions chunk, as its JSON or parsed

logger = logging.getLogger("ray.serve")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=jsonwire.dumps(data), status_code=status, headers=headers, media_type="application/json")


def error_response(error: OpenAIError) -> Response:
    """The one place an error becomes HTTP."""
    return json_response(error.body(), error.status, error.headers)


Endpoint = Callable[[Request], Awaitable[Response]]


def openai_routes(responses: Endpoint, chat_completions: Endpoint, models: Endpoint) -> list[BaseRoute]:
    """The OpenAI endpoints, each at its path and method, answered by the given functions (for `openai_app`)."""
    return [
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]


def openai_app(routes: Sequence[BaseRoute], request_id: Callable[[], str]) -> FastAPI:
    """The ingress app over `routes`, whose answers that are not a success are all OpenAI envelopes: ours,
    routing's (404, 405) and any bug's (500, `LastResort`).

    The routes are Starlette's (`Route(path, endpoint, methods=...)`, an endpoint takes the request and returns a
    Response), not FastAPI's: ours read their bodies themselves and take no parameters, and FastAPI's route layer
    around them (solving a dependency per call, for a deployment the replica's `self`) was 32 of 48 µs per call
    in-process (tests/benchmark/routes.py), about a tenth of a replica's CPU per request at 64 clients (README,
    Performance)."""
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, routes=list(routes))
    api.add_exception_handler(OpenAIError, _openai_error)
    api.add_exception_handler(StarletteHTTPException, _routing_error)
    api.add_middleware(LastResort, request_id=request_id)
    return api


async def _openai_error(request: Request, exc: Exception) -> Response:
    return error_response(cast(OpenAIError, exc))


async def _routing_error(request: Request, exc: Exception) -> Response:
    """An unknown path (404) or a method the path does not take (405, with its Allow header)."""
    http = cast(StarletteHTTPException, exc)
    what = "Invalid URL" if http.status_code == 404 else str(http.detail)
    return error_response(
        OpenAIError(f"{what} ({request.method} {request.url.path})", status=http.status_code, headers=http.headers)
    )


class LastResort:
    """Any exception that nothing turned into an `OpenAIError` (a bug) becomes a 500 in the envelope.

    It is logged with the request id and where it was raised, never its message nor the body: either
    may carry what the client sent. After a response has started there is nothing left to answer
    with; the connection is closed."""

    def __init__(self, app: ASGIApp, request_id: Callable[[], str]) -> None:
        self._app = app
        self._request_id = request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        tracked = _Tracked(send)
        try:
            await self._app(scope, receive, tracked)
        except ClientDisconnect:
            pass  # the client left while its body was being read: nobody to answer, nothing went wrong here
        except Exception as exc:
            where = "".join(traceback.format_tb(exc.__traceback__))
            logger.error("request %s failed: unexpected %s\n%s", self._request_id(), type(exc).__name__, where)
            if not tracked.started:
                error = OpenAIError("The server had an error while processing your request.", code="internal_error")
                await error_response(error)(scope, receive, send)


class _Tracked:
    """`send`, noting whether the answer has started. (An object, not a closure: the function and its cell
    were a few hundred bytes of every call in flight.)"""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)


# Headers Serve itself acts on, before this app sees the request. `x-request-disconnect-disabled: ?1`
# keeps a call (and its upstream slot) running after its client left; `x-request-timeout-seconds`
# overrides the request timeout. Neither is a client's to set: refused (they cannot be stripped,
# Serve has read them already), and the request never waits for a slot.
SERVE_CONTROL_HEADERS = (b"x-request-disconnect-disabled", b"x-request-timeout-seconds")


class Gate:
    """What may come in, checked first by every route (in the route, not in a middleware of its own: each
    ASGI layer is a frame of every call in flight).

    - A header that controls Ray Serve (`SERVE_CONTROL_HEADERS`) is refused.
    - When keys are configured, only `Authorization: Bearer <one of them>` gets in. Every key is compared,
      in constant time, whatever matches first, so timing reveals neither a key nor which one matched."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    def check(self, request: Request) -> None:
        for name, _ in request.scope["headers"]:
            if name in SERVE_CONTROL_HEADERS:  # ASGI header names are lower-case
                raise InvalidRequest(
                    f"The '{name.decode()}' header controls Ray Serve and is not accepted from clients.",
                    param=name.decode(),
                    code="invalid_header",
                )
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
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    try:
        body = jsonwire.loads(raw)
    except jsonwire.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.", code="invalid_json") from None
    deep = jsonwire.too_deep(body, raw)
    if deep is not None:
        param = deep if len(deep) <= 80 else deep[:77] + "..."
        raise InvalidRequest(
            f"'{param}' is nested deeper than {jsonwire.MAX_DEPTH} levels.", param=param, code="invalid_value"
        )
    return body


def _too_large(max_bytes: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"The request body is larger than this server accepts ({max_bytes} bytes).", code="request_too_large"
    )


class _Stalled(Exception):
    pass


# A batch is written once it holds this much, even with more ready: it bounds what a stream reads
# ahead of a slow client, and how long the first event of a burst waits for the rest of it.
BATCH_BYTES = 16 * 1024


class ReadAhead:
    """A source's chunks, those ready together joined into one: the body of an event stream.

    The writer reads the first chunk itself, so that nothing stands between it and its write: a
    client's time to first token is this server's to keep short. Then a task of its own reads the
    source while the writer writes, and the writer takes everything read since its last write. The
    reader runs until the source has nothing ready, so no chunk waits for more than that turn of the
    event loop; but when events come faster than one write each (Azure's chunks queued in one socket
    read, a replica busy with many streams), one write carries them all: a write is a system call and
    a pass down the ASGI send chain, most of a replica's CPU per event when each event had its own
    (tests/benchmark/RESULTS.md). At most `limit` bytes are read ahead; then the reader waits for the
    writer. `stop()` ends the body early (the client left)."""

    def __init__(self, source: AsyncGenerator[bytes, None], limit: int = BATCH_BYTES) -> None:
        self._source = source
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._ended = False
        self._error: Exception | None = None
        self._loop = asyncio.get_running_loop()
        self._chunk_read: asyncio.Future[None] | None = None  # the writer, waiting for a chunk
        self._taken: asyncio.Future[None] | None = None  # the reader, waiting for a full batch to go
        self._task: asyncio.Task[None] | None = None  # the reader, once the first chunk is out

    async def _read(self) -> None:
        try:
            async for chunk in self._source:
                self._chunks.append(chunk)
                self._size += len(chunk)
                self._wake(self._chunk_read)
                if self._size >= self._limit:
                    self._taken = self._loop.create_future()
                    await self._taken
        except Exception as exc:  # the writer raises it once it has written what came before
            self._error = exc
        finally:
            self.stop()

    def stop(self) -> None:
        """No more chunks: the writer ends once it has what was read already."""
        self._ended = True
        self._wake(self._chunk_read)

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> ReadAhead:
        return self

    async def __anext__(self) -> bytes:
        if self._task is None and not self._ended:
            first = await anext(self._source)  # its end, or its error, is the writer's at once
            self._task = self._loop.create_task(self._read())
            return first
        while not self._chunks:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._chunk_read = self._loop.create_future()
            await self._chunk_read
        batch = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._wake(self._taken)
        return batch

    async def aclose(self) -> None:
        """Stop reading and close the source, wherever it waits (Azure's next chunk, or the writer)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        await self._source.aclose()


class EventStreamResponse(StreamingResponse):
    """A server-sent-event response that always closes its source, however the stream ends. The
    source is read ahead of the writes (`ReadAhead`): the events ready together go out in one write,
    and the first goes out in the turn of the loop it was made in, after which the replica yields its core once
    (`hand_over_cpu`), so that HAProxy forwards that first event before the replica goes on.

    Starlette's own streaming is not used: before ASGI 2.4 it runs every stream in an anyio task
    group (tasks, cancel scopes and their reprs: about a third of a millisecond before a stream's
    first event, measured). A client that leaves is noticed here by a plain task reading `receive`
    (from ASGI 2.4 on, by the send that fails), and ends the body.

    A client that stops reading would hold the source (and its upstream slot) open for as long as
    the connection lives: the source only runs, and checks its deadline, while its read-ahead has
    room. So a write may wait at most `stall_s`; then the stream is closed."""

    def __init__(
        self, events: AsyncGenerator[bytes, None], *, stall_s: float, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(
            events, media_type="text/event-stream", headers={"cache-control": "no-cache", **(headers or {})}
        )
        self._events = events
        self._stall_s = stall_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = ReadAhead(self._events)
        spec = scope.get("asgi", {}).get("spec_version", "2.0")
        watcher = None
        try:
            await self._send(
                send, {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            if tuple(map(int, spec.split("."))) < (2, 4):
                watcher = asyncio.get_running_loop().create_task(_until_disconnect(receive, body))
            first = True
            async for chunk in body:
                await self._send(send, {"type": "http.response.body", "body": chunk, "more_body": True})
                if first:
                    first = False
                    hand_over_cpu()
            await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})
        except _Stalled:
            logger.info("a stream's client stopped reading for %g s; the stream is closed", self._stall_s)
        except OSError:  # ASGI 2.4: the client is gone
            raise ClientDisconnect() from None
        finally:
            if watcher is not None:
                watcher.cancel()
            await body.aclose()

    async def _send(self, send: Send, message: Message) -> None:
        try:
            async with asyncio.timeout(self._stall_s):
                await send(message)
        except TimeoutError:  # an OSError, which would be taken for a departed client
            raise _Stalled() from None


def hand_over_cpu() -> None:
    """Let the process that reads what this replica just wrote run now, before the replica goes on.

    A socket write wakes its reader (HAProxy, on this node) onto the writer's core, as often as not, where it
    waits until the writer sleeps or its time slice ends: after a stream's first event the replica goes on with
    the rest of Azure's read, for up to a millisecond, while the first event sits in HAProxy's socket. Called
    once per stream, after its first event: on 2 cores, HAProxy's wait for a core after that write went from a
    p90 of 1.0 ms to 0.36 (tests/benchmark, the first-event cell). Later writes don't yield: there a context
    switch per write would cost the events/s that batching them wins."""
    if _sched_yield is not None:
        _sched_yield()


_sched_yield = getattr(os, "sched_yield", None)  # POSIX only


async def _until_disconnect(receive: Receive, body: ReadAhead) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    body.stop()


# `event: <type>` and the `data: ` that follows, per event type: a stream has a handful of types.
_EVENT_HEADS: dict[str, bytes] = {}


def _event_head(kind: str) -> bytes:
    head = _EVENT_HEADS.get(kind)
    if head is None:
        head = _EVENT_HEADS[kind] = b"event: " + kind.encode() + b"\ndata: "
    return head


async def response_sse(
    batches: AsyncGenerator[list[dict[str, Any]], None], first: list[dict[str, Any]] | None = None
) -> AsyncGenerator[bytes, None]:
    """Responses events on the wire, `event: <type>` and `data: <json>`, one piece of bytes per batch of
    events; `first`, when given, before `batches`."""
    async with aclosing(batches):
        if first is not None:
            yield _response_frames(first)
        async for events in batches:
            yield _response_frames(events)


def _response_frames(events: list[dict[str, Any]]) -> bytes:
    return jsonwire.framed([(_event_head(event["type"]), event) for event in events], b"\n\n")


async def chat_sse(
    batches: AsyncGenerator[Sequence[Chunk], None], first: Sequence[Chunk] | None = None
) -> AsyncGenerator[bytes, None]:
    """Chat chunks on the wire, one piece of bytes per batch; a failure after the first byte is an error frame,
    and [DONE] always ends it. A chunk comes as its JSON (the replica's own route), or parsed (through a handle)."""
    async with aclosing(batches):
        try:
            if first is not None:
                yield _chat_frames(first)
            async for chunks in batches:
                yield _chat_frames(chunks)
        except OpenAIError as exc:
            yield _chat_frames([exc.body()])
        yield b"data: [DONE]\n\n"


def _chat_frames(chunks: Sequence[Chunk]) -> bytes:
    return b"".join(
        [b"data: " + (chunk if isinstance(chunk, bytes) else jsonwire.dumps(chunk)) + b"\n\n" for chunk in chunks]
    )


# An endpoint answers a JSON body (`json_response` of what its operation returns) or an event stream
# (`stream_answer` of its first batch and the rest), as `wants_stream` says. The route awaits its operation
# (or a stream's first batch) itself, with no helper in between: each coroutine frame on the way is a part of
# every call in flight, and a stream can wait minutes for Azure's first chunk. The operation fills in the
# headers of Azure's answer that the client should see.


def wants_stream(body: Any) -> bool:
    """Whether a request asks for an event stream (anything else is a JSON answer, or refused by the parse)."""
    return isinstance(body, dict) and body.get("stream") is True


def stream_answer(
    items: AsyncGenerator[list[Item], None],
    first: list[Item] | None,
    sse: Callable[[AsyncGenerator[list[Item], None], list[Item] | None], AsyncGenerator[bytes, None]],
    *,
    stall_s: float,
    headers: dict[str, str],
) -> Response:
    """An event stream of `items`, which come in batches (those ready together), `first` the one the route has
    awaited (`await anext(items, None)`) before the answer is committed: an error before Azure's first byte is a
    plain HTTP error, raised from the route; later errors travel in-band (`sse`). The writes wait at most
    `stall_s` for a client that stopped reading (EventStreamResponse)."""
    return EventStreamResponse(sse(items, first), stall_s=stall_s, headers=headers)

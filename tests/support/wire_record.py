"""What a real client exchanged with the app, recorded under the client and checked against OpenAI's types.

A Python client under test gets an httpx transport that keeps every request body and response body it
carried (streams teed, so the client still reads them as they arrive); a client of another language goes
through a RecordingProxy, which forwards the bytes untouched, headers included, and keeps them likewise.
The checks then hold the app's side of the conversation to what openai-python declares, which the clients
themselves do not check: openai-python builds its models without validating them."""

from __future__ import annotations

import gzip
import json
import typing
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai.types.responses as rtypes
from pydantic import BaseModel
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from serve_app.simulator import BackgroundServer
from support.stream_checks import check_event_sequence

# The upstream for the real clients: they send reasoning effort (Codex always, the others when their
# users set it), which takes a reasoning deployment on an api-version that has it, as on Azure.
REASONING_UPSTREAM: dict[str, Any] = {"deployment": "gpt-5-mini", "api_version": "2025-04-01-preview"}

# openai-python's union of stream events carries its discriminator in its own annotation, which pydantic
# does not read; index the members by their `type` literal instead.
_EVENT_TYPES: dict[str, type[BaseModel]] = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(rtypes.ResponseStreamEvent)[0])
}


@dataclass
class Exchange:
    method: str
    path: str
    request: Any
    request_headers: dict[str, str]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)

    @property
    def streamed(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")

    def text(self) -> str:
        encoding = self.headers.get("content-encoding", "identity")
        assert encoding in ("identity", "gzip"), f"a content-encoding the client may not read: {encoding}"
        return (gzip.decompress(self.body) if encoding == "gzip" else bytes(self.body)).decode()

    def events(self) -> list[dict[str, Any]]:
        """The stream's events, each checked to name the same type on its `event:` line and in its data."""
        events = []
        for block in self.text().split("\n\n"):
            if not block.strip():
                continue
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            event = json.loads(fields["data"])
            assert fields.get("event") == event["type"], block
            events.append(event)
        return events

    def json(self) -> Any:
        return json.loads(self.text())

    def refusal(self) -> dict[str, Any] | None:
        """The error envelope of a refused request, with its status; None for a success."""
        if self.status < 400:
            return None
        error = self.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}, error
        return {"status": self.status, "param": error["param"], "code": error["code"], "message": error["message"]}


class _Tee(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, sink: bytearray) -> None:
        self._inner, self._sink = inner, sink

    async def __aiter__(self) -> typing.AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._sink.extend(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _SyncTee(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, sink: bytearray) -> None:
        self._inner, self._sink = inner, sink

    def __iter__(self) -> typing.Iterator[bytes]:
        for chunk in self._inner:
            self._sink.extend(chunk)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class Recorder:
    """Transports for sync and async httpx clients that record into one list of exchanges."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    def _start(self, request: httpx.Request) -> Exchange:
        content = request.content
        exchange = Exchange(
            request.method, request.url.path, json.loads(content) if content else None, dict(request.headers)
        )
        self.exchanges.append(exchange)
        return exchange

    def _finish(self, exchange: Exchange, response: httpx.Response) -> None:
        exchange.status = response.status_code
        exchange.headers = dict(response.headers)

    def async_client(self) -> httpx.AsyncClient:
        recorder = self

        class Transport(httpx.AsyncHTTPTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                exchange = recorder._start(request)
                response = await super().handle_async_request(request)
                recorder._finish(exchange, response)
                assert isinstance(response.stream, httpx.AsyncByteStream)
                response.stream = _Tee(response.stream, exchange.body)
                return response

        return httpx.AsyncClient(transport=Transport(), timeout=60)

    def sync_client(self) -> httpx.Client:
        recorder = self

        class Transport(httpx.HTTPTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                exchange = recorder._start(request)
                response = super().handle_request(request)
                recorder._finish(exchange, response)
                assert isinstance(response.stream, httpx.SyncByteStream)
                response.stream = _SyncTee(response.stream, exchange.body)
                return response

        return httpx.Client(transport=Transport(), timeout=60)

    def responses(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.path.endswith("/responses")]

    def refusals(self) -> list[dict[str, Any]]:
        return [r for e in self.exchanges if (r := e.refusal()) is not None]


# Hop-by-hop, or recomputed by the proxy's own HTTP stack.
_NOT_FORWARDED = {b"host", b"content-length", b"transfer-encoding", b"connection"}


class RecordingProxy(BackgroundServer):
    """Forwards every request to `target` and its answer back, byte for byte (streams as they arrive),
    recording each exchange in `recorder`."""

    def __init__(self, target: str) -> None:
        self.recorder = Recorder()
        self._target = target
        super().__init__(self._forward)

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _NOT_FORWARDED]
        async with httpx.AsyncClient(base_url=self._target, timeout=120) as client:
            outbound = client.build_request(
                request.method,
                request.url.path,
                params=request.url.query,
                headers=headers,
                content=await request.body(),
            )
            exchange = self.recorder._start(outbound)
            response = await client.send(outbound, stream=True)
            self.recorder._finish(exchange, response)
            returned = [(k, v) for k, v in response.headers.raw if k.lower() not in _NOT_FORWARDED]
            await send({"type": "http.response.start", "status": response.status_code, "headers": returned})
            async for chunk in response.aiter_raw():
                exchange.body.extend(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            await response.aclose()


def validate_response(data: dict[str, Any]) -> rtypes.Response:
    """A Response as openai-python types it. Fields it does not declare are allowed: OpenAI's own server
    sends some (`store`, `name` on `function_call_arguments.done`)."""
    return rtypes.Response.model_validate(data)


def validate_stream(events: list[dict[str, Any]]) -> rtypes.Response:
    """Each event as openai-python types it, the stream's grammar, and OpenAI's order: every output item
    closed (its `.done` events sent) before the next one is added."""
    for event in events:
        cls = _EVENT_TYPES.get(event["type"])
        assert cls is not None, f"an event type openai-python does not know: {event['type']}"
        cls.model_validate(event)
    check_event_sequence(events)
    open_item: int | None = None
    for event in events:
        if event["type"] == "response.output_item.added":
            assert open_item is None, f"item {event['output_index']} added while item {open_item} is still open"
            open_item = event["output_index"]
        elif event["type"] == "response.output_item.done":
            open_item = None
    return validate_response(events[-1]["response"])


def validate_exchanges(recorder: Recorder) -> list[rtypes.Response]:
    """Every successful Responses answer the client got, validated; the Responses, in order."""
    validated = []
    for exchange in recorder.responses():
        if exchange.status >= 400:
            continue
        if exchange.streamed:
            validated.append(validate_stream(exchange.events()))
        else:
            validated.append(validate_response(exchange.json()))
    return validated

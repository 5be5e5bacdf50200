"""What a real client exchanged with the app, recorded under the client and checked against OpenAI's types.

A client under test gets an httpx transport that keeps every request body and response body it carried
(streams teed, so the client still reads them as they arrive). The checks then hold the app's side of the
conversation to what openai-python declares, which the clients themselves do not: the SDK builds its
models without validating them."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai.types.responses as rtypes
from pydantic import BaseModel
from stream_checks import check_event_sequence

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
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)

    @property
    def streamed(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")

    def events(self) -> list[dict[str, Any]]:
        """The stream's events, each checked to name the same type on its `event:` line and in its data."""
        events = []
        for block in self.body.decode().split("\n\n"):
            if not block.strip():
                continue
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            event = json.loads(fields["data"])
            assert fields.get("event") == event["type"], block
            events.append(event)
        return events

    def json(self) -> Any:
        return json.loads(self.body)

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
        exchange = Exchange(request.method, request.url.path, json.loads(content) if content else None)
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

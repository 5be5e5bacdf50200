"""The HTTP edge without Ray: every answer that is not a success is an OpenAI envelope with a 4xx for the
client's mistakes (bad JSON, too deep, wrong types) and a 500 only for our own bugs, never a plain body."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route
from support.bad_input import bodies

from serve_app import jsonwire
from serve_app.http import EventStreamResponse, Gate, json_response, openai_app, read_json
from serve_app.schemas import ChatRequest, ResponsesRequest, parse
from serve_app.translate import chat, to_chat_request

SECRET = "the client's private words"


def edge_app() -> FastAPI:
    """The server's routes up to the upstream call: read, parse, translate and write the upstream body."""
    gate = Gate(())

    async def responses(request: Request) -> Response:
        gate.check(request)
        body = await read_json(request, 1 << 20)
        return json_response(jsonwire.loads(jsonwire.dumps(to_chat_request(parse(ResponsesRequest, body)))))

    async def chat_completions(request: Request) -> Response:
        gate.check(request)
        body = await read_json(request, 1 << 20)
        upstream = chat.to_upstream(parse(ChatRequest, body), body, "gpt-4o")
        return json_response(jsonwire.loads(jsonwire.dumps(upstream)))

    async def bug(request: Request) -> Response:
        raise RuntimeError(SECRET)

    routes = [
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/bug", bug, methods=["POST"]),
    ]
    return openai_app(routes, request_id=lambda: "req-123")


class Client:
    """Requests straight into the ASGI app on one event loop (a tenth of TestClient's cost per request)."""

    def __init__(self, app: FastAPI) -> None:
        self._loop = asyncio.new_event_loop()
        self._http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._http.post(path, **kwargs))

    def get(self, path: str) -> httpx.Response:
        return self._loop.run_until_complete(self._http.get(path))

    def close(self) -> None:
        self._loop.run_until_complete(self._http.aclose())
        self._loop.close()


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    edge = Client(edge_app())
    yield edge
    edge.close()


def envelope(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, dict[str, Any]] = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_an_unexpected_exception_is_a_500_envelope_logged_with_the_request_id_and_never_its_message(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        response = client.post("/v1/bug", json={"input": SECRET})
    assert response.status_code == 500
    assert envelope(response)["type"] == "server_error" and SECRET not in response.text
    assert "req-123" in caplog.text and "RuntimeError" in caplog.text and SECRET not in caplog.text


def test_an_unknown_path_is_a_404_envelope(client: Client) -> None:
    response = client.post("/v1/nowhere", json={})
    assert response.status_code == 404
    assert envelope(response)["message"] == "Invalid URL (POST /v1/nowhere)"


def test_a_method_the_path_does_not_take_is_a_405_envelope_with_allow(client: Client) -> None:
    response = client.get("/v1/responses")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert envelope(response)["message"] == "Method Not Allowed (GET /v1/responses)"


def nested(depth: int) -> Any:
    value: Any = {"type": "string"}
    for _ in range(depth - 1):
        value = {"type": "object", "properties": {"a": value}}
    return value


@pytest.mark.parametrize(
    "path, body",
    [
        (
            "responses",
            {"input": "hi", "tools": [{"type": "function", "name": "f", "parameters": nested(100)}]},
        ),
        (
            "responses",
            {"input": "hi", "text": {"format": {"type": "json_schema", "name": "s", "schema": nested(100)}}},
        ),
        ("chat/completions", {"messages": [{"role": "user", "content": "hi"}], "response_format": nested(100)}),
    ],
)
def test_a_body_nested_too_deep_to_write_upstream_is_a_400_naming_the_field(
    client: Client, path: str, body: dict[str, Any]
) -> None:
    response = client.post(f"/v1/{path}", json=body)
    assert response.status_code == 400
    error = envelope(response)
    assert error["param"].split(".")[0].split("[")[0] in body and "nested deeper than 128" in error["message"]


def test_a_body_nested_to_the_limit_goes_through(client: Client) -> None:
    body = {"input": "hi", "tools": [{"type": "function", "name": "f", "parameters": nested(60)}]}
    assert jsonwire.too_deep(body) is None  # 3 + 2 x 60 - 1 levels
    assert client.post("/v1/responses", json=body).status_code == 200


@pytest.mark.parametrize(
    "path, field, value",
    [
        ("responses", "max_output_tokens", True),
        ("responses", "stream", "yes"),
        ("responses", "stream", 1),
        ("responses", "temperature", "1"),
        ("responses", "parallel_tool_calls", "false"),
        ("chat/completions", "stream", "yes"),
        ("chat/completions", "n", True),
    ],
)
def test_booleans_are_not_integers_and_strings_are_not_booleans(
    client: Client, path: str, field: str, value: Any
) -> None:
    base: dict[str, Any] = {"input": "hi"} if path == "responses" else {"messages": [{"role": "user", "content": "x"}]}
    response = client.post(f"/v1/{path}", json={**base, field: value})
    assert response.status_code == 400 and envelope(response)["param"] == field


# --- the property: any body, any type in any field, never a 5xx, never a plain body ---------------

wrong_values = (
    st.booleans()
    | st.none()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["yes", "true", "1", "", "auto", "none"])
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.sampled_from(["type", "name", "role"]), st.text(max_size=5), max_size=2)
    | st.integers(min_value=100, max_value=200).map(nested)
)
responses_fields = st.sampled_from(list(ResponsesRequest.model_fields))
chat_fields = st.sampled_from([*ChatRequest.model_fields, "max_tokens", "response_format", "tools", "temperature"])
valid_responses = st.sampled_from(
    [
        {"input": "hi"},
        {"input": [{"type": "message", "role": "user", "content": "hi"}], "max_output_tokens": 5, "stream": False},
        {"input": "hi", "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]},
    ]
)
valid_chat = st.sampled_from(
    [{"messages": [{"role": "user", "content": "hi"}]}, {"messages": [{"role": "user", "content": "x"}], "n": 1}]
)
mutated = st.one_of(
    st.tuples(
        st.just("responses"), st.builds(lambda b, k, v: {**b, k: v}, valid_responses, responses_fields, wrong_values)
    ),
    st.tuples(
        st.just("chat/completions"), st.builds(lambda b, k, v: {**b, k: v}, valid_chat, chat_fields, wrong_values)
    ),
    st.tuples(st.sampled_from(["responses", "chat/completions"]), bodies),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated)
def test_any_body_is_answered_or_refused_with_a_4xx_envelope(client: Client, case: tuple[str, Any]) -> None:
    path, body = case
    if isinstance(body, dict) and body.get("stream") is True:
        body = {**body, "stream": False}  # a stream's later errors are in-band, tested elsewhere
    response = client.post(f"/v1/{path}", content=json.dumps(body))  # orjson could not write the deepest
    if response.status_code != 200:
        assert 400 <= response.status_code < 500, response.text
        envelope(response)


@pytest.mark.parametrize("header, value", [("x-request-disconnect-disabled", "?1"), ("X-Request-Timeout-Seconds", "0")])
def test_a_serve_control_header_from_a_client_is_refused_before_anything_runs(
    client: Client, header: str, value: str
) -> None:
    response = client.post("/v1/responses", json={"input": "hi"}, headers={header: value})
    assert response.status_code == 400 and envelope(response)["param"] == header.lower()


class Reader:
    """The client side of a stream: takes the first `reads` writes, then stops reading (its sends block)."""

    def __init__(self, reads: int) -> None:
        self.reads = reads
        self.received: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        if len(self.received) >= self.reads:
            await asyncio.Event().wait()
        self.received.append(message)

    async def receive(self) -> dict[str, Any]:
        await asyncio.Event().wait()  # the connection stays open
        raise AssertionError("unreachable")


@pytest.mark.parametrize("spec_version", ["2.0", "2.4"])  # Starlette streams differently from 2.4
async def test_a_stream_whose_client_stopped_reading_is_closed_within_the_stall_bound(spec_version: str) -> None:
    closed = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: {}\n\n"
        finally:
            closed.set()  # where the upstream call ends and its slot is freed

    reader = Reader(reads=3)
    response = EventStreamResponse(events(), stall_s=0.05)
    scope = {"type": "http", "asgi": {"spec_version": spec_version}}
    await asyncio.wait_for(response(scope, reader.receive, reader.send), 2)  # type: ignore[arg-type]
    assert closed.is_set() and len(reader.received) == 3


async def test_a_client_leaving_while_its_body_is_read_is_neither_answered_nor_logged_as_a_bug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = iter([{"type": "http.request", "body": b'{"inp', "more_body": True}, {"type": "http.disconnect"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/responses", "headers": [], "query_string": b""}
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        await edge_app()(scope, receive, send)  # type: ignore[arg-type]
    assert sent == [] and "failed" not in caplog.text

"""The Azure client: URL, auth and query; Azure's errors in the OpenAI envelope; transport failures typed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr
from support.fake_azure import FakeAzure, reply, script, sse

from serve_app import jsonwire
from serve_app.azure import AzureClient, is_default
from serve_app.config import Retries, Timeouts
from serve_app.errors import RefusedParameter, UpstreamError, UpstreamTimeout, UpstreamUnavailable

KEY = "azure-key-0123456789"


def client_for(base_url: str, *, timeouts: Timeouts | None = None, retries: Retries | None = None) -> AzureClient:
    return AzureClient(
        base_url=base_url + "/",
        deployment="my gpt",
        query={"api-version": "2024-10-21", "extra": "1"},
        api_key=SecretStr(KEY),
        timeouts=timeouts or Timeouts(),
        retries=retries or Retries(max_attempts=1),  # error mapping is tested without retries; retries in test_retry.py
    )


async def call(handler: Callable[[], web.StreamResponse], body: Any = None) -> dict[str, Any]:
    async with FakeAzure(script(handler)) as azure:
        client = client_for(azure.url)
        try:
            return await client.complete(body or {"messages": []})
        finally:
            await client.aclose()


async def test_posts_to_the_deployment_path_with_every_default_query_key_and_the_api_key_header() -> None:
    async with FakeAzure(script(lambda: reply(200, {"choices": []}))) as azure:
        client = client_for(azure.url)
        await client.complete({"messages": [{"role": "user", "content": "hi"}]})
        await client.aclose()
    path, headers, body = azure.requests[0]
    assert path == "/openai/deployments/my%20gpt/chat/completions?api-version=2024-10-21&extra=1"
    assert headers["api-key"] == KEY and "Authorization" not in headers
    assert json.loads(body) == {"messages": [{"role": "user", "content": "hi"}]}


async def test_the_v1_api_posts_to_chat_completions_with_the_deployment_as_model_and_no_api_version() -> None:
    async with FakeAzure(script(lambda: reply(200, {"choices": []}))) as azure:
        client = AzureClient(
            base_url=azure.url + "/openai/v1/",
            deployment="my-o3",
            query={},
            api_key=SecretStr(KEY),
            timeouts=Timeouts(),
        )
        await client.complete({"messages": [{"role": "user", "content": "hi"}], "model": "from-the-client"})
        await client.aclose()
    path, headers, body = azure.requests[0]
    assert path == "/openai/v1/chat/completions"
    assert json.loads(body)["model"] == "my-o3" and headers["api-key"] == KEY


AZURE_ERRORS = {
    "bad key": (
        401,
        {"error": {"code": "401", "message": "Access denied due to invalid subscription key."}},
        {},
        ("401", "authentication_error", None),
    ),
    "Entra token without the error wrapper": (
        401,
        {"statusCode": 401, "message": "Unauthorized. Access token is missing"},
        {},
        (None, "authentication_error", None),
    ),
    "unknown deployment": (
        404,
        {"error": {"code": "DeploymentNotFound", "message": "The API deployment does not exist."}},
        {},
        ("DeploymentNotFound", "not_found_error", None),
    ),
    "prompt content filter": (
        400,
        {
            "error": {
                "code": "content_filter",
                "param": "prompt",
                "status": 400,
                "message": "filtered",
                "innererror": {"code": "ResponsibleAIPolicyViolation"},
            }
        },
        {},
        ("content_filter", "invalid_request_error", "prompt"),
    ),
    "unsupported parameter keeps Azure's type": (
        400,
        {
            "error": {
                "message": "Unsupported parameter: 'max_tokens'",
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": "unsupported_parameter",
            }
        },
        {},
        ("unsupported_parameter", "invalid_request_error", "max_tokens"),
    ),
    "rate limit with retry headers": (
        429,
        {"error": {"code": "429", "message": "Please retry after 6 seconds."}},
        {
            "retry-after": "6",
            "retry-after-ms": "5500",
            "x-ratelimit-remaining-requests": "0",
            "x-ms-region": "Sweden Central",
            "apim-request-id": "a1b2",
        },
        ("429", "rate_limit_error", None),
    ),
    "server error": (
        500,
        {"error": {"code": "InternalServerError", "message": "The server had an error."}},
        {},
        ("InternalServerError", "server_error", None),
    ),
}


@pytest.mark.parametrize("status, body, headers, expected", AZURE_ERRORS.values(), ids=AZURE_ERRORS.keys())
async def test_azure_errors_keep_status_code_and_message(
    status: int, body: dict[str, Any], headers: dict[str, str], expected: tuple[str | None, str, str | None]
) -> None:
    with pytest.raises(UpstreamError) as info:
        await call(lambda: reply(status, body, headers))
    error = info.value
    assert error.status == status
    assert (error.code, error.type, error.param) == expected
    assert error.message == (body.get("error") or body)["message"]
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}
    assert error.headers == headers  # each one's backoff or quota header is passed on


async def test_a_non_json_error_body_becomes_the_message() -> None:
    with pytest.raises(UpstreamError) as info:
        await call(lambda: reply(502, raw=b"<html>Bad gateway</html>"))
    assert info.value.status == 502 and "Bad gateway" in info.value.message


async def test_a_success_that_is_not_json_is_a_502() -> None:
    with pytest.raises(UpstreamUnavailable) as info:
        await call(lambda: reply(200, raw=b"<html>"))
    assert info.value.status == 502


def test_the_client_repr_does_not_reveal_the_key() -> None:
    assert KEY not in repr(client_for("https://res.openai.azure.com"))


# --- transport failures ----------------------------------------------------------------------------


async def serve_raw(
    behaviour: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await behaviour(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_connection_refused_is_a_502() -> None:
    server, url = await serve_raw(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    with pytest.raises(UpstreamUnavailable) as info:
        await client_for(url).complete({"messages": []})
    assert info.value.status == 502


async def test_silence_past_the_read_timeout_is_a_504() -> None:
    server, url = await serve_raw(lambda r, w: asyncio.sleep(5))
    async with server:
        with pytest.raises(UpstreamTimeout) as info:
            await client_for(url, timeouts=Timeouts(read_s=0.2)).complete({"messages": []})
    assert info.value.status == 504


async def test_a_connection_reset_mid_body_is_a_502() -> None:
    async def half_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"choi')
        await writer.drain()
        writer.transport.abort()

    server, url = await serve_raw(half_then_close)
    async with server:
        with pytest.raises(UpstreamUnavailable) as info:
            await client_for(url).complete({"messages": []})
    assert info.value.status == 502 and KEY not in info.value.message


# --- streaming -------------------------------------------------------------------------------------


async def collect(
    opening: Awaitable[tuple[list[dict[str, Any]] | None, AsyncIterator[list[dict[str, Any]]]]],
) -> list[dict[str, Any]]:
    """The chunks of a stream from `AzureClient.open_stream`, its first batch and the rest."""
    first, rest = await opening
    batches = ([] if first is None else [first]) + [batch async for batch in rest]
    assert all(batches), "a stream never yields an empty batch"
    return [chunk for batch in batches for chunk in batch]


async def stream_from(handler: Callable[[], web.StreamResponse]) -> tuple[list[dict[str, Any]], FakeAzure]:
    async with FakeAzure(script(handler)) as azure:
        client = client_for(azure.url)
        try:
            return await collect(client.open_stream({"messages": []}, None, jsonwire.loads)), azure
        finally:
            await client.aclose()


async def test_a_stream_asks_for_usage_and_yields_chunks_until_done() -> None:
    chunks, azure = await stream_from(
        lambda: reply(
            200,
            raw=sse({"choices": [], "id": ""}, {"choices": [{"delta": {"content": "a"}}]}, "[DONE]"),
            headers={"content-type": "text/event-stream"},
        )
    )
    sent = json.loads(azure.requests[0][2])
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert chunks == [{"choices": [], "id": ""}, {"choices": [{"delta": {"content": "a"}}]}]


async def test_a_frame_longer_than_64_kib_is_read_whole() -> None:
    arguments = "x" * 200_000
    frame = {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}}]}
    chunks, _ = await stream_from(lambda: reply(200, raw=sse(frame, "[DONE]")))
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == arguments


async def test_an_error_status_on_a_stream_raises_before_any_chunk() -> None:
    with pytest.raises(UpstreamError) as info:
        await stream_from(lambda: reply(429, {"error": {"code": "429", "message": "slow down"}}, {"retry-after": "2"}))
    assert info.value.status == 429 and info.value.headers == {"retry-after": "2"}


async def test_an_in_band_error_frame_raises_after_the_chunks_before_it() -> None:
    body = sse({"choices": [{"delta": {"content": "a"}}]}, {"error": {"code": "server_error", "message": "boom"}})
    async with FakeAzure(script(lambda: reply(200, raw=body))) as azure:
        first, rest = await client_for(azure.url).open_stream({"messages": []}, None, jsonwire.loads)
        assert [chunk["choices"][0]["delta"]["content"] for chunk in first or []] == ["a"]
        with pytest.raises(UpstreamError, match="boom"):
            await anext(rest)


async def test_a_stream_that_ends_without_done_is_an_error() -> None:
    with pytest.raises(UpstreamUnavailable, match="DONE"):
        await stream_from(lambda: reply(200, raw=sse({"choices": []})))


# --- parameters the deployment refuses ------------------------------------------------------------


def refuses(param: str) -> Callable[[], web.Response]:
    message = f"Unsupported parameter: '{param}' is not supported with this model."
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": "unsupported_parameter"}
    return lambda: reply(400, {"error": error})


async def test_a_refused_parameter_at_its_default_is_learned_once_and_left_out() -> None:
    body = {"messages": [], "tools": [{}], "parallel_tool_calls": True}
    async with FakeAzure(script(refuses("parallel_tool_calls"), lambda: reply(200, {"choices": []}))) as azure:
        client = client_for(azure.url)  # max_attempts=1: learning is not a retry
        await client.complete(body)
        await client.complete(body)
        await client.aclose()
    sent = [json.loads(request[2]) for request in azure.requests]
    assert "parallel_tool_calls" in sent[0] and len(sent) == 3
    assert all("parallel_tool_calls" not in later for later in sent[1:])
    assert client.parameters.learned == {"parallel_tool_calls"}


async def test_a_refused_parameter_at_another_value_is_a_400_naming_it_and_never_dropped() -> None:
    async with FakeAzure(script(refuses("temperature"), lambda: reply(200, {"choices": []}))) as azure:
        client = client_for(azure.url)
        with pytest.raises(RefusedParameter) as info:
            await client.complete({"messages": [], "temperature": 0.2})
        with pytest.raises(RefusedParameter):
            await client.complete({"messages": [], "temperature": 0.2})
        await client.complete({"messages": [], "temperature": 1})
        await client.aclose()
    assert len(azure.requests) == 2  # the refusal, then the call at the default, sent without it
    assert "temperature" not in json.loads(azure.requests[1][2])
    error = info.value
    assert (error.status, error.param, error.code) == (400, "temperature", "unsupported_parameter")
    assert "0.2" in error.message and "my gpt" in error.message and "default (1)" in error.message


async def test_configured_refusals_never_reach_azure() -> None:
    async with FakeAzure(script(lambda: reply(200, {"choices": []}))) as azure:
        client = AzureClient(
            base_url=azure.url,
            deployment="o3",
            query={"api-version": "2025-04-01-preview"},
            api_key=SecretStr(KEY),
            timeouts=Timeouts(),
            rejected_parameters=("top_p", "max_tokens"),
        )
        await client.complete({"messages": [], "top_p": 1})
        with pytest.raises(RefusedParameter, match="max_tokens"):
            await client.complete({"messages": [], "max_tokens": 10})
        await client.aclose()
    assert len(azure.requests) == 1 and "top_p" not in json.loads(azure.requests[0][2])


@pytest.mark.parametrize(
    "name, value, default",
    [
        ("parallel_tool_calls", True, True),
        ("temperature", 1.0, True),
        ("temperature", True, False),
        ("logprobs", 0, False),
    ],
)
def test_only_the_documented_default_itself_counts_as_default(name: str, value: Any, default: bool) -> None:
    assert is_default(name, value) == default


async def test_a_stream_frame_of_the_wrong_shape_for_its_reader_is_a_502_saying_so() -> None:
    from serve_app.translate.stream import read_chunk

    async with FakeAzure(script(lambda: reply(200, raw=sse({"choices": 3}, "[DONE]")))) as azure:
        client = client_for(azure.url)
        with pytest.raises(UpstreamUnavailable, match="shape") as info:
            await collect(client.open_stream({"messages": []}, None, read_chunk))
        await client.aclose()
    assert (info.value.status, info.value.code) == (502, "upstream_invalid_response")

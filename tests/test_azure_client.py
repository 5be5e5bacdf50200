"""The Azure client: URL, auth header and query; Azure's errors kept in the OpenAI envelope; transport failures typed."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Callable

import httpx
import pytest
from pydantic import SecretStr

from serve_app.azure import AzureClient
from serve_app.config import Retries, Timeouts
from serve_app.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable

KEY = "azure-key-0123456789"


def client_for(handler: Callable[[httpx.Request], httpx.Response] | None = None, *, base_url: str = "https://res.openai.azure.com/",
               timeouts: Timeouts | None = None, retries: Retries | None = None) -> AzureClient:
    return AzureClient(
        base_url=base_url,
        deployment="my gpt",
        query={"api-version": "2024-10-21", "extra": "1"},
        api_key=SecretStr(KEY),
        timeouts=timeouts or Timeouts(),
        retries=retries or Retries(max_attempts=1),  # error mapping is tested without retries; retries below
        transport=httpx.MockTransport(handler) if handler else None,
    )


async def test_posts_to_the_deployment_path_with_every_default_query_key_and_the_api_key_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"choices": []})

    await client_for(handler).complete({"messages": [{"role": "user", "content": "hi"}]})
    request = seen[0]
    assert request.method == "POST"
    assert request.url.raw_path.startswith(b"/openai/deployments/my%20gpt/chat/completions?")
    assert dict(request.url.params) == {"api-version": "2024-10-21", "extra": "1"}
    assert request.headers["api-key"] == KEY and "authorization" not in request.headers
    assert json.loads(request.content) == {"messages": [{"role": "user", "content": "hi"}]}


AZURE_ERRORS = {
    "bad key": (401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key."}}, {},
                ("401", "authentication_error", None)),
    "Entra token without the error wrapper": (401, {"statusCode": 401, "message": "Unauthorized. Access token is missing"}, {},
                                              (None, "authentication_error", None)),
    "unknown deployment": (404, {"error": {"code": "DeploymentNotFound", "message": "The API deployment does not exist."}}, {},
                           ("DeploymentNotFound", "not_found_error", None)),
    "prompt content filter": (400, {"error": {"code": "content_filter", "param": "prompt", "status": 400, "message": "filtered",
                                              "innererror": {"code": "ResponsibleAIPolicyViolation"}}}, {},
                              ("content_filter", "invalid_request_error", "prompt")),
    "unsupported parameter keeps Azure's type": (400, {"error": {"message": "Unsupported parameter: 'max_tokens'", "type": "invalid_request_error",
                                                                  "param": "max_tokens", "code": "unsupported_parameter"}}, {},
                                                  ("unsupported_parameter", "invalid_request_error", "max_tokens")),
    "rate limit with retry headers": (429, {"error": {"code": "429", "message": "Please retry after 6 seconds."}},
                                      {"retry-after": "6", "retry-after-ms": "5500", "x-ratelimit-remaining-requests": "0"},
                                      ("429", "rate_limit_error", None)),
    "server error": (500, {"error": {"code": "InternalServerError", "message": "The server had an error."}}, {},
                     ("InternalServerError", "server_error", None)),
}


@pytest.mark.parametrize("status, body, headers, expected", AZURE_ERRORS.values(), ids=AZURE_ERRORS.keys())
async def test_azure_errors_keep_status_code_and_message(status: int, body: dict[str, Any], headers: dict[str, str],
                                                          expected: tuple[str | None, str, str | None]) -> None:
    client = client_for(lambda request: httpx.Response(status, json=body, headers=headers))
    with pytest.raises(UpstreamError) as info:
        await client.complete({"messages": []})
    error = info.value
    assert error.status == status
    assert (error.code, error.type, error.param) == expected
    assert error.message == (body.get("error") or body)["message"]
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}
    assert error.headers == {k: v for k, v in headers.items() if k.startswith("retry-after")}


async def test_a_non_json_error_body_becomes_the_message() -> None:
    client = client_for(lambda request: httpx.Response(502, text="<html>Bad gateway</html>"))
    with pytest.raises(UpstreamError) as info:
        await client.complete({"messages": []})
    assert info.value.status == 502 and "Bad gateway" in info.value.message


async def test_the_client_repr_does_not_reveal_the_key() -> None:
    assert KEY not in repr(client_for(lambda r: httpx.Response(200)))


# --- real transport failures (aiohttp) -----------------------------------------------------------


async def serve_once(behaviour: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await behaviour(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def test_connection_refused_is_a_502() -> None:
    server, url = await serve_once(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    with pytest.raises(UpstreamUnavailable) as info:
        await client_for(base_url=url).complete({"messages": []})
    assert info.value.status == 502


async def test_silence_past_the_read_timeout_is_a_504() -> None:
    server, url = await serve_once(lambda r, w: asyncio.sleep(5))
    async with server:
        with pytest.raises(UpstreamTimeout) as info:
            await client_for(base_url=url, timeouts=Timeouts(read_s=0.2)).complete({"messages": []})
    assert info.value.status == 504


async def test_a_connection_reset_mid_body_is_a_502() -> None:
    async def half_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"choi")
        await writer.drain()
        writer.transport.abort()

    server, url = await serve_once(half_then_close)
    async with server:
        with pytest.raises(UpstreamUnavailable) as info:
            await client_for(base_url=url).complete({"messages": []})
    assert info.value.status == 502 and KEY not in info.value.message


# --- streaming -----------------------------------------------------------------------------------


def sse(*frames: Any) -> bytes:
    return b"".join(f"data: {f if isinstance(f, str) else json.dumps(f)}\n\n".encode() for f in frames)


async def collect(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [chunk async for chunk in stream]


async def test_a_stream_asks_for_usage_and_yields_chunks_until_done() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=sse({"choices": [], "id": ""}, {"choices": [{"delta": {"content": "a"}}]}, "[DONE]"),
                              headers={"content-type": "text/event-stream"})

    chunks = await collect(client_for(handler).stream({"messages": []}))
    assert seen[0]["stream"] is True and seen[0]["stream_options"] == {"include_usage": True}
    assert chunks == [{"choices": [], "id": ""}, {"choices": [{"delta": {"content": "a"}}]}]


async def test_an_error_status_on_a_stream_raises_before_any_chunk() -> None:
    client = client_for(lambda r: httpx.Response(429, json={"error": {"code": "429", "message": "slow down"}}, headers={"retry-after": "2"}))
    with pytest.raises(UpstreamError) as info:
        await collect(client.stream({"messages": []}))
    assert info.value.status == 429 and info.value.headers == {"retry-after": "2"}


async def test_an_in_band_error_frame_raises_after_the_chunks_before_it() -> None:
    body = sse({"choices": [{"delta": {"content": "a"}}]}, {"error": {"code": "server_error", "message": "boom"}})
    stream = client_for(lambda r: httpx.Response(200, content=body)).stream({"messages": []})
    assert (await stream.__anext__())["choices"][0]["delta"]["content"] == "a"
    with pytest.raises(UpstreamError, match="boom"):
        await stream.__anext__()


async def test_a_stream_that_ends_without_done_is_an_error() -> None:
    stream = client_for(lambda r: httpx.Response(200, content=sse({"choices": []}))).stream({"messages": []})
    with pytest.raises(UpstreamUnavailable, match="DONE"):
        await collect(stream)

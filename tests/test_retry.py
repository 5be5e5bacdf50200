"""Retries: what is retried, how long it waits, and that the deadline bounds everything."""

from __future__ import annotations

import asyncio
import random
import time
from email.utils import formatdate

import pytest
from aiohttp import web
from fake_azure import FakeAzure, reply, script, sse
from pydantic import SecretStr

from serve_app.azure import AzureClient
from serve_app.config import Retries, Timeouts
from serve_app.errors import OpenAIError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from serve_app.retry import RetryPolicy, retry_after_s

FAST = Retries(max_attempts=4, backoff_initial_s=0.01, backoff_max_s=0.02, retry_after_max_s=5)


def error(status: int, headers: dict[str, str] | None = None) -> OpenAIError:
    return UpstreamError("x", status=status, headers=headers)


RETRYABLE = {
    "408": (error(408), True),
    "409": (error(409), True),
    "429": (error(429), True),
    "500": (error(500), True),
    "503": (error(503), True),
    "connection failure": (UpstreamUnavailable("x"), True),
    "timeout": (UpstreamTimeout("x"), True),
    "400": (error(400), False),
    "401": (error(401), False),
    "403": (error(403), False),
    "404": (error(404), False),
    "422": (error(422), False),
}


@pytest.mark.parametrize("err, retried", RETRYABLE.values(), ids=RETRYABLE.keys())
def test_what_is_retried(err: OpenAIError, retried: bool) -> None:
    assert (RetryPolicy(FAST).delay(1, err, remaining_s=60) is not None) == retried


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "6"}, 6.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after": formatdate(1_000_000 + 4, usegmt=True)}, 4.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
    ids=["ms wins", "seconds", "fractional seconds", "HTTP date", "unreadable", "absent"],
)
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_s(headers, now=lambda: 1_000_000) == expected


def test_azure_retry_after_is_honoured_and_too_long_a_one_is_not_waited_for() -> None:
    policy = RetryPolicy(FAST)
    assert policy.delay(1, error(429, {"retry-after-ms": "1200"}), remaining_s=60) == 1.2
    assert policy.delay(1, error(429, {"retry-after": "30"}), remaining_s=60) is None  # above retry_after_max_s


def test_backoff_is_exponential_capped_and_jittered_down_by_at_most_a_quarter() -> None:
    policy = RetryPolicy(Retries(max_attempts=10, backoff_initial_s=1, backoff_max_s=8), random.Random(1))
    waits = [policy.delay(n, error(503), remaining_s=1000) for n in range(1, 7)]
    for n, wait in enumerate(waits, start=1):
        ceiling = min(2 ** (n - 1), 8)
        assert 0.75 * ceiling <= wait <= ceiling


def test_no_retry_after_the_last_attempt_or_past_the_deadline() -> None:
    policy = RetryPolicy(FAST)
    assert policy.delay(4, error(503), remaining_s=60) is None
    assert policy.delay(1, error(429, {"retry-after": "2"}), remaining_s=1.5) is None


# --- the client's loop ---------------------------------------------------------------------------


def client(url: str, retries: Retries = FAST, total_s: float = 30) -> AzureClient:
    return AzureClient(
        base_url=url,
        deployment="d",
        query={"api-version": "2024-10-21"},
        api_key=SecretStr("k"),
        timeouts=Timeouts(total_s=total_s),
        retries=retries,
    )


def ok() -> web.Response:
    return reply(200, {"choices": [{"message": {"content": "ok"}}]})


def busy() -> web.Response:
    return reply(429, {"error": {"code": "429", "message": "slow down"}}, {"retry-after-ms": "10"})


def down() -> web.Response:
    return reply(503, {"error": {"code": "ServiceUnavailable", "message": "down"}})


async def test_a_call_succeeds_after_transient_failures() -> None:
    async with FakeAzure(script(busy, down, ok)) as azure:
        assert (await client(azure.url).complete({}))["choices"][0]["message"]["content"] == "ok"
    assert len(azure.requests) == 3


async def test_exhausted_retries_return_azures_last_status_body_and_retry_after() -> None:
    async with FakeAzure(script(down, busy)) as azure:
        with pytest.raises(UpstreamError) as info:
            await client(azure.url, Retries(max_attempts=2, backoff_initial_s=0.01)).complete({})
    assert len(azure.requests) == 2
    assert (info.value.status, info.value.code, info.value.headers) == (429, "429", {"retry-after-ms": "10"})


async def test_a_client_error_is_not_retried() -> None:
    async with FakeAzure(script(lambda: reply(400, {"error": {"code": "invalid", "message": "no"}}), ok)) as azure:
        with pytest.raises(UpstreamError):
            await client(azure.url).complete({})
    assert len(azure.requests) == 1


async def test_the_total_deadline_bounds_attempts_and_waits() -> None:
    async with FakeAzure(script(lambda: reply(503, {}, {"retry-after": "0.3"}))) as azure:
        started = time.monotonic()
        with pytest.raises(UpstreamError):
            await client(azure.url, Retries(max_attempts=100, retry_after_max_s=5), total_s=1.0).complete({})
    assert time.monotonic() - started < 1.0 and len(azure.requests) <= 4


async def test_a_slow_upstream_is_cut_at_the_total_deadline_with_a_504() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return ok()

    async with FakeAzure(slow) as azure:
        azure_client = AzureClient(
            base_url=azure.url,
            deployment="d",
            query={"api-version": "v"},
            api_key=SecretStr("k"),
            timeouts=Timeouts(total_s=0.3),
            retries=Retries(max_attempts=1),
        )
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await azure_client.complete({})
        assert time.monotonic() - started < 1.0


async def test_a_stream_is_retried_before_its_first_chunk() -> None:
    async with FakeAzure(script(busy, lambda: reply(200, raw=sse({"choices": []}, "[DONE]")))) as azure:
        assert [c async for c in client(azure.url).stream({})] == [{"choices": []}]
    assert len(azure.requests) == 2


async def test_a_stream_is_not_retried_after_its_first_chunk() -> None:
    async with FakeAzure(script(lambda: reply(200, raw=sse({"choices": []})), ok)) as azure:  # ends without [DONE]
        stream = client(azure.url).stream({})
        assert await stream.__anext__() == {"choices": []}
        with pytest.raises(UpstreamUnavailable):
            await stream.__anext__()
    assert len(azure.requests) == 1

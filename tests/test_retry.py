"""Retries: what is retried, how long it waits, and that the deadline bounds everything."""

from __future__ import annotations

import asyncio
import random
import time
from email.utils import formatdate

import pytest
from aiohttp import web
from pydantic import SecretStr
from support.fake_azure import FakeAzure, reply, script, sse

from serve_app import jsonwire
from serve_app.azure import AzureClient
from serve_app.config import Retries, Timeouts
from serve_app.errors import OpenAIError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from serve_app.retry import RetryPolicy, duration_s, retry_after_s
from serve_app.upstreams import hand_over_rule

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


@pytest.mark.parametrize(
    "value, seconds",
    [("1s", 1.0), ("250ms", 0.25), ("1m30s", 90.0), ("6.5s", 6.5), ("1h", 3600.0), ("12", 12.0), ("soon", None)],
)
def test_durations_in_azures_reset_headers(value: str, seconds: float | None) -> None:
    assert duration_s(value) == seconds


RESET_HINTS = {
    "only a reset time": ({"x-ratelimit-reset-requests": "2s"}, "", 2.0),
    "the longest exhausted quota's reset": (
        {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "1m30s"},
        "",
        90.0,
    ),
    "a quota with some left does not apply": (
        {
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-tokens": "40s",
            "x-ratelimit-remaining-tokens": "5000",
        },
        "",
        1.0,
    ),
    "the message's sentence": ({}, "... in Sweden Central have exceeded ... Please retry after 6 seconds.", 6.0),
    "the longer of reset and sentence": ({"x-ratelimit-reset-tokens": "250ms"}, "Please retry after 3 seconds.", 3.0),
    "retry-after wins over the hints": ({"retry-after": "2", "x-ratelimit-reset-tokens": "59s"}, "", 2.0),
}


@pytest.mark.parametrize("headers, message, expected", RESET_HINTS.values(), ids=RESET_HINTS.keys())
def test_without_retry_after_the_wait_comes_from_reset_times_and_the_message(
    headers: dict[str, str], message: str, expected: float
) -> None:
    assert retry_after_s(headers, message) == expected


def test_a_daily_quota_wait_is_not_waited_for() -> None:
    daily = UpstreamError("Please retry after 86400 seconds.", status=429)
    assert RetryPolicy(FAST).delay(1, daily, remaining_s=10_000) is None


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
    # nor when the attempt after the wait would have next to no time left
    assert policy.delay(1, error(429, {"retry-after": "2"}), remaining_s=2.5) is None
    assert policy.delay(1, error(429, {"retry-after": "2"}), remaining_s=3.5) == 2.0


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
    assert (info.value.status, info.value.code) == (429, "429")
    assert info.value.headers == {"retry-after-ms": "10", "retry-after": "1"}  # whole seconds for every client


def reset_only() -> web.Response:
    message = "Requests ... have exceeded call rate limit of your current AIServices S0 pricing tier."
    headers = {"x-ratelimit-reset-requests": "500ms", "x-ratelimit-remaining-requests": "0", "x-ms-region": "x"}
    return reply(429, {"error": {"code": "429", "message": message}}, headers)


async def test_a_429_naming_only_a_reset_time_is_waited_out_with_one_retry() -> None:
    patient = Retries(max_attempts=4, backoff_initial_s=0.01, backoff_max_s=0.02, retry_after_max_s=5)
    async with FakeAzure(script(reset_only, ok)) as azure:
        started = time.monotonic()
        await client(azure.url, patient).complete({})
    # Blind backoff (0.01-0.02 s) would have spent the attempts long before the window reopened.
    assert len(azure.requests) == 2 and time.monotonic() - started >= 0.5


async def test_a_wait_longer_than_retry_after_max_goes_back_at_once_with_a_retry_after() -> None:
    def daily() -> web.Response:
        message = "Requests ... have exceeded the daily token quota. Please retry after 86400 seconds."
        return reply(429, {"error": {"code": "429", "message": message}}, {"x-ratelimit-remaining-tokens": "0"})

    async with FakeAzure(script(daily, ok)) as azure:
        with pytest.raises(UpstreamError) as info:
            await client(azure.url).complete({})
    assert len(azure.requests) == 1
    assert info.value.headers == {"x-ratelimit-remaining-tokens": "0", "retry-after": "86400"}


async def test_azures_quota_region_and_request_id_headers_are_passed_on_with_an_answer() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "99",
        "x-ratelimit-remaining-tokens": "9000",
        "x-ms-region": "Sweden Central",
        "apim-request-id": "abc",
        "x-ms-client-request-id": "not passed on",
    }
    seen: dict[str, str] = {}
    streamed: dict[str, str] = {}
    async with FakeAzure(script(lambda: reply(200, {"choices": []}, headers))) as azure:
        await client(azure.url).complete({}, seen)
    async with FakeAzure(script(lambda: reply(200, raw=sse({"choices": []}, "[DONE]"), headers=headers))) as azure:
        first, rest = await client(azure.url).open_stream({}, streamed, jsonwire.loads)
        assert (first, [batch async for batch in rest]) == ([{"choices": []}], [])
    expected = {k: v for k, v in headers.items() if k != "x-ms-client-request-id"}
    assert seen == expected and streamed == expected


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
        await asyncio.sleep(1)  # longer than the 1 s the assert allows: no deadline, no pass
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
        first, rest = await client(azure.url).open_stream({}, None, jsonwire.loads)
        assert (first, [batch async for batch in rest]) == ([{"choices": []}], [])
    assert len(azure.requests) == 2


async def test_a_stream_is_not_retried_after_its_first_chunk() -> None:
    async with FakeAzure(script(lambda: reply(200, raw=sse({"choices": []})), ok)) as azure:  # ends without [DONE]
        first, rest = await client(azure.url).open_stream({}, None, jsonwire.loads)
        assert first == [{"choices": []}]
        with pytest.raises(UpstreamUnavailable):
            await anext(rest)
    assert len(azure.requests) == 1


HANDED_OVER = {
    "429": (error(429), True),
    "500": (error(500), True),
    "connection failure": (UpstreamUnavailable("x"), True),
    "timeout": (UpstreamTimeout("x"), True),
    "408": (error(408), False),
    "409": (error(409), False),
}


@pytest.mark.parametrize("err, handed_over", HANDED_OVER.values(), ids=HANDED_OVER.keys())
def test_in_a_pool_an_upstreams_own_faults_are_handed_back_not_retried_in_place(
    err: OpenAIError, handed_over: bool
) -> None:
    policy = RetryPolicy(FAST, handed_over=hand_over_rule(3))
    assert (policy.delay(1, err, remaining_s=60) is None) == handed_over

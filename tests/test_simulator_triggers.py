"""Simulator: trigger phrases in the last user message inject Azure's failures and odd answers on demand."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from serve_app.simulator import (
    CONTENT_FILTER_OUTPUT,
    CONTENT_FILTER_PROMPT,
    REFUSAL,
    create_app,
    sleep_trigger,
    status_trigger,
)
from serve_app.simulator.answers import REFUSAL_TEXT
from serve_app.simulator.errors import ACCESS_DENIED_MESSAGE, PROMPT_FILTERED_MESSAGE, SERVER_ERROR_MESSAGE
from serve_app.simulator.testing import V1_PATH, classic_path, in_process_client
from serve_app.simulator.tokens import tokenize

SERVER_ERROR = {"error": {"code": "InternalServerError", "message": SERVER_ERROR_MESSAGE}}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(create_app()) as client:
        yield client


def asking(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_filtered_prompt_is_a_400_content_filter_error_even_when_streaming(
    client: httpx.AsyncClient, stream: bool
) -> None:
    response = await client.post(classic_path(), json=asking(f"{CONTENT_FILTER_PROMPT} bad words", stream=stream))
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["message"] == PROMPT_FILTERED_MESSAGE
    assert (error["type"], error["param"], error["code"], error["status"]) == (None, "prompt", "content_filter", 400)
    assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert error["innererror"]["content_filter_result"]["hate"] == {"filtered": True, "severity": "high"}
    assert error["innererror"]["content_filter_result"]["jailbreak"] == {"filtered": False, "detected": False}


async def test_filtered_output_stops_halfway_with_finish_reason_content_filter(client: httpx.AsyncClient) -> None:
    text = f"{CONTENT_FILTER_OUTPUT} one two three four"
    [choice] = (await client.post(classic_path(), json=asking(text))).json()["choices"]
    assert choice["finish_reason"] == "content_filter"
    tokens = tokenize(text)
    assert choice["message"]["content"] == "".join(tokens[: len(tokens) // 2])
    assert choice["content_filter_results"]["violence"] == {"filtered": True, "severity": "medium"}


async def test_a_refusal_has_null_content_and_a_refusal_message(client: httpx.AsyncClient) -> None:
    [choice] = (await client.post(classic_path(), json=asking(f"{REFUSAL} do it"))).json()["choices"]
    assert choice["message"]["content"] is None
    assert choice["message"]["refusal"] == REFUSAL_TEXT
    assert choice["finish_reason"] == "stop"


STATUSES = [
    (500, SERVER_ERROR),
    (502, {"error": {"code": "InternalServerError", "message": SERVER_ERROR_MESSAGE}}),
    (503, {"error": {"code": "InternalServerError", "message": SERVER_ERROR_MESSAGE}}),
    (401, {"error": {"code": "401", "message": ACCESS_DENIED_MESSAGE}}),
    (403, {"error": {"code": "403", "message": "Access denied due to Virtual Network/Firewall rules."}}),
    (404, {"error": {"code": "404", "message": "Resource not found"}}),
    (408, {"error": {"code": "Timeout", "message": "The operation was timeout."}}),
    (409, {"error": {"code": "Conflict", "message": "The request could not be completed due to a conflict with the "
                                                    "current state of the resource."}}),
    (400, {"error": {"message": "The request was rejected by the simulator as instructed.",
                     "type": "invalid_request_error", "param": None, "code": None}}),
    (418, {"error": {"code": "418", "message": "I'm a Teapot"}}),
]  # fmt: skip


@pytest.mark.parametrize("status, body", STATUSES, ids=[str(case[0]) for case in STATUSES])
async def test_the_status_trigger_answers_that_status_with_azures_body(
    client: httpx.AsyncClient, status: int, body: dict[str, Any]
) -> None:
    response = await client.post(classic_path(), json=asking(f"{status_trigger(status)} hi"))
    assert response.status_code == status
    assert response.json() == body
    assert "retry-after" not in response.headers


async def test_a_triggered_429_is_azures_rate_limit_error_with_retry_headers(client: httpx.AsyncClient) -> None:
    response = await client.post(classic_path("gpt-4o", "2024-06-01"), json=asking(status_trigger(429)))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.headers["retry-after-ms"] == "1000"
    error = response.json()["error"]
    assert error["code"] == "429"
    assert error["message"].startswith(
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
        "version 2024-06-01 have exceeded call rate limit"
    )
    assert "Please retry after 1 seconds." in error["message"]


async def test_a_counted_status_trigger_fails_only_the_first_k_identical_conversations(
    client: httpx.AsyncClient,
) -> None:
    body = asking(f"{status_trigger(503, 2)} retry me")
    other = asking(f"{status_trigger(503, 2)} another conversation")
    statuses = [(await client.post(classic_path(), json=body)).status_code for _ in range(2)]
    statuses.append((await client.post(classic_path(), json=other)).status_code)
    statuses += [(await client.post(classic_path(), json=body)).status_code for _ in range(2)]
    assert statuses == [503, 503, 503, 200, 200]


async def test_the_sleep_trigger_delays_the_answer(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await client.post(classic_path(), json=asking(f"{sleep_trigger(0.2)} slowly"))
    assert time.monotonic() - started >= 0.2
    assert response.json()["choices"][0]["message"]["content"] == "[sim:sleep=0.2] slowly"


async def test_the_sleep_trigger_delays_a_triggered_error_too(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await client.post(V1_PATH, json=asking(f"{sleep_trigger(0.2)}{status_trigger(500)}", model="gpt-4o"))
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 500


async def test_a_misspelt_trigger_is_a_400_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post(classic_path(), json=asking("[sim:refusl] oops"))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Unknown simulator trigger phrase: [sim:refusl]"


async def test_only_the_last_user_message_triggers(client: httpx.AsyncClient) -> None:
    body = {
        "messages": [
            {"role": "user", "content": status_trigger(500)},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "all good now"},
        ]
    }
    assert (await client.post(classic_path(), json=body)).status_code == 200

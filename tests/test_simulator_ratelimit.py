"""Simulator: Azure's request and token quotas, enforced per deployment over short windows (on a fake clock)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from serve_app.simulator import SimulatorConfig, create_app
from serve_app.simulator.answers import prompt_tokens
from serve_app.simulator.errors import duration
from serve_app.simulator.testing import V1_PATH, classic_path, in_process_client

HI = {"messages": [{"role": "user", "content": "hi"}]}
HI_PROMPT_TOKENS = prompt_tokens(HI)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def simulator(clock: FakeClock, **settings: Any) -> httpx.AsyncClient:
    return in_process_client(create_app(SimulatorConfig(**settings), clock=clock))


async def statuses(
    client: httpx.AsyncClient, count: int, body: dict[str, Any] = HI, path: str = classic_path()
) -> list[int]:
    return [(await client.post(path, json=body)).status_code for _ in range(count)]


async def test_rpm_allows_a_sixth_per_ten_second_window_then_answers_429(clock: FakeClock) -> None:
    async with simulator(clock, rpm=60) as client:
        assert await statuses(client, 11) == [200] * 10 + [429]


async def test_a_window_of_one_second_allows_a_sixtieth(clock: FakeClock) -> None:
    async with simulator(clock, rpm=600, rate_limit_window_s=1) as client:
        assert await statuses(client, 11) == [200] * 10 + [429]


async def test_the_429_says_when_the_window_frees_in_body_and_headers(clock: FakeClock) -> None:
    async with simulator(clock, rpm=6) as client:
        await client.post(classic_path("gpt-4o", "2024-10-21"), json=HI)
        clock.now += 2.5
        response = await client.post(classic_path("gpt-4o", "2024-10-21"), json=HI)
    assert response.status_code == 429
    assert response.headers["retry-after-ms"] == "7500"
    assert response.headers["retry-after"] == "8"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.json() == {
        "error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 "
            "have exceeded call rate limit of your current AIServices S0 pricing tier. Please retry after 8 seconds. "
            "Please contact Azure support service if you would like to further increase the default rate limit.",
        }
    }


async def test_requests_pass_again_once_the_window_has_passed(clock: FakeClock) -> None:
    async with simulator(clock, rpm=6) as client:
        first = await statuses(client, 2)
        clock.now += 9.75
        still_limited = await statuses(client, 1)
        clock.now += 0.25
        again = await statuses(client, 2)
    assert (first, still_limited, again) == ([200, 429], [429], [200, 429])


async def test_tpm_charges_prompt_tokens_plus_the_requested_completion_budget(clock: FakeClock) -> None:
    budget = 100 - HI_PROMPT_TOKENS
    body = {**HI, "max_tokens": budget}
    async with simulator(clock, tpm=1200) as client:  # 200 tokens per 10 s window: exactly two such requests
        results = await statuses(client, 3, body)
        limited = await client.post(classic_path(), json=body)
    assert results == [200, 200, 429]
    assert "exceeded token rate limit" in limited.json()["error"]["message"]
    assert limited.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_tpm_charges_the_default_budget_when_none_is_asked(clock: FakeClock) -> None:
    async with simulator(clock, tpm=600, rate_limit_default_max_tokens=50 - HI_PROMPT_TOKENS) as client:
        assert await statuses(client, 3) == [200, 200, 429]


async def test_n_multiplies_the_charged_completion_budget(clock: FakeClock) -> None:
    body = {**HI, "max_completion_tokens": 50 - HI_PROMPT_TOKENS, "n": 2}
    async with simulator(clock, tpm=600) as client:  # 100 tokens per window
        assert await statuses(client, 2, body) == [200, 429]


async def test_a_request_larger_than_a_window_still_passes_when_the_window_is_empty(clock: FakeClock) -> None:
    async with simulator(clock, tpm=60) as client:
        assert await statuses(client, 2, {**HI, "max_tokens": 500}) == [200, 429]


async def test_success_reports_the_remaining_quota(clock: FakeClock) -> None:
    async with simulator(clock, rpm=60, tpm=6000) as client:
        first = await client.post(classic_path(), json={**HI, "max_tokens": 10})
        second = await client.post(classic_path(), json={**HI, "max_tokens": 10})
    charge = HI_PROMPT_TOKENS + 10
    assert first.headers["x-ratelimit-remaining-requests"] == "9"
    assert first.headers["x-ratelimit-remaining-tokens"] == str(1000 - charge)
    assert second.headers["x-ratelimit-remaining-requests"] == "8"
    assert second.headers["x-ratelimit-remaining-tokens"] == str(1000 - 2 * charge)


async def test_without_limits_there_are_no_quota_headers(clock: FakeClock) -> None:
    async with simulator(clock) as client:
        response = await client.post(classic_path(), json=HI)
    assert not any(name.startswith("x-ratelimit") for name in response.headers)


async def test_each_deployment_has_its_own_quota(clock: FakeClock) -> None:
    async with simulator(clock, rpm=6) as client:
        assert await statuses(client, 2, path=classic_path("gpt-4o")) == [200, 429]
        assert await statuses(client, 2, path=classic_path("gpt-4o-mini")) == [200, 429]


async def test_the_v1_route_names_v1_as_the_api_version(clock: FakeClock) -> None:
    async with simulator(clock, rpm=6) as client:
        responses = [await client.post(V1_PATH, json={**HI, "model": "gpt-4o"}) for _ in range(2)]
    assert "under Azure OpenAI API version v1 have exceeded" in responses[1].json()["error"]["message"]


async def test_rejected_requests_do_not_use_up_the_quota(clock: FakeClock) -> None:
    async with simulator(clock, rpm=12) as client:
        assert await statuses(client, 5) == [200, 200, 429, 429, 429]
        clock.now += 10
        assert await statuses(client, 3) == [200, 200, 429]


async def test_limits_changed_at_runtime_apply_at_once(clock: FakeClock) -> None:
    async with simulator(clock) as client:
        assert await statuses(client, 3) == [200] * 3
        await client.post("/sim/config", json={"rpm": 6})
        assert await statuses(client, 2) == [200, 429]
        await client.post("/sim/config", json={"rpm": None})
        assert await statuses(client, 3) == [200] * 3


async def test_429s_can_say_when_only_in_reset_headers_and_the_message(clock: FakeClock) -> None:
    async with simulator(clock, rpm=6, retry_after_headers=False) as client:
        await client.post(classic_path(), json=HI)
        clock.now += 8.75
        response = await client.post(classic_path(), json=HI)
    assert response.status_code == 429
    assert "retry-after" not in response.headers and "retry-after-ms" not in response.headers
    assert response.headers["x-ratelimit-reset-requests"] == "2s"
    assert response.headers["x-ratelimit-reset-tokens"] == "2s"
    assert "Please retry after 2 seconds." in response.json()["error"]["message"]


@pytest.mark.parametrize("seconds, spelled", [(0.25, "250ms"), (6, "6s"), (90, "1m30s"), (86_400, "1440m0s")])
def test_reset_times_are_spelled_as_azure_spells_them(seconds: float, spelled: str) -> None:
    assert duration(seconds) == spelled

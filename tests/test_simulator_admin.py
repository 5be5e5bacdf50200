"""Simulator: the /sim/ admin endpoints (counters, reset, runtime configuration, queued faults, recorded requests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from serve_app.simulator import SimulatorConfig, create_app, status_trigger
from serve_app.simulator.errors import SERVER_ERROR_MESSAGE
from serve_app.simulator.testing import V1_PATH, classic_path, in_process_client

HI = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(create_app(SimulatorConfig(recorded_requests=3))) as client:
        yield client


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    return (await client.get("/sim/stats")).json()


async def test_stats_start_at_zero(client: httpx.AsyncClient) -> None:
    counters = await stats(client)
    assert counters["by_status"] == {} and counters["by_deployment"] == {}
    assert all(value == 0 for key, value in counters.items() if key not in ("by_status", "by_deployment"))


async def test_stats_count_requests_by_final_status_and_deployment(client: httpx.AsyncClient) -> None:
    await client.post(classic_path("gpt-4o"), json=HI)
    await client.post(V1_PATH, json={**HI, "model": "gpt-5-mini"})
    await client.post(classic_path("gpt-4o"), json={"messages": []})
    await client.post(classic_path("missing"), json=HI)
    await client.post(classic_path("gpt-4o"), json=HI, headers={"api-key": "wrong"})
    await client.post(classic_path("gpt-4o", "1999-01-01"), json=HI)
    counters = await stats(client)
    assert counters["requests_total"] == 6
    assert counters["accepted_total"] == 4
    assert counters["by_status"] == {"200": 2, "400": 1, "401": 1, "404": 2}
    assert counters["by_deployment"] == {"gpt-4o": 2, "gpt-5-mini": 1}
    assert counters["in_flight"] == 0 and counters["peak_in_flight"] == 1


async def test_stats_add_up_tokens_and_streams(client: httpx.AsyncClient) -> None:
    await client.post(classic_path(), json={**HI, "stream": True})
    plain = (await client.post(classic_path(), json=HI)).json()
    counters = await stats(client)
    assert (counters["streams_started"], counters["streams_completed"]) == (1, 1)
    assert counters["prompt_tokens"] == 2 * plain["usage"]["prompt_tokens"]
    assert counters["completion_tokens"] == 2 * plain["usage"]["completion_tokens"]


async def test_peak_in_flight_is_the_most_concurrent_accepted_requests() -> None:
    async with in_process_client(create_app(SimulatorConfig(latency_s=0.1))) as client:
        await asyncio.gather(*(client.post(classic_path(), json=HI) for _ in range(7)))
        await asyncio.gather(*(client.post(classic_path(), json=HI) for _ in range(3)))
        counters = await stats(client)
    assert counters["peak_in_flight"] == 7
    assert counters["in_flight"] == 0


async def test_a_request_cancelled_by_the_server_counts_as_closed_by_client() -> None:
    # Ray Serve cancels the request task when the client disconnects.
    app = create_app(SimulatorConfig(latency_s=5))
    async with in_process_client(app) as client:
        request = asyncio.ensure_future(client.post(classic_path(), json=HI))
        while app.state.simulator.stats.in_flight == 0:
            await asyncio.sleep(0.001)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        counters = await stats(client)
    assert (counters["in_flight"], counters["requests_closed_by_client"]) == (0, 1)
    assert counters["by_status"] == {"499": 1}


async def test_reset_zeroes_counters_and_peak(client: httpx.AsyncClient) -> None:
    await client.post(classic_path(), json=HI)
    reset = (await client.post("/sim/reset")).json()
    assert reset == await stats(client)
    assert reset["requests_total"] == 0 and reset["peak_in_flight"] == 0 and reset["by_status"] == {}


async def test_reset_keeps_counting_requests_still_in_flight() -> None:
    async with in_process_client(create_app(SimulatorConfig(latency_s=0.2))) as client:
        slow = asyncio.ensure_future(client.post(classic_path(), json=HI))
        await asyncio.sleep(0.05)
        during = (await client.post("/sim/reset")).json()
        await slow
        after = await stats(client)
    assert (during["in_flight"], during["peak_in_flight"]) == (1, 1)
    assert after["in_flight"] == 0 and after["by_status"] == {"200": 1}


async def test_config_can_be_read(client: httpx.AsyncClient) -> None:
    config = (await client.get("/sim/config")).json()
    assert config == SimulatorConfig(recorded_requests=3).model_dump(mode="json")
    assert config["deployments"]["gpt-4o"].items() >= {"model": "gpt-4o-2024-11-20", "reasoning": False}.items()


async def test_config_patches_apply_to_the_next_requests(client: httpx.AsyncClient) -> None:
    patch = {"latency_s": 0.01, "region": "westus", "deployments": {"extra": "o4-mini-2025-04-16", "gpt-4o-mini": None}}
    updated = (await client.post("/sim/config", json=patch)).json()
    assert updated["latency_s"] == 0.01
    assert updated["deployments"]["extra"].items() >= {"model": "o4-mini-2025-04-16", "reasoning": True}.items()
    assert "gpt-4o-mini" not in updated["deployments"] and "gpt-4o" in updated["deployments"]
    response = await client.post(classic_path("extra"), json=HI)
    assert response.json()["model"] == "o4-mini-2025-04-16" and response.headers["x-ms-region"] == "westus"
    assert (await client.post(classic_path("gpt-4o-mini"), json=HI)).status_code == 404


@pytest.mark.parametrize(
    "patch",
    [{"latency_s": -1}, {"rpm": 0}, {"no_such_setting": 1}, {"deployments": {"x": {"model": ""}}}, ["latency_s"]],
    ids=["negative latency", "zero rpm", "unknown field", "empty model", "not an object"],
)
async def test_an_invalid_config_patch_is_refused_and_changes_nothing(client: httpx.AsyncClient, patch: Any) -> None:
    before = (await client.get("/sim/config")).json()
    response = await client.post("/sim/config", json=patch)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert (await client.get("/sim/config")).json() == before


async def test_a_queued_fault_answers_the_next_requests_then_stops(client: httpx.AsyncClient) -> None:
    queued = (await client.post("/sim/faults", json={"status": 503, "count": 2})).json()
    assert queued == {"pending": [{"status": 503, "count": 2, "retry_after_s": None, "streams_only": False}]}
    responses = [await client.post(classic_path(), json=HI) for _ in range(3)]
    assert [response.status_code for response in responses] == [503, 503, 200]
    assert responses[0].json() == {"error": {"code": "InternalServerError", "message": SERVER_ERROR_MESSAGE}}
    assert (await stats(client))["faults_injected"] == 2


async def test_queued_faults_apply_in_order_with_their_retry_after(client: httpx.AsyncClient) -> None:
    await client.post("/sim/faults", json=[{"status": 429, "retry_after_s": 2.5}, {"status": 500}])
    throttled = await client.post(classic_path(), json=HI)
    failed = await client.post(classic_path(), json=HI)
    assert (throttled.status_code, failed.status_code) == (429, 500)
    assert (throttled.headers["retry-after"], throttled.headers["retry-after-ms"]) == ("3", "2500")
    assert "Please retry after 3 seconds." in throttled.json()["error"]["message"]


async def test_a_queued_fault_hits_the_next_accepted_request_whatever_its_body(client: httpx.AsyncClient) -> None:
    await client.post("/sim/faults", json={"status": 500})
    unauthorised = await client.post(classic_path(), json=HI, headers={"api-key": "wrong"})
    garbage = await client.post(classic_path(), content=b"not json")
    assert (unauthorised.status_code, garbage.status_code) == (401, 500)


async def test_a_fault_for_streams_only_lets_other_requests_pass_and_fails_the_next_streams() -> None:
    app = create_app()
    async with in_process_client(app) as client:
        await client.post("/sim/faults", json={"status": 503, "count": 2, "streams_only": True})
        plain = await client.post(classic_path(), json=HI)
        streams = [await client.post(classic_path(), json={**HI, "stream": True}) for _ in range(3)]
    assert plain.status_code == 200
    assert [response.status_code for response in streams] == [503, 503, 200]
    assert app.state.simulator.stats.faults_injected == 2


async def test_faults_can_be_listed_and_cleared(client: httpx.AsyncClient) -> None:
    await client.post("/sim/faults", json={"status": 502})
    assert (await client.get("/sim/faults")).json()["pending"][0]["status"] == 502
    assert (await client.delete("/sim/faults")).json() == {"pending": []}
    assert (await client.post(classic_path(), json=HI)).status_code == 200


async def test_reset_clears_queued_faults_and_counted_triggers(client: httpx.AsyncClient) -> None:
    await client.post("/sim/faults", json={"status": 502})
    counted = {"messages": [{"role": "user", "content": status_trigger(500, 1)}]}
    assert (await client.post(classic_path(), json=counted)).status_code == 502
    assert (await client.post(classic_path(), json=counted)).status_code == 500
    assert (await client.post(classic_path(), json=counted)).status_code == 200
    await client.post("/sim/reset")
    assert (await client.post(classic_path(), json=counted)).status_code == 500


@pytest.mark.parametrize(
    "fault",
    [{"status": 200}, {"status": 503, "count": 0}, {"status": 500, "colour": "red"}, {}],
    ids=["success status", "zero count", "unknown field", "no status"],
)
async def test_an_invalid_fault_is_refused(client: httpx.AsyncClient, fault: dict[str, Any]) -> None:
    response = await client.post("/sim/faults", json=fault)
    assert response.status_code == 400
    assert (await client.get("/sim/faults")).json() == {"pending": []}


async def test_recent_request_bodies_are_recorded_up_to_the_configured_number(client: httpx.AsyncClient) -> None:
    for index in range(4):
        await client.post(classic_path(), json={"messages": [{"role": "user", "content": f"message {index}"}]})
    await client.post(V1_PATH, json={**HI, "model": "gpt-5-mini"})
    recorded = (await client.get("/sim/requests")).json()["requests"]
    assert [entry["body"]["messages"][0]["content"] for entry in recorded] == ["message 2", "message 3", "hi"]
    assert recorded[-1] == {"deployment": "gpt-5-mini", "api_version": None, "body": {**HI, "model": "gpt-5-mini"}}
    assert recorded[0]["api_version"] == "2024-10-21"

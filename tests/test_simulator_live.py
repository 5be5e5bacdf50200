"""Simulator on a real socket: pacing, clients that leave, connections cut on purpose, exact in-flight counts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from support.ports import free_port
from support.waiting import once_listening

from serve_app.simulator import (
    DROP_MID_STREAM,
    HANG,
    RESET_MID_BODY,
    BackgroundSimulator,
    SimulatorConfig,
    tokens_trigger,
)
from serve_app.simulator.testing import DEFAULT_API_KEY, classic_path, sse_data


@pytest.fixture(scope="module")
def simulator() -> Iterator[BackgroundSimulator]:
    with BackgroundSimulator() as running:
        yield running


@pytest.fixture
async def client(simulator: BackgroundSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.base_url, headers={"api-key": DEFAULT_API_KEY}) as client:
        defaults = SimulatorConfig().model_dump(mode="json")
        assert (await client.post("/sim/config", json=defaults)).status_code == 200
        await client.post("/sim/reset")
        yield client


def asking(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


async def settled_stats(client: httpx.AsyncClient) -> dict[str, Any]:
    """The counters once every request has ended; the server learns of a departed client a moment later."""
    deadline = time.monotonic() + 5
    while True:
        counters = (await client.get("/sim/stats")).json()
        if counters["in_flight"] == 0 or time.monotonic() > deadline:
            return counters
        await asyncio.sleep(0.01)


async def test_a_client_leaving_during_latency_is_counted_as_closed_by_client(client: httpx.AsyncClient) -> None:
    await client.post("/sim/config", json={"latency_s": 5})
    with pytest.raises(httpx.ReadTimeout):
        await client.post(classic_path(), json=asking("slow"), timeout=0.2)
    counters = await settled_stats(client)
    assert counters["in_flight"] == 0
    assert counters["requests_closed_by_client"] == 1
    assert counters["by_status"] == {"499": 1}


async def test_a_hanging_request_ends_when_the_client_leaves(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.post(classic_path(), json=asking(HANG), timeout=0.2)
    counters = await settled_stats(client)
    assert (counters["in_flight"], counters["requests_closed_by_client"]) == (0, 1)


async def test_a_client_leaving_mid_stream_is_counted_as_a_stream_closed_by_client(client: httpx.AsyncClient) -> None:
    await client.post("/sim/config", json={"inter_token_s": 0.02})
    async with client.stream("POST", classic_path(), json=asking(tokens_trigger(500), stream=True)) as response:
        lines = 0
        async for _ in response.aiter_lines():
            lines += 1
            if lines == 6:
                break
    counters = await settled_stats(client)
    assert counters["in_flight"] == 0
    assert (counters["streams_started"], counters["streams_closed_by_client"]) == (1, 1)
    assert counters["streams_completed"] == 0


async def test_a_client_leaving_before_the_first_token_is_counted_as_a_request_closed(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/sim/config", json={"ttft_s": 5})
    with pytest.raises(httpx.ReadTimeout):
        await client.post(classic_path(), json=asking("hi", stream=True), timeout=0.2)
    counters = await settled_stats(client)
    assert (counters["requests_closed_by_client"], counters["streams_started"]) == (1, 0)


async def test_streams_wait_ttft_before_the_first_bytes_and_inter_token_between_tokens(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/sim/config", json={"ttft_s": 0.2, "inter_token_s": 0.03})
    started = time.monotonic()
    async with client.stream("POST", classic_path(), json=asking(tokens_trigger(10), stream=True)) as response:
        arrivals = [time.monotonic() - started async for _ in response.aiter_bytes()]
    assert arrivals[0] >= 0.2
    # Nine gaps between ten tokens; the event loop may wake a hair early on each.
    assert arrivals[-1] - arrivals[0] >= 0.9 * 9 * 0.03
    assert arrivals[-1] < 2


async def test_latency_delays_non_streaming_answers(client: httpx.AsyncClient) -> None:
    await client.post("/sim/config", json={"latency_s": 0.2})
    started = time.monotonic()
    response = await client.post(classic_path(), json=asking("hi"))
    assert response.status_code == 200 and time.monotonic() - started >= 0.2


async def test_reset_mid_body_cuts_the_connection_after_the_headers(client: httpx.AsyncClient) -> None:
    async with client.stream("POST", classic_path(), json=asking(RESET_MID_BODY)) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()
    counters = await settled_stats(client)
    assert (counters["in_flight"], counters["responses_aborted"]) == (0, 1)


async def test_reset_mid_body_cuts_a_stream_too(client: httpx.AsyncClient) -> None:
    async with client.stream("POST", classic_path(), json=asking(RESET_MID_BODY, stream=True)) as response:
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()
    assert (await settled_stats(client))["streams_aborted"] == 1


async def test_drop_mid_stream_cuts_the_connection_after_some_deltas_without_done(client: httpx.AsyncClient) -> None:
    received = bytearray()
    async with client.stream(
        "POST", classic_path(), json=asking(f"{DROP_MID_STREAM} {tokens_trigger(20)}", stream=True)
    ) as response:
        with pytest.raises(httpx.RemoteProtocolError):
            async for data in response.aiter_bytes():
                received += data
    events = sse_data(received.decode())
    assert any(choice.get("delta", {}).get("content") for event in events for choice in event["choices"])
    assert "[DONE]" not in events
    counters = await settled_stats(client)
    assert (counters["in_flight"], counters["streams_aborted"], counters["streams_completed"]) == (0, 1, 0)


async def test_peak_in_flight_counts_every_concurrent_request_exactly(client: httpx.AsyncClient) -> None:
    await client.post("/sim/config", json={"latency_s": 0.5, "ttft_s": 0.5})
    plain = [client.post(classic_path(), json=asking("hi")) for _ in range(15)]
    streams = [client.post(classic_path(), json=asking("hi", stream=True)) for _ in range(15)]
    responses = await asyncio.gather(*plain, *streams)
    assert {response.status_code for response in responses} == {200}
    counters = await settled_stats(client)
    assert (counters["peak_in_flight"], counters["in_flight"]) == (30, 0)
    assert (counters["streams_started"], counters["streams_completed"]) == (15, 15)


async def test_the_sdk_waits_the_retry_after_it_is_given_and_retries(
    client: httpx.AsyncClient, simulator: BackgroundSimulator
) -> None:
    await client.post("/sim/faults", json={"status": 429, "retry_after_s": 0.05})
    sdk = openai.AsyncOpenAI(base_url=simulator.openai_base_url, api_key=DEFAULT_API_KEY, max_retries=1)
    completion = await sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "again"}])
    await sdk.close()
    assert completion.choices[0].message.content == "again"
    assert (await settled_stats(client))["by_status"] == {"200": 1, "429": 1}


async def test_stopping_a_background_simulator_does_not_wait_for_hanging_requests() -> None:
    running = BackgroundSimulator()
    running.start()
    async with httpx.AsyncClient(base_url=running.base_url, headers={"api-key": DEFAULT_API_KEY}) as client:
        hanging = asyncio.ensure_future(client.post(classic_path(), json=asking(HANG), timeout=30))
        while (await client.get("/sim/stats")).json()["in_flight"] == 0:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await asyncio.to_thread(running.stop)
        assert time.monotonic() - started < 5
        # uvicorn cancels what is left and answers it with a bare 500.
        assert (await hanging).status_code == 500


def test_run_serves_the_simulator_until_stopped() -> None:
    port = free_port()
    code = f"from serve_app.simulator import SimulatorConfig, run; run(SimulatorConfig(region='x'), port={port})"
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        response = once_listening(lambda: httpx.get(f"http://127.0.0.1:{port}/sim/config"), process, timeout_s=20)
        assert response.json()["region"] == "x"
    finally:
        process.terminate()
        process.wait(timeout=10)

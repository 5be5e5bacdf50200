"""Reasoning deployments on the simulator: what they refuse is learned once and left out at its default,
refused by name at any other value; a NeMo Gym request with parallel_tool_calls runs on an o-series model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from serve_app.azure import AzureClient
from serve_app.config import Timeouts
from serve_app.errors import RefusedParameter, UpstreamError
from serve_app.schemas import ResponsesRequest, parse
from serve_app.simulator import BackgroundSimulator, SimulatorConfig
from serve_app.translate import to_chat_request, to_response

LOOKUP = {
    "type": "function",
    "name": "lookup",
    "description": "Look a word up.",
    "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    "strict": True,
}
# What NeMo Gym's simple_agent posts from a shipped dataset: only set fields, a developer message first.
NEMO_GYM = {
    "input": [
        {"role": "developer", "content": "Use the tools."},
        {"role": "user", "content": "What does 'serendipity' mean?"},
    ],
    "tools": [LOOKUP],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "reasoning": {"effort": "medium"},
    "max_output_tokens": 4096,
    "stream": False,
}


@pytest.fixture(scope="module")
def simulator() -> Iterator[BackgroundSimulator]:
    with BackgroundSimulator(SimulatorConfig(api_keys=("sim-key",))) as sim:
        yield sim


@pytest.fixture
async def o3(simulator: BackgroundSimulator) -> AsyncIterator[AzureClient]:
    async with azure(simulator, "o3-mini") as client:
        yield client


@asynccontextmanager
async def azure(simulator: BackgroundSimulator, deployment: str) -> AsyncIterator[AzureClient]:
    """A fresh client (nothing learned yet) for `deployment` on the simulator's v1 route."""
    client = AzureClient(
        base_url=simulator.openai_base_url,
        deployment=deployment,
        query={},
        api_key=SecretStr("sim-key"),
        timeouts=Timeouts(total_s=30),
    )
    try:
        yield client
    finally:
        await client.aclose()


def sent(simulator: BackgroundSimulator) -> list[dict[str, Any]]:
    recorded = httpx.get(f"{simulator.base_url}/sim/requests").json()["requests"]
    return [request["body"] for request in recorded]


async def respond(client: AzureClient, body: dict[str, Any]) -> dict[str, Any]:
    req = parse(ResponsesRequest, body)
    completion = await client.complete(to_chat_request(req))
    return to_response(completion, req, model=client.deployment, response_id="resp_1", created_at=1, completed_at=2)


async def test_a_nemo_gym_request_with_parallel_tool_calls_runs_on_an_o_series_deployment(
    simulator: BackgroundSimulator, o3: AzureClient
) -> None:
    httpx.post(f"{simulator.base_url}/sim/reset")
    first = await respond(o3, NEMO_GYM)
    second = await respond(o3, NEMO_GYM)
    for response in (first, second):
        assert response["status"] == "completed"
        assert [item["type"] for item in response["output"]] == ["function_call"]
        assert json.loads(response["output"][0]["arguments"]) == {"word": "What does 'serendipity' mean?"}
        assert response["parallel_tool_calls"] is True  # the request's setting, echoed
    bodies = sent(simulator)
    # Azure's refusal taught the client once; every later call leaves the default out.
    assert ["parallel_tool_calls" in body for body in bodies] == [True, False, False]
    assert bodies[1]["reasoning_effort"] == "medium" and bodies[1]["model"] == "o3-mini"


async def test_a_refused_parameter_at_another_value_is_refused_by_name(o3: AzureClient) -> None:
    await respond(o3, {"input": "hi", "temperature": 1})  # learns temperature, at its default
    with pytest.raises(RefusedParameter) as info:
        await respond(o3, {"input": "hi", "temperature": 0.2})
    assert (info.value.status, info.value.param) == (400, "temperature")
    assert "o3-mini" in info.value.message and "0.2" in info.value.message


async def test_a_reasoning_effort_on_a_chat_deployment_is_refused_by_name(simulator: BackgroundSimulator) -> None:
    async with azure(simulator, "gpt-4o") as client:
        with pytest.raises(RefusedParameter) as info:
            await respond(client, {"input": "hi", "reasoning": {"effort": "high"}})
        assert (await respond(client, {"input": "hi"}))["status"] == "completed"
    assert info.value.param == "reasoning_effort"
    assert info.value.named("reasoning.effort").message.startswith("'reasoning.effort' cannot be honoured")


async def test_gpt_5_takes_temperature_1_and_refuses_others_with_azures_own_400(
    simulator: BackgroundSimulator,
) -> None:
    async with azure(simulator, "gpt-5-mini") as client:
        assert (await respond(client, {"input": "hi", "temperature": 1}))["status"] == "completed"
        with pytest.raises(UpstreamError) as info:
            await respond(client, {"input": "hi", "temperature": 0.5})
    assert (info.value.code, info.value.param) == ("unsupported_value", "temperature")
    assert client.parameters.learned == frozenset()  # not a refused parameter: a refused value


async def test_function_tools_with_a_reasoning_effort_on_gpt_5_4_are_a_400_naming_the_effort(
    simulator: BackgroundSimulator,
) -> None:
    without_effort = {key: value for key, value in NEMO_GYM.items() if key != "reasoning"}
    async with azure(simulator, "gpt-5.4") as client:
        with pytest.raises(UpstreamError) as info:
            await respond(client, NEMO_GYM)
        assert (await respond(client, without_effort))["status"] == "completed"
    assert (info.value.status, info.value.param) == (400, "reasoning_effort")
    assert info.value.message.endswith("leave the reasoning effort out, or set it to 'none', to call tools.")

"""The OpenAI Agents SDK against the app on the simulator: run and streamed, tools, handoffs, structured output.

The SDK talks Responses through openai-python, which builds its models without validating them; every
answer the app gave is recorded under the SDK and checked against openai-python's types."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.shared import Reasoning
from pydantic import BaseModel
from support.serve import Serve, sim_app
from support.sim_admin import SimAdmin
from support.wire_record import REASONING_UPSTREAM, Recorder, validate_exchanges

from serve_app.simulator import BackgroundSimulator

agents = pytest.importorskip("agents", reason="openai-agents is not installed (make test-clients installs it)")

pytestmark = [pytest.mark.serve, pytest.mark.clients]

APP = "agents_model"


@agents.function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"18 C and sunny in {city}"


class Forecast(BaseModel):
    city: str
    summary: str


@pytest.fixture(scope="module")
def apps(serve_instance: Serve, simulator: BackgroundSimulator) -> Iterator[Serve]:
    # Traces would otherwise be exported to OpenAI.
    agents.set_tracing_disabled(True)
    serve_instance.deploy(sim_app(APP, simulator, **REASONING_UPSTREAM))
    yield serve_instance


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def agent(apps: Serve, recorder: Recorder, **options: Any) -> Any:
    client = openai.AsyncOpenAI(
        base_url=apps.base_url(APP), api_key="not-checked", max_retries=0, http_client=recorder.async_client()
    )
    options.setdefault("name", "assistant")
    options.setdefault("instructions", "Answer with the tools you have.")
    return agents.Agent(model=agents.OpenAIResponsesModel(model="gpt-5.5", openai_client=client), **options)


def tool_outputs(upstream: list[dict[str, Any]]) -> list[str]:
    return [str(m["content"]) for body in upstream for m in body["messages"] if m["role"] == "tool"]


async def test_run_calls_a_function_tool_and_answers_with_its_result(
    apps: Serve, recorder: Recorder, sim_admin: SimAdmin
) -> None:
    result = await agents.Runner.run(agent(apps, recorder, tools=[get_weather]), "Paris")
    assert "18 C and sunny in Paris" in result.final_output
    assert tool_outputs([r["body"] for r in sim_admin.requests()]) == ["18 C and sunny in Paris"]
    responses = validate_exchanges(recorder)
    assert [item.type for r in responses for item in r.output] == ["function_call", "message"]
    assert recorder.refusals() == []


async def test_run_streamed_calls_the_tool_and_streams_events_openai_python_accepts(
    apps: Serve, recorder: Recorder
) -> None:
    result = agents.Runner.run_streamed(agent(apps, recorder, tools=[get_weather]), "Lyon")
    kinds = [event.type async for event in result.stream_events()]
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert "18 C and sunny in Lyon" in result.final_output
    streamed = recorder.responses()
    assert len(streamed) == 2 and all(e.streamed for e in streamed)
    assert all(e.request["stream"] is True for e in streamed)
    validate_exchanges(recorder)


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
async def test_structured_output_after_a_tool_call_parses_as_the_output_type(
    apps: Serve, recorder: Recorder, streamed: bool
) -> None:
    assistant = agent(apps, recorder, tools=[get_weather], output_type=Forecast)
    if streamed:
        result: Any = agents.Runner.run_streamed(assistant, "Nice")
        async for _ in result.stream_events():
            pass
    else:
        result = await agents.Runner.run(assistant, "Nice")
    assert isinstance(result.final_output, Forecast)
    assert "18 C and sunny in Nice" in result.final_output.summary
    text_format = recorder.responses()[-1].request["text"]["format"]
    assert text_format["type"] == "json_schema" and text_format["strict"] is True
    validate_exchanges(recorder)


async def test_a_handoff_moves_the_conversation_to_the_other_agent(apps: Serve, recorder: Recorder) -> None:
    specialist = agent(apps, recorder, name="weather_specialist", instructions="You answer weather questions.")
    triage = agent(apps, recorder, name="triage", instructions="Hand weather questions over.", handoffs=[specialist])
    result = await agents.Runner.run(triage, "Weather in Rome?")
    assert result.last_agent.name == "weather_specialist"
    assert "transfer_to_weather_specialist" in recorder.responses()[0].request["tools"][0]["name"]
    assert recorder.responses()[-1].request["instructions"] == "You answer weather questions."
    validate_exchanges(recorder)


@pytest.mark.parametrize(
    "settings",
    [
        agents.ModelSettings(reasoning=Reasoning(summary="auto")),
        agents.ModelSettings(reasoning=Reasoning(effort="low", summary="detailed")),
        agents.ModelSettings(prompt_cache_retention="in_memory"),
        # Turns are dropped only when Azure finds the context too long, which this short one is not.
        agents.ModelSettings(truncation="auto"),
    ],
    ids=["reasoning.summary", "reasoning.effort+summary", "prompt_cache_retention", "truncation=auto"],
)
async def test_model_settings_its_users_set_are_served(apps: Serve, recorder: Recorder, settings: Any) -> None:
    result = await agents.Runner.run(agent(apps, recorder, model_settings=settings), "Hello")
    assert result.final_output == "Hello"
    assert recorder.refusals() == []
    (response,) = validate_exchanges(recorder)
    assert response.truncation == (settings.truncation or "disabled")
    if settings.reasoning is not None:
        assert response.reasoning is not None and response.reasoning.summary == settings.reasoning.summary
        # Azure Chat Completions produces no summaries: none are returned, as OpenAI allows.
        assert all(item.type != "reasoning" or not item.summary for item in response.output)


@pytest.mark.parametrize(
    ("settings", "param"),
    [
        # Azure keeps prompt caches in memory only.
        (agents.ModelSettings(prompt_cache_retention="24h"), "prompt_cache_retention"),
    ],
    ids=["prompt_cache_retention=24h"],
)
async def test_model_settings_azure_cannot_honour_are_a_400_naming_them(
    apps: Serve, recorder: Recorder, settings: Any, param: str
) -> None:
    with pytest.raises(openai.BadRequestError):
        await agents.Runner.run(agent(apps, recorder, model_settings=settings), "Hello")
    (refusal,) = recorder.refusals()
    assert refusal["status"] == 400 and refusal["param"] == param and refusal["code"] == "unsupported_parameter"


async def test_auto_previous_response_id_is_refused_naming_previous_response_id(
    apps: Serve, recorder: Recorder
) -> None:
    # The second model call of the run refers to the first response, which this server does not store.
    with pytest.raises(openai.BadRequestError):
        await agents.Runner.run(agent(apps, recorder, tools=[get_weather]), "Oslo", auto_previous_response_id=True)
    refusals = recorder.refusals()
    assert len(refusals) == 1 and refusals[0]["param"] == "previous_response_id", refusals

"""LangChain's `ChatOpenAI(use_responses_api=True)` against the app on the simulator: invoke, a bound tool
(called and its result sent back), structured output, streaming, and the reasoning option its users set.
Every answer is recorded under the client and checked against openai-python's types."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from support.serve import Serve, sim_app
from support.wire_record import REASONING_UPSTREAM, Recorder, validate_exchanges

from serve_app.simulator import BackgroundSimulator

langchain_openai = pytest.importorskip(
    "langchain_openai", reason="langchain-openai is not installed (make test-clients installs it)"
)
from langchain_core.messages import HumanMessage, ToolMessage  # noqa: E402 (needs the skip above first)
from langchain_core.tools import tool  # noqa: E402

pytestmark = [pytest.mark.serve, pytest.mark.clients]

APP = "langchain_model"


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"18 C and sunny in {city}"


class Forecast(BaseModel):
    city: str
    summary: str


@pytest.fixture(scope="module")
def apps(serve_instance: Serve, simulator: BackgroundSimulator) -> Serve:
    serve_instance.deploy(sim_app(APP, simulator, **REASONING_UPSTREAM))
    return serve_instance


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def chat(apps: Serve, recorder: Recorder, **options: Any) -> Any:
    return langchain_openai.ChatOpenAI(
        model="gpt-5.5",
        base_url=apps.base_url(APP),
        api_key="not-checked",
        use_responses_api=True,
        max_retries=0,
        http_client=recorder.sync_client(),
        http_async_client=recorder.async_client(),
        **options,
    )


def test_invoke_answers_through_the_responses_api(apps: Serve, recorder: Recorder) -> None:
    answer = chat(apps, recorder).invoke("Hello, LangChain.")
    assert answer.text == "Hello, LangChain."
    assert answer.usage_metadata["input_tokens"] > 0
    (exchange,) = recorder.responses()
    assert exchange.path.endswith("/v1/responses")
    validate_exchanges(recorder)


def test_a_bound_tool_is_called_and_its_result_answered(apps: Serve, recorder: Recorder) -> None:
    model = chat(apps, recorder).bind_tools([get_weather])
    question = HumanMessage("Paris")
    call = model.invoke([question])
    assert [c["name"] for c in call.tool_calls] == ["get_weather"] and call.tool_calls[0]["args"]["city"] == "Paris"
    result = get_weather.invoke(call.tool_calls[0]["args"])
    answer = model.invoke([question, call, ToolMessage(result, tool_call_id=call.tool_calls[0]["id"])])
    assert "18 C and sunny in Paris" in answer.text
    assert recorder.refusals() == []
    validate_exchanges(recorder)


def test_structured_output_parses_as_the_schema(apps: Serve, recorder: Recorder) -> None:
    forecast = chat(apps, recorder).with_structured_output(Forecast, method="json_schema").invoke("Nice")
    assert forecast == Forecast(city="Nice", summary="Nice")
    validate_exchanges(recorder)


def test_streaming_yields_the_text_in_chunks_and_a_stream_openai_python_accepts(
    apps: Serve, recorder: Recorder
) -> None:
    chunks = list(chat(apps, recorder).stream("one two three four"))
    assert len(chunks) > 1
    assert "".join(chunk.text for chunk in chunks) == "one two three four"
    (exchange,) = recorder.responses()
    assert exchange.streamed
    validate_exchanges(recorder)


async def test_async_streaming_with_a_bound_tool_streams_the_call(apps: Serve, recorder: Recorder) -> None:
    model = chat(apps, recorder, streaming=True).bind_tools([get_weather])
    chunks = [chunk async for chunk in model.astream("Lyon")]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert [c["name"] for c in merged.tool_calls] == ["get_weather"] and merged.tool_calls[0]["args"]["city"] == "Lyon"
    validate_exchanges(recorder)


@pytest.mark.parametrize("reasoning", [{"summary": "auto"}, {"effort": "low", "summary": "detailed"}])
def test_the_reasoning_option_its_users_set_is_served(
    apps: Serve, recorder: Recorder, reasoning: dict[str, str]
) -> None:
    answer = chat(apps, recorder, reasoning=reasoning).invoke("Hello")
    assert answer.text == "Hello"
    assert recorder.refusals() == []
    (response,) = validate_exchanges(recorder)
    assert response.reasoning is not None and response.reasoning.summary == reasoning["summary"]

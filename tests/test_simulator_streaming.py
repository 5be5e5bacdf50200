"""Simulator: streamed answers as Azure frames them, and the openai SDK accumulating them into the plain answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from serve_app.simulator import (
    CONTENT_FILTER_OUTPUT,
    ERROR_MID_STREAM,
    PARALLEL_TOOLS,
    REFUSAL,
    SimulatorConfig,
    create_app,
    tokens_trigger,
)
from serve_app.simulator.answers import REFUSAL_TEXT
from serve_app.simulator.payloads import ANNOTATION_INTERVAL
from serve_app.simulator.testing import classic_path, in_process_client, sse_data
from serve_app.simulator.tokens import tokenize

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture
def app() -> Any:
    return create_app()


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(app) as client:
        yield client


def asking(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "stream": True, **extra}


async def stream(client: httpx.AsyncClient, body: dict[str, Any], deployment: str = "gpt-4o") -> list[Any]:
    response = await client.post(classic_path(deployment, "2025-04-01-preview"), json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    return sse_data(response.text)


def chunks_of(events: list[Any]) -> list[dict[str, Any]]:
    return [event for event in events if isinstance(event, dict) and event.get("object") == "chat.completion.chunk"]


def deltas(events: list[Any], field: str = "content") -> list[str]:
    return [
        choice["delta"][field]
        for chunk in chunks_of(events)
        for choice in chunk["choices"]
        if choice["delta"].get(field) and "role" not in choice["delta"]
    ]


async def test_a_stream_opens_with_prompt_filter_results_and_a_role_chunk(client: httpx.AsyncClient) -> None:
    events = await stream(client, asking("Hello, world!"))
    opening, role = events[0], events[1]
    assert opening["choices"] == [] and opening["prompt_filter_results"][0]["prompt_index"] == 0
    assert {key: opening[key] for key in ("created", "id", "model", "object")} == {
        "created": 0, "id": "", "model": "", "object": ""
    }  # fmt: skip
    [choice] = role["choices"]
    assert choice["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert choice["finish_reason"] is None


async def test_the_text_arrives_token_by_token_then_a_finish_chunk_and_done(client: httpx.AsyncClient) -> None:
    events = await stream(client, asking("Hello, world!"))
    assert deltas(events) == tokenize("Hello, world!")
    finish = chunks_of(events)[-1]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    assert events[-1] == "[DONE]"


async def test_every_chunk_shares_id_created_model_and_fingerprint(client: httpx.AsyncClient) -> None:
    chunks = chunks_of(await stream(client, asking("one two three")))
    identities = {(c["id"], c["created"], c["model"], c["system_fingerprint"]) for c in chunks}
    [(chunk_id, _, model, fingerprint)] = identities
    assert chunk_id.startswith("chatcmpl-") and model == "gpt-4o-2024-11-20" and fingerprint.startswith("fp_")


async def test_content_chunks_carry_content_filter_results(client: httpx.AsyncClient) -> None:
    chunks = chunks_of(await stream(client, asking("one two")))
    content_choices = [c["choices"][0] for c in chunks if c["choices"][0]["delta"].get("content")]
    assert all(choice["content_filter_results"]["hate"]["severity"] == "safe" for choice in content_choices)
    assert all(choice["logprobs"] is None for choice in content_choices)


async def test_annotation_frames_have_choices_without_delta(client: httpx.AsyncClient) -> None:
    events = await stream(client, asking(tokens_trigger(2 * ANNOTATION_INTERVAL + 3)))
    annotations = [e for e in events if isinstance(e, dict) and e.get("object") == "" and e["choices"]]
    assert len(annotations) == 2
    for annotation in annotations:
        [choice] = annotation["choices"]
        assert "delta" not in choice
        assert choice["content_filter_results"]["violence"] == {"filtered": False, "severity": "safe"}
    first, second = (annotation["choices"][0]["content_filter_offsets"] for annotation in annotations)
    assert first["start_offset"] == 0 and second["start_offset"] == first["end_offset"] < second["end_offset"]


async def test_without_include_usage_there_is_no_usage_anywhere(client: httpx.AsyncClient) -> None:
    events = await stream(client, asking("hi"))
    assert all("usage" not in chunk for chunk in chunks_of(events))


async def test_with_include_usage_a_last_chunk_without_choices_carries_the_usage(client: httpx.AsyncClient) -> None:
    body = asking("count me", stream_options={"include_usage": True})
    events = await stream(client, body)
    usage_chunk = chunks_of(events)[-1]
    assert usage_chunk["choices"] == [] and events[-1] == "[DONE]"
    assert all(chunk["usage"] is None for chunk in chunks_of(events)[:-1])
    plain = (await client.post(classic_path(), json={**body, "stream": False, "stream_options": None})).json()
    assert usage_chunk["usage"] == plain["usage"]


async def test_tool_calls_stream_id_and_name_once_then_argument_fragments(client: httpx.AsyncClient) -> None:
    events = await stream(client, asking("weather in Oslo", tools=[WEATHER]))
    role = chunks_of(events)[0]["choices"][0]["delta"]
    assert role == {"role": "assistant", "content": None, "refusal": None}
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0] for c in chunks_of(events) if "tool_calls" in c["choices"][0]["delta"]
    ]
    opening, fragments = calls[0], calls[1:]
    assert opening["index"] == 0 and opening["id"].startswith("call_") and opening["type"] == "function"
    assert opening["function"] == {"name": "get_weather", "arguments": ""}
    assert len(fragments) > 1
    assert all(fragment.keys() == {"index", "function"} and fragment["function"].keys() == {"arguments"}
               for fragment in fragments)  # fmt: skip
    assert json.loads("".join(f["function"]["arguments"] for f in fragments)) == {"city": "weather in Oslo"}
    assert chunks_of(events)[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_parallel_tool_calls_stream_one_after_another_by_index(client: httpx.AsyncClient) -> None:
    events = await stream(client, asking(f"{PARALLEL_TOOLS} both", tools=[WEATHER, TIME]))
    openings = [
        call
        for chunk in chunks_of(events)
        for call in chunk["choices"][0]["delta"].get("tool_calls", [])
        if "id" in call
    ]
    assert [(call["index"], call["function"]["name"]) for call in openings] == [(0, "get_weather"), (1, "get_time")]


async def test_a_refusal_streams_as_refusal_deltas(client: httpx.AsyncClient) -> None:
    events = await stream(client, asking(f"{REFUSAL} no"))
    assert chunks_of(events)[0]["choices"][0]["delta"] == {"role": "assistant", "content": None, "refusal": ""}
    assert "".join(deltas(events, "refusal")) == REFUSAL_TEXT
    assert deltas(events, "content") == []


async def test_filtered_output_ends_with_a_content_filter_chunk_then_done_and_no_usage(
    client: httpx.AsyncClient,
) -> None:
    events = await stream(client, asking(f"{CONTENT_FILTER_OUTPUT} a b c d", stream_options={"include_usage": True}))
    last_chunk = chunks_of(events)[-1]
    assert last_chunk["choices"][0]["finish_reason"] == "content_filter"
    assert last_chunk["choices"][0]["content_filter_results"]["violence"]["filtered"] is True
    assert events[-1] == "[DONE]"
    assert all(chunk["choices"] for chunk in chunks_of(events))


async def test_logprobs_stream_with_their_tokens(client: httpx.AsyncClient) -> None:
    events = await stream(client, asking("alpha beta", logprobs=True, top_logprobs=2))
    entries = [
        choice["logprobs"]["content"][0]
        for chunk in chunks_of(events)
        for choice in chunk["choices"]
        if choice["delta"].get("content")
    ]
    assert [entry["token"] for entry in entries] == ["alpha", " beta"]
    assert all(len(entry["top_logprobs"]) == 2 for entry in entries)


async def test_n_choices_stream_each_with_its_own_index(client: httpx.AsyncClient) -> None:
    events = await stream(client, asking("hey you", n=2))
    finishes = [c["choices"][0]["index"] for c in chunks_of(events) if c["choices"][0]["finish_reason"]]
    assert finishes == [0, 1]
    assert deltas(events) == ["hey", " you", "hey", " you"]


async def test_an_error_mid_stream_sends_some_deltas_then_an_error_event_and_ends(client: httpx.AsyncClient) -> None:
    events = await stream(client, asking(f"{ERROR_MID_STREAM} {tokens_trigger(10)}"))
    sent = deltas(events)
    assert 0 < len(sent) < 10
    assert events[-1]["error"]["code"] == "server_error"
    assert "[DONE]" not in events


async def test_the_sdk_raises_on_an_error_mid_stream(app: Any) -> None:
    sdk = openai.AsyncOpenAI(
        base_url="http://simulator/openai/v1", api_key="sim-key", http_client=in_process_client(app), max_retries=0
    )
    chunks = await sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"{ERROR_MID_STREAM} a b c d"}], stream=True
    )
    with pytest.raises(openai.APIError, match="The server had an error"):
        async for _ in chunks:
            pass


SDK_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("text", "gpt-4o", {"messages": [{"role": "user", "content": "Hello, streaming world!"}]}),
    ("long text", "gpt-4o", {"messages": [{"role": "user", "content": tokens_trigger(50)}]}),
    ("tool call", "gpt-4o", {"messages": [{"role": "user", "content": "weather in Oslo"}], "tools": [WEATHER]}),
    ("parallel tool calls", "gpt-4o",
     {"messages": [{"role": "user", "content": f"{PARALLEL_TOOLS} go"}], "tools": [WEATHER, TIME]}),
    ("forced tool", "gpt-4o", {"messages": [{"role": "user", "content": "time?"}], "tools": [WEATHER, TIME],
                               "tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
    ("refusal", "gpt-4o", {"messages": [{"role": "user", "content": f"{REFUSAL} no"}]}),
    ("truncated", "gpt-4o", {"messages": [{"role": "user", "content": "a b c d e f"}], "max_tokens": 3}),
    ("json schema", "gpt-4o", {"messages": [{"role": "user", "content": "x"}], "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "r", "schema": {"type": "object", "properties": {"v": {"type": "string"}}}}}}),
    ("reasoning", "gpt-5-mini", {"messages": [{"role": "user", "content": "think"}], "max_completion_tokens": 40}),
    ("two choices", "gpt-4o", {"messages": [{"role": "user", "content": "twice"}], "n": 2}),
]  # fmt: skip


def sdk_clients(app: Any) -> dict[str, openai.AsyncOpenAI]:
    return {
        "v1": openai.AsyncOpenAI(
            base_url="http://simulator/openai/v1", api_key="sim-key", http_client=in_process_client(app)
        ),
        "classic": openai.AsyncAzureOpenAI(
            azure_endpoint="http://simulator",
            api_key="sim-key",
            api_version="2025-04-01-preview",
            http_client=in_process_client(app),
        ),
    }


def essentials(completion: Any) -> list[Any]:
    return [
        (
            choice.index,
            choice.finish_reason,
            choice.message.content,
            choice.message.refusal,
            [(call.id, call.function.name, call.function.arguments) for call in choice.message.tool_calls or []],
        )
        for choice in completion.choices
    ] + [completion.usage.model_dump(exclude_none=True), completion.model]


@pytest.mark.parametrize("route", ["v1", "classic"])
@pytest.mark.parametrize("deployment, body", [case[1:] for case in SDK_CASES], ids=[case[0] for case in SDK_CASES])
async def test_the_sdk_accumulates_a_stream_into_the_non_streaming_answer(
    app: Any, route: str, deployment: str, body: dict[str, Any]
) -> None:
    sdk = sdk_clients(app)[route]
    plain = await sdk.chat.completions.create(model=deployment, **body)
    chunks = await sdk.chat.completions.create(
        model=deployment, stream=True, stream_options={"include_usage": True}, **body
    )
    accumulated = ChatCompletionStreamState()
    async for chunk in chunks:
        # Azure's annotation frames are not chunks; the SDK's own stream helper skips them the same way.
        if chunk.object == "chat.completion.chunk":
            accumulated.handle_chunk(chunk)
    assert essentials(accumulated.current_completion_snapshot) == essentials(plain)


# --- the asynchronous content filter ---------------------------------------------------------------


@pytest.fixture
async def async_filtered() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(SimulatorConfig().patched({"deployments": {"lagging": {"model": "gpt-4o", "async_filter": True}}}))
    async with in_process_client(app) as client:
        yield client


def annotations(events: list[Any]) -> list[dict[str, Any]]:
    return [event for event in events if isinstance(event, dict) and event.get("id") == "" and event["choices"]]


async def test_under_the_async_filter_tokens_are_unannotated_and_annotations_trail_past_the_stop(
    async_filtered: httpx.AsyncClient,
) -> None:
    text = tokens_trigger(2 * ANNOTATION_INTERVAL + 3)
    events = await stream(async_filtered, asking(text, stream_options={"include_usage": True}), "lagging")
    assert "prompt_annotations" in events[0] and "prompt_filter_results" not in events[0]
    content = [chunk for chunk in chunks_of(events) if chunk["choices"] and chunk["choices"][0]["delta"].get("content")]
    assert content and all("content_filter_results" not in chunk["choices"][0] for chunk in content)
    stop = next(
        i for i, chunk in enumerate(chunks_of(events)) if chunk["choices"] and chunk["choices"][0]["finish_reason"]
    )
    stop = events.index(chunks_of(events)[stop])
    trailing = [event for event in events[stop + 1 :] if event in annotations(events)]
    assert len(annotations(events)) == 3 and len(trailing) == 2
    assert all("delta" not in event["choices"][0] for event in annotations(events))
    ends = [event["choices"][0]["content_filter_offsets"]["end_offset"] for event in annotations(events)]
    assert ends == sorted(ends) and ends[-1] == len("".join(deltas(events)))
    assert events[-1] == "[DONE]" and chunks_of(events)[-1]["usage"]


async def test_under_the_async_filter_a_block_is_a_no_delta_content_filter_choice_then_done(
    async_filtered: httpx.AsyncClient,
) -> None:
    events = await stream(
        async_filtered, asking(f"{CONTENT_FILTER_OUTPUT} a b c d", stream_options={"include_usage": True}), "lagging"
    )
    block = events[-2]
    assert block["id"] == "" and "delta" not in block["choices"][0]
    assert block["choices"][0]["finish_reason"] == "content_filter"
    assert block["choices"][0]["content_filter_results"]["violence"]["filtered"] is True
    assert events[-1] == "[DONE]"
    assert not any(c["choices"] and c["choices"][0].get("finish_reason") for c in chunks_of(events))
    assert not any(chunk.get("usage") for chunk in chunks_of(events))


async def test_the_answer_reports_the_service_tier_used(client: httpx.AsyncClient) -> None:
    tiers = {}
    for asked in ("auto", "default", "priority", "flex", None):
        body = {"messages": [{"role": "user", "content": "hi"}], "service_tier": asked}
        tiers[asked] = (await client.post(classic_path("gpt-4o", "2025-04-01-preview"), json=body)).json()[
            "service_tier"
        ]
    assert tiers == {"auto": "default", "default": "default", "priority": "priority", "flex": "flex", None: "default"}
    streamed = await stream(client, asking("hi", service_tier="priority"))
    assert {chunk["service_tier"] for chunk in chunks_of(streamed)} == {"priority"}

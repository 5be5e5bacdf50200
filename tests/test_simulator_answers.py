"""Simulator: what the assistant answers, deterministically, and how usage and logprobs report it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import pytest

from serve_app.simulator import PARALLEL_TOOLS, create_app, tokens_trigger
from serve_app.simulator.answers import IMAGE_TOKENS, REASONING_TOKENS
from serve_app.simulator.testing import classic_path, in_process_client
from serve_app.simulator.tokens import count_tokens, tokenize

MODERN = "2025-04-01-preview"
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "hourly": {"type": "boolean"},
            },
            "required": ["city", "days", "unit"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
NEWS = {"type": "function", "function": {"name": "get_news"}}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(create_app()) as client:
        yield client


async def complete(
    client: httpx.AsyncClient, body: dict[str, Any], deployment: str = "gpt-4o", api_version: str = MODERN
) -> dict[str, Any]:
    response = await client.post(classic_path(deployment, api_version), json=body)
    assert response.status_code == 200, response.json()
    return response.json()


def user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


async def test_the_answer_is_the_last_user_message_verbatim(client: httpx.AsyncClient) -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "  second question,\nwith  odd   spacing!  "},
        ]
    }
    message = (await complete(client, body))["choices"][0]["message"]
    assert message["content"] == "  second question,\nwith  odd   spacing!  "


async def test_multimodal_content_is_answered_with_its_text_parts_joined(client: httpx.AsyncClient) -> None:
    content = [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "this picture"},
    ]
    answer = await complete(client, {"messages": [{"role": "user", "content": content}]})
    assert answer["choices"][0]["message"]["content"] == "Describe\nthis picture"


async def test_usage_counts_prompt_and_answer_tokens(client: httpx.AsyncClient) -> None:
    usage = (await complete(client, user("Count these five tokens")))["usage"]
    assert usage["completion_tokens"] == count_tokens("Count these five tokens") == 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert usage["completion_tokens_details"] == {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    }


async def test_prompt_tokens_grow_with_text_and_images(client: httpx.AsyncClient) -> None:
    short = (await complete(client, user("one")))["usage"]["prompt_tokens"]
    longer = (await complete(client, user("one two three")))["usage"]["prompt_tokens"]
    image = {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}
    with_image = await complete(
        client, {"messages": [{"role": "user", "content": [{"type": "text", "text": "one"}, image]}]}
    )
    assert longer - short == 2
    assert with_image["usage"]["prompt_tokens"] - short == IMAGE_TOKENS


@pytest.mark.parametrize("tool_choice", [None, "auto", "required"])
async def test_with_tools_the_first_tool_is_called_and_finish_reason_is_tool_calls(
    client: httpx.AsyncClient, tool_choice: str | None
) -> None:
    body = {**user("weather in Paris"), "tools": [WEATHER, TIME], "tool_choice": tool_choice}
    [choice] = (await complete(client, body))["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"


async def test_tool_arguments_satisfy_the_schema_and_echo_the_user_in_strings(client: httpx.AsyncClient) -> None:
    [choice] = (await complete(client, {**user("weather in Paris"), "tools": [WEATHER]}))["choices"]
    arguments = json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    assert arguments == {"city": "weather in Paris", "days": 1, "unit": "celsius"}


async def test_a_function_without_parameters_is_called_with_an_empty_object(client: httpx.AsyncClient) -> None:
    [choice] = (await complete(client, {**user("news"), "tools": [NEWS]}))["choices"]
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


async def test_a_tool_forced_by_name_is_called_with_finish_reason_stop(client: httpx.AsyncClient) -> None:
    forced = {"type": "function", "function": {"name": "get_time"}}
    body = {**user("what time is it"), "tools": [WEATHER, TIME], "tool_choice": forced}
    [choice] = (await complete(client, body))["choices"]
    assert choice["finish_reason"] == "stop"
    assert [call["function"]["name"] for call in choice["message"]["tool_calls"]] == ["get_time"]


async def test_tool_choice_none_answers_with_text(client: httpx.AsyncClient) -> None:
    [choice] = (await complete(client, {**user("just talk"), "tools": [WEATHER], "tool_choice": "none"}))["choices"]
    assert choice["message"] == {"role": "assistant", "content": "just talk", "refusal": None, "annotations": []}
    assert choice["finish_reason"] == "stop"


async def test_the_parallel_trigger_calls_every_tool_in_order(client: httpx.AsyncClient) -> None:
    body = {**user(f"{PARALLEL_TOOLS} everything"), "tools": [WEATHER, TIME, NEWS]}
    [choice] = (await complete(client, body))["choices"]
    names = [call["function"]["name"] for call in choice["message"]["tool_calls"]]
    assert names == ["get_weather", "get_time", "get_news"]
    assert len({call["id"] for call in choice["message"]["tool_calls"]}) == 3
    assert choice["finish_reason"] == "tool_calls"


async def test_the_parallel_trigger_calls_one_tool_when_parallel_calls_are_off(client: httpx.AsyncClient) -> None:
    body = {**user(f"{PARALLEL_TOOLS} everything"), "tools": [WEATHER, TIME], "parallel_tool_calls": False}
    [choice] = (await complete(client, body))["choices"]
    assert [call["function"]["name"] for call in choice["message"]["tool_calls"]] == ["get_weather"]


async def test_tool_call_ids_are_the_same_for_the_same_conversation(client: httpx.AsyncClient) -> None:
    body = {**user("weather in Paris"), "tools": [WEATHER]}
    first, second = [(await complete(client, body))["choices"][0]["message"]["tool_calls"] for _ in range(2)]
    other = (await complete(client, {**user("weather in Rome"), "tools": [WEATHER]}))["choices"][0]["message"]
    assert first == second
    assert other["tool_calls"][0]["id"] != first[0]["id"]


async def test_after_tool_results_the_answer_reports_each_output(client: httpx.AsyncClient) -> None:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    body = {
        "messages": [
            {"role": "user", "content": "weather and time"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "noon"}]},
        ],
        "tools": [WEATHER, TIME],
        "tool_choice": "required",
    }
    [choice] = (await complete(client, body))["choices"]
    assert choice["message"]["content"] == 'get_weather returned: {"temp": 21}\nget_time returned: noon'
    assert choice["finish_reason"] == "stop"


async def test_json_object_format_answers_a_json_object_with_the_echo(client: httpx.AsyncClient) -> None:
    body = {**user("reply in json please"), "response_format": {"type": "json_object"}}
    content = (await complete(client, body))["choices"][0]["message"]["content"]
    assert json.loads(content) == {"echo": "reply in json please"}


async def test_json_schema_format_answers_an_instance_of_the_schema(client: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "score": {"type": "number", "minimum": 3},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "author": {"$ref": "#/$defs/person"},
        },
        "required": ["title", "score", "tags", "author"],
        "additionalProperties": False,
        "$defs": {
            "person": {"type": "object", "properties": {"name": {"type": ["string", "null"]}}, "required": ["name"]}
        },
    }
    body = {
        **user("a review"),
        "response_format": {"type": "json_schema", "json_schema": {"name": "review", "schema": schema}},
    }
    value = json.loads((await complete(client, body))["choices"][0]["message"]["content"])
    jsonschema.validate(value, schema)
    assert value["title"] == "a review"


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(client: httpx.AsyncClient) -> None:
    text = "one two three four five six"
    [choice] = (await complete(client, {**user(text), "max_tokens": 4}))["choices"]
    assert choice["message"]["content"] == "one two three four"
    assert choice["finish_reason"] == "length"


async def test_a_limit_the_answer_fits_in_changes_nothing(client: httpx.AsyncClient) -> None:
    [choice] = (await complete(client, {**user("one two"), "max_completion_tokens": 2}))["choices"]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("one two", "stop")


@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high"])
async def test_reasoning_deployments_spend_reasoning_tokens_by_effort(client: httpx.AsyncClient, effort: str) -> None:
    answer = await complete(client, {**user("think about it"), "reasoning_effort": effort}, "gpt-5-mini")
    usage = answer["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == REASONING_TOKENS[effort]
    assert usage["completion_tokens"] == REASONING_TOKENS[effort] + count_tokens("think about it")
    assert answer["choices"][0]["message"]["content"] == "think about it"


async def test_reasoning_counts_against_max_completion_tokens(client: httpx.AsyncClient) -> None:
    reasoning = REASONING_TOKENS["low"]
    body = {**user("one two three four five"), "reasoning_effort": "low", "max_completion_tokens": reasoning + 2}
    answer = await complete(client, body, "gpt-5-mini")
    assert answer["choices"][0]["message"]["content"] == "one two"
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == reasoning + 2


async def test_a_limit_spent_on_reasoning_leaves_an_empty_answer(client: httpx.AsyncClient) -> None:
    body = {**user("hello"), "max_completion_tokens": 3}
    answer = await complete(client, body, "gpt-5-mini")
    assert answer["choices"][0]["message"]["content"] == ""
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3


async def test_tool_arguments_are_cut_by_the_token_limit(client: httpx.AsyncClient) -> None:
    [choice] = (await complete(client, {**user("weather"), "tools": [WEATHER], "max_tokens": 3}))["choices"]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"city'


async def test_n_gives_that_many_choices(client: httpx.AsyncClient) -> None:
    answer = await complete(client, {**user("hello there"), "n": 3})
    assert [choice["index"] for choice in answer["choices"]] == [0, 1, 2]
    assert {choice["message"]["content"] for choice in answer["choices"]} == {"hello there"}
    assert answer["usage"]["completion_tokens"] == 3 * 2


async def test_the_tokens_trigger_makes_an_answer_of_that_many_tokens(client: httpx.AsyncClient) -> None:
    answer = await complete(client, user(f"{tokens_trigger(300)} long please"))
    assert count_tokens(answer["choices"][0]["message"]["content"]) == 300
    assert answer["usage"]["completion_tokens"] == 300


async def test_logprobs_list_each_answer_token_with_the_top_alternatives(client: httpx.AsyncClient) -> None:
    answer = await complete(client, {**user("Hello, logprobs world"), "logprobs": True, "top_logprobs": 3})
    entries = answer["choices"][0]["logprobs"]["content"]
    assert [entry["token"] for entry in entries] == tokenize("Hello, logprobs world")
    for entry in entries:
        assert entry["bytes"] == list(entry["token"].encode())
        assert entry["logprob"] <= 0
        tops = entry["top_logprobs"]
        assert len(tops) == 3 and tops[0]["token"] == entry["token"]
        assert [top["logprob"] for top in tops] == sorted((top["logprob"] for top in tops), reverse=True)
        assert len({top["token"] for top in tops}) == 3


async def test_logprobs_without_top_logprobs_have_no_alternatives(client: httpx.AsyncClient) -> None:
    answer = await complete(client, {**user("hi"), "logprobs": True})
    assert answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"] == []


async def test_no_logprobs_unless_asked(client: httpx.AsyncClient) -> None:
    assert (await complete(client, {**user("hi"), "logprobs": False}))["choices"][0]["logprobs"] is None

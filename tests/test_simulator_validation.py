"""Simulator: requests Azure rejects are rejected with Azure's 400 wording; requests it accepts are accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from serve_app.simulator import SimulatorConfig, create_app
from serve_app.simulator.testing import V1_PATH, classic_path, in_process_client
from serve_app.simulator.validation import CHAT_COMPLETION_PARAMETERS

USER = {"role": "user", "content": "hi"}
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
CALL_2 = {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
CALLING = {"role": "assistant", "content": None, "tool_calls": [CALL]}
CALLING_TWICE = {"role": "assistant", "content": None, "tool_calls": [CALL, CALL_2]}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "42"}

OLD_VERSION = "2024-10-21"
MODERN_VERSION = "2024-12-01-preview"
UNANSWERED = (
    "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. "
    "The following tool_call_ids did not have response messages: "
)
NOT_A_RESPONSE = (
    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'."
)
ALL_ROLES = "'system', 'assistant', 'user', 'function', 'tool', and 'developer'"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(create_app()) as client:
        yield client


def error(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "param": param, "code": code}


def unsupported(name: str) -> dict[str, Any]:
    return error(f"Unsupported parameter: '{name}' is not supported with this model.", name, "unsupported_parameter")


def default_only(name: str, value: str) -> dict[str, Any]:
    return error(
        f"Unsupported value: '{name}' does not support {value} with this model. "
        "Only the default (1) value is supported.",
        name,
        "unsupported_value",
    )


def post(client: httpx.AsyncClient, deployment: str, api_version: str, body: dict[str, Any]) -> Any:
    """The classic route at `api_version`, or the v1 route for "v1"."""
    if api_version == "v1":
        return client.post(V1_PATH, json={**body, "model": deployment})
    return client.post(classic_path(deployment, api_version), json=body)


def invalid_value(value: str, supported: str, param: str) -> dict[str, Any]:
    return error(f"Invalid value: '{value}'. Supported values are: {supported}.", param, "invalid_value")


def missing(param: str) -> dict[str, Any]:
    return error(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def wrong_type(param: str, expected: str, got: str) -> dict[str, Any]:
    return error(f"Invalid type for '{param}': expected {expected}, but got {got} instead.", param, "invalid_type")


def empty(param: str, reported: str | None = None) -> dict[str, Any]:
    return error(
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        reported or param,
        "empty_array",
    )


# (id, deployment, api-version, body, error)
REJECTED: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = [
    ("unknown parameter", "gpt-4o", OLD_VERSION, {"messages": [USER], "foo": 1},
     error("Unrecognized request argument supplied: foo")),
    ("unknown parameter even when null", "gpt-4o", OLD_VERSION, {"messages": [USER], "foo": None},
     error("Unrecognized request argument supplied: foo")),
    ("max_tokens on a reasoning model", "gpt-5-mini", OLD_VERSION, {"messages": [USER], "max_tokens": 10},
     error("Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' "
           "instead.", "max_tokens", "unsupported_parameter")),
    ("temperature on an o-series model", "o3-mini", OLD_VERSION, {"messages": [USER], "temperature": 0.2},
     unsupported("temperature")),
    ("temperature other than 1 on gpt-5", "gpt-5-mini", OLD_VERSION, {"messages": [USER], "temperature": 0.2},
     default_only("temperature", "0.2")),
    ("temperature other than 1 on o4-mini", "o4-mini", OLD_VERSION, {"messages": [USER], "temperature": 0.7},
     default_only("temperature", "0.7")),
    ("parallel_tool_calls on an o-series model", "o3-mini", MODERN_VERSION,
     {"messages": [USER], "tools": [TOOL], "parallel_tool_calls": True}, unsupported("parallel_tool_calls")),
    ("parallel_tool_calls on o4-mini", "o4-mini", MODERN_VERSION,
     {"messages": [USER], "tools": [TOOL], "parallel_tool_calls": True}, unsupported("parallel_tool_calls")),
    ("function tools with a reasoning effort on gpt-5.4", "gpt-5.4", "v1",
     {"messages": [USER], "tools": [TOOL], "reasoning_effort": "low"},
     error("Function tools with reasoning_effort are not supported for gpt-5.4 in /v1/chat/completions. "
           "Please use /v1/responses instead.", "reasoning_effort")),
    ("reasoning_effort before 2024-12-01-preview", "gpt-5-mini", OLD_VERSION,
     {"messages": [USER], "reasoning_effort": "low"},
     error("Unrecognized request argument supplied: reasoning_effort")),
    ("stream_options before 2024-09-01-preview", "gpt-4o", "2024-08-01-preview",
     {"messages": [USER], "stream": True, "stream_options": {"include_usage": True}},
     error("Unrecognized request argument supplied: stream_options")),
    ("verbosity before 2025-04-01-preview", "gpt-5-mini", MODERN_VERSION,
     {"messages": [USER], "verbosity": "low"}, error("Unrecognized request argument supplied: verbosity")),
    ("prompt_cache_key before 2025-04-01-preview", "gpt-4o", MODERN_VERSION,
     {"messages": [USER], "prompt_cache_key": "k"}, error("Unrecognized request argument supplied: prompt_cache_key")),
    ("an unknown argument on v1 has a code", "gpt-4o", "v1", {"messages": [USER], "colour": "red"},
     error("Unrecognized request argument supplied: colour", None, "unrecognized_request_argument")),
    ("an unknown service tier", "gpt-4o", "v1", {"messages": [USER], "service_tier": "turbo"},
     invalid_value("turbo", "'auto', 'default', 'priority', and 'flex'", "service_tier")),
    ("top_p on a reasoning model", "o3-mini", OLD_VERSION, {"messages": [USER], "top_p": 0.5}, unsupported("top_p")),
    ("presence_penalty on a reasoning model", "gpt-5-mini", OLD_VERSION,
     {"messages": [USER], "presence_penalty": 1}, unsupported("presence_penalty")),
    ("frequency_penalty on a reasoning model", "gpt-5-mini", OLD_VERSION,
     {"messages": [USER], "frequency_penalty": 1}, unsupported("frequency_penalty")),
    ("logprobs on a reasoning model", "gpt-5-mini", OLD_VERSION, {"messages": [USER], "logprobs": True},
     unsupported("logprobs")),
    ("top_logprobs on a reasoning model", "gpt-5-mini", OLD_VERSION,
     {"messages": [USER], "logprobs": True, "top_logprobs": 2}, unsupported("logprobs")),
    ("logit_bias on a reasoning model", "gpt-5-mini", OLD_VERSION, {"messages": [USER], "logit_bias": {"1": 1}},
     unsupported("logit_bias")),
    ("reasoning_effort on a chat model", "gpt-4o", MODERN_VERSION, {"messages": [USER], "reasoning_effort": "low"},
     unsupported("reasoning_effort")),
    ("reasoning_effort before 2024-12-01-preview", "gpt-5-mini", OLD_VERSION,
     {"messages": [USER], "reasoning_effort": "low"},
     error("Unrecognized request argument supplied: reasoning_effort")),
    ("unknown reasoning_effort", "gpt-5-mini", MODERN_VERSION, {"messages": [USER], "reasoning_effort": "extreme"},
     invalid_value("extreme", "'none', 'minimal', 'low', 'medium', and 'high'", "reasoning_effort")),
    ("developer role before 2024-12-01-preview", "gpt-4o", OLD_VERSION,
     {"messages": [{"role": "developer", "content": "be brief"}, USER]},
     invalid_value("developer", "'system', 'assistant', 'user', 'function', and 'tool'", "messages[0].role")),
    ("tool_choice without tools", "gpt-4o", OLD_VERSION, {"messages": [USER], "tool_choice": "auto"},
     error("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
           "tool_choice")),
    ("parallel_tool_calls without tools", "gpt-4o", OLD_VERSION, {"messages": [USER], "parallel_tool_calls": False},
     error("Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when 'tools' are "
           "specified.", "parallel_tool_calls")),
    ("a tool that is not a function", "gpt-4o", OLD_VERSION, {"messages": [USER], "tools": [{"type": "retrieval"}]},
     invalid_value("retrieval", "'function'", "tools[0].type")),
    ("a function tool without a function", "gpt-4o", OLD_VERSION, {"messages": [USER], "tools": [{"type": "function"}]},
     missing("tools[0].function")),
    ("a function without a name", "gpt-4o", OLD_VERSION,
     {"messages": [USER], "tools": [{"type": "function", "function": {"parameters": {}}}]},
     missing("tools[0].function.name")),
    ("a function name with spaces", "gpt-4o", OLD_VERSION,
     {"messages": [USER], "tools": [{"type": "function", "function": {"name": "look up"}}]},
     error("Invalid 'tools[0].function.name': string does not match pattern. Expected a string that matches the "
           "pattern '^[a-zA-Z0-9_-]{1,64}$'.", "tools[0].function.name", "invalid_value")),
    ("function parameters that are not an object", "gpt-4o", OLD_VERSION,
     {"messages": [USER], "tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
     wrong_type("tools[0].function.parameters", "an object", "a string")),
    ("an empty tools list", "gpt-4o", OLD_VERSION, {"messages": [USER], "tools": []}, empty("tools")),
    ("an unknown tool_choice", "gpt-4o", OLD_VERSION, {"messages": [USER], "tools": [TOOL], "tool_choice": "maybe"},
     invalid_value("maybe", "'none', 'auto', and 'required'", "tool_choice")),
    ("tool_choice naming a function not in tools", "gpt-4o", OLD_VERSION,
     {"messages": [USER], "tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "other"}}},
     error("Invalid value for 'tool_choice': function 'other' is not one of the supplied 'tools'.", "tool_choice",
           "invalid_value")),
    ("an empty tool_calls list", "gpt-4o", OLD_VERSION,
     {"messages": [USER, {"role": "assistant", "content": "x", "tool_calls": []}, USER]},
     empty("messages[1].tool_calls", "messages.[1].tool_calls")),
    ("an assistant message with null content and no tool calls", "gpt-4o", OLD_VERSION,
     {"messages": [USER, {"role": "assistant", "content": None}, USER]},
     error("Invalid value for 'content': expected a string, got null.", "messages.[1].content")),
    ("an assistant message without content or tool calls", "gpt-4o", OLD_VERSION,
     {"messages": [USER, {"role": "assistant"}, USER]},
     error("Invalid value for 'content': expected a string, got null.", "messages.[1].content")),
    ("a tool call that is not a function", "gpt-4o", OLD_VERSION,
     {"messages": [USER, {"role": "assistant", "tool_calls": [{**CALL, "type": "code"}]}, RESULT]},
     invalid_value("code", "'function'", "messages[1].tool_calls[0].type")),
    ("a tool result answering an unknown call", "gpt-4o", OLD_VERSION,
     {"messages": [USER, CALLING, {**RESULT, "tool_call_id": "call_9"}]},
     error(NOT_A_RESPONSE, "messages.[2].role")),
    ("a tool result after a user message", "gpt-4o", OLD_VERSION, {"messages": [USER, RESULT]},
     error(NOT_A_RESPONSE, "messages.[1].role")),
    ("a tool result for an earlier turn's call", "gpt-4o", OLD_VERSION,
     {"messages": [USER, CALLING, RESULT, {"role": "assistant", "content": "ok"}, USER, RESULT]},
     error(NOT_A_RESPONSE, "messages.[5].role")),
    ("tool calls followed by a user message", "gpt-4o", OLD_VERSION, {"messages": [USER, CALLING, USER]},
     error(UNANSWERED + "call_1", "messages.[1].role")),
    ("tool calls answered only in part", "gpt-4o", OLD_VERSION,
     {"messages": [USER, CALLING_TWICE, RESULT, USER]}, error(UNANSWERED + "call_2", "messages.[1].role")),
    ("tool calls ending the conversation", "gpt-4o", OLD_VERSION, {"messages": [USER, CALLING_TWICE]},
     error(UNANSWERED + "call_1, call_2", "messages.[1].role")),
    ("a tool message without tool_call_id", "gpt-4o", OLD_VERSION,
     {"messages": [USER, CALLING, {"role": "tool", "content": "42"}]}, missing("messages[2].tool_call_id")),
    ("no messages", "gpt-4o", OLD_VERSION, {}, missing("messages")),
    ("null messages", "gpt-4o", OLD_VERSION, {"messages": None}, missing("messages")),
    ("empty messages", "gpt-4o", OLD_VERSION, {"messages": []}, empty("messages")),
    ("messages that are not a list", "gpt-4o", OLD_VERSION, {"messages": "hi"},
     wrong_type("messages", "an array", "a string")),
    ("a message that is not an object", "gpt-4o", OLD_VERSION, {"messages": ["hi"]},
     wrong_type("messages[0]", "an object", "a string")),
    ("a message without role", "gpt-4o", OLD_VERSION, {"messages": [{"content": "hi"}]}, missing("messages[0].role")),
    ("an unknown role", "gpt-4o", MODERN_VERSION, {"messages": [{"role": "robot", "content": "hi"}]},
     invalid_value("robot", ALL_ROLES, "messages[0].role")),
    ("a user message without content", "gpt-4o", OLD_VERSION, {"messages": [{"role": "user"}]},
     missing("messages[0].content")),
    ("content of the wrong type", "gpt-4o", OLD_VERSION, {"messages": [{"role": "user", "content": 42}]},
     wrong_type("messages[0].content", "one of a string or an array", "an integer")),
    ("empty content parts", "gpt-4o", OLD_VERSION, {"messages": [{"role": "user", "content": []}]},
     empty("messages[0].content")),
    ("an unknown content part", "gpt-4o", OLD_VERSION,
     {"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]},
     invalid_value("video", "'text', 'image_url', 'input_audio', and 'file'", "messages[0].content[0].type")),
    ("an image part in a system message", "gpt-4o", OLD_VERSION,
     {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, USER]},
     invalid_value("image_url", "'text'", "messages[0].content[0].type")),
    ("a text part without text", "gpt-4o", OLD_VERSION, {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
     missing("messages[0].content[0].text")),
    ("an image without url", "gpt-4o", OLD_VERSION,
     {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     missing("messages[0].content[0].image_url.url")),
    ("an unknown image detail", "gpt-4o", OLD_VERSION,
     {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x", "detail": "max"}}]}]},
     invalid_value("max", "'auto', 'low', and 'high'", "messages[0].content[0].image_url.detail")),
    ("temperature as a string", "gpt-4o", OLD_VERSION, {"messages": [USER], "temperature": "hot"},
     wrong_type("temperature", "a number", "a string")),
    ("temperature above 2", "gpt-4o", OLD_VERSION, {"messages": [USER], "temperature": 3},
     error("Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead.",
           "temperature", "decimal_above_max_value")),
    ("top_p above 1", "gpt-4o", OLD_VERSION, {"messages": [USER], "top_p": 1.5},
     error("Invalid 'top_p': decimal above maximum value. Expected a value <= 1, but got 1.5 instead.", "top_p",
           "decimal_above_max_value")),
    ("presence_penalty below -2", "gpt-4o", OLD_VERSION, {"messages": [USER], "presence_penalty": -2.5},
     error("Invalid 'presence_penalty': decimal below minimum value. Expected a value >= -2, but got -2.5 instead.",
           "presence_penalty", "decimal_below_min_value")),
    ("n below 1", "gpt-4o", OLD_VERSION, {"messages": [USER], "n": 0},
     error("Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.", "n",
           "integer_below_min_value")),
    ("n as a string", "gpt-4o", OLD_VERSION, {"messages": [USER], "n": "2"}, wrong_type("n", "an integer", "a string")),
    ("n as a boolean", "gpt-4o", OLD_VERSION, {"messages": [USER], "n": True},
     wrong_type("n", "an integer", "a boolean")),
    ("seed as a decimal", "gpt-4o", OLD_VERSION, {"messages": [USER], "seed": 1.5},
     wrong_type("seed", "an integer", "a decimal")),
    ("stream as a string", "gpt-4o", OLD_VERSION, {"messages": [USER], "stream": "yes"},
     wrong_type("stream", "a boolean", "a string")),
    ("tools as an object", "gpt-4o", OLD_VERSION, {"messages": [USER], "tools": TOOL},
     wrong_type("tools", "an array", "an object")),
    ("stop as a number", "gpt-4o", OLD_VERSION, {"messages": [USER], "stop": 5},
     wrong_type("stop", "one of a string or an array", "an integer")),
    ("more than four stop sequences", "gpt-4o", OLD_VERSION, {"messages": [USER], "stop": list("abcde")},
     error("Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length 5 "
           "instead.", "stop", "array_above_max_length")),
    ("max_completion_tokens of 0", "gpt-4o", OLD_VERSION, {"messages": [USER], "max_completion_tokens": 0},
     error("Invalid 'max_completion_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead.",
           "max_completion_tokens", "integer_below_min_value")),
    ("stream_options without stream", "gpt-4o", OLD_VERSION,
     {"messages": [USER], "stream_options": {"include_usage": True}},
     error("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")),
    ("stream_options with stream false", "gpt-4o", OLD_VERSION,
     {"messages": [USER], "stream": False, "stream_options": {"include_usage": True}},
     error("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")),
    ("include_usage as a string", "gpt-4o", OLD_VERSION,
     {"messages": [USER], "stream": True, "stream_options": {"include_usage": "yes"}},
     wrong_type("stream_options.include_usage", "a boolean", "a string")),
    ("top_logprobs without logprobs", "gpt-4o", OLD_VERSION, {"messages": [USER], "top_logprobs": 2},
     error("Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
           "top_logprobs", "invalid_value")),
    ("top_logprobs above 20", "gpt-4o", OLD_VERSION, {"messages": [USER], "logprobs": True, "top_logprobs": 21},
     error("Invalid 'top_logprobs': integer above maximum value. Expected a value <= 20, but got 21 instead.",
           "top_logprobs", "integer_above_max_value")),
    ("an unknown response format", "gpt-4o", OLD_VERSION, {"messages": [USER], "response_format": {"type": "xml"}},
     invalid_value("xml", "'text', 'json_object', and 'json_schema'", "response_format.type")),
    ("a json_schema format without json_schema", "gpt-4o", OLD_VERSION,
     {"messages": [USER], "response_format": {"type": "json_schema"}}, missing("response_format.json_schema")),
    ("a json_schema without name", "gpt-4o", OLD_VERSION,
     {"messages": [USER], "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
     missing("response_format.json_schema.name")),
    ("json_object without the word json in the messages", "gpt-4o", OLD_VERSION,
     {"messages": [USER], "response_format": {"type": "json_object"}},
     error("'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
           "messages")),
    ("an unknown verbosity", "gpt-5-mini", "2025-04-01-preview", {"messages": [USER], "verbosity": "loud"},
     invalid_value("loud", "'low', 'medium', and 'high'", "verbosity")),
]  # fmt: skip


@pytest.mark.parametrize(
    "deployment, api_version, body, expected", [case[1:] for case in REJECTED], ids=[case[0] for case in REJECTED]
)
async def test_azure_rejects_the_request_with_its_wording(
    client: httpx.AsyncClient, deployment: str, api_version: str, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    response = await post(client, deployment, api_version, body)
    assert response.status_code == 400
    assert response.json() == {"error": expected}


ACCEPTED: list[tuple[str, str, str, dict[str, Any]]] = [
    ("null optional parameters", "gpt-4o", OLD_VERSION,
     {"messages": [USER], "temperature": None, "tools": None, "tool_choice": None, "stream_options": None}),
    ("the developer role from 2024-12-01-preview", "gpt-4o", MODERN_VERSION,
     {"messages": [{"role": "developer", "content": "be brief"}, USER]}),
    ("reasoning_effort on a reasoning model", "gpt-5-mini", "2025-04-01-preview",
     {"messages": [USER], "reasoning_effort": "high", "max_completion_tokens": 100}),
    ("a full tool round trip", "gpt-4o", OLD_VERSION,
     {"messages": [USER, CALLING_TWICE, RESULT, {**RESULT, "tool_call_id": "call_2"}], "tools": [TOOL]}),
    ("an assistant message with text and tool calls", "gpt-4o", OLD_VERSION,
     {"messages": [USER, {**CALLING, "content": "let me look"}, RESULT], "tools": [TOOL]}),
    ("text and image parts", "gpt-4o", OLD_VERSION,
     {"messages": [{"role": "user", "content": [
         {"type": "text", "text": "what is this?"},
         {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
     ]}]}),
    ("a legacy function message", "gpt-4o", OLD_VERSION,
     {"messages": [USER, {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
                   {"role": "function", "name": "f", "content": "1"}]}),
    ("tool_choice none with tools", "gpt-4o", OLD_VERSION,
     {"messages": [USER], "tools": [TOOL], "tool_choice": "none"}),
    ("json_object when a message mentions JSON", "gpt-4o", OLD_VERSION,
     {"messages": [{"role": "system", "content": "Reply in JSON."}, USER], "response_format": {"type": "json_object"}}),
    ("temperature 1 on gpt-5 and o4-mini", "gpt-5-mini", OLD_VERSION, {"messages": [USER], "temperature": 1}),
    ("temperature 1 on o4-mini", "o4-mini", OLD_VERSION, {"messages": [USER], "temperature": 1}),
    ("parallel_tool_calls on gpt-5", "gpt-5-mini", MODERN_VERSION,
     {"messages": [USER], "tools": [TOOL], "parallel_tool_calls": True}),
    ("function tools without a reasoning effort on gpt-5.4", "gpt-5.4", "v1", {"messages": [USER], "tools": [TOOL]}),
    ("function tools with reasoning effort none on gpt-5.4", "gpt-5.4", "v1",
     {"messages": [USER], "tools": [TOOL], "reasoning_effort": "none"}),
    ("a reasoning effort without tools on gpt-5.4", "gpt-5.4", "v1", {"messages": [USER], "reasoning_effort": "high"}),
    ("every service tier", "gpt-4o", "v1", {"messages": [USER], "service_tier": "flex"}),
    ("verbosity and prompt_cache_key on v1", "gpt-5-mini", "v1",
     {"messages": [USER], "verbosity": "low", "prompt_cache_key": "k"}),
    ("integers where numbers are expected", "gpt-4o", OLD_VERSION, {"messages": [USER], "temperature": 1, "top_p": 1}),
    ("every chat parameter with a sensible value", "gpt-4o", "2025-04-01-preview", {
        "messages": [USER], "model": "ignored", "frequency_penalty": 0.1, "logit_bias": {"50256": -100},
        "logprobs": True, "top_logprobs": 2, "max_tokens": 50, "max_completion_tokens": 50, "n": 1,
        "presence_penalty": 0.1, "response_format": {"type": "text"}, "seed": 7, "stop": ["\n\n"], "stream": False,
        "temperature": 0.5, "top_p": 0.9, "tools": [TOOL], "tool_choice": "none", "parallel_tool_calls": True,
        "user": "u", "functions": [{"name": "f"}], "function_call": "none", "data_sources": [], "store": False,
        "metadata": {"k": "v"}, "modalities": ["text"], "prediction": {"type": "content", "content": "x"},
        "audio": {"voice": "alloy", "format": "wav"}, "prompt_cache_key": "k", "safety_identifier": "s",
        "verbosity": "low", "user_security_context": {"application_name": "app"},
    }),
]  # fmt: skip


@pytest.mark.parametrize(
    "deployment, api_version, body", [case[1:] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED]
)
async def test_azure_accepts_the_request(
    client: httpx.AsyncClient, deployment: str, api_version: str, body: dict[str, Any]
) -> None:
    response = await post(client, deployment, api_version, body)
    assert response.status_code == 200, response.json()


def test_the_recognised_parameters_are_exactly_the_chat_completions_ones() -> None:
    assert {
        "messages", "model", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
        "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop", "stream",
        "stream_options", "temperature", "top_p", "tools", "tool_choice", "parallel_tool_calls", "user",
        "functions", "function_call", "reasoning_effort", "data_sources", "store", "metadata", "modalities",
        "prediction", "audio", "prompt_cache_key", "safety_identifier", "verbosity", "user_security_context",
        "service_tier",
    } == CHAT_COMPLETION_PARAMETERS  # fmt: skip


@pytest.mark.parametrize(
    "extra, told",
    [
        ({}, "However, your messages resulted in 1208 tokens. Please reduce the length of the messages."),
        (
            {"max_completion_tokens": 500},
            "However, you requested 1708 tokens (1208 in the messages, 500 in the completion). "
            "Please reduce the length of the messages or completion.",
        ),
    ],
    ids=["the prompt alone", "prompt and completion"],
)
async def test_a_request_longer_than_the_context_window_is_context_length_exceeded(
    extra: dict[str, Any], told: str
) -> None:
    app = create_app(SimulatorConfig().patched({"deployments": {"small": {"model": "gpt-4o", "context_tokens": 1000}}}))
    async with in_process_client(app) as client:
        long = {"role": "user", "content": "word " * 1200}
        response = await client.post(classic_path("small"), json={"messages": [long], **extra})
        fits = await client.post(classic_path("small"), json={"messages": [USER], **extra})
    assert response.status_code == 400 and fits.status_code == 200
    message = f"This model's maximum context length is 1000 tokens. {told}"
    assert response.json() == {"error": error(message, "messages", "context_length_exceeded")}

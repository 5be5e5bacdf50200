"""Responses request -> Azure Chat Completions body: each translation rule, by name."""

from __future__ import annotations

from typing import Any

import pytest
from bad_input import bodies
from hypothesis import given, settings

from serve_app.errors import InvalidRequest, OpenAIError, UnsupportedField
from serve_app.schemas import ResponsesRequest, parse
from serve_app.translate import to_chat_request
from serve_app.translate.tools import ToolMap


def chat(body: dict[str, Any]) -> dict[str, Any]:
    return to_chat_request(parse(ResponsesRequest, body))


def fc(call_id: str, name: str = "lookup", arguments: str = "{}") -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments, "id": f"fc_{call_id}"}


TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
USER = {"role": "user", "content": "hi"}

MESSAGE_CASES = {
    "string input becomes one user message": (
        {"input": "hello"},
        [{"role": "user", "content": "hello"}],
    ),
    "instructions and the leading system/developer run join into one system message": (
        {
            "instructions": "Be brief.",
            "input": [
                {"role": "system", "content": "You grade answers."},
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Use JSON."}]},
                USER,
            ],
        },
        [
            {"role": "system", "content": "Be brief.\n\nYou grade answers.\n\nUse JSON."},
            {"role": "user", "content": "hi"},
        ],
    ),
    "a later developer message stays in place as system": (
        {"input": [USER, {"role": "developer", "content": "now stop"}]},
        [{"role": "user", "content": "hi"}, {"role": "system", "content": "now stop"}],
    ),
    "function calls merge with the preceding assistant text, keyed by call_id": (
        {
            "input": [
                USER,
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
                fc("call_a"),
                fc("call_b", arguments='{"q": 1}'),
                {"type": "function_call_output", "call_id": "call_a", "output": "A"},
                {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "B"}]},
            ]
        },
        [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": "{}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "A"},
            {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "B"}]},
        ],
    ),
    "a function call with no assistant text before it is an assistant turn of its own": (
        {"input": [USER, fc("call_a")]},
        [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
            },
        ],
    ),
    "reasoning items, with or without encrypted content, are left out upstream": (
        {
            "input": [
                USER,
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Sure.", "annotations": []}],
                },
                {
                    "type": "reasoning",
                    "id": "rs_2",
                    "summary": [{"type": "summary_text", "text": "s"}],
                    "encrypted_content": "gAAA",
                },
                fc("call_a"),
            ]
        },
        [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "Sure.",
                "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
            },
        ],
    ),
    "a replayed refusal stays a refusal part": (
        {"input": [USER, {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}]},
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}],
    ),
    "an empty assistant message is sent as empty text, never null": (
        {"input": [USER, {"type": "message", "role": "assistant", "content": []}, USER]},
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "hi"}],
    ),
    "input_image becomes an image_url part with its detail": (
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
                    ],
                }
            ]
        },
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                ],
            }
        ],
    ),
}


@pytest.mark.parametrize("body, messages", MESSAGE_CASES.values(), ids=MESSAGE_CASES.keys())
def test_messages(body: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    assert chat(body)["messages"] == messages


def test_no_assistant_message_is_ever_null_without_tool_calls_nor_has_empty_tool_calls() -> None:
    body = chat(
        {
            "input": [
                USER,
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": ""}]},
                fc("c1"),
                {"type": "function_call_output", "call_id": "c1", "output": "x"},
                {"type": "message", "role": "assistant", "content": []},
                USER,
            ]
        }
    )
    for message in body["messages"]:
        if message["role"] == "assistant":
            assert message.get("tool_calls", None) != []
            assert message["content"] is not None or message.get("tool_calls")


SETTING_CASES = {
    "max_output_tokens becomes max_completion_tokens": ({"max_output_tokens": 64}, {"max_completion_tokens": 64}),
    "temperature, top_p and user keep their names": (
        {"temperature": 0.2, "top_p": 0.9, "user": "u1"},
        {"temperature": 0.2, "top_p": 0.9, "user": "u1"},
    ),
    "reasoning.effort becomes reasoning_effort": ({"reasoning": {"effort": "low"}}, {"reasoning_effort": "low"}),
    "top_logprobs turns logprobs on": ({"top_logprobs": 3}, {"logprobs": True, "top_logprobs": 3}),
    "include of output_text logprobs turns logprobs on": (
        {"include": ["message.output_text.logprobs"]},
        {"logprobs": True},
    ),
    "json_schema format becomes response_format json_schema": (
        {
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "grade",
                    "schema": {"type": "object"},
                    "strict": True,
                    "description": "A grade",
                }
            }
        },
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "grade",
                    "schema": {"type": "object"},
                    "strict": True,
                    "description": "A grade",
                },
            }
        },
    ),
    "json_object format becomes response_format json_object": (
        {"text": {"format": {"type": "json_object"}}},
        {"response_format": {"type": "json_object"}},
    ),
    "text format sends nothing": ({"text": {"format": {"type": "text"}}}, {}),
    "verbosity keeps its name": ({"text": {"verbosity": "low"}}, {"verbosity": "low"}),
    "store, metadata, empty include and auto service tier need no upstream action": (
        {"store": True, "metadata": {"run": "7"}, "include": [], "service_tier": "auto", "truncation": "disabled"},
        {},
    ),
    "the request's model is ignored": ({"model": "gpt-4o-mini"}, {}),
    "priority and flex tiers are Azure's too": ({"service_tier": "priority"}, {"service_tier": "priority"}),
    "what Codex sends on every request needs no upstream action but its cache key": (
        {
            "client_metadata": {"session": "s1"},
            "store": False,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "k1",
            "stream": True,
        },
        {"prompt_cache_key": "k1"},
    ),
    "reasoning summaries are accepted and none is asked of Azure": (
        {"reasoning": {"effort": "low", "summary": "auto", "generate_summary": "concise"}},
        {"reasoning_effort": "low"},
    ),
    "a summary alone sends no reasoning setting": ({"reasoning": {"summary": "none"}}, {}),
    "max_tool_calls caps built-in tools only, so it needs no upstream action": ({"max_tool_calls": 3}, {}),
    "in-memory prompt cache retention is what Azure does anyway": ({"prompt_cache_retention": "in_memory"}, {}),
    "truncation auto is the server's retry, not an upstream setting": ({"truncation": "auto"}, {}),
    "a direct caller is the plain case": (
        {
            "input": [
                USER,
                {**fc("c"), "caller": {"type": "direct"}},
                {"type": "function_call_output", "call_id": "c", "output": "1", "name": "lookup"},
            ],
            "tools": [TOOL],
        },
        {
            "tools": [
                {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
            ]
        },
    ),
}


@pytest.mark.parametrize("extra, expected", SETTING_CASES.values(), ids=SETTING_CASES.keys())
def test_settings(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    body = chat({"input": "hi", **extra})
    assert {k: v for k, v in body.items() if k != "messages"} == expected


TOOL_CASES = {
    "function tools keep description and strict": (
        {
            "tools": [
                {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True}
            ]
        },
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True},
                }
            ]
        },
    ),
    "tool_choice strings pass through": (
        {"tools": [TOOL], "tool_choice": "required"},
        {"tool_choice": "required"},
    ),
    "a named function choice takes the chat shape": (
        {"tools": [TOOL], "tool_choice": {"type": "function", "name": "lookup"}},
        {"tool_choice": {"type": "function", "function": {"name": "lookup"}}},
    ),
    "parallel_tool_calls passes with tools": (
        {"tools": [TOOL], "parallel_tool_calls": False},
        {"parallel_tool_calls": False},
    ),
    "without tools, tool_choice and parallel_tool_calls are omitted": (
        {"tool_choice": "auto", "parallel_tool_calls": True},
        {"tools": None, "tool_choice": None, "parallel_tool_calls": None},
    ),
    "without tools, tool_choice none is omitted": ({"tool_choice": "none"}, {"tool_choice": None}),
}


@pytest.mark.parametrize("extra, expected", TOOL_CASES.values(), ids=TOOL_CASES.keys())
def test_tools(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    body = chat({"input": "hi", **extra})
    for key, value in expected.items():
        assert body.get(key) == value


REFUSED = {
    "previous_response_id": ({"previous_response_id": "resp_1"}, "previous_response_id"),
    "background": ({"background": True}, "background"),
    "conversation": ({"conversation": "conv_1"}, "conversation"),
    "stored prompt": ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    "a service tier Azure does not have": ({"service_tier": "scale"}, "service_tier"),
    "an include we cannot produce": ({"include": ["file_search_call.results"]}, "include[0]"),
    "extended prompt cache retention": ({"prompt_cache_retention": "24h"}, "prompt_cache_retention"),
    "web_search tool": ({"tools": [{"type": "web_search"}]}, "tools[0]"),
    "file_search tool": ({"tools": [TOOL, {"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools[1]"),
    "mcp tool": ({"tools": [{"type": "mcp", "server_label": "x", "server_url": "https://x"}]}, "tools[0]"),
    "allowed_tools tool_choice": (
        {"tools": [TOOL], "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}},
        "tool_choice",
    ),
    "hosted tool_choice": ({"tools": [TOOL], "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    "input_file part": (
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
        "input[0].content[0]",
    ),
    "image by file id": (
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
        "input[0].content[0].file_id",
    ),
    "item_reference": ({"input": [USER, {"type": "item_reference", "id": "msg_1"}]}, "input[1]"),
    "hosted tool call item": (
        {"input": [USER, {"type": "web_search_call", "id": "ws_1", "status": "completed"}]},
        "input[1]",
    ),
    "image in a tool output": (
        {
            "input": [
                USER,
                fc("c"),
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [{"type": "input_image", "image_url": "https://x/y.png"}],
                },
            ]
        },
        "input[2].output[0]",
    ),
    "a message phase": (
        {"input": [USER, {"role": "assistant", "content": "x", "phase": "commentary"}]},
        "input[1].phase",
    ),
    "a programmatic caller": (
        {"input": [USER, {**fc("c"), "caller": {"type": "program", "caller_id": "p"}}]},
        "input[1].caller",
    ),
    "a prompt cache breakpoint": (
        {
            "input": [
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": "x", "prompt_cache_breakpoint": {"mode": "explicit"}}],
                }
            ]
        },
        "input[0].content[0].prompt_cache_breakpoint",
    ),
    "image detail original": (
        {
            "input": [
                {
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": "https://x/y.png", "detail": "original"}],
                }
            ]
        },
        "input[0].content[0].detail",
    ),
    "deferred tool loading": ({"tools": [{**TOOL, "defer_loading": True}]}, "tools[0].defer_loading"),
    "programmatic callers of a tool": (
        {"tools": [{**TOOL, "allowed_callers": ["programmatic"]}]},
        "tools[0].allowed_callers",
    ),
    "OpenAI moderation policy": ({"moderation": {"model": "omni-moderation-latest"}}, "moderation"),
    "context management": ({"context_management": [{"type": "compaction"}]}, "context_management"),
    "stream obfuscation": ({"stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
}


@pytest.mark.parametrize("extra, param", REFUSED.values(), ids=REFUSED.keys())
def test_fields_we_cannot_honour_are_refused_by_name(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedField) as info:
        chat({"input": "hi", **extra})
    assert info.value.status == 400
    assert info.value.param == param
    assert param in info.value.message


INVALID = {
    "tool_choice required without tools": ({"tool_choice": "required"}, "tool_choice"),
    "named tool_choice without tools": ({"tool_choice": {"type": "function", "name": "f"}}, "tool_choice"),
    "named tool_choice not among tools": (
        {"tools": [TOOL], "tool_choice": {"type": "function", "name": "other"}},
        "tool_choice.name",
    ),
    "an unknown parameter": ({"frobnicate": 1}, "frobnicate"),
    "client_metadata values that are not strings": ({"client_metadata": {"n": 1}}, "client_metadata.n"),
    "max_tool_calls below one": ({"max_tool_calls": 0}, "max_tool_calls"),
    "an unknown item type": ({"input": [{"type": "telepathy"}]}, "input[0].type"),
    "a wrong type deep inside": (
        {"input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]},
        "input[0].content[0].text",
    ),
    "output_text in a user message": (
        {"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
        "input[0].content[0]",
    ),
    "input that is only reasoning": ({"input": [{"type": "reasoning", "summary": []}]}, "input"),
    "temperature out of range": ({"temperature": 3}, "temperature"),
}


@pytest.mark.parametrize("extra, param", INVALID.values(), ids=INVALID.keys())
def test_invalid_requests_name_the_field(extra: dict[str, Any], param: str) -> None:
    body = {"input": "hi", **extra}
    with pytest.raises(InvalidRequest) as info:
        chat(body)
    assert info.value.status == 400
    assert info.value.param == param


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"frobnicate": 1}, "frobnicate"),
        ({"input": [{"role": "user", "content": "x", "mood": "happy"}]}, "input[0].mood"),
    ],
)
def test_unknown_fields_get_openai_unknown_parameter_code(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        chat({"input": "hi", **extra})
    assert (info.value.code, info.value.param, info.value.message) == (
        "unknown_parameter",
        param,
        f"Unknown parameter: '{param}'.",
    )


def test_a_missing_input_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(ResponsesRequest, {"model": "x"})
    assert info.value.param == "input"


@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_a_body_that_is_not_an_object_is_a_400(body: Any) -> None:
    with pytest.raises(InvalidRequest):
        parse(ResponsesRequest, body)


@settings(max_examples=400, deadline=None)
@given(body=bodies)
def test_any_body_either_translates_or_raises_an_openai_error(body: Any) -> None:
    try:
        to_chat_request(parse(ResponsesRequest, body))
    except OpenAIError as error:
        assert 400 <= error.status < 500


# --- custom, namespace and client tool_search tools --------------------------------------------------

CUSTOM = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch"},
}
NAMESPACE = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Sub-agents",
    "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}],
}
SEARCH = {"type": "tool_search", "execution": "client", "parameters": {"type": "object", "properties": {}}}


def offered(body: dict[str, Any], leave_out: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    req = parse(ResponsesRequest, {"input": "hi", **body})
    tools = to_chat_request(req, ToolMap.of(req, leave_out)).get("tools", [])
    return {tool["function"]["name"]: tool["function"] for tool in tools}


def test_a_custom_tool_is_a_strict_function_of_one_string_carrying_its_description_and_grammar() -> None:
    function = offered({"tools": [CUSTOM]})["apply_patch"]
    assert function["parameters"] == {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's input, as raw text"}},
        "required": ["input"],
        "additionalProperties": False,
    }
    assert function["strict"] is True
    assert function["description"].startswith("Edit files.")
    assert "lark grammar:\nstart: begin_patch" in function["description"]


def test_a_freeform_custom_tool_without_grammar_has_no_grammar_in_its_description() -> None:
    function = offered({"tools": [{"type": "custom", "name": "note", "format": {"type": "text"}}]})["note"]
    assert "grammar" not in function["description"] and "`input`" in function["description"]


def test_namespace_tools_are_offered_under_names_that_cannot_collide() -> None:
    clash = {"type": "function", "name": "multi_agent_v1__spawn_agent"}
    names = offered({"tools": [NAMESPACE, clash]})
    assert set(names) == {"multi_agent_v1__spawn_agent", "multi_agent_v1__spawn_agent_2"}
    assert names["multi_agent_v1__spawn_agent_2"]["parameters"] == {"type": "object"}
    assert "parameters" not in names["multi_agent_v1__spawn_agent"]  # the client's own tool keeps its name
    assert names["multi_agent_v1__spawn_agent_2"]["description"] == "multi_agent_v1: Sub-agents"


def test_a_client_tool_search_is_a_function_with_the_tools_parameters() -> None:
    function = offered({"tools": [SEARCH]})["tool_search"]
    assert function["parameters"] == SEARCH["parameters"] and function["description"]


def test_hosted_tools_listed_by_the_config_are_left_out() -> None:
    body = {"tools": [TOOL, {"type": "web_search"}, {"type": "tool_search"}]}
    assert set(offered(body, leave_out=("web_search", "tool_search"))) == {"lookup"}
    with pytest.raises(UnsupportedField) as info:
        offered(body, leave_out=("web_search",))
    assert info.value.param == "tools[2]"  # a hosted (server-executed) tool search


CUSTOM_CALL = {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"}
SEARCH_CALL = {
    "type": "tool_search_call",
    "id": "ts_1",
    "call_id": "c3",
    "execution": "client",
    "arguments": {"query": "files"},
    "status": "completed",
}
SEARCH_OUTPUT = {
    "type": "tool_search_output",
    "call_id": "c3",
    "execution": "client",
    "tools": [{"type": "function", "name": "read_file", "parameters": {"type": "object"}}],
}


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [_call(call_id, name, arguments)]}


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


REPLAY_CASES = {
    "a custom tool call and its output go back as a tool call and a tool message": (
        {
            "tools": [CUSTOM],
            "input": [USER, CUSTOM_CALL, {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done"}],
        },
        [
            tool_call("c1", "apply_patch", '{"input": "*** Begin Patch"}'),
            {"role": "tool", "tool_call_id": "c1", "content": "Done"},
        ],
    ),
    "a namespaced function call goes back under its offered name": (
        {
            "tools": [NAMESPACE],
            "input": [
                USER,
                {**fc("c2", "spawn_agent"), "namespace": "multi_agent_v1", "status": "completed"},
                {"type": "function_call_output", "call_id": "c2", "output": "ok"},
            ],
        },
        [tool_call("c2", "multi_agent_v1__spawn_agent", "{}"), {"role": "tool", "tool_call_id": "c2", "content": "ok"}],
    ),
    "a tool search goes back as a call whose result names the tools it loaded": (
        {"tools": [SEARCH], "input": [USER, SEARCH_CALL, SEARCH_OUTPUT]},
        [
            tool_call("c3", "tool_search", '{"query": "files"}'),
            {"role": "tool", "tool_call_id": "c3", "content": '{"loaded_tools": ["read_file"]}'},
        ],
    ),
}


@pytest.mark.parametrize("body, messages", REPLAY_CASES.values(), ids=REPLAY_CASES.keys())
def test_replayed_tool_items(body: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    assert chat(body)["messages"][1:] == messages


def test_tools_a_tool_search_loaded_are_offered_from_then_on() -> None:
    assert set(offered({"tools": [SEARCH], "input": [USER, SEARCH_CALL, SEARCH_OUTPUT]})) == {
        "tool_search",
        "read_file",
    }


def test_deferred_tools_wait_for_a_tool_search_to_load_them() -> None:
    deferred = {"type": "function", "name": "read_file", "defer_loading": True}
    assert set(offered({"tools": [SEARCH, deferred]})) == {"tool_search"}
    loaded = {**SEARCH_OUTPUT, "tools": [{**deferred, "parameters": {"type": "object"}}]}
    assert set(offered({"tools": [SEARCH, deferred], "input": [USER, SEARCH_CALL, loaded]})) == {
        "tool_search",
        "read_file",
    }


def test_a_custom_tool_can_be_forced_by_name() -> None:
    body = chat({"input": "hi", "tools": [CUSTOM], "tool_choice": {"type": "custom", "name": "apply_patch"}})
    assert body["tool_choice"] == {"type": "function", "function": {"name": "apply_patch"}}


TOOL_REFUSED = {
    "a hosted tool search call": ({"input": [USER, {**SEARCH_CALL, "execution": "server"}]}, "input[1].execution"),
    "a client tool search without call_id": (
        {"input": [USER, {k: v for k, v in SEARCH_CALL.items() if k != "call_id"}]},
        "input[1].call_id",
    ),
    "forcing a custom tool by the name of a function": (
        {"tools": [TOOL], "tool_choice": {"type": "custom", "name": "lookup"}},
        "tool_choice.name",
    ),
    "a custom tool with programmatic callers": (
        {"tools": [{**CUSTOM, "allowed_callers": ["programmatic"]}]},
        "tools[0].allowed_callers",
    ),
    "a deferred function in a namespace": (
        {"tools": [{**NAMESPACE, "tools": [{"type": "function", "name": "f", "defer_loading": True}]}]},
        "tools[0].tools[0].defer_loading",
    ),
}


@pytest.mark.parametrize("extra, param", TOOL_REFUSED.values(), ids=TOOL_REFUSED.keys())
def test_tool_items_we_cannot_honour_are_a_400_naming_them(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        chat({"input": "hi", **extra})
    assert info.value.param == param


def test_explicit_nulls_for_every_field_are_unset_as_nemo_gym_datasets_send_them() -> None:
    body: dict[str, Any] = {field.alias or name: None for name, field in ResponsesRequest.model_fields.items()}
    body.update(
        input="hi",
        reasoning={"effort": None, "summary": None},
        text={"format": None, "verbosity": None},
        metadata={"extra_body": '{"seed": null, "top_k": null}'},
    )
    assert chat(body) == {"messages": [{"role": "user", "content": "hi"}]}

"""Streaming through the real Serve app: the SDK's stream readers accept our streams, and they end in exactly
the Response (or chat completion) that the non-streaming call returns for the same upstream answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from support.ports import free_port
from support.serve import WRONG_KEY_ENV, Serve, sim_app
from support.sim_admin import SimAdmin
from support.stream_checks import check_event_sequence, without_volatile
from support.waiting import wait_until

from serve_app.cluster import replica_url, wait_ingress_settled
from serve_app.simulator import (
    CONTENT_FILTER_OUTPUT,
    CONTENT_FILTER_PROMPT,
    DROP_MID_STREAM,
    ERROR_MID_STREAM,
    HANG,
    PARALLEL_TOOLS,
    REFUSAL,
    BackgroundSimulator,
    tokens_trigger,
)

pytestmark = pytest.mark.serve


def tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": f"{name} tool",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    }


@pytest.fixture(scope="module")
def apps(serve_instance: Serve, simulator: BackgroundSimulator) -> Serve:
    serve_instance.deploy(
        # A current api-version: Codex's prompt_cache_key and verbosity need 2025-04-01-preview on Azure.
        sim_app("policy_model", simulator, api_version="2025-04-01-preview"),
        sim_app("one_slot", simulator, budget=1),
        sim_app("bad_key", simulator, key_env=WRONG_KEY_ENV),
        sim_app("no_deployment", simulator, deployment="missing-deployment"),
        sim_app("unreachable", simulator, base_url=f"http://127.0.0.1:{free_port()}"),
    )
    return serve_instance


def sdk(apps: Serve, app: str = "policy_model") -> openai.OpenAI:
    return openai.OpenAI(base_url=apps.base_url(app), api_key="not-checked", max_retries=0)


@pytest.fixture
def client(apps: Serve) -> Iterator[openai.OpenAI]:
    with sdk(apps) as c:
        yield c


CASES: dict[str, dict[str, Any]] = {
    "text": {"input": "The quick brown fox jumps over the lazy dog."},
    "refusal": {"input": f"Do something bad {REFUSAL}"},
    "one tool call, tool only": {"input": "Look it up", "tools": [tool("lookup")]},
    "several tool calls": {
        "input": f"Look everything up {PARALLEL_TOOLS}",
        "tools": [tool("lookup"), tool("search"), tool("fetch")],
    },
    "JSON mode": {
        "input": "Grade this",
        "text": {
            "format": {
                "type": "json_schema",
                "name": "grade",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {"score": {"type": "integer"}, "reason": {"type": "string"}},
                    "required": ["score", "reason"],
                    "additionalProperties": False,
                },
            }
        },
    },
    "what Codex sends: custom, namespace and client tool_search tools, and options that change no output": {
        "input": [
            {
                "type": "message",
                "role": "developer",
                "id": "msg_d",
                "content": [{"type": "input_text", "text": "Be a coder."}],
            },
            {
                "type": "message",
                "role": "user",
                "id": "msg_u",
                "content": [{"type": "input_text", "text": f"Fix it {PARALLEL_TOOLS}"}],
            },
        ],
        "tools": [
            {
                "type": "custom",
                "name": "apply_patch",
                "description": "Edit files",
                "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
            },
            {
                "type": "namespace",
                "name": "multi_agent_v1",
                "description": "Sub-agents",
                "tools": [tool("spawn_agent")],
            },
            {"type": "tool_search", "execution": "client", "parameters": {"type": "object", "properties": {}}},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
        "reasoning": {"summary": "auto"},
        "extra_body": {"client_metadata": {"originator": "codex_exec"}},
    },
    "truncated by length": {"input": f"Write at length {tokens_trigger(80)}", "max_output_tokens": 16},
    "content filter": {"input": f"Say something {CONTENT_FILTER_OUTPUT}"},
}


def stream_terminal(client: openai.OpenAI, params: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    events = [event.to_dict() for event in client.responses.create(model="m", stream=True, **params)]
    return events, events[-1]["response"]


@pytest.mark.parametrize("params", CASES.values(), ids=CASES.keys())
def test_the_stream_ends_in_the_non_streaming_response(client: openai.OpenAI, params: dict[str, Any]) -> None:
    plain = client.responses.create(model="m", **params).to_dict()
    events, streamed = stream_terminal(client, params)
    check_event_sequence(events)
    expected, actual = without_volatile(plain), without_volatile(streamed)
    if params is CASES["content filter"]:
        # Azure's stream sends no usage chunk after a content filter, so a stream cannot report it.
        assert actual.pop("usage") is None
        expected.pop("usage")
    assert actual == expected


@pytest.mark.parametrize("params", CASES.values(), ids=CASES.keys())
def test_the_sdk_stream_helper_accepts_the_stream(client: openai.OpenAI, params: dict[str, Any]) -> None:
    with client.responses.stream(model="m", **params) as stream:
        kinds = [event.type for event in stream]
        if kinds[-1] == "response.completed":
            final = stream.get_final_response()
            assert final.status == "completed"
        else:
            # The SDK raises here by design for a response that did not complete.
            assert kinds[-1] == "response.incomplete"
            with pytest.raises(RuntimeError):
                stream.get_final_response()


def test_codex_tools_come_back_as_their_item_types(client: openai.OpenAI) -> None:
    params = CASES[
        "what Codex sends: custom, namespace and client tool_search tools, and options that change no output"
    ]
    output = client.responses.create(model="m", **params).output
    assert [item.type for item in output] == ["custom_tool_call", "function_call", "tool_search_call"]
    assert (output[0].name, output[1].name, output[1].namespace) == ("apply_patch", "spawn_agent", "multi_agent_v1")
    assert isinstance(output[0].input, str) and output[2].execution == "client"


def test_terminal_events_follow_the_upstream_finish(client: openai.OpenAI) -> None:
    expectations = {"text": "completed", "truncated by length": "incomplete", "content filter": "incomplete"}
    for case, status in expectations.items():
        events, final = stream_terminal(client, CASES[case])
        assert events[-1]["type"] == f"response.{status}" and final["status"] == status
    _, truncated = stream_terminal(client, CASES["truncated by length"])
    assert truncated["incomplete_details"] == {"reason": "max_output_tokens"}


CHAT_CASES: dict[str, dict[str, Any]] = {
    "text": {"messages": [{"role": "user", "content": "one two three four"}]},
    "tool calls": {
        "messages": [{"role": "user", "content": f"call them {PARALLEL_TOOLS}"}],
        "tools": [
            {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}
            for n in ("a", "b")
        ],
    },
    "refusal": {"messages": [{"role": "user", "content": f"no {REFUSAL}"}]},
}


@pytest.mark.parametrize("params", CHAT_CASES.values(), ids=CHAT_CASES.keys())
def test_a_chat_stream_accumulates_to_the_non_streaming_completion(
    client: openai.OpenAI, params: dict[str, Any]
) -> None:
    plain = client.chat.completions.create(model="m", **params)
    with client.chat.completions.stream(model="m", stream_options={"include_usage": True}, **params) as stream:
        for _ in stream:
            pass
        streamed = stream.get_final_completion()
    a, b = plain.choices[0].message, streamed.choices[0].message
    assert (a.content, a.refusal) == (b.content, b.refusal)
    assert [(c.id, c.function.name, c.function.arguments) for c in a.tool_calls or []] == [
        (c.id, c.function.name, c.function.arguments) for c in b.tool_calls or []
    ]
    assert plain.usage.model_dump() == streamed.usage.model_dump()
    assert streamed.model == "gpt-4o"


def test_a_chat_stream_without_include_usage_has_no_usage_and_ends_with_done(apps: Serve) -> None:
    with httpx.stream(
        "POST",
        f"{apps.base_url('policy_model')}/chat/completions",
        timeout=30,
        json={"messages": [{"role": "user", "content": "a b"}], "stream": True},
    ) as response:
        frames = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    assert all('"usage"' not in frame for frame in frames[:-1])
    assert all('"choices":[]' not in frame for frame in frames[:-1])  # Azure's prompt-filter frame is dropped


BEFORE_FIRST_BYTE = {
    "401": ("bad_key", "hi", None, openai.AuthenticationError, 401),
    "404": ("no_deployment", "hi", None, openai.NotFoundError, 404),
    "429": ("policy_model", "hi", 429, openai.RateLimitError, 429),
    "400 content filter": ("policy_model", f"x {CONTENT_FILTER_PROMPT}", None, openai.BadRequestError, 400),
    "connection refused": ("unreachable", "hi", None, openai.InternalServerError, 502),
}


@pytest.mark.parametrize("endpoint", ["responses", "chat"])
@pytest.mark.parametrize("app, text, fault, kind, status", BEFORE_FIRST_BYTE.values(), ids=BEFORE_FIRST_BYTE.keys())
def test_errors_before_the_first_byte_keep_their_status(
    apps: Serve, sim_admin: SimAdmin, endpoint: str, app: str, text: str, fault: int | None, kind: type, status: int
) -> None:
    if fault:
        sim_admin.fault(fault, count=1, retry_after_s=120)  # longer than we wait: no retry
    with sdk(apps, app) as client, pytest.raises(kind) as info:
        if endpoint == "responses":
            client.responses.create(model="m", input=text, stream=True)
        else:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}], stream=True)
    assert info.value.status_code == status
    assert info.value.response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("trigger", [ERROR_MID_STREAM, DROP_MID_STREAM], ids=["in-band error", "dropped connection"])
def test_an_upstream_failure_mid_stream_ends_in_response_failed(client: openai.OpenAI, trigger: str) -> None:
    events, final = stream_terminal(client, {"input": f"start {tokens_trigger(30)} {trigger}"})
    check_event_sequence(events)
    assert events[-1]["type"] == "response.failed" and final["status"] == "failed"
    assert final["error"]["code"] == "server_error" and final["error"]["message"]
    assert any(e["type"] == "response.output_text.delta" for e in events)


@pytest.mark.parametrize("trigger", [ERROR_MID_STREAM, DROP_MID_STREAM], ids=["in-band error", "dropped connection"])
def test_a_chat_stream_failing_midway_sends_an_error_frame_then_done(apps: Serve, trigger: str) -> None:
    with httpx.stream(
        "POST",
        f"{apps.base_url('policy_model')}/chat/completions",
        timeout=30,
        json={"messages": [{"role": "user", "content": f"go {tokens_trigger(30)} {trigger}"}], "stream": True},
    ) as r:
        frames = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]" and '"error"' in frames[-2]


def wait_until_closed(sim_admin: SimAdmin, counter: str) -> None:
    """Until the simulator has counted one client departure in `counter` and nothing is in flight."""
    wait_until(
        lambda: sim_admin.stats()[counter] == 1 and sim_admin.stats()["in_flight"] == 0,
        lambda: f"the upstream call to close: {sim_admin.stats()}",
        timeout_s=10.0,
        poll_s=0.05,
    )


def assert_slot_free(apps: Serve) -> None:
    """The one-slot app answers promptly only if the slot the departed client held was given back."""
    response = httpx.post(f"{apps.base_url('one_slot')}/responses", json={"input": "again"}, timeout=5)
    assert response.status_code == 200


@pytest.mark.parametrize("endpoint", ["responses", "chat/completions"])
def test_a_client_leaving_mid_stream_closes_the_upstream_stream_and_frees_the_slot(
    apps: Serve, sim_admin: SimAdmin, endpoint: str
) -> None:
    wait_ingress_settled(["one_slot"])
    sim_admin.configure(inter_token_s=0.05)
    text = f"a long answer {tokens_trigger(400)}"
    body = {"input": text} if endpoint == "responses" else {"messages": [{"role": "user", "content": text}]}
    with httpx.stream(
        "POST", f"{apps.base_url('one_slot')}/{endpoint}", json={**body, "stream": True}, timeout=30
    ) as r:
        lines = r.iter_lines()
        for _ in range(12):
            next(lines)
        assert sim_admin.stats()["in_flight"] == 1
    wait_until_closed(sim_admin, "streams_closed_by_client")
    sim_admin.configure(inter_token_s=0)
    assert_slot_free(apps)


def test_a_client_leaving_a_non_streaming_call_closes_the_upstream_request_and_frees_the_slot(
    apps: Serve, sim_admin: SimAdmin
) -> None:
    # At the replica itself: HAProxy passes a departure on only when it half-closes in time (about
    # half of the non-streaming calls here; streams always, as above). README, "Failure behaviour".
    wait_ingress_settled(["one_slot"])
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{replica_url('one_slot')}/responses", json={"input": f"wait {HANG}"}, timeout=1.0)
    wait_until_closed(sim_admin, "requests_closed_by_client")
    assert_slot_free(apps)

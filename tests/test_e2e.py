"""The real Serve app over HTTP, with the simulator as Azure and the official openai SDK as the client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from support.ports import free_port
from support.serve import WRONG_KEY_ENV, Serve, sim_app
from support.sim_admin import SimAdmin

from serve_app.simulator import CONTENT_FILTER_PROMPT, BackgroundSimulator

pytestmark = pytest.mark.serve

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def apps(serve_instance: Serve, simulator: BackgroundSimulator) -> Serve:
    serve_instance.deploy(
        sim_app("policy_model", simulator),
        sim_app("codex_ready", simulator, ignored_hosted_tools=("web_search",)),
        sim_app("bad_key", simulator, key_env=WRONG_KEY_ENV),
        sim_app("no_deployment", simulator, deployment="missing-deployment"),
        sim_app("unreachable", simulator, base_url=f"http://127.0.0.1:{free_port()}"),
    )
    return serve_instance


@pytest.fixture
def client(apps: Serve) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=apps.base_url("policy_model"), api_key="not-checked", max_retries=0) as c:
        yield c


def sdk(apps: Serve, app: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=apps.base_url(app), api_key="not-checked", max_retries=0)


def test_responses_create_returns_a_completed_response_with_usage_and_the_deployment_as_model(
    client: openai.OpenAI,
) -> None:
    response = client.responses.create(model="anything-the-client-likes", input="Hello, Azure.")
    assert response.status == "completed"
    assert response.model == "gpt-4o"
    assert response.output_text == "Hello, Azure."
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_a_two_turn_tool_call_round_trip(client: openai.OpenAI, sim_admin: SimAdmin) -> None:
    first = client.responses.create(model="m", input="What is the weather in Paris?", tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments)["city"]
    # The agent replays everything the model produced, then adds the tool's result.
    second_input: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    second_input += [item.model_dump(exclude_none=True) for item in first.output]
    second_input.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 C and sunny"})
    second = client.responses.create(model="m", input=second_input, tools=[WEATHER])
    assert second.status == "completed"
    assert "18 C and sunny" in second.output_text
    upstream = sim_admin.requests()[-1]["body"]["messages"]
    assert [m["role"] for m in upstream] == ["user", "assistant", "tool"]
    assert upstream[1]["tool_calls"][0]["id"] == calls[0].call_id and upstream[2]["tool_call_id"] == calls[0].call_id


def test_nemo_gym_extra_body_reaches_azure_and_vllm_only_keys_are_refused_by_name(
    client: openai.OpenAI, sim_admin: SimAdmin
) -> None:
    client.responses.create(model="m", input="hi", metadata={"extra_body": json.dumps({"seed": 7, "stop": ["##"]})})
    upstream = sim_admin.requests()[-1]["body"]
    assert (upstream["seed"], upstream["stop"]) == (7, ["##"])
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="m", input="hi", metadata={"extra_body": json.dumps({"top_k": 20})})
    assert info.value.body["param"] == "metadata.extra_body.top_k"


def test_a_custom_tool_call_round_trips(client: openai.OpenAI, sim_admin: SimAdmin) -> None:
    patch = {"type": "custom", "name": "apply_patch", "description": "Edit files"}
    first = client.responses.create(model="m", input="Patch the file", tools=[patch])
    call = first.output[0]
    assert call.type == "custom_tool_call" and call.name == "apply_patch" and call.input
    second_input: list[Any] = [{"role": "user", "content": "Patch the file"}]
    second_input += [item.model_dump(exclude_none=True) for item in first.output]
    second_input.append({"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Patched."})
    second = client.responses.create(model="m", input=second_input, tools=[patch])
    assert second.status == "completed" and "Patched." in second.output_text
    upstream = sim_admin.requests()[-1]["body"]["messages"]
    assert json.loads(upstream[1]["tool_calls"][0]["function"]["arguments"]) == {"input": call.input}
    assert upstream[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "Patched."}


def test_hosted_tools_the_config_lists_are_left_out(apps: Serve) -> None:
    with sdk(apps, "codex_ready") as client:
        response = client.responses.create(model="m", input="hi", tools=[{"type": "web_search"}])
    assert response.status == "completed" and response.tools == []
    with sdk(apps, "policy_model") as client, pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="m", input="hi", tools=[{"type": "web_search"}])
    assert info.value.body["param"] == "tools[0]"


def test_chat_completions_are_forwarded_with_the_deployment_as_model(apps: Serve, sim_admin: SimAdmin) -> None:
    with sdk(apps, "policy_model") as client:
        completion = client.chat.completions.create(model="whatever", messages=[{"role": "user", "content": "ping"}])
    assert completion.choices[0].message.content == "ping"
    assert completion.model == "gpt-4o" and completion.usage is not None
    assert sim_admin.requests()[-1]["body"]["model"] == "gpt-4o"


def test_models_lists_the_deployment(apps: Serve) -> None:
    with sdk(apps, "policy_model") as client:
        assert [m.id for m in client.models.list()] == ["gpt-4o"]


UPSTREAM_ERRORS = {
    "a bad key is a 401": ("bad_key", "hi", openai.AuthenticationError, 401, "401"),
    "an unknown deployment is a 404": ("no_deployment", "hi", openai.NotFoundError, 404, "DeploymentNotFound"),
    "a filtered prompt is a 400 content_filter": (
        "policy_model",
        f"bad {CONTENT_FILTER_PROMPT}",
        openai.BadRequestError,
        400,
        "content_filter",
    ),
    "an unreachable Azure is a 502": ("unreachable", "hi", openai.InternalServerError, 502, "upstream_unavailable"),
}


@pytest.mark.parametrize("app, text, kind, status, code", UPSTREAM_ERRORS.values(), ids=UPSTREAM_ERRORS.keys())
def test_upstream_errors_keep_status_and_code_in_the_openai_envelope(
    apps: Serve, app: str, text: str, kind: type, status: int, code: str
) -> None:
    with sdk(apps, app) as client, pytest.raises(kind) as info:
        client.responses.create(model="m", input=text)
    assert info.value.status_code == status
    assert info.value.body["code"] == code and info.value.body["message"]
    assert set(info.value.response.json()["error"]) == {"message", "type", "param", "code"}


def test_a_rate_limited_call_is_a_429_with_retry_after(apps: Serve, sim_admin: SimAdmin) -> None:
    sim_admin.fault(429, count=1, retry_after_s=120)  # longer than we wait: the client gets it at once
    response = httpx.post(f"{apps.base_url('policy_model')}/responses", json={"input": "hi"}, timeout=30)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "429"
    assert response.headers["retry-after"] == "120"


BAD_BODIES = {
    "malformed JSON": (b'{"input": "hi"', "invalid_json", None),
    "not an object": (b'["input"]', None, None),
    "invalid UTF-8": (b'{"input": "\xff\xfe"}', "invalid_json", None),
    "a lone surrogate": (b'{"input": "\\ud800"}', "invalid_json", None),
    "NaN": (b'{"input": "hi", "temperature": NaN}', "invalid_json", None),
    "a number beyond double range": (b'{"input": "hi", "temperature": 1e400}', "invalid_json", None),
    "schema-invalid": (b'{"input": 42}', "invalid_value", "input"),
    "an unknown field": (b'{"input": "hi", "frobnicate": true}', "unknown_parameter", "frobnicate"),
}


@pytest.mark.parametrize("endpoint", ["responses", "chat/completions"])
@pytest.mark.parametrize("body, code, param", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_bodies_are_400_in_the_openai_envelope(
    apps: Serve, endpoint: str, body: bytes, code: str | None, param: str | None
) -> None:
    if endpoint == "chat/completions" and param is not None:
        body = body.replace(b'"input"', b'"messages"')
    response = httpx.post(
        f"{apps.base_url('policy_model')}/{endpoint}",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    if endpoint == "responses":
        assert (error["code"], error["param"]) == (code, param)


UNSUPPORTED = {
    "previous_response_id": {"previous_response_id": "resp_123"},
    "background": {"background": True},
    "conversation": {"conversation": "conv_1"},
    "tools[0]": {"tools": [{"type": "web_search"}]},
    "input[0].content[0]": {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
}


@pytest.mark.parametrize("field, extra", UNSUPPORTED.items(), ids=UNSUPPORTED.keys())
def test_each_unsupported_field_is_a_400_naming_it(client: openai.OpenAI, field: str, extra: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(**{"model": "m", "input": "hi", **extra})
    assert info.value.body["param"] == field and field in info.value.body["message"]


def test_n_above_one_on_chat_is_a_400_naming_it(apps: Serve) -> None:
    with sdk(apps, "policy_model") as client, pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], n=2)
    assert info.value.body["param"] == "n"


def test_the_handle_methods_answer_like_the_endpoints_and_raise_the_same_errors(apps: Serve) -> None:
    from ray import serve

    from serve_app.errors import OpenAIError
    from serve_app.serve_config import DEPLOYMENT

    handle = serve.get_deployment_handle(DEPLOYMENT, app_name="policy_model")
    response = handle.create_response.remote({"input": "by handle"}).result()
    assert response["status"] == "completed" and response["output"][0]["content"][0]["text"] == "by handle"
    chat = handle.create_chat_completion.remote({"messages": [{"role": "user", "content": "hi"}]}).result()
    assert chat["choices"][0]["message"]["content"] == "hi" and chat["model"] == "gpt-4o"
    batches = list(
        handle.options(stream=True).create_response_stream.remote({"input": "streamed by handle", "stream": True})
    )
    assert all(isinstance(batch, list) and batch for batch in batches)  # events in batches, never an empty one
    events = [event for batch in batches for event in batch]
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "streamed by handle"
    with pytest.raises(OpenAIError) as info:
        handle.create_response.remote({"input": "x", "background": True}).result()
    assert (info.value.status, info.value.param) == (400, "background")

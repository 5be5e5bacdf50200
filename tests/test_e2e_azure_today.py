"""The real app against Azure as it is today (the simulator's v1 route and reasoning deployments): NeMo Gym's
requests run on o-series, refusals name the Responses field, and Azure's quota headers reach the client."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from support.serve import Serve, sim_app
from support.sim_admin import SimAdmin

from serve_app.simulator import BackgroundSimulator

pytestmark = pytest.mark.serve

LOOKUP = {
    "type": "function",
    "name": "lookup",
    "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
}
NEMO_GYM = {
    "input": [{"role": "developer", "content": "Use the tools."}, {"role": "user", "content": "Define 'apple'."}],
    "tools": [LOOKUP],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "reasoning": {"effort": "low"},
    "max_output_tokens": 2048,
}


@pytest.fixture(scope="module")
def apps(serve_instance: Serve, simulator: BackgroundSimulator) -> Serve:
    v1 = simulator.openai_base_url  # no api-version
    serve_instance.deploy(
        sim_app("o_series", simulator, deployment="o3-mini", base_url=v1, default_query={}),
        sim_app("chat_model", simulator, deployment="gpt-4o", base_url=v1, default_query={}),
    )
    return serve_instance


def post(apps: Serve, app: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{apps.base_url(app)}/{path}", json=body, timeout=30)


def test_a_nemo_gym_request_with_parallel_tool_calls_runs_on_an_o_series_deployment(
    apps: Serve, sim_admin: SimAdmin
) -> None:
    for _ in range(2):
        response = post(apps, "o_series", "responses", NEMO_GYM)
        assert response.status_code == 200, response.text
        assert [item["type"] for item in response.json()["output"]] == ["function_call"]
    sent = [request["body"] for request in sim_admin.requests() if request["deployment"] == "o3-mini"]
    assert ["parallel_tool_calls" in body for body in sent] == [True, False, False]


def test_a_refused_value_is_a_400_naming_the_responses_field(apps: Serve) -> None:
    post(apps, "o_series", "responses", {"input": "hi", "temperature": 1})
    refused = post(apps, "o_series", "responses", {"input": "hi", "temperature": 0.3})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "temperature"
    effort = post(apps, "chat_model", "responses", {"input": "hi", "reasoning": {"effort": "high"}})
    assert effort.status_code == 400 and effort.json()["error"]["param"] == "reasoning.effort"
    assert "gpt-4o" in effort.json()["error"]["message"]
    on_chat = post(
        apps,
        "chat_model",
        "chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "high"},
    )
    assert on_chat.status_code == 400 and on_chat.json()["error"]["param"] == "reasoning_effort"


def test_azures_quota_region_and_request_id_headers_reach_the_client(apps: Serve, sim_admin: SimAdmin) -> None:
    sim_admin.configure(rpm=6000)
    answered = post(apps, "chat_model", "chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    with httpx.stream(
        "POST", f"{apps.base_url('chat_model')}/responses", json={"input": "hi", "stream": True}, timeout=30
    ) as streamed:
        streamed.read()
    for response in (answered, streamed):
        assert response.status_code == 200
        assert response.headers["x-ms-region"] == "swedencentral" and response.headers["apim-request-id"]
        assert int(response.headers["x-ratelimit-remaining-requests"]) >= 0

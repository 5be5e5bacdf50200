"""Simulator: Azure's URL forms, api-versions, keys, deployments, and the shape of a successful answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from serve_app.simulator import SimulatorConfig, create_app
from serve_app.simulator.errors import ACCESS_DENIED_MESSAGE, DEPLOYMENT_NOT_FOUND_MESSAGE, INVALID_JSON_MESSAGE
from serve_app.simulator.testing import V1_PATH, classic_path, in_process_client

HELLO = {"messages": [{"role": "user", "content": "Hello there"}]}
RESOURCE_NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}
ACCESS_DENIED = {"error": {"code": "401", "message": ACCESS_DENIED_MESSAGE}}
DEPLOYMENT_NOT_FOUND = {"error": {"code": "DeploymentNotFound", "message": DEPLOYMENT_NOT_FOUND_MESSAGE}}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(create_app(SimulatorConfig(region="eastus2"))) as client:
        yield client


@pytest.mark.parametrize(
    "api_version", ["2024-02-01", "2024-06-01", "2024-10-21", "2024-12-01-preview", "2025-04-01-preview"]
)
async def test_classic_route_answers_for_a_known_api_version(client: httpx.AsyncClient, api_version: str) -> None:
    response = await client.post(classic_path("gpt-4o", api_version), json=HELLO)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello there"


@pytest.mark.parametrize(
    "path",
    [
        "/openai/deployments/gpt-4o/chat/completions",
        "/openai/deployments/gpt-4o/chat/completions?api-version=2099-01-01",
        "/openai/deployments/gpt-4o/chat/completions?api-version=latest",
        "/openai/deployments/gpt-4o/completions?api-version=2024-10-21",
        "/openai/v2/chat/completions",
        "/chat/completions",
    ],
)
async def test_unknown_api_version_or_path_is_resource_not_found(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(path, json=HELLO)
    assert response.status_code == 404
    assert response.json() == RESOURCE_NOT_FOUND


async def test_v1_route_needs_no_api_version_and_takes_the_deployment_from_model(client: httpx.AsyncClient) -> None:
    response = await client.post(V1_PATH, json={**HELLO, "model": "gpt-5-mini"})
    assert response.status_code == 200
    assert response.json()["model"] == "gpt-5-mini-2025-08-07"


async def test_v1_route_without_model_is_a_missing_parameter(client: httpx.AsyncClient) -> None:
    response = await client.post(V1_PATH, json=HELLO)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Missing required parameter: 'model'.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "missing_required_parameter",
    }


async def test_classic_route_ignores_the_body_model(client: httpx.AsyncClient) -> None:
    response = await client.post(classic_path("gpt-4o"), json={**HELLO, "model": "no-such-deployment"})
    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4o-2024-11-20"


@pytest.mark.parametrize(
    "path, body",
    [(classic_path("no-such-deployment"), HELLO), (V1_PATH, {**HELLO, "model": "no-such-deployment"})],
    ids=["classic", "v1"],
)
async def test_unknown_deployment_is_deployment_not_found(client: httpx.AsyncClient, path: str, body: dict) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 404
    assert response.json() == DEPLOYMENT_NOT_FOUND


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"api-key": "wrong"},
        {"api-key": ""},
        {"authorization": "Bearer wrong"},
        {"authorization": "Basic sim-key"},
        {"authorization": "Bearer"},
    ],
    ids=["no key", "wrong key", "empty key", "wrong bearer", "basic scheme", "empty bearer"],
)
@pytest.mark.parametrize("path", [classic_path(), V1_PATH], ids=["classic", "v1"])
async def test_missing_or_wrong_key_is_access_denied(path: str, headers: dict[str, str]) -> None:
    async with in_process_client(create_app(), api_key=None) as client:
        response = await client.post(path, json={**HELLO, "model": "gpt-4o"}, headers=headers)
    assert response.status_code == 401
    assert response.json() == ACCESS_DENIED


async def test_a_rejected_entra_token_gets_the_gateway_body_without_error_wrapper() -> None:
    async with in_process_client(create_app(), api_key=None) as client:
        response = await client.post(classic_path(), json=HELLO, headers={"authorization": "Bearer aaa.bbb.ccc"})
    assert response.status_code == 401
    body = response.json()
    assert body["statusCode"] == 401 and body["message"].startswith("Unauthorized. Access token is missing")


@pytest.mark.parametrize("path", [classic_path(), V1_PATH], ids=["classic", "v1"])
async def test_a_configured_key_is_accepted_as_api_key_or_bearer(path: str) -> None:
    config = SimulatorConfig(api_keys=("key-one", "key-two"))
    async with in_process_client(create_app(config), api_key=None) as client:
        by_header = await client.post(path, json={**HELLO, "model": "gpt-4o"}, headers={"api-key": "key-two"})
        by_bearer = await client.post(
            path, json={**HELLO, "model": "gpt-4o"}, headers={"authorization": "Bearer key-one"}
        )
    assert (by_header.status_code, by_bearer.status_code) == (200, 200)


@pytest.mark.parametrize("content", [b"not json", b"", b'{"messages": [', b"\xff\xfe"])
async def test_a_body_that_is_not_json_is_an_invalid_request(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post(classic_path(), content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {
        "error": {"message": INVALID_JSON_MESSAGE, "type": "invalid_request_error", "param": None, "code": None}
    }


async def test_a_json_body_that_is_not_an_object_is_an_invalid_request(client: httpx.AsyncClient) -> None:
    response = await client.post(classic_path(), json=[HELLO])
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_other_methods_on_the_chat_route_are_refused_in_azure_shape(client: httpx.AsyncClient) -> None:
    response = await client.get(classic_path())
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "405"


async def test_success_carries_azure_request_and_region_headers(client: httpx.AsyncClient) -> None:
    response = await client.post(classic_path(), json=HELLO)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-ms-region"] == "eastus2"
    assert response.headers["apim-request-id"] == response.headers["x-request-id"]
    assert len(response.headers["apim-request-id"]) == 36


async def test_errors_carry_the_request_id_headers_too(client: httpx.AsyncClient) -> None:
    response = await client.post(classic_path("no-such-deployment"), json=HELLO)
    assert "apim-request-id" in response.headers and response.headers["x-ms-region"] == "eastus2"


async def test_every_request_gets_a_fresh_request_id_and_completion_id(client: httpx.AsyncClient) -> None:
    first, second = [await client.post(classic_path(), json=HELLO) for _ in range(2)]
    assert first.headers["apim-request-id"] != second.headers["apim-request-id"]
    assert first.json()["id"] != second.json()["id"]


async def test_a_completion_has_azures_shape(client: httpx.AsyncClient) -> None:
    body = (await client.post(classic_path(), json=HELLO)).json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "gpt-4o-2024-11-20"
    assert body["system_fingerprint"].startswith("fp_")
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"] == {"role": "assistant", "content": "Hello there", "refusal": None, "annotations": []}
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    filters = choice["content_filter_results"]
    for category in ("hate", "sexual", "violence", "self_harm"):
        assert filters[category] == {"filtered": False, "severity": "safe"}
    for category in ("protected_material_text", "protected_material_code"):
        assert filters[category] == {"filtered": False, "detected": False}
    [prompt_filter] = body["prompt_filter_results"]
    assert prompt_filter["prompt_index"] == 0
    assert prompt_filter["content_filter_results"]["jailbreak"] == {"filtered": False, "detected": False}
    assert prompt_filter["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}


async def test_deployments_added_by_name_are_served_with_their_model_version() -> None:
    config = SimulatorConfig().with_deployments("prod-chat").with_deployments("prod-reasoner", reasoning=True)
    async with in_process_client(create_app(config)) as client:
        chat = await client.post(classic_path("prod-chat"), json=HELLO)
        reasoner = await client.post(classic_path("prod-reasoner"), json={**HELLO, "max_tokens": 5})
    assert chat.json()["model"] == "gpt-4o-2024-11-20"
    assert reasoner.json()["error"]["code"] == "unsupported_parameter"

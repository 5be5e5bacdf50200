"""Entra ID auth, for real: azure-identity's managed-identity credential against a local token endpoint
(App Service protocol), the simulator checking each bearer token and its expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr
from support.fake_azure import FakeAzure

from serve_app.azure import AzureClient
from serve_app.config import AzureModelConfig, ConfigError, Timeouts, load_model_servers, validate_model
from serve_app.entra import SCOPE, EntraTokens
from serve_app.errors import CredentialUnavailable, UpstreamError
from serve_app.simulator import BackgroundSimulator, SimulatorConfig
from serve_app.simulator.entra import issue_token, token_is_valid
from serve_app.simulator.testing import V1_PATH

SIGNING_KEY = "test-signing-key"
IDENTITY_HEADER = "local-identity-secret"
HI = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def simulator() -> Iterator[BackgroundSimulator]:
    with BackgroundSimulator(SimulatorConfig(entra_signing_key=SIGNING_KEY)) as sim:
        yield sim


class TokenEndpoint:
    """App Service's managed-identity endpoint: GET ?api-version=2019-08-01&resource=..., X-IDENTITY-HEADER."""

    def __init__(self) -> None:
        self.lifetime_s = 3600.0
        self.calls: list[dict[str, str]] = []
        self.answer: Callable[[], web.Response] | None = None  # overrides the normal answer

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(dict(request.query))
        if request.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            return web.json_response({"error": "bad header"}, status=401)
        if self.answer is not None:
            return self.answer()
        expires_on = int(time.time() + self.lifetime_s)
        token = issue_token(SIGNING_KEY, expires_on)
        body = {"access_token": token, "expires_on": str(expires_on), "resource": request.query["resource"]}
        return web.json_response({**body, "token_type": "Bearer"})


@pytest.fixture
async def endpoint(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TokenEndpoint]:
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    token_endpoint = TokenEndpoint()
    async with FakeAzure(token_endpoint.handle) as server:
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{server.url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
        yield token_endpoint


def managed_identity(**kwargs: Any) -> EntraTokens:
    from azure.identity.aio import ManagedIdentityCredential

    return EntraTokens(ManagedIdentityCredential(), **kwargs)


def client_for(simulator: BackgroundSimulator, tokens: EntraTokens) -> AzureClient:
    return AzureClient(
        base_url=simulator.openai_base_url, deployment="gpt-4o", query={}, tokens=tokens, timeouts=Timeouts()
    )


def test_the_simulator_accepts_its_own_tokens_for_azure_openai_until_they_expire() -> None:
    now = time.time()
    assert token_is_valid(issue_token(SIGNING_KEY, now + 60), SIGNING_KEY)
    assert not token_is_valid(issue_token(SIGNING_KEY, now - 1), SIGNING_KEY)
    assert not token_is_valid(issue_token("other-key", now + 60), SIGNING_KEY)
    assert not token_is_valid(issue_token(SIGNING_KEY, now + 60, audience="https://management.azure.com"), SIGNING_KEY)


async def test_an_expired_token_gets_azures_gateway_401(simulator: BackgroundSimulator) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=simulator.base_url) as http:
        expired = issue_token(SIGNING_KEY, time.time() - 5)
        refused = await http.post(
            V1_PATH, json={**HI, "model": "gpt-4o"}, headers={"authorization": f"Bearer {expired}"}
        )
        fresh = issue_token(SIGNING_KEY, time.time() + 60)
        accepted = await http.post(
            V1_PATH, json={**HI, "model": "gpt-4o"}, headers={"authorization": f"Bearer {fresh}"}
        )
    assert refused.status_code == 401 and refused.json()["statusCode"] == 401
    assert accepted.status_code == 200


async def test_calls_carry_a_managed_identity_token_fetched_once_for_many_calls(
    simulator: BackgroundSimulator, endpoint: TokenEndpoint
) -> None:
    tokens = managed_identity()
    client = client_for(simulator, tokens)
    try:
        client.start()  # the replica's first token, before any call needs it
        answers = await asyncio.gather(*(client.complete(HI) for _ in range(5)))
    finally:
        await client.aclose()
    assert all(answer["choices"][0]["message"]["content"] == "hi" for answer in answers)
    assert len(endpoint.calls) == 1
    assert endpoint.calls[0]["resource"] == SCOPE.removesuffix("/.default")


async def test_a_token_near_expiry_is_replaced_in_the_background_and_no_call_fails(
    simulator: BackgroundSimulator, endpoint: TokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # azure-identity asks its endpoint at most every 30 s; the test does not wait that long.
    monkeypatch.setattr("azure.identity._internal.utils.DEFAULT_TOKEN_REFRESH_RETRY_DELAY", 0)
    endpoint.lifetime_s = 12  # the first token: inside the 10 s refresh margin within 2 s
    client = client_for(simulator, managed_identity(refresh_margin_s=10))
    try:
        await client.complete(HI)
        first = len(endpoint.calls)
        endpoint.lifetime_s = 3600
        await asyncio.sleep(2.2)
        await client.complete(HI)  # still on the old token; the new one is being fetched
        await asyncio.sleep(0.3)
        await client.complete(HI)
    finally:
        await client.aclose()
    assert first == 1 and len(endpoint.calls) == 2


async def test_a_failing_token_endpoint_is_a_clear_502_at_once(
    simulator: BackgroundSimulator, endpoint: TokenEndpoint
) -> None:
    endpoint.answer = lambda: web.json_response({"error": "invalid_resource", "error_description": "no"}, status=400)
    client = client_for(simulator, managed_identity())
    started = time.monotonic()
    try:
        with pytest.raises(CredentialUnavailable) as info:
            await client.complete(HI)
    finally:
        await client.aclose()
    assert info.value.status == 502 and info.value.code == "upstream_credential_unavailable"
    assert "Entra ID token" in info.value.message and time.monotonic() - started < 10


async def test_a_token_endpoint_that_never_answers_is_a_502_after_the_timeout_not_a_hang() -> None:
    class Silent:
        async def get_token(self, *scopes: str) -> Any:
            await asyncio.sleep(3600)

        async def close(self) -> None:
            pass

    tokens = EntraTokens(Silent(), timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(CredentialUnavailable, match=r"within 0\.3 s"):
        await tokens.authorization()
    assert time.monotonic() - started < 2
    await tokens.aclose()


async def test_a_token_the_gateway_rejects_comes_back_as_azures_401(simulator: BackgroundSimulator) -> None:
    class Foreign:
        async def get_token(self, *scopes: str) -> Any:
            class Token:
                token = issue_token("someone-else", time.time() + 3600)
                expires_on = int(time.time() + 3600)

            return Token()

        async def close(self) -> None:
            pass

    client = client_for(simulator, EntraTokens(Foreign()))
    try:
        with pytest.raises(UpstreamError) as info:
            await client.complete(HI)
    finally:
        await client.aclose()
    assert info.value.status == 401 and "Access token" in info.value.message


def test_entra_auth_needs_no_key_and_key_auth_stays_the_default() -> None:
    base = {
        "openai_base_url": "https://x.openai.azure.com/openai/v1",
        "openai_model": "o3",
        "num_concurrent_requests": 1,
    }
    assert validate_model(AzureModelConfig, {**base, "openai_api_key": "k"}, "m").auth == "key"
    with pytest.raises(ConfigError, match="openai_api_key"):
        validate_model(AzureModelConfig, base, "m")
    assert validate_model(AzureModelConfig, {**base, "auth": "entra"}, "m").openai_api_key is None


def test_the_shipped_config_under_entra_auth_does_not_miss_the_key() -> None:
    servers = load_model_servers(
        overrides=[
            "+policy_base_url=https://x.openai.azure.com/openai/v1",
            "+policy_model_name=o3",
            "+policy_model.responses_api_models.azure_openai_model.auth=entra",
        ],
        env_file=None,
    )
    assert servers["policy_model"].auth == "entra" and servers["policy_model"].openai_api_key is None


def test_a_client_takes_exactly_one_kind_of_auth() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        AzureClient(base_url="https://x", deployment="d", query={}, timeouts=Timeouts())
    with pytest.raises(ValueError, match="exactly one"):
        AzureClient(
            base_url="https://x",
            deployment="d",
            query={},
            api_key=SecretStr("k"),
            tokens=EntraTokens(object()),  # type: ignore[arg-type]
            timeouts=Timeouts(),
        )

"""The NeMo Gym front's calls through the deployment handle when the replica they reach dies before
answering: sent again to another replica, and an error in the envelope only when every try died (no Ray:
a handle stand-in raises what a dead replica's call raises)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml
from ray.exceptions import ActorDiedError

from serve_app.nemo_gym import KIND, REPLICA_ATTEMPTS, _front_app, gym_model_server

ANSWER = {"id": "resp_1", "object": "response", "status": "completed", "output": []}
BATCHES = [[{"type": "response.created"}], [{"type": "response.completed"}]]  # a replica streams events in batches


class _Call:
    """One handle call: its answer (or stream), or the error a call to a killed replica raises."""

    def __init__(self, dies: bool) -> None:
        self._dies = dies
        self._batches = iter(BATCHES)

    def cancel(self) -> None:
        pass

    def __await__(self) -> Any:
        return self._result().__await__()

    async def _result(self) -> dict[str, Any]:
        await asyncio.sleep(0)
        if self._dies:
            raise ActorDiedError()
        return ANSWER

    def __aiter__(self) -> AsyncIterator[list[dict[str, Any]]]:
        return self

    async def __anext__(self) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        if self._dies:
            raise ActorDiedError()
        try:
            return next(self._batches)
        except StopIteration:
            raise StopAsyncIteration from None


class DyingReplicas:
    """A deployment handle whose first `deaths` calls reach a replica that dies."""

    def __init__(self, deaths: int) -> None:
        self.deaths, self.calls = deaths, 0

    def options(self, **_: Any) -> DyingReplicas:
        return self

    def __getattr__(self, method: str) -> Any:
        replicas = self

        class Method:
            def remote(self, body: Any) -> _Call:
                replicas.calls += 1
                return _Call(dies=replicas.calls <= replicas.deaths)

        return Method()


def front(handle: DyingReplicas) -> httpx.AsyncClient:
    section = {
        "entrypoint": "app.py",
        "host": "127.0.0.1",
        "port": 18001,
        "openai_base_url": "https://example.openai.azure.com/openai/v1",
        "openai_api_key": "the-key",
        "openai_model": "gpt-4o",
        "num_concurrent_requests": 8,
    }
    config = gym_model_server(
        yaml.safe_dump({"policy_model": {"responses_api_models": {KIND: section}}}), "policy_model"
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=_front_app(handle, config)), base_url="http://front")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_whose_replica_died_before_answering_is_answered_by_another(stream: bool) -> None:
    handle = DyingReplicas(deaths=REPLICA_ATTEMPTS - 1)
    async with front(handle) as client:
        response = await client.post("/v1/responses", json={"input": "hi", "stream": stream})
    assert response.status_code == 200
    assert ("response.completed" in response.text) if stream else response.json() == ANSWER
    assert handle.calls == REPLICA_ATTEMPTS


@pytest.mark.parametrize("stream", [False, True])
async def test_when_every_try_dies_the_client_gets_a_502_in_the_envelope_with_retry_after(stream: bool) -> None:
    handle = DyingReplicas(deaths=REPLICA_ATTEMPTS)
    async with front(handle) as client:
        response = await client.post("/v1/responses", json={"input": "hi", "stream": stream})
    assert response.status_code == 502 and response.headers["retry-after"]
    assert response.json()["error"]["code"] == "replica_unavailable"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert handle.calls == REPLICA_ATTEMPTS

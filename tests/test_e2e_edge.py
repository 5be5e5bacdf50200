"""The HTTP edge of the real app: inbound auth, body size, the replica's bounded queue, and bad input of
every shape (property-based) answered with a 4xx in the OpenAI envelope, never a 5xx."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.bad_input import bodies, raw_bytes
from support.serve import INBOUND_KEYS_ENV, Serve, sim_app
from support.sim_admin import SimAdmin

from serve_app.config import Timeouts
from serve_app.simulator import BackgroundSimulator, tokens_trigger

pytestmark = pytest.mark.serve

CLIENT_KEYS = ("client-key-1", "client-key-2")


@pytest.fixture(scope="module")
def apps(serve_instance: Serve, simulator: BackgroundSimulator) -> Serve:
    queued = sim_app("queued", simulator, budget=1)
    queued["deployments"][0]["user_config"]["max_queued_requests"] = 2
    serve_instance.deploy(
        sim_app("policy_model", simulator),
        sim_app("impatient_queue", simulator, budget=1, timeouts=Timeouts(total_s=1.0)),
        # Its own simulator deployment, so that its upstream calls are counted apart from every other app's.
        sim_app("guarded", simulator, deployment="gpt-4o-mini", inbound_api_keys_env=INBOUND_KEYS_ENV),
        sim_app("small_bodies", simulator, max_request_bytes=2048),
        queued,
    )
    return serve_instance


def post(apps: Serve, app: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{apps.base_url(app)}/{path}", timeout=30, **kwargs)


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


AUTH = {
    "no header": ({}, 401),
    "a wrong key": ({"authorization": "Bearer nope"}, 401),
    "a key in the wrong scheme": ({"authorization": f"Basic {CLIENT_KEYS[0]}"}, 401),
    "the first key": ({"authorization": f"Bearer {CLIENT_KEYS[0]}"}, 200),
    "the second key": ({"authorization": f"Bearer {CLIENT_KEYS[1]}"}, 200),
}


@pytest.mark.parametrize("headers, status", AUTH.values(), ids=AUTH.keys())
def test_with_inbound_keys_set_only_a_valid_bearer_gets_in_and_others_never_reach_azure(
    apps: Serve, sim_admin: SimAdmin, headers: dict[str, str], status: int
) -> None:
    for path, kwargs in (
        ("responses", {"json": {"input": "hi"}}),
        ("chat/completions", {"json": {"messages": [{"role": "user", "content": "hi"}]}}),
    ):
        response = post(apps, "guarded", path, headers=headers, **kwargs)
        if status == 401:
            assert_envelope(response, 401, "invalid_api_key")
        else:
            assert response.status_code == 200
    models = httpx.get(f"{apps.base_url('guarded')}/models", headers=headers, timeout=10)
    assert models.status_code == status
    assert sim_admin.stats()["by_deployment"].get("gpt-4o-mini", 0) == (2 if status == 200 else 0)


def test_without_inbound_keys_anyone_reaching_the_port_is_served(apps: Serve) -> None:
    assert post(apps, "policy_model", "responses", json={"input": "hi"}).status_code == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["with content-length", "chunked"])
def test_a_body_over_the_limit_is_a_413(apps: Serve, sim_admin: SimAdmin, chunked: bool) -> None:
    body = json.dumps({"input": "x" * 4096}).encode()
    content = iter([body[:1000], body[1000:]]) if chunked else body
    response = post(apps, "small_bodies", "responses", content=content, headers={"content-type": "application/json"})
    assert_envelope(response, 413, "request_too_large")
    assert post(apps, "small_bodies", "responses", json={"input": "fits"}).status_code == 200
    assert sim_admin.stats()["accepted_total"] == 1


def test_a_full_queue_is_a_429_with_retry_after_in_the_openai_envelope(apps: Serve, sim_admin: SimAdmin) -> None:
    sim_admin.configure(latency_s=1.0)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(client.post(f"{apps.base_url('queued')}/responses", json={"input": "hi"}) for _ in range(6))
            )

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 429, 429, 429]  # one slot, two queued, the rest refused
    for response in (r for r in responses if r.status_code == 429):
        error = assert_envelope(response, 429, "server_overloaded")
        assert error["type"] == "rate_limit_error"
        assert int(response.headers["retry-after"]) >= 1
    assert sim_admin.stats()["peak_in_flight"] == 1


def test_the_total_timeout_counts_the_wait_in_the_queue(apps: Serve, sim_admin: SimAdmin) -> None:
    sim_admin.configure(inter_token_s=3.0)  # a stream holds the one slot well past the 1 s total timeout
    url = f"{apps.base_url('impatient_queue')}/responses"

    async def queued_behind_a_stream() -> tuple[httpx.Response, float]:
        async with httpx.AsyncClient(timeout=30) as client:

            async def holder() -> None:
                body = {"input": f"x {tokens_trigger(5)}", "stream": True}
                async with client.stream("POST", url, json=body) as response:
                    async for _ in response.aiter_bytes():
                        pass

            holding = asyncio.create_task(holder())
            await asyncio.sleep(0.3)
            started = time.monotonic()
            response = await client.post(url, json={"input": "hi"})
            elapsed = time.monotonic() - started
            holding.cancel()
            await asyncio.gather(holding, return_exceptions=True)
            return response, elapsed

    response, elapsed = asyncio.run(queued_behind_a_stream())
    assert_envelope(response, 429, "server_overloaded")
    assert 0.9 < elapsed < 2.5 and int(response.headers["retry-after"]) >= 1
    assert sim_admin.stats()["accepted_total"] == 1  # the queued call never reached Azure


@pytest.mark.parametrize("header", ["x-request-disconnect-disabled", "x-request-timeout-seconds"])
def test_a_serve_control_header_from_a_client_is_refused(apps: Serve, sim_admin: SimAdmin, header: str) -> None:
    response = post(apps, "policy_model", "responses", json={"input": "hi"}, headers={header: "?1"})
    assert assert_envelope(response, 400, "invalid_header")["param"] == header
    assert sim_admin.stats()["accepted_total"] == 0


def test_unknown_paths_and_methods_answer_in_the_envelope(apps: Serve) -> None:
    assert_envelope(post(apps, "policy_model", "nowhere", json={}), 404)
    assert_envelope(httpx.get(f"{apps.base_url('policy_model')}/responses", timeout=10), 405)


def test_models_never_waits_for_an_upstream_slot(apps: Serve, sim_admin: SimAdmin) -> None:
    # One slot, each call holding it 2 s, two calls queued behind the first. Had /models waited for
    # a slot, it would have answered only once the simulator had accepted all three calls: counted
    # at the simulator, so a busy machine's slowness cannot pass or fail it.
    sim_admin.configure(latency_s=2.0)

    async def busy_then_models() -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [
                asyncio.create_task(client.post(f"{apps.base_url('queued')}/responses", json={"input": "hi"}))
                for _ in range(3)
            ]
            # Until the first call holds the slot (or has failed, which the asserts then report).
            while not calls[0].done() and (await asyncio.to_thread(sim_admin.stats))["in_flight"] == 0:
                await asyncio.sleep(0.05)
            models = await client.get(f"{apps.base_url('queued')}/models")
            upstream = await asyncio.to_thread(sim_admin.stats)
            await asyncio.gather(*calls)
            return models.status_code, upstream

    status, upstream = asyncio.run(busy_then_models())
    assert status == 200
    # accepted_total counts this test's calls only (the simulator was reset); in_flight may also hold a call an
    # earlier test left hanging on purpose.
    assert upstream["accepted_total"] < 3, upstream


# --- bad input of every shape -----------------------------------------------------------------------


def assert_never_a_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(body=bodies, endpoint=st.sampled_from(["responses", "chat/completions"]))
def test_any_json_body_gets_an_answer_or_a_4xx_never_a_5xx(apps: Serve, body: Any, endpoint: str) -> None:
    if isinstance(body, dict) and body.get("stream") is True:
        body["stream"] = False  # a stream's errors after the first byte are in-band, checked elsewhere
    assert_never_a_server_error(post(apps, "policy_model", endpoint, json=body))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(body=raw_bytes, endpoint=st.sampled_from(["responses", "chat/completions"]))
def test_any_bytes_get_a_4xx_never_a_5xx(apps: Serve, body: bytes, endpoint: str) -> None:
    response = post(apps, "policy_model", endpoint, content=body, headers={"content-type": "application/json"})
    assert_never_a_server_error(response)
    assert response.status_code >= 400 or body.startswith(b"{")

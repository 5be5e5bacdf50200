"""Faults survived, against the simulator: what the client sees for each, nothing hangs, nothing is lost,
and the budget is never exceeded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import ray
from conftest import Serve, SimAdmin, sim_app, wait_ingress_settled

from serve_app.budget import LEDGER_NAMESPACE, ledger_name
from serve_app.config import Retries, Timeouts
from serve_app.serve_config import DEPLOYMENT
from serve_app.simulator import HANG, RESET_MID_BODY, BackgroundSimulator, tokens_trigger

pytestmark = pytest.mark.serve

FAST_RETRIES = Retries(max_attempts=5, backoff_initial_s=0.05, backoff_max_s=0.2, retry_after_max_s=30)


@pytest.fixture(scope="module")
def apps(serve_instance: Serve, simulator: BackgroundSimulator) -> Serve:
    serve_instance.deploy(
        sim_app(
            "storm",
            simulator,
            budget=8,
            retries=Retries(max_attempts=3, backoff_initial_s=0.05, retry_after_max_s=30),
            timeouts=Timeouts(total_s=8),
        ),
        sim_app("flaky", simulator, budget=4, retries=FAST_RETRIES),
        sim_app(
            "impatient",
            simulator,
            budget=4,
            retries=Retries(max_attempts=2, backoff_initial_s=0.05),
            timeouts=Timeouts(read_s=1, total_s=3),
        ),
        sim_app("killable", simulator, budget=4, replicas=2),
    )
    return serve_instance


async def fire(
    url: str, bodies: list[dict[str, Any]], concurrency: int, timeout_s: float = 60
) -> list[tuple[int, float, httpx.Response]]:
    """POST every body with at most `concurrency` in flight; (status, seconds, response) for each, in order."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=timeout_s, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def one(body: dict[str, Any]) -> tuple[int, float, httpx.Response]:
            async with gate:
                started = time.monotonic()
                response = await client.post(url, json=body)
                return response.status_code, time.monotonic() - started, response

        return await asyncio.gather(*(one(body) for body in bodies))


def is_envelope(response: httpx.Response) -> bool:
    try:
        return set(response.json()["error"]) == {"message", "type", "param", "code"}
    except (ValueError, KeyError, TypeError):
        return False


def test_a_429_storm_ends_every_request_in_success_or_a_429_by_its_deadline_within_budget(
    apps: Serve, sim_admin: SimAdmin
) -> None:
    sim_admin.configure(rpm=60)  # 10 requests per 10 s window, against 200 offered at once
    started = time.monotonic()
    results = asyncio.run(fire(f"{apps.base_url('storm')}/responses", [{"input": "hi"}] * 200, concurrency=50))
    elapsed = time.monotonic() - started
    statuses = [status for status, _, _ in results]
    assert len(results) == 200 and set(statuses) <= {200, 429}, set(statuses)
    assert statuses.count(200) >= 10  # Azure's quota was used
    for status, seconds, response in results:
        assert seconds < 8 + 3  # the total deadline, plus a little for the queue ahead of it
        if status == 429:
            assert is_envelope(response) and response.json()["error"]["code"] == "429"
            assert int(response.headers["retry-after"]) >= 0
    assert elapsed < 20
    stats = sim_admin.stats()
    assert stats["peak_in_flight"] <= 8 and stats["rate_limited"] > 0


def test_bursts_of_500_and_503_are_retried_away(apps: Serve, sim_admin: SimAdmin) -> None:
    sim_admin.fault(500, count=6)
    sim_admin.fault(503, count=6)
    results = asyncio.run(fire(f"{apps.base_url('flaky')}/responses", [{"input": "hi"}] * 8, concurrency=8))
    assert [status for status, _, _ in results] == [200] * 8
    assert sim_admin.stats()["faults_injected"] == 12


def test_a_connection_reset_mid_body_is_a_502_after_retries(apps: Serve, sim_admin: SimAdmin) -> None:
    ((status, seconds, response),) = asyncio.run(
        fire(f"{apps.base_url('flaky')}/responses", [{"input": f"x {RESET_MID_BODY}"}], 1)
    )
    assert status == 502 and is_envelope(response) and response.json()["error"]["code"] == "upstream_unavailable"
    assert sim_admin.stats()["accepted_total"] == FAST_RETRIES.max_attempts and seconds < 5


def test_an_upstream_hanging_past_the_read_timeout_is_a_504_by_the_total_deadline(
    apps: Serve, sim_admin: SimAdmin
) -> None:
    ((status, seconds, response),) = asyncio.run(
        fire(f"{apps.base_url('impatient')}/responses", [{"input": f"x {HANG}"}], 1)
    )
    assert status == 504 and is_envelope(response) and response.json()["error"]["code"] == "upstream_timeout"
    assert 1 <= seconds < 3 + 1.5
    wait_for(lambda: sim_admin.stats()["in_flight"] == 0, "abandoned upstream calls to be closed")


def test_a_stream_stalling_past_the_read_timeout_ends_in_response_failed(apps: Serve, sim_admin: SimAdmin) -> None:
    sim_admin.configure(inter_token_s=2.5)
    with httpx.stream(
        "POST",
        f"{apps.base_url('impatient')}/responses",
        timeout=30,
        json={"input": f"x {tokens_trigger(20)}", "stream": True},
    ) as response:
        events = [line for line in response.iter_lines() if line.startswith("event: ")]
    assert response.status_code == 200
    assert events[0] == "event: response.created" and events[-1] == "event: response.failed"


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def members(app: str) -> dict[str, Any]:
    ledger = ray.get_actor(ledger_name(app, DEPLOYMENT), namespace=LEDGER_NAMESPACE)
    return ray.get(ledger.state.remote())["members"]


def test_a_replica_killed_under_load_fails_its_calls_and_the_rest_succeed(apps: Serve, sim_admin: SimAdmin) -> None:
    wait_for(lambda: len(members("killable")) == 2, "two replicas in the budget")
    wait_ingress_settled(["killable"])
    victim = next(iter(members("killable")))
    sim_admin.configure(latency_s=2.0)

    async def kill_midway() -> list[tuple[int, float, httpx.Response]]:
        load = asyncio.create_task(
            fire(f"{apps.base_url('killable')}/responses", [{"input": "hi"}] * 16, concurrency=16)
        )
        await asyncio.sleep(0.7)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)  # members are keyed by actor name
        return await load

    results = asyncio.run(kill_midway())
    statuses = [status for status, _, _ in results]
    assert len(results) == 16 and all(seconds < 30 for _, seconds, _ in results)  # an error, never a hang
    assert statuses.count(200) >= 8 and set(statuses) <= {200, 500, 502, 503}, statuses
    # Serve replaces the replica; the survivors and the newcomer share the budget again.
    wait_for(
        lambda: len(members("killable")) == 2 and victim not in members("killable"), "the replacement in the budget"
    )
    sim_admin.configure(latency_s=0.1)
    after = asyncio.run(fire(f"{apps.base_url('killable')}/responses", [{"input": "hi"}] * 16, concurrency=16))
    assert [status for status, _, _ in after] == [200] * 16
    assert sim_admin.stats()["peak_in_flight"] <= 4


def test_scaling_down_drains_in_flight_calls_and_never_exceeds_the_budget(
    apps: Serve, simulator: BackgroundSimulator, sim_admin: SimAdmin
) -> None:
    wait_for(lambda: len(members("killable")) == 2, "two replicas in the budget")
    sim_admin.configure(latency_s=2.0)

    async def shrink_midway() -> list[tuple[int, float, httpx.Response]]:
        load = asyncio.create_task(fire(f"{apps.base_url('killable')}/responses", [{"input": "hi"}] * 8, concurrency=8))
        await asyncio.sleep(0.7)
        await asyncio.to_thread(
            apps.deploy,
            *[
                sim_app(name, simulator, **kwargs)
                for name, kwargs in (
                    (
                        "storm",
                        {
                            "budget": 8,
                            "retries": Retries(max_attempts=3, backoff_initial_s=0.05, retry_after_max_s=30),
                            "timeouts": Timeouts(total_s=8),
                        },
                    ),
                    ("flaky", {"budget": 4, "retries": FAST_RETRIES}),
                    (
                        "impatient",
                        {
                            "budget": 4,
                            "retries": Retries(max_attempts=2, backoff_initial_s=0.05),
                            "timeouts": Timeouts(read_s=1, total_s=3),
                        },
                    ),
                    ("killable", {"budget": 4, "replicas": 1}),
                )
            ],
        )
        return await load

    results = asyncio.run(shrink_midway())
    assert [status for status, _, _ in results] == [200] * 8
    assert sim_admin.stats()["peak_in_flight"] <= 4
    wait_for(lambda: len(members("killable")) == 1, "the stopped replica to leave the budget")

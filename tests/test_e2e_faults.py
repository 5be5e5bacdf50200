"""Faults survived, against the simulator: what the client sees for each, nothing hangs, nothing is lost,
and the budget is never exceeded."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import httpx
import pytest
import ray
from support.ledger import ledger_members
from support.load import fire
from support.serve import Serve, sim_app
from support.sim_admin import SimAdmin
from support.waiting import wait_until

from serve_app.cluster import wait_ingress_settled
from serve_app.config import Retries, Timeouts
from serve_app.simulator import HANG, RESET_MID_BODY, BackgroundSimulator, tokens_trigger

pytestmark = pytest.mark.serve

FAST_RETRIES = Retries(max_attempts=5, backoff_initial_s=0.05, backoff_max_s=0.2, retry_after_max_s=30)


def fault_apps(simulator: BackgroundSimulator, killable_replicas: int = 2) -> list[dict[str, Any]]:
    """The module's apps; redeployed with one killable replica to scale it down."""
    return [
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
        sim_app("killable", simulator, budget=4, replicas=killable_replicas),
    ]


@pytest.fixture(scope="module")
def apps(serve_instance: Serve, simulator: BackgroundSimulator) -> Serve:
    serve_instance.deploy(*fault_apps(simulator))
    return serve_instance


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
    wait_until(lambda: sim_admin.stats()["in_flight"] == 0, "abandoned upstream calls to be closed")


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


def test_a_replica_killed_under_load_loses_no_request_and_answers_nothing_in_plain_text(
    apps: Serve, sim_admin: SimAdmin
) -> None:
    wait_until(lambda: len(ledger_members("killable")) == 2, "two replicas in the budget")
    wait_ingress_settled(["killable"])
    victim = next(iter(ledger_members("killable")))
    sim_admin.configure(latency_s=1.0)
    count = 32  # 16 on each replica: 2 at the upstream, 14 in its queue

    async def kill_midway() -> list[httpx.Response | httpx.HTTPError]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as client:

            async def one(i: int) -> httpx.Response | httpx.HTTPError:
                try:
                    return await client.post(f"{apps.base_url('killable')}/responses", json={"input": f"request {i}"})
                except httpx.HTTPError as exc:  # a reset, counted as such
                    return exc

            load = asyncio.gather(*(one(i) for i in range(count)))
            await asyncio.sleep(1.5)
            ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)  # members are keyed by actor name
            return await load

    answers = asyncio.run(kill_midway())
    failed = [
        f"{a.status_code} {a.text[:200]}" if isinstance(a, httpx.Response) else repr(a)
        for a in answers
        if not isinstance(a, httpx.Response) or a.status_code != 200
    ]
    # Every request waiting in the killed replica's queue went to the other one (HAProxy sends it again),
    # and so did its calls at the upstream, whose answers died with it.
    assert failed == [], failed
    reached = {int(n) for body in sim_admin.requests() for n in re.findall(r"request (\d+)", json.dumps(body))}
    assert reached == set(range(count))  # counted at the simulator too
    assert sim_admin.stats()["accepted_total"] <= count + 2  # at most the victim's share made twice
    assert sim_admin.stats()["peak_in_flight"] <= 4
    # Serve replaces the replica; the survivors and the newcomer share the budget again.
    wait_until(
        lambda: len(ledger_members("killable")) == 2 and victim not in ledger_members("killable"),
        "the replacement in the budget",
    )
    sim_admin.configure(latency_s=0.1)
    after = asyncio.run(fire(f"{apps.base_url('killable')}/responses", [{"input": "hi"}] * 16, concurrency=16))
    assert [status for status, _, _ in after] == [200] * 16
    assert sim_admin.stats()["peak_in_flight"] <= 4


def test_scaling_down_drains_in_flight_calls_and_never_exceeds_the_budget(
    apps: Serve, simulator: BackgroundSimulator, sim_admin: SimAdmin
) -> None:
    wait_until(lambda: len(ledger_members("killable")) == 2, "two replicas in the budget")
    sim_admin.configure(latency_s=2.0)

    async def shrink_midway() -> list[tuple[int, float, httpx.Response]]:
        load = asyncio.create_task(fire(f"{apps.base_url('killable')}/responses", [{"input": "hi"}] * 8, concurrency=8))
        await asyncio.sleep(0.7)
        await asyncio.to_thread(apps.deploy, *fault_apps(simulator, killable_replicas=1))
        return await load

    results = asyncio.run(shrink_midway())
    assert [status for status, _, _ in results] == [200] * 8
    assert sim_admin.stats()["peak_in_flight"] <= 4
    wait_until(lambda: len(ledger_members("killable")) == 1, "the stopped replica to leave the budget")

"""The budget across replicas, against the simulator counting peak in-flight requests: exact division,
resizing through a redeployed config without restarts, and other Serve apps sharing the budget."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import ray
from support.ledger import ledger_members, ledger_state
from support.load import HI, Load, fire
from support.serve import Serve, sim_app
from support.sim_admin import SimAdmin
from support.waiting import wait_until

from serve_app.budget import LEDGER_NAMESPACE, ledger_name
from serve_app.config import Timeouts
from serve_app.serve_config import DEPLOYMENT
from serve_app.simulator import BackgroundSimulator

pytestmark = pytest.mark.serve

APP = "budget_model"


def settled(total: int, replicas: int, app: str = APP) -> Callable[[], bool]:
    def check() -> bool:
        state = ledger_state(app)
        members = list(state["members"].values())
        return (
            state["total"] == total
            and len(members) == replicas
            and sorted(m["capacity"] for m in members)
            == sorted(total // replicas + (i < total % replicas) for i in range(replicas))
        )

    return check


def sample_upstream(sim_admin: SimAdmin, until: threading.Event, period_s: float = 0.02) -> list[tuple[int, int]]:
    """(calls accepted so far, calls in flight) at the simulator, sampled until `until` is set (on a thread)."""
    samples = []
    while not until.is_set():
        stats = sim_admin.stats()
        samples.append((stats["accepted_total"], stats["in_flight"]))
        time.sleep(period_s)
    return samples


def in_flight_while_calls_wait(
    serve: tuple[Serve, BackgroundSimulator, SimAdmin], *, requests: int, concurrency: int, latency_s: float
) -> list[int]:
    """N=8 over 3 replicas: `requests` calls `concurrency` at a time, all answered within the budget; the
    calls in flight at the simulator, sampled from when the first 8 are in until the last has gone out."""
    serve_instance, simulator, sim_admin = serve
    serve_instance.deploy(sim_app(APP, simulator, budget=8, replicas=3))
    wait_until(settled(8, 3), "shares 3, 3, 2", timeout_s=60)
    sim_admin.configure(latency_s=latency_s)
    url = f"{serve_instance.base_url(APP)}/responses"
    asyncio.run(fire(url, [HI] * concurrency, concurrency=concurrency, timeout_s=120))  # warm connections
    sim_admin.reset()
    done = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        sampling = pool.submit(sample_upstream, sim_admin, done)
        try:
            results = asyncio.run(fire(url, [HI] * requests, concurrency=concurrency, timeout_s=120))
        finally:
            done.set()
        samples = sampling.result()
    assert [status for status, _, _ in results] == [200] * requests
    assert sim_admin.stats()["peak_in_flight"] == 8
    waiting = [in_flight for accepted, in_flight in samples if 8 <= accepted < requests]
    assert waiting
    return waiting


def test_eight_slots_over_three_replicas_are_used_exactly_and_fully(
    serve_instance: Serve, simulator: BackgroundSimulator, sim_admin: SimAdmin
) -> None:
    serve = (serve_instance, simulator, sim_admin)
    waiting = in_flight_while_calls_wait(serve, requests=320, concurrency=64, latency_s=0.2)
    # Fully: from when the first 8 calls are in until the last call has gone out, some request is
    # waiting, so Azure should see all 8 slots busy. Counted at the simulator, not timed at the
    # client. The bound is loose on purpose: it allows the moments between a call's end and the next
    # one's start in its slot, and a slot's move to the last queue at the end, both longer on a busy
    # shared machine (7.5 of 8 measured there). A share that sat idle while requests queued elsewhere
    # would pull it far lower.
    assert sum(waiting) / len(waiting) > 6.5, sorted(Counter(waiting).items())


def test_the_end_of_a_run_over_unequal_shares_leaves_no_slots_idle_while_requests_wait(
    serve_instance: Serve, simulator: BackgroundSimulator, sim_admin: SimAdmin
) -> None:
    # 240 at once over shares 3, 3, 2: HAProxy gives each replica 80. Were the slots divided by rank alone,
    # the 2-slot replica's queue would outlast the others' by half, and for the last third of the run
    # only 2 of 8 slots would work. Counted at the simulator: how often were 3 or more slots idle?
    serve = (serve_instance, simulator, sim_admin)
    waiting = in_flight_while_calls_wait(serve, requests=240, concurrency=240, latency_s=0.25)
    idle = sum(1 for in_flight in waiting if in_flight <= 5) / len(waiting)
    assert idle < 0.15, sorted(Counter(waiting).items())


def test_resizing_through_a_redeployed_config_restarts_nothing_and_never_exceeds_the_budget_in_force(
    serve_instance: Serve, simulator: BackgroundSimulator, sim_admin: SimAdmin
) -> None:
    serve_instance.deploy(sim_app(APP, simulator, budget=8, replicas=2))
    wait_until(settled(8, 2), "shares 4, 4", timeout_s=60)
    original = set(ledger_members(APP))
    sim_admin.configure(latency_s=0.1)
    with Load(f"{serve_instance.base_url(APP)}/responses", concurrency=32) as load:
        time.sleep(1)
        sim_admin.reset()
        # N 8 -> 4 alone: user_config only, so the same replicas must carry on.
        serve_instance.deploy(sim_app(APP, simulator, budget=4, replicas=2))
        wait_until(settled(4, 2), "shares 2, 2", timeout_s=60)
        assert set(ledger_members(APP)) == original, "a replica restarted for a budget change"
        assert sim_admin.stats()["peak_in_flight"] <= 8  # the old budget drains; nothing new above it
        time.sleep(0.5)
        sim_admin.reset()
        time.sleep(2)
        assert sim_admin.stats()["peak_in_flight"] == 4
        # R 2 -> 4: new replicas join, and the four share the same N.
        sim_admin.reset()
        serve_instance.deploy(sim_app(APP, simulator, budget=4, replicas=4))
        wait_until(settled(4, 4), "shares 1, 1, 1, 1", timeout_s=60)
        assert original <= set(ledger_members(APP)), "an existing replica restarted when replicas were added"
        assert sim_admin.stats()["peak_in_flight"] <= 4
        time.sleep(2)
        assert sim_admin.stats()["peak_in_flight"] == 4
    assert set(load.statuses) == {200}


def test_a_handle_call_from_another_app_works_and_counts_against_the_same_budget(
    serve_instance: Serve, simulator: BackgroundSimulator, sim_admin: SimAdmin
) -> None:
    judge = {
        "name": "judge",
        "route_prefix": "/judge",
        "import_path": "serve_app.examples.judge:build_app",
        "args": {"model_app": APP},
    }
    serve_instance.deploy(sim_app(APP, simulator, budget=2, replicas=1), judge)
    wait_until(settled(2, 1), "share 2", timeout_s=60)
    sim_admin.configure(latency_s=0.3)
    sim_admin.reset()

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            http = [client.post(f"{serve_instance.base_url(APP)}/responses", json={"input": "hi"}) for _ in range(4)]
            handle = [
                client.post(f"{serve_instance.url}/judge/grade", json={"question": "2+2?", "answer": "4"})
                for _ in range(4)
            ]
            return await asyncio.gather(*http, *handle)

    responses = asyncio.run(both())
    assert [r.status_code for r in responses] == [200] * 8
    grade = responses[-1].json()
    assert set(grade["grade"]) == {"correct", "reason"} and grade["usage"]["total_tokens"] > 0
    stats = sim_admin.stats()
    assert stats["peak_in_flight"] == 2 and stats["accepted_total"] == 8


def test_a_rolling_restart_shares_one_budget_across_old_and_new_replicas(
    serve_instance: Serve, simulator: BackgroundSimulator, sim_admin: SimAdmin
) -> None:
    serve_instance.deploy(sim_app(APP, simulator, budget=4, replicas=2))
    wait_until(settled(4, 2), "shares 2, 2", timeout_s=60)
    before = set(ledger_members(APP))
    sim_admin.configure(latency_s=0.3)
    with Load(f"{serve_instance.base_url(APP)}/responses", concurrency=24) as load:
        time.sleep(1)
        sim_admin.reset()
        # New args are a new code version: Serve replaces every replica, old and new side by side.
        serve_instance.deploy(sim_app(APP, simulator, budget=4, replicas=2, timeouts=Timeouts(read_s=300)))
        wait_until(
            lambda: settled(4, 2)() and not before & set(ledger_members(APP)), "two new replicas, settled", timeout_s=60
        )
        time.sleep(1)
    assert sim_admin.stats()["peak_in_flight"] <= 4
    assert set(load.statuses) == {200}, load.failures[:5]


STALL_APP = "stall_model"
STALL_LEASE_S = 2.0  # members fence at 1.6 s; the stalls below run past the whole lease


def pid_of(actor: Any) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def freeze(pid: int, seconds: float) -> float:
    """SIGSTOP the process for `seconds`; returns the monotonic time it was resumed."""
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    return time.monotonic()


def test_the_budget_holds_while_the_ledger_or_a_replica_is_frozen_past_every_lease_and_settles_in_seconds(
    serve_instance: Serve, simulator: BackgroundSimulator, sim_admin: SimAdmin
) -> None:
    app = sim_app(STALL_APP, simulator, budget=8, replicas=3)
    app["deployments"][0]["ray_actor_options"]["runtime_env"] = {
        "env_vars": {"SERVE_APP_BUDGET_LEASE_S": str(STALL_LEASE_S)}
    }
    serve_instance.deploy(app)
    exact = settled(8, 3, STALL_APP)
    wait_until(exact, what="shares 3, 3, 2")
    ledger_actor = ray.get_actor(ledger_name(STALL_APP, DEPLOYMENT), namespace=LEDGER_NAMESPACE)
    replica = max(ledger_state(STALL_APP)["members"].items(), key=lambda kv: kv[1]["rank"])[0]
    targets = {"ledger": pid_of(ledger_actor), "replica": pid_of(ray.get_actor(replica, namespace="serve"))}
    sim_admin.configure(latency_s=0.3)
    settle_s: dict[str, float] = {}
    with Load(f"{serve_instance.base_url(STALL_APP)}/responses", concurrency=48) as load:
        time.sleep(1)
        sim_admin.reset()
        for what, pid in targets.items():
            resumed = freeze(pid, 3 * STALL_LEASE_S)
            wait_until(exact, timeout_s=30, what=f"shares 3, 3, 2 after the {what} resumed")
            settle_s[what] = time.monotonic() - resumed
            assert sim_admin.stats()["peak_in_flight"] <= 8, what
        sim_admin.reset()
        time.sleep(1.5)
        assert sim_admin.stats()["peak_in_flight"] == 8  # and the whole budget in use again
    assert max(settle_s.values()) < 3, settle_s
    assert set(load.statuses) == {200}, load.failures[:5]

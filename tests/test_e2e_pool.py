"""One model server over three simulated Azure deployments (regions): each budget exact across replicas, the
load spread by free capacity, and one region's 429 storm, outage or broken streaming costing the client nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from support.ledger import ledger_state
from support.load import HI, Load, fire
from support.serve import KEY_ENV, Serve, sim_app
from support.sim_admin import SimAdmin
from support.waiting import wait_until

from serve_app.budget import share
from serve_app.simulator import BackgroundSimulator, SimulatorConfig
from serve_app.simulator.triggers import CONTENT_FILTER_PROMPT

pytestmark = pytest.mark.serve

APP = "pool_model"
REGIONS = ("primary", "eastus2", "westus")
BUDGETS = {"primary": 6, "eastus2": 4, "westus": 2}


class Region:
    """A simulated deployment in one region: its own simulator, so its own latency, quota, faults and counters."""

    def __init__(self, name: str, latency_s: float) -> None:
        self.name, self.config = name, SimulatorConfig(latency_s=latency_s, ttft_s=latency_s)
        self.sim = BackgroundSimulator(self.config)
        self.sim.start()
        self.admin = SimAdmin(self.sim)
        self.port = self.sim.port
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.sim.stop()
            self.running = False

    def restart(self) -> None:
        """Back on the same port, as a region that recovers at the same address."""
        self.sim = BackgroundSimulator(self.config, port=self.port)
        self.sim.start()
        self.admin = SimAdmin(self.sim)
        self.running = True


@pytest.fixture
def regions() -> Iterator[dict[str, Region]]:
    made = {name: Region(name, latency_s) for name, latency_s in zip(REGIONS, (0.2, 0.2, 0.2), strict=True)}
    yield made
    for region in made.values():
        region.stop()


def pool_app(regions: dict[str, Region], budgets: dict[str, int], replicas: int = 1, **upstream: Any) -> dict[str, Any]:
    first, *others = regions
    app = sim_app(APP, regions[first].sim, budget=budgets[first], replicas=replicas, **upstream)
    app["args"]["upstreams"] = [
        {
            "name": name,
            "openai_base_url": regions[name].sim.base_url,
            "default_query": {"api-version": "2024-10-21"},
            "openai_api_key_env": KEY_ENV,
        }
        for name in others
    ]
    app["deployments"][0]["user_config"]["upstream_budgets"] = {name: budgets[name] for name in others}
    return app


def settled(budgets: dict[str, int], replicas: int) -> Callable[[], bool]:
    def check() -> bool:
        for name, total in budgets.items():
            state = ledger_state(APP, name)
            held = sorted(m["capacity"] for m in state["members"].values())
            if state["total"] != total or held != sorted(share(total, replicas, i) for i in range(replicas)):
                return False
        return True

    return check


def deploy(serve: Serve, regions: dict[str, Region], budgets: dict[str, int] = BUDGETS, replicas: int = 1) -> str:
    serve.deploy(pool_app(regions, budgets, replicas))
    wait_until(settled(budgets, replicas), f"every upstream's shares of {budgets} over {replicas}", timeout_s=60)
    return serve.base_url(APP)


def reset(regions: dict[str, Region]) -> None:
    for region in regions.values():
        region.admin.reset()


def test_three_deployments_run_at_their_summed_budget_with_every_peak_exact_across_replicas(
    serve_instance: Serve, regions: dict[str, Region]
) -> None:
    url = deploy(serve_instance, regions, replicas=2)
    asyncio.run(fire(f"{url}/responses", [HI] * 48, concurrency=48, timeout_s=120))  # warm connections
    reset(regions)
    requests = 360
    results = asyncio.run(fire(f"{url}/responses", [HI] * requests, concurrency=48, timeout_s=120))
    assert [status for status, _, _ in results] == [200] * requests
    stats = {name: region.admin.stats() for name, region in regions.items()}
    assert {name: s["peak_in_flight"] for name, s in stats.items()} == BUDGETS
    # Equal latencies: each region serves in proportion to its budget (6:4:2 of 360 is 180, 120, 60).
    for name, s in stats.items():
        expected = requests * BUDGETS[name] / sum(BUDGETS.values())
        assert abs(s["accepted_total"] - expected) < 0.25 * expected, {n: v["accepted_total"] for n, v in stats.items()}
    models = httpx.get(f"{url}/models", timeout=10).json()
    assert [model["id"] for model in models["data"]] == ["gpt-4o"]


def test_each_upstreams_budget_resizes_live_and_its_peak_follows(
    serve_instance: Serve, regions: dict[str, Region]
) -> None:
    url = deploy(serve_instance, regions, replicas=2)
    smaller = {"primary": 6, "eastus2": 2, "westus": 3}
    with Load(f"{url}/responses", concurrency=32) as load:
        time.sleep(1)
        serve_instance.deploy(pool_app(regions, smaller, replicas=2))
        wait_until(settled(smaller, 2), "the new shares", timeout_s=60)
        assert regions["eastus2"].admin.stats()["peak_in_flight"] <= BUDGETS["eastus2"]
        time.sleep(0.5)
        reset(regions)
        time.sleep(2)
        assert {name: region.admin.stats()["peak_in_flight"] for name, region in regions.items()} == smaller
    assert set(load.statuses) == {200}, load.failures[:3]


def test_a_429_storm_in_one_region_costs_the_client_no_errors(
    serve_instance: Serve, regions: dict[str, Region]
) -> None:
    url = deploy(serve_instance, regions)
    reset(regions)
    storm = regions["primary"].admin
    storm.fault(429, count=10_000, retry_after_s=30)  # every call, each asking for 30 s
    results = asyncio.run(fire(f"{url}/responses", [HI] * 120, concurrency=24, timeout_s=60))
    assert [status for status, _, _ in results] == [200] * 120
    # Closed after its first 429s, for the 30 s Azure asked: only the calls already on their way met it.
    assert 1 <= storm.stats()["faults_injected"] <= BUDGETS["primary"]
    served = {name: region.admin.stats()["by_status"].get("200", 0) for name, region in regions.items()}
    assert served["primary"] == 0 and served["eastus2"] + served["westus"] == 120


def test_an_unreachable_region_costs_no_errors_and_takes_calls_again_once_back(
    serve_instance: Serve, regions: dict[str, Region]
) -> None:
    url = deploy(serve_instance, regions)
    with Load(f"{url}/responses", concurrency=16) as load:
        time.sleep(1)
        regions["westus"].stop()
        time.sleep(3)
        during = len(load.statuses)
        regions["westus"].restart()
        wait_until(lambda: regions["westus"].admin.stats()["accepted_total"] > 0, "westus serving again", timeout_s=20)
        wait_until(lambda: regions["westus"].admin.stats()["peak_in_flight"] == 2, "its whole budget", timeout_s=20)
    assert during > 0
    assert set(load.statuses) == {200}, load.failures[:3]


def test_a_region_failing_only_streams_gets_none_while_its_other_calls_go_on(
    serve_instance: Serve, regions: dict[str, Region]
) -> None:
    url = deploy(serve_instance, regions)
    reset(regions)
    broken = regions["primary"].admin
    broken.fault(503, count=10_000, streams_only=True)

    async def both() -> tuple[list[str], list[int]]:
        async with httpx.AsyncClient(timeout=60) as client:

            async def stream() -> str:
                async with client.stream("POST", f"{url}/responses", json={"input": "hi", "stream": True}) as r:
                    body = await r.aread()
                    return f"{r.status_code} {'response.completed' in body.decode()}"

            async def plain() -> int:
                return (await client.post(f"{url}/responses", json=HI)).status_code

            streams = asyncio.gather(*(stream() for _ in range(30)))
            plains = asyncio.gather(*(plain() for _ in range(30)))
            return list(await streams), list(await plains)

    streams, plains = asyncio.run(both())
    assert streams == ["200 True"] * 30 and plains == [200] * 30
    assert broken.stats()["faults_injected"] >= 1
    assert broken.stats()["streams_completed"] == 0 and broken.stats()["by_status"].get("200", 0) > 0


def test_a_requests_own_fault_is_answered_once_and_never_tried_elsewhere(
    serve_instance: Serve, regions: dict[str, Region]
) -> None:
    url = deploy(serve_instance, regions)
    reset(regions)
    filtered = httpx.post(f"{url}/responses", json={"input": f"hi {CONTENT_FILTER_PROMPT}"}, timeout=30)
    assert filtered.status_code == 400 and filtered.json()["error"]["code"] == "content_filter"
    assert sum(region.admin.stats()["requests_total"] for region in regions.values()) == 1


def test_with_every_region_throttled_for_long_the_client_gets_the_shortest_retry_after(
    serve_instance: Serve, regions: dict[str, Region]
) -> None:
    url = deploy(serve_instance, regions)
    for region, wait in zip(regions.values(), (300, 100, 200), strict=True):
        region.admin.fault(429, count=10_000, retry_after_s=wait)
    answer = httpx.post(f"{url}/responses", json=HI, timeout=30)
    assert answer.status_code == 429
    assert 99 <= int(answer.headers["retry-after"]) <= 100
    assert sum(region.admin.stats()["requests_total"] for region in regions.values()) == 3  # each tried once

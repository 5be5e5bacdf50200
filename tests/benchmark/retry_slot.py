"""Retry waits under 429 storms: a call keeps its upstream slot while it waits to retry.

    python -m tests.benchmark.retry_slot --n 400 --budget 32 --out F

Measured in-process, at the level where the policy lives: a pool of one upstream (`Pool`, the
server's queue) whose limiter holds `budget` slots, and an `AzureClient` called in a slot taken from
it, as the server takes one around `client.complete`, against a simulator in its own process. This
is cheaper and more deterministic than a deployment, and measures the same thing: the Serve hop in
front of the pool adds nothing to how the retries go. (Lending the slot out during the wait was measured here too, and
rejected: it multiplied upstream calls and failed calls of long storms; see the README.)

Three storms, each with the project's default `Retries`:

- quota/4, quota/8: Azure's own kind. The simulator allows `rpm` pro rata over 1 s windows (`--window`),
  sized so that the workload needs about 4 (8) windows; a 429 says "retry after the window
  ends", so every 429 of a window asks for the same moment.
- burst: the next 3 x budget calls get 429 "retry after 2 s" (twice the window) whatever the quota
  (a transient throttle), then everything succeeds.

Reported per run: time to finish the whole workload, calls that failed, upstream calls and 429s,
and the simulator's peak of calls in flight, which must not exceed the budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from pydantic import SecretStr

from serve_app.azure import AzureClient
from serve_app.config import Retries, Timeouts
from serve_app.errors import OpenAIError

from .common import Upstream, http_json, pool_of_one, pool_slot
from .loadgen import percentile, run_async

BODY = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}


async def workload(sim: Upstream, n: int, budget: int) -> dict[str, Any]:
    client = AzureClient(
        base_url=sim.url,
        deployment="gpt-4o",
        query={"api-version": "2024-10-21"},
        api_key=SecretStr("sim-key"),
        timeouts=Timeouts(),
        retries=Retries(),
    )
    pool = pool_of_one(client, budget)
    failures: dict[str, int] = {}
    latencies: list[float] = []

    async def one() -> None:
        started = time.monotonic()
        try:
            async with pool_slot(pool) as upstream:
                await upstream.complete(BODY)
            latencies.append(time.monotonic() - started)
        except OpenAIError as error:
            failures[str(error.status)] = failures.get(str(error.status), 0) + 1

    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    wall = time.monotonic() - start
    await client.aclose()
    stats = http_json(f"{sim.url}/sim/stats")
    latencies.sort()
    return {
        "n": n,
        "budget": budget,
        "wall_s": wall,
        "ok": len(latencies),
        "failed": sum(failures.values()),
        "failures": failures,
        "upstream_calls": stats["requests_total"],
        "upstream_429": stats["by_status"].get("429", 0),
        "upstream_peak_in_flight": stats["peak_in_flight"],
        "within_budget": stats["peak_in_flight"] <= budget,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
    }


async def measure(n: int, budget: int, rounds: int, window_s: float) -> list[dict[str, Any]]:
    results = []
    storms = {
        # Azure's quota, pro rata over 1 s windows, sized so the workload needs about 4 (then 8) windows.
        "quota/4": ({"latency_s": 0.1, "rpm": round(n / 4 * 60 / window_s), "rate_limit_window_s": window_s}, None),
        "quota/8": ({"latency_s": 0.1, "rpm": round(n / 8 * 60 / window_s), "rate_limit_window_s": window_s}, None),
        "burst": ({"latency_s": 0.1}, {"status": 429, "count": 3 * budget, "retry_after_s": 2 * window_s}),
    }
    for storm, (config, fault) in storms.items():
        with Upstream(config) as sim:
            for round_ in range(rounds):
                sim.reset()
                if fault is not None:
                    http_json(f"{sim.url}/sim/faults", fault)
                result = {"storm": storm, "round": round_, **await workload(sim, n, budget)}
                results.append(result)
                print(
                    f"  retry    {storm:7}: {result['wall_s']:5.2f} s, {result['failed']} failed, "
                    f"{result['upstream_calls']} upstream calls ({result['upstream_429']} x 429), upstream peak in "
                    f"flight {result['upstream_peak_in_flight']} (budget {budget})",
                    file=sys.stderr,
                    flush=True,
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=400, help="calls in the workload")
    parser.add_argument("--budget", type=int, default=32, help="concurrent upstream calls allowed")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--window", type=float, default=1.0, help="quota window, s (Azure: 1 or 10); burst waits twice that"
    )
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    results = run_async(measure(options.n, options.budget, options.rounds, options.window))
    with open(options.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

"""The pool of upstreams, measured: what choosing an upstream costs, and what the pool delivers.

    python -m tests.benchmark.pool [--quick]        (make bench-pool)

1. Choosing (no Ray): `Pool.choose` and a whole slot taken and given back (`Pool.acquire` +
   `Pool.release`, the path every call takes), for a pool of three beside a pool of one (a server
   with a single upstream), in one process, interleaved round by round.
2. Throughput (Ray, HAProxy ingress, one replica): one model server over three simulated regions,
   each its own simulator process, budgets 16, 8 and 4, under closed-loop load at twice the summed
   budget, against the ideal `sum(budget / latency)`; beside it a single-upstream server with the
   summed budget (28) on a simulator of its own. Latencies of 2 s (a short Azure call) and 0.5 s
   (where this busy machine's turnaround between one call and the next in a slot starts to show).
   Each region's peak in flight is read from its simulator. Then a 429 storm in one region (every
   call there answered 429, retry-after 2 s), and an outage (its simulator process stopped): errors
   the clients saw, and throughput against the ideal of the regions left.

Writes tests/benchmark/RESULTS_pool.md (not for --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import platform
import time
from pathlib import Path
from typing import Any

from serve_app import cluster
from serve_app.config import Retries
from serve_app.limiter import Limiter
from serve_app.upstreams import Pool, Upstream

from . import loadgen
from .cluster_run import model_app, ray_env
from .common import Upstream as Simulator
from .common import free_port

RESULTS = Path(__file__).resolve().parent / "RESULTS_pool.md"
BUDGETS = {"primary": 16, "eastus2": 8, "westus": 4}
STORMED, DOWN = "eastus2", "westus"


# --- 1. choosing -------------------------------------------------------------------------------------


def _pool(capacities: list[int]) -> Pool[None]:
    return Pool([Upstream(f"u{i}", None, Limiter(n)) for i, n in enumerate(capacities)], Retries())


async def _choose_costs(calls: int, rounds: int) -> dict[str, float]:
    """Microseconds per call, best round of each (the machine is shared: the best is the least disturbed)."""
    one, three = _pool([28]), _pool([16, 8, 4])
    deadline = time.monotonic() + 3600

    async def cycle_pool(pool: Pool[None]) -> None:
        for _ in range(calls):
            upstream = await pool.acquire(deadline)
            pool.release(upstream, 0.5)

    async def choose(pool: Pool[None]) -> None:
        for _ in range(calls):
            pool.choose()

    cases = {
        "Pool.choose, 1 upstream": lambda: choose(one),
        "Pool.choose, 3 upstreams": lambda: choose(three),
        "slot taken and given back, Pool of 1": lambda: cycle_pool(one),
        "slot taken and given back, Pool of 3": lambda: cycle_pool(three),
    }
    best = dict.fromkeys(cases, math.inf)
    for _ in range(rounds):
        for name, case in cases.items():
            started = time.perf_counter()
            await case()
            best[name] = min(best[name], (time.perf_counter() - started) / calls * 1e6)
    # Half of the three upstreams' slots in use, one of them closed: choosing among what is left.
    held = [await three.acquire(deadline) for _ in range(14)]
    three.upstreams[0].closed_until = time.monotonic() + 3600
    started = time.perf_counter()
    await choose(three)
    best["Pool.choose, 3 upstreams, one closed, half busy"] = (time.perf_counter() - started) / calls * 1e6
    for upstream in held:
        three.release(upstream, None)
    return best


# --- 2. throughput -----------------------------------------------------------------------------------


def pool_app(sims: dict[str, Simulator]) -> dict[str, Any]:
    first, *others = sims
    app = model_app("pool", sims[first].url, BUDGETS[first])
    app["args"]["upstreams"] = [
        {"name": n, "openai_base_url": sims[n].url, "default_query": {"api-version": "2024-10-21"}} for n in others
    ]
    app["deployments"][0]["user_config"]["upstream_budgets"] = {n: BUDGETS[n] for n in others}
    return app


def _ideal(latencies: dict[str, float], names: list[str]) -> float:
    return sum(BUDGETS[n] / latencies[n] for n in names)


def _counts(sims: list[Simulator]) -> tuple[int, int]:
    """(calls answered 200 so far, calls in flight now) over `sims`."""
    answered = in_flight = 0
    for sim in sims:
        with contextlib.suppress(OSError):  # a region whose process was stopped answers nothing more
            stats = sim.stats()
            answered += int(stats["by_status"].get("200", 0))
            in_flight += int(stats["in_flight"])
    return answered, in_flight


async def _measure(
    port: int, app: str, seconds: float, counted: list[Simulator], during: Any = None
) -> tuple[loadgen.Run, float, float]:
    """Closed-loop load; the rate is the calls the simulators answered 200 within a window of steady load,
    so no request crossing the window's edges is lost from the count (the client's own window loses one per
    client at its end: a sixth at these latencies). Also the mean of the calls in flight there, sampled: below
    the budgets, slots sat idle; at the budgets, any gap to the ideal is the simulators' own time."""
    target = loadgen.Target(app, "127.0.0.1", port, f"/{app}/v1/responses", {"model": "gpt-4o", "input": "hello"})
    concurrency = 2 * sum(BUDGETS.values())
    load = asyncio.ensure_future(loadgen.closed_loop(target, concurrency, seconds + 2.0, warmup_s=1.0))
    await asyncio.sleep(1.0)
    if during is not None:
        await asyncio.to_thread(during)
    await asyncio.sleep(1.0)  # settled: closed upstreams closed, the queue full
    (before, _), t0 = await asyncio.to_thread(_counts, counted), time.monotonic()
    samples = []
    while time.monotonic() < t0 + seconds:
        await asyncio.sleep(0.1)
        samples.append((await asyncio.to_thread(_counts, counted))[1])
    (after, _), t1 = await asyncio.to_thread(_counts, counted), time.monotonic()
    return await load, (after - before) / (t1 - t0), sum(samples) / len(samples)


def _throughput(quick: bool) -> list[dict[str, Any]]:
    seconds = 8.0 if quick else 20.0
    sims = {name: Simulator({"latency_s": 0.5}).start() for name in BUDGETS}
    single = Simulator({"latency_s": 0.5}).start()
    port = free_port()
    rows: list[dict[str, Any]] = []
    cluster.start(port=port, env=ray_env(), num_cpus=2)
    try:
        cluster.deploy([pool_app(sims), model_app("single", single.url, sum(BUDGETS.values()))])
        time.sleep(3)  # the ledgers' first grants

        def scenario(name: str, latencies: dict[str, float], app: str = "pool", during: Any = None) -> None:
            for sim_name, sim in sims.items():
                sim.configure(latency_s=latencies[sim_name])
                sim.reset()
            single.configure(latency_s=latencies["primary"])
            single.reset()
            serving = [n for n in BUDGETS if not (name.startswith("outage") and n == DOWN)]
            serving = [n for n in serving if not (name.startswith("429") and n == STORMED)]
            counted = [sims[n] for n in serving] if app == "pool" else [single]
            run, rps, in_flight = loadgen.run_async(_measure(port, app, seconds, counted, during))
            ideal = _ideal(latencies, serving) if app == "pool" else sum(BUDGETS.values()) / latencies["primary"]
            peaks = {n: _peak(sims[n]) for n in BUDGETS if n in serving} if app == "pool" else {"single": _peak(single)}
            summary = run.summary()
            rows.append(
                {
                    "scenario": name,
                    "app": app,
                    "rps": rps,
                    "ideal": ideal,
                    "ratio": rps / ideal,
                    "errors": run.errors,
                    "busy": in_flight / sum(BUDGETS[n] for n in serving),
                    "p50_ms": summary["p50_ms"],
                    "peaks": peaks,
                }
            )
            print(rows[-1], flush=True)

        for latency_s in (2.0, 0.5):
            equal = dict.fromkeys(BUDGETS, latency_s)
            scenario(f"equal latency {latency_s:g} s", equal, app="single")
            scenario(f"equal latency {latency_s:g} s", equal)
        scenario("latencies 1 / 2 / 4 s", {"primary": 1.0, "eastus2": 2.0, "westus": 4.0})
        equal = dict.fromkeys(BUDGETS, 2.0)
        storm = {"status": 429, "count": 1_000_000, "retry_after_s": 2}
        scenario(
            f"429 storm in {STORMED} (retry-after 2 s), latency 2 s",
            equal,
            during=lambda: _post_fault(sims[STORMED], storm),
        )
        sims[STORMED].reset()  # clears its faults
        scenario(f"outage of {DOWN} (process stopped), latency 2 s", equal, during=sims[DOWN].stop)
    finally:
        cluster.stop()
        for sim in [*sims.values(), single]:
            sim.stop()
    return rows


def _peak(sim: Simulator) -> int:
    try:
        return int(sim.stats()["peak_in_flight"])
    except OSError:
        return -1


def _post_fault(sim: Simulator, fault: dict[str, Any]) -> None:
    from .common import http_json

    http_json(f"{sim.url}/sim/faults", fault)


# --- report ------------------------------------------------------------------------------------------


def report(costs: dict[str, float], rows: list[dict[str, Any]], quick: bool) -> str:
    lines = [
        "# The pool of upstreams: choosing cost and throughput",
        "",
        f"`python -m tests.benchmark.pool{' --quick' if quick else ''}`: {platform.machine()},"
        f" Python {platform.python_version()}, 2 CPUs for Ray, the load client and four simulator processes;"
        " the machine is shared, so choosing costs are the best of rounds and throughput is one run each.",
        "",
        "## Choosing an upstream (target < 50 µs per call)",
        "",
        "| what | µs per call |",
        "|---|---|",
        *(f"| {name} | {us:.2f} |" for name, us in costs.items()),
        "",
        "## Throughput against the summed budgets (target >= 0.95 of the ideal)",
        "",
        f"Budgets {', '.join(f'{n} {b}' for n, b in BUDGETS.items())}; closed loop at"
        f" {2 * sum(BUDGETS.values())} clients; req/s: calls the regions serving answered, over a window of"
        " steady load; ideal = sum(budget / latency) of those regions; client errors: non-200 answers or broken"
        " connections the load client saw; slots busy: mean calls in flight at those regions over their budgets.",
        "",
        "| scenario | server | req/s | ideal | ratio | slots busy | client errors | p50 ms | peak in flight |",
        "|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['scenario']} | {r['app']} | {r['rps']:.1f} | {r['ideal']:.1f} | {r['ratio']:.3f} | {r['busy']:.3f}"
            f" | {r['errors']}"
            f" | {r['p50_ms']:.0f} | {', '.join(f'{n} {p}' for n, p in r['peaks'].items())} |"
            for r in rows
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs; writes no report")
    options = parser.parse_args()
    costs = asyncio.run(_choose_costs(20_000 if options.quick else 100_000, 3 if options.quick else 7))
    for name, us in costs.items():
        print(f"{name}: {us:.2f} µs", flush=True)
    rows = _throughput(options.quick)
    text = report(costs, rows, options.quick)
    print(text)
    if not options.quick:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()

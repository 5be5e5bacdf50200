"""The budget through the HAProxy ingress when shares are unequal, and when a replica dies under load.

    python -m tests.benchmark.ingress_faults [--requests 480] [--latency 0.5] [--out F]

One Ray + Serve (the project's flags, `cluster.ingress_env`), one model server of 3 replicas over a
budget of 8 (shares 3, 3, 2), the simulator in this process answering every call after `--latency`:

- tail: `--requests` requests (at least twice 240), 240 at a time, as a closed loop of 240 clients
  that stop when the batch is done. The ideal time is every call back to back in 8 slots,
  ceil(requests / 8) x latency. The machine adds moments between one call and the next, so the run
  is also set against its own pace (calls/s while every client still had a request out): the time
  from its first call against requests / pace isolates what the end of the run costs. Also: the
  slots left idle at the simulator while calls were still to go out (in seconds of the whole budget).
- replica death: 240 requests at once (80 per replica, most of them waiting in its queue), the
  replica holding the first share SIGKILLed (`ray.kill`) 2 s in. Every answer is classified (200, an
  error in the OpenAI envelope with its status and Retry-After, a plain-text error, a connection
  reset), and the requests that failed are looked up at the simulator by a number in their input:
  a request that failed without reaching it was lost in a queue.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import ray

from serve_app import cluster
from serve_app.simulator import BackgroundSimulator, SimulatorConfig
from tests.support.ledger import ledger_members
from tests.support.ports import free_port, isolated_ray_env
from tests.support.serve import KEY_ENV, SIM_KEY, sim_app

from .common import ROOT, machine_details

APP = "ingress_faults"
BUDGET, REPLICAS, CLIENTS = 8, 3, 240


def outcome(answer: httpx.Response | Exception) -> str:
    if isinstance(answer, Exception):
        return f"reset ({type(answer).__name__})"
    if answer.status_code == 200:
        return "200"
    try:
        envelope = set(answer.json()["error"]) == {"message", "type", "param", "code"}
    except (ValueError, KeyError, TypeError):
        envelope = False
    kind = "envelope" if envelope else "plain text"
    return f"{answer.status_code} {kind}, Retry-After {answer.headers.get('retry-after')}"


async def post_all(url: str, count: int, concurrency: int) -> list[httpx.Response | Exception]:
    """`count` requests numbered in their input, `concurrency` at a time; each one's answer or exception."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def one(i: int) -> httpx.Response | Exception:
            async with gate:
                try:
                    return await client.post(url, json={"input": f"request {i}"})
                except httpx.HTTPError as exc:
                    return exc

        return await asyncio.gather(*(one(i) for i in range(count)))


def sample_in_flight(sim: BackgroundSimulator, stop: threading.Event, out: list[tuple[float, int, int]]) -> None:
    with httpx.Client(base_url=sim.base_url, timeout=10) as admin:
        while not stop.is_set():
            stats = admin.get("/sim/stats").json()
            out.append((time.monotonic(), stats["accepted_total"], stats["in_flight"]))
            time.sleep(0.02)


def tail(sim: BackgroundSimulator, url: str, requests: int, latency_s: float) -> dict[str, Any]:
    httpx.post(f"{sim.base_url}/sim/reset")
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_in_flight, args=(sim, stop, samples))
    sampler.start()
    started = time.monotonic()
    answers = asyncio.run(post_all(url, requests, CLIENTS))
    ended = time.monotonic()
    stop.set()
    sampler.join()
    # The machine's own pace: calls per second at the simulator while every client had a request out (the
    # batch not yet run out), the gaps between one call and the next in a slot included. At that pace the
    # run would end `requests / pace` after its first call if no slot ever waited for work.
    steady = [(t, accepted) for t, accepted, _ in samples if requests // 10 <= accepted <= requests - CLIENTS]
    pace = (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0])
    first_call = next(t for t, accepted, _ in samples if accepted)
    # Slots left idle while calls were still to go out (after the first 8 went in), in seconds of the
    # whole budget: the run's time over the ideal, less the moments between one call and the next.
    idle = sum(
        (t1 - t0) * (BUDGET - in_flight)
        for (t0, accepted, in_flight), (t1, _, _) in itertools.pairwise(samples)
        if BUDGET <= accepted < requests
    )
    ideal = math.ceil(requests / BUDGET) * latency_s
    at_pace = requests / pace
    return {
        "requests": requests,
        "answers": dict(Counter(outcome(a) for a in answers)),
        "ideal_s": round(ideal, 1),
        "took_s": round(ended - started, 1),
        "over_ideal_pct": round(100 * (ended - started - ideal) / ideal, 1),
        "pace_calls_per_s": round(pace, 2),
        "ideal_at_pace_s": round(at_pace, 1),
        "from_first_call_s": round(ended - first_call, 1),
        "over_ideal_at_pace_pct": round(100 * (ended - first_call - at_pace) / at_pace, 1),
        "budget_idle_while_requests_waited_s": round(idle / BUDGET, 1),
        "peak_in_flight": httpx.get(f"{sim.base_url}/sim/stats").json()["peak_in_flight"],
    }


def replica_death(sim: BackgroundSimulator, url: str) -> dict[str, Any]:
    httpx.post(f"{sim.base_url}/sim/reset")
    victim = next(iter(ledger_members(APP)))

    async def kill_midway() -> list[httpx.Response | Exception]:
        load = asyncio.create_task(post_all(url, CLIENTS, CLIENTS))
        await asyncio.sleep(2.0)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        return await load

    answers = asyncio.run(kill_midway())
    reached = {
        int(n)
        for body in sim.app.state.simulator.recent_requests
        for n in re.findall(r"request (\d+)", json.dumps(body))
    }
    failed = [i for i, answer in enumerate(answers) if outcome(answer) != "200"]
    stats = httpx.get(f"{sim.base_url}/sim/stats").json()
    return {
        "requests": len(answers),
        "answers": dict(Counter(outcome(a) for a in answers)),
        "failed_never_reached_upstream": sum(1 for i in failed if i not in reached),
        "upstream_calls": stats["accepted_total"],
        "peak_in_flight": stats["peak_in_flight"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=480)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "benchmark" / "RESULTS_ingress.md")
    args = parser.parse_args()
    if args.requests < 2 * CLIENTS:
        parser.error(f"--requests must be at least {2 * CLIENTS}, for a steady stretch to measure the pace in")
    config = SimulatorConfig(api_keys=(SIM_KEY,), latency_s=args.latency, recorded_requests=10 * CLIENTS)
    with BackgroundSimulator(config) as sim:
        env = {KEY_ENV: SIM_KEY, "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1", **isolated_ray_env()}
        port = free_port()
        cluster.start(port=port, env=env, num_cpus=2)
        try:
            cluster.deploy([sim_app(APP, sim, budget=BUDGET, replicas=REPLICAS)])
            while len(ledger_members(APP)) != REPLICAS:
                time.sleep(0.2)
            url = f"http://127.0.0.1:{port}/{APP}/v1/responses"
            asyncio.run(post_all(url, CLIENTS, CLIENTS))  # warm connections
            results = {"tail": tail(sim, url, args.requests, args.latency), "replica_death": replica_death(sim, url)}
        finally:
            cluster.stop()
    print(json.dumps(results, indent=2))
    write(args.out, results, args)


def write(path: Path, results: dict[str, Any], args: argparse.Namespace) -> None:
    machine = machine_details()
    t, d = results["tail"], results["replica_death"]
    lines = [
        "# Ingress: unequal shares and a dying replica",
        "",
        f"`python -m tests.benchmark.ingress_faults --requests {args.requests} --latency {args.latency}`, "
        f"{time.strftime('%Y-%m-%d')}; {machine.get('cpu', '')}, Python {machine.get('python', '')}, "
        f"Ray {ray.__version__}. Budget {BUDGET} over {REPLICAS} replicas (shares 3, 3, 2), {CLIENTS} clients.",
        "",
        "## The end of a run",
        "",
        "| requests | ideal | took | over ideal | pace | ideal at that pace | from the first call | over it "
        "| budget idle while requests waited | peak in flight |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {t['requests']} | {t['ideal_s']} s | {t['took_s']} s | {t['over_ideal_pct']}% "
        f"| {t['pace_calls_per_s']} calls/s | {t['ideal_at_pace_s']} s | {t['from_first_call_s']} s "
        f"| {t['over_ideal_at_pace_pct']}% | {t['budget_idle_while_requests_waited_s']} s | {t['peak_in_flight']} |",
        "",
        f"Ideal: every call back to back in {BUDGET} slots at {args.latency} s. Pace: calls per second at the "
        "simulator while every client had a request out, the moments between one call and the next included; "
        "at that pace, the run from its first call would take the next column if no slot ever waited for work "
        "at the end.",
        "",
        f"Answers: {t['answers']}.",
        "",
        "## A replica SIGKILLed with 80 requests on it",
        "",
        "| answer | count |",
        "|---|---:|",
        *(f"| {kind} | {count} |" for kind, count in sorted(d["answers"].items())),
        "",
        f"Failed without reaching the upstream: {d['failed_never_reached_upstream']}. Upstream calls: "
        f"{d['upstream_calls']} for {d['requests']} requests (a call cut by the replica's death is made again "
        f"elsewhere). Peak in flight at the upstream: {d['peak_in_flight']}.",
        "",
    ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()

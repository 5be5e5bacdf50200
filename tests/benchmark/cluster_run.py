"""One Serve configuration, measured in its own process (Serve reads its flags when Ray starts).

    python -m tests.benchmark.cluster_run --config haproxy --plan full --sim-fast URL,PID --sim-slow URL,PID --out F

Starts Ray (2 CPUs, no dashboard) and Serve through `serve_app.cluster.start` with the
configuration's flags, deploys the no-op app (noop.py, the floor) and our model server pointed at
the zero-latency simulator; for the full plan also the variants (variants.py) beside them, and,
for the memory phase, fresh replicas of ours (plain, streaming) pointed at the 2 s simulator (each request held
HOLD_S there) plus a
fresh no-op. It waits for the ingress to settle, warms up, measures (this
process is the load client, on its own event loop thread) and writes JSON. Everything it
started is stopped with `cluster.stop()` before it exits, also when sent SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
import time
import traceback
import urllib.parse
from dataclasses import dataclass
from typing import Any

from serve_app import cluster
from serve_app.config import AzureModelConfig
from serve_app.serve_config import model_server_app
from serve_app.server import GC_GEN0_THRESHOLD
from tests.support.ports import free_port, unclaimed_port

from . import loadgen
from .common import RELAYS, ROOT, CpuMeter, http_json, rss_bytes
from .loadgen import Target
from .noop import noop_app

KEY_ENV = "BENCH_SIM_API_KEY"
SIM_KEY = "sim-key"
DIRECT_PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"  # the simulator's, as ours calls it
# Flags per measured configuration: (ingress argument of cluster.start, extra environment).
_HAPROXY_ONLY = {k: v for k, v in cluster.ingress_env("haproxy").items() if k != "RAY_SERVE_THROUGHPUT_OPTIMIZED"}
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "haproxy": ("haproxy", {}),  # the project default: HAProxy + throughput-optimized
    "proxy": ("proxy", {}),  # Serve's classic proxy
    "haproxy-only": ("proxy", _HAPROXY_ONLY),
    "throughput-only": ("proxy", {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}),
    # Throughput-optimized runs user code on the replica's main thread; this puts it back on its own.
    "haproxy-thread": ("haproxy", {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1"}),
}
DESCRIPTIONS = {
    "haproxy": "RAY_SERVE_ENABLE_HA_PROXY=1 + RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (project default)",
    "proxy": "no flags (Serve's proxy actor)",
    "haproxy-only": "RAY_SERVE_ENABLE_HA_PROXY=1 only",
    "throughput-only": "RAY_SERVE_THROUGHPUT_OPTIMIZED=1 only (direct ingress, no HAProxy)",
    "haproxy-thread": "project default + RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=1",
}
HELLO = "hello"
LONG_TOKENS = 1000
SLOW_S = 2.0  # the slow simulator's latency and time to first token
# How long the memory cells hold each request upstream (the slow simulator's 2 s and a trigger's sleep on top).
# All requests must be in flight together: on a 2-core machine the replica takes them in at about 700/s,
# CPU-bound (each is a new connection from HAProxy and a new one to Azure), so 2,000 need about 3 s.
HOLD_S = 6.0
VARIANTS = ("canned", "nolog", "nometrics", "lean", "defaultgc")  # variants.py
# Each target behind Serve: (its app, its endpoint).
TARGETS: dict[str, tuple[str, str]] = {
    "noop": ("noop", "responses"),
    "noopgc": ("noopgc", "responses"),
    "responses": ("ours", "responses"),
    "chat": ("ours", "chat/completions"),
    "mem": ("mem", "responses"),
    "memstream": ("memstream", "responses"),
    "floor": ("floor", "responses"),
    **{v: (f"v_{v}", "responses") for v in VARIANTS},
    **{relay: (relay, "chat/completions") for relay in RELAYS},
}


def simulator_body(messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
    """The body of a call to the simulator, as ours makes it."""
    body: dict[str, Any] = {"messages": messages}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


@dataclass(frozen=True)
class Plan:
    name: str
    rounds: int
    cell_s: float
    plain_concurrency: tuple[int, ...]
    stream_concurrency: tuple[int, ...]
    events_concurrency: tuple[int, ...]
    ttfe_requests: int
    in_flight: int  # memory phase; 0: skipped
    stream_in_flight: int
    targets: tuple[str, ...] = ("direct", "noop", "responses", "chat")
    ablation_concurrency: tuple[int, ...] = ()  # variants.py, against no-op and ours


PLANS = {
    "full": Plan(
        "full",
        # Cells of one configuration vary by ±30% on a shared 2-core machine (2026-12-01: the no-op did
        # 1,206-2,623 req/s over six 64-client cells of one run); four interleaved rounds average more of it out.
        rounds=4,
        cell_s=2.5,
        plain_concurrency=(1, 16, 64, 256),
        stream_concurrency=(1, 16, 64),
        events_concurrency=(1, 16),
        # One stream at a time: a p99 needs a few hundred (of 100, the nearest-rank p99 is the slowest one).
        ttfe_requests=300,
        in_flight=2000,
        stream_in_flight=2000,
        ablation_concurrency=(1, 64),
    ),
    "ingress": Plan(
        "ingress",
        rounds=2,
        cell_s=2.5,
        plain_concurrency=(1, 64),
        stream_concurrency=(),
        events_concurrency=(16,),
        ttfe_requests=0,
        in_flight=0,
        stream_in_flight=0,
        targets=("noop", "responses"),
    ),
    "quick": Plan(
        "quick",
        rounds=1,
        cell_s=1.0,
        plain_concurrency=(1, 64),
        stream_concurrency=(16,),
        events_concurrency=(16,),
        ttfe_requests=30,
        in_flight=2000,
        stream_in_flight=0,
    ),
}


def ray_env() -> dict[str, str]:
    """The environment of a benchmark's Ray: the simulator's key, this tree importable, and Serve's settings."""
    return {
        KEY_ENV: SIM_KEY,
        "PYTHONPATH": str(ROOT),
        # A stopping replica accepts for this long so that HAProxy notices (30 s by default).
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        # HAProxy's metrics and stats listeners have fixed default ports; others may run Serve here too.
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(unclaimed_port()),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(unclaimed_port()),
    }


def model_app(name: str, sim_url: str, budget: int) -> dict[str, Any]:
    config = AzureModelConfig(
        openai_base_url=sim_url,
        openai_api_key="unused-here",
        openai_model="gpt-4o",
        default_query={"api-version": "2024-10-21"},
        num_concurrent_requests=budget,
    )
    app = model_server_app(name, config)
    app["args"]["openai_api_key_env"] = KEY_ENV
    deployment = app["deployments"][0]
    deployment["ray_actor_options"] = {"num_cpus": 0}
    # Nothing is in flight at the end of a benchmark; don't let Serve wait for calls that could be.
    deployment["graceful_shutdown_timeout_s"] = 5
    return app


def variant_app(variant: str, sim_url: str, budget: int, name: str | None = None) -> dict[str, Any]:
    app = model_app(name or f"v_{variant}", sim_url, budget)
    app["import_path"] = "tests.benchmark.variants:build_app"
    app["args"]["variant"] = variant
    return app


def replica_pids() -> dict[str, int]:
    """Each app's (single) replica process, from the GCS actor table (no dashboard needed)."""
    from ray._private import state

    pids = {}
    for actor in state.actors(actor_state_name="ALIVE").values():
        name = actor["Name"]
        if name.startswith("SERVE_REPLICA::"):
            pids[name.removeprefix("SERVE_REPLICA::").split("#", 1)[0]] = actor["Pid"]
    return pids


# --- measuring ---------------------------------------------------------------------------------------


class Bench:
    def __init__(
        self, plan: Plan, port: int, sim_fast: tuple[str, int], sim_slow: tuple[str, int], pids: dict[str, int]
    ) -> None:
        self.plan = plan
        self.port = port
        self.sim_url, self.sim_pid = sim_fast
        self.slow_url, self.slow_pid = sim_slow
        self.sim_port = int(self.sim_url.rsplit(":", 1)[1])
        self.pids = pids
        self.cells: list[dict[str, Any]] = []

    def target(self, kind: str, *, stream: bool = False, text: str = HELLO) -> Target:
        messages = [{"role": "user", "content": text}]
        if kind == "direct":
            body = simulator_body(messages, stream)
            return Target(
                "direct", "127.0.0.1", self.sim_port, DIRECT_PATH, body, headers=(("api-key", SIM_KEY),), stream=stream
            )
        app, path = TARGETS[kind]
        if kind in RELAYS:
            body = simulator_body(messages, stream)  # a relay hands the body on as it came
        else:
            body = (
                {"model": "gpt-4o", "messages": messages}
                if path.startswith("chat")
                else {"model": "gpt-4o", "input": text}
            )
            if stream:
                body["stream"] = True
        return Target(kind, "127.0.0.1", self.port, f"/{app}/v1/{path}", body, stream=stream)

    def meter(self, kind: str) -> CpuMeter:
        """The CPU of the simulator and of the replica that answers `kind` (none for the direct path)."""
        replica = TARGETS.get(kind, (None,))[0]
        return CpuMeter({"replica": self.pids.get(replica, 0) if replica else 0, "sim": self.sim_pid})

    async def cell(
        self, section: str, kind: str, concurrency: int, *, stream: bool, text: str = HELLO
    ) -> dict[str, Any]:
        """One target at one concurrency, `rounds` times interleaved with the other targets by the caller."""
        run = await loadgen.closed_loop(
            self.target(kind, stream=stream, text=text),
            concurrency,
            self.plan.cell_s,
            warmup_s=0.3 if concurrency < 64 else 0.6,
            meter=self.meter(kind),
        )
        return {
            "section": section,
            **run.summary(),
            **run.cpu,
            "_latencies": run.latencies,
            "_first_events": run.first_events,
        }

    async def sweep(
        self,
        section: str,
        concurrencies: tuple[int, ...],
        *,
        stream: bool,
        text: str = HELLO,
        targets: tuple[str, ...] | None = None,
    ) -> None:
        for concurrency in concurrencies:
            rounds: dict[str, list[dict[str, Any]]] = {}
            for _ in range(self.plan.rounds):
                for kind in targets or self.plan.targets:
                    rounds.setdefault(kind, []).append(
                        await self.cell(section, kind, concurrency, stream=stream, text=text)
                    )
            for kind, runs in rounds.items():
                self.cells.append(merge(runs))
                log(
                    f"  {section:8} {kind:9} c={concurrency:<4} {self.cells[-1]['rps']:8.0f} req/s "
                    f"p50 {self.cells[-1]['p50_ms']:7.2f} ms  events/s {self.cells[-1]['events_per_s']:8.0f}  "
                    f"client cpu {self.cells[-1]['client_cpu']:.2f}  errors {self.cells[-1]['errors']}"
                )

    async def warm_up(self, kinds: tuple[str, ...], only: bool | None = None) -> None:
        for kind in kinds:
            for stream in (False, True) if only is None else (only,):
                run = await loadgen.closed_loop(self.target(kind, stream=stream), 16, 1.0, warmup_s=0.0)
                if run.errors:
                    log(f"  warm-up {kind} stream={stream}: {run.errors} errors {run.statuses}")

    async def ttfe(self) -> dict[str, Any]:
        """How long after the simulator hands its first chunk to the socket does the first event reach
        the client? One client, one stream at a time; the simulator notes when each first chunk left."""
        results: dict[str, Any] = {}
        http_json(f"{self.sim_url}/sim/config", {"ttft_s": 0.05})
        try:
            relays = tuple(kind for kind in RELAYS if kind in self.pids)
            for kind in ("direct", *relays, "responses", "chat"):
                target = self.target(kind, stream=True)
                await sequential(target, 5)
                http_json(f"{self.sim_url}/bench/marks")
                meter = self.meter(kind)
                meter.start()
                run = await sequential(target, self.plan.ttfe_requests)
                usage = meter.stop()
                marks = http_json(f"{self.sim_url}/bench/marks")
                if run.errors or len(marks) != len(run.first_event_at):
                    results[kind] = {
                        "error": f"{run.errors} errors, {len(marks)} marks for {len(run.first_event_at)} streams"
                    }
                    continue
                after = sorted(seen - sent for seen, sent in zip(run.first_event_at, marks, strict=False))
                ttfe = sorted(run.first_events)
                results[kind] = {
                    "after_first_chunk_p50_ms": loadgen.percentile(after, 50) * 1e3,
                    "after_first_chunk_p90_ms": loadgen.percentile(after, 90) * 1e3,
                    "after_first_chunk_p99_ms": loadgen.percentile(after, 99) * 1e3,
                    "replica_run_queue_ms_per_stream": usage.get("replica_waited_s", math.nan) * 1e3 / len(after),
                    "steal_pct": 100 * usage["machine_stolen"],
                    "ttfe_p50_ms": loadgen.percentile(ttfe, 50) * 1e3,
                    "ttfe_p99_ms": loadgen.percentile(ttfe, 99) * 1e3,
                    "n": len(after),
                }
                log(
                    f"  ttfe     {kind:9} first event {results[kind]['after_first_chunk_p50_ms']:.2f} ms after the "
                    f"upstream's first chunk (p50), ttfe p50 {results[kind]['ttfe_p50_ms']:.1f} ms"
                )
        finally:
            http_json(f"{self.sim_url}/sim/config", {"ttft_s": 0.0})
        return results

    async def memory(self, kind: str, n: int) -> dict[str, Any]:
        """`n` requests held in flight by the upstream for HOLD_S: replica RSS at rest and at its peak.

        `mem_noop` is the floor: a fresh no-op app holding each request HOLD_S itself."""
        stream = kind == "memstream"
        if kind == "mem_noop":
            app, target = "floor", self.target("floor", text=f"{HELLO} [sim:sleep={HOLD_S}]")
        else:
            app, target = kind, self.target(kind, stream=stream, text=f"{HELLO} [sim:sleep={HOLD_S - SLOW_S}]")
        pid = self.pids[app]
        warm = await loadgen.burst(target, 50)  # connections, pools and code paths used once
        http_json(f"{self.slow_url}/sim/reset", {})
        await asyncio.sleep(1.0)
        idle = min(rss_bytes(pid) for _ in range(5))
        peak = held = idle
        sampling = True
        # No answer starts before the first request's hold ends: until then every sample is of calls held.
        answers_from = math.inf

        def sent(at: float) -> None:
            nonlocal answers_from
            answers_from = at + HOLD_S - 0.1

        async def sample() -> None:
            nonlocal peak, held
            while sampling:
                rss = rss_bytes(pid)
                peak = max(peak, rss)
                if time.monotonic() < answers_from:
                    held = max(held, rss)
                await asyncio.sleep(0.01)

        sampler = asyncio.get_running_loop().create_task(sample())
        meter = CpuMeter({"replica": pid, "sim": self.slow_pid})
        meter.start()
        run = await loadgen.burst(target, n, on_sent=sent)
        cpu = meter.stop()
        sampling = False
        await sampler
        stats = http_json(f"{self.slow_url}/sim/stats")
        upstream = None if kind == "mem_noop" else stats["peak_in_flight"]
        result = {
            "kind": kind,
            "stream": stream,
            "n": n,
            "errors": run.errors + warm.errors,
            "statuses": run.summary()["statuses"],
            "wall_s": run.wall_s,
            "p50_ms": run.summary()["p50_ms"],
            "p99_ms": run.summary()["p99_ms"],
            "idle_rss_mb": idle / 2**20,
            "held_rss_mb": held / 2**20,
            "peak_rss_mb": peak / 2**20,
            "kb_per_request": (held - idle) / n / 1024,
            "kb_per_request_answering": (peak - idle) / n / 1024,
            "upstream_peak_in_flight": upstream,
            "client_cpu_s": run.client_cpu_s,
            **cpu,
        }
        log(
            f"  memory   {kind:9} n={n} errors {result['errors']} wall {run.wall_s:.2f} s, "
            f"RSS {result['idle_rss_mb']:.0f} -> {result['held_rss_mb']:.0f} MB held, {result['peak_rss_mb']:.0f} "
            f"answering: {result['kb_per_request']:.1f} KB per request held "
            f"({result['kb_per_request_answering']:.1f} answering); upstream peak in flight {upstream}"
        )
        return result


async def sequential(target: Target, n: int) -> loadgen.Run:
    """`n` requests one after the other on one connection; every one recorded."""
    payload = target.encoded()
    conn = await loadgen.connect(target.host, target.port)
    run = loadgen.Run(target.name, 1)
    try:
        for _ in range(n):
            if conn.closed:
                conn = await loadgen.connect(target.host, target.port)
            sent = time.monotonic()
            response = await conn.request(payload, target.stream)
            if response.status != 200 or not response.events:
                run.errors += 1
                continue
            run.latencies.append(time.monotonic() - sent)
            run.first_events.append(response.first_event - sent)
            run.first_event_at.append(response.first_event)
    finally:
        if conn.transport is not None:
            conn.transport.close()
    return run


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one cell as one: counts and times add up, percentiles over every sample."""
    first = runs[0]
    latencies = sorted(x for r in runs for x in r["_latencies"])
    first_events = sorted(x for r in runs for x in r["_first_events"])
    wall = sum(r["wall_s"] for r in runs)
    statuses: dict[str, int] = {}
    for r in runs:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    merged = {
        "section": first["section"],
        "target": first["target"],
        "concurrency": first["concurrency"],
        "completed": len(latencies),
        "errors": sum(r["errors"] for r in runs),
        "statuses": statuses,
        "wall_s": wall,
        "rps": len(latencies) / wall,
        "p50_ms": loadgen.percentile(latencies, 50) * 1e3,
        "p99_ms": loadgen.percentile(latencies, 99) * 1e3,
        "ttfe_p50_ms": loadgen.percentile(first_events, 50) * 1e3 if first_events else None,
        "ttfe_p99_ms": loadgen.percentile(first_events, 99) * 1e3 if first_events else None,
        "events": sum(r["events"] for r in runs),
        "events_per_s": sum(r["events"] for r in runs) / wall,
        "round_rps": [r["rps"] for r in runs],
    }
    for key in ("client_cpu", "replica_cpu", "sim_cpu", "machine_busy"):
        values = [r[key] for r in runs if key in r]
        if values:
            merged[key] = sum(v * r["wall_s"] for v, r in zip(values, runs, strict=False)) / wall
    return merged


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def measure(bench: Bench, plan: Plan, apps: Apps) -> dict[str, Any]:
    """Each phase with only the apps it measures deployed: an idle Serve replica costs about 4% of a core
    (metrics, health checks), and a dozen of them were background load in every cell of a 2-core machine."""
    out: dict[str, Any] = {}
    kinds = tuple(k for k in plan.targets if k != "direct")
    await bench.warm_up(kinds)
    await bench.sweep("plain", plan.plain_concurrency, stream=False)
    if plan.stream_concurrency:
        await bench.sweep("stream", plan.stream_concurrency, stream=True)
    if plan.events_concurrency:
        await bench.sweep("events", plan.events_concurrency, stream=True, text=f"Go on. [sim:tokens={LONG_TOKENS}]")
    if plan.ttfe_requests:
        bench.pids = apps.deploy(apps.core + apps.ttfe)
        out["ttfe"] = await bench.ttfe()
    if plan.ablation_concurrency:
        bench.pids = apps.deploy(apps.core + apps.variants)
        await bench.warm_up((*VARIANTS, "noopgc"), only=False)
        await bench.sweep(
            "ablation", plan.ablation_concurrency, stream=False, targets=("noop", "responses", *VARIANTS, "noopgc")
        )
    out["cells"] = bench.cells
    memory = []
    if apps.memory:
        bench.pids = apps.deploy(apps.core + apps.memory)
    if plan.in_flight:
        memory.append(await bench.memory("mem", plan.in_flight))
    if plan.stream_in_flight:
        memory.append(await bench.memory("memstream", plan.stream_in_flight))
    if plan.in_flight:
        memory.append(await bench.memory("mem_noop", plan.in_flight))
    out["memory"] = memory
    return out


@dataclass
class Apps:
    """The plan's Serve apps by phase: `core` (no-op and ours) throughout, the others only for their phase."""

    core: list[dict[str, Any]]
    ttfe: list[dict[str, Any]]
    variants: list[dict[str, Any]]
    memory: list[dict[str, Any]]

    @classmethod
    def of(cls, plan: Plan, fast_url: str, slow_url: str) -> Apps:
        memory = []
        if plan.in_flight:
            memory += [model_app("mem", slow_url, budget=plan.in_flight + 48), noop_app("floor")]
        if plan.stream_in_flight:
            memory.append(model_app("memstream", slow_url, budget=plan.stream_in_flight + 48))
        variants = []
        if plan.ablation_concurrency:
            variants = [variant_app(v, fast_url, budget=4096) for v in VARIANTS]
            variants.append(noop_app("noopgc", gc_gen0_threshold=GC_GEN0_THRESHOLD))
        ttfe = []
        if plan.ttfe_requests:
            fast = urllib.parse.urlsplit(fast_url)
            relay = {"host": fast.hostname, "port": fast.port, "path": DIRECT_PATH, "key": SIM_KEY}
            ttfe = [noop_app(name, relay={**relay, "hand_over": yields}) for name, yields in RELAYS.items()]
        return cls([noop_app("noop"), model_app("ours", fast_url, budget=4096)], ttfe, variants, memory)

    @staticmethod
    def deploy(apps: list[dict[str, Any]]) -> dict[str, int]:
        """Deploy exactly `apps` (those left out are removed; unchanged ones keep their replicas): their pids."""
        cluster.deploy(apps)  # also waits for HAProxy, when on, to route every app to its replicas
        return replica_pids()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", choices=sorted(CONFIGS), required=True)
    parser.add_argument("--plan", choices=sorted(PLANS), required=True)
    parser.add_argument("--sim-fast", required=True, help="URL,PID of the zero-latency simulator")
    parser.add_argument("--sim-slow", required=True, help="URL,PID of the 2 s simulator")
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    plan = PLANS[options.plan]
    fast_url, fast_pid = options.sim_fast.split(",")
    slow_url, slow_pid = options.sim_slow.split(",")
    ingress, flags = CONFIGS[options.config]

    # Stopped from outside (the benchmark's time limit): still stop Ray and Serve on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    port = free_port()
    env = {**ray_env(), **flags}
    result: dict[str, Any] = {
        "config": options.config,
        "plan": plan.name,
        "description": DESCRIPTIONS[options.config],
        "env": {k: v for k, v in {**cluster.ingress_env(ingress), **flags}.items()},
    }
    started = time.monotonic()
    cluster.start(port=port, env=env, num_cpus=2, ingress=ingress)
    try:
        apps = Apps.of(plan, fast_url, slow_url)
        pids = apps.deploy(apps.core)
        result["replica_pids"] = pids
        result["setup_s"] = time.monotonic() - started
        log(f"[{options.config}] deployed in {result['setup_s']:.0f} s; measuring ({plan.name})")
        bench = Bench(plan, port, (fast_url, int(fast_pid)), (slow_url, int(slow_pid)), pids)
        result.update(loadgen.run_async(measure(bench, plan, apps)))
    except Exception:
        result["failure"] = traceback.format_exc()
        log(result["failure"])
    finally:
        for cell in result.get("cells", []):
            cell.pop("_latencies", None)
            cell.pop("_first_events", None)
        with open(options.out, "w") as f:
            json.dump(result, f, indent=1)
        cluster.stop()
    sys.exit(1 if "failure" in result else 0)


if __name__ == "__main__":
    main()

"""What the NeMo Gym front costs: its port against Serve's own HTTP path, side by side in one run.

    make bench-nemo-gym                      (python -m tests.benchmark.nemo_gym_front [--quick])

One Ray and Serve as `make run` starts them (HAProxy ingress), one zero-latency simulator process,
and two model servers over it with the same budget: `direct`, reached through HAProxy as any Serve
app is, and `gym_model`, deployed by the NeMo Gym front (the component entrypoint's own actor, as gym starts
it) and reached on the front's own port, which calls the replicas through the
deployment handle. Cells alternate, each measured the same way (tests/benchmark/loadgen.py). Writes
tests/benchmark/RESULTS_nemo_gym.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from serve_app import cluster
from serve_app.config import AzureModelConfig
from serve_app.nemo_gym import KIND, component_root
from serve_app.serve_config import key_env, model_server_app

from . import loadgen
from .common import ROOT, Upstream, free_port, machine_details
from .loadgen import Target

SIM_KEY = "sim-key"
BUDGET = 256
BODY = {"model": "ignored", "input": "hello", "max_output_tokens": 16}
OUT = Path(__file__).with_name("RESULTS_nemo_gym.md")


def front_actor_class() -> Any:
    """The `Front` actor of the component's own entrypoint (app.py, which gym runs), loaded from its file."""
    import importlib.util

    path = component_root() / "responses_api_models" / KIND / "app.py"
    spec = importlib.util.spec_from_file_location("azure_openai_ray_serve_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Front


def gym_config(upstream_url: str, port: int) -> str:
    server = {
        "entrypoint": "app.py",
        "host": "127.0.0.1",
        "port": port,
        "openai_base_url": upstream_url,
        "openai_api_key": SIM_KEY,
        "openai_model": "gpt-4o",
        "default_query": {"api-version": "2024-10-21"},
        "num_concurrent_requests": BUDGET,
    }
    return yaml.safe_dump({"gym_model": {"responses_api_models": {KIND: server}}})


def measure(targets: list[Target], rounds: int, duration_s: float) -> dict[tuple[str, int], list[dict[str, Any]]]:
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for concurrency in (1, 64):
            for target in targets:
                run = loadgen.run_async(loadgen.closed_loop(target, concurrency, duration_s))
                cells.setdefault((target.name, concurrency), []).append(run.summary())
    return cells


def table(cells: dict[tuple[str, int], list[dict[str, Any]]]) -> list[str]:
    def best(name: str, concurrency: int, key: str, pick: Any) -> float:
        return float(pick(run[key] for run in cells[(name, concurrency)]))

    rows = [
        "| path | req/s at 64 clients | × Serve HTTP | p50 at 1 client | added | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base_rps, base_p50 = best("serve-http", 64, "rps", max), best("serve-http", 1, "p50_ms", min)
    for name in ("serve-http", "gym-front"):
        rps, p50 = best(name, 64, "rps", max), best(name, 1, "p50_ms", min)
        errors = sum(run["errors"] for key, runs in cells.items() if key[0] == name for run in runs)
        rows.append(
            f"| {name} | {rps:,.0f} | {rps / base_rps:.2f} | {p50:.2f} ms | {p50 - base_p50:+.2f} ms | {errors} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 3 s cells instead of three of 8 s")
    options = parser.parse_args(argv)
    rounds, duration_s = (1, 3.0) if options.quick else (3, 8.0)

    import ray

    serve_port, front_port = free_port(), free_port()
    with Upstream({"api_keys": [SIM_KEY], "latency_s": 0.0}) as upstream:
        env = {key_env("direct"): SIM_KEY, "PYTHONPATH": str(ROOT)}
        cluster.start(port=serve_port, env=env, num_cpus=2)
        front = None
        try:
            config = AzureModelConfig(
                openai_base_url=upstream.url,
                openai_api_key=SIM_KEY,  # type: ignore[arg-type]  # pydantic takes the str
                openai_model="gpt-4o",
                default_query={"api-version": "2024-10-21"},
                num_concurrent_requests=BUDGET,
            )
            app = model_server_app("direct", config)
            app["deployments"][0]["ray_actor_options"] = {"num_cpus": 0}
            cluster.deploy([app])
            front = front_actor_class().remote("gym_model", gym_config(upstream.url, front_port))
            ray.get(front.start.remote())
            targets = [
                Target("serve-http", "127.0.0.1", serve_port, "/direct/v1/responses", BODY),
                Target("gym-front", "127.0.0.1", front_port, "/v1/responses", BODY),
            ]
            measure(targets, 1, 2.0)  # warm-up: connections, routers, the allocator
            cells = measure(targets, rounds, duration_s)
        finally:
            if front is not None:
                ray.get(front.stop.remote())
            cluster.stop()

    details = machine_details()
    lines = [
        "# The NeMo Gym front against Serve's HTTP path",
        "",
        f"`python -m tests.benchmark.nemo_gym_front{' --quick' if options.quick else ''}`, {details.get('date', '')}: "
        f"Python {sys.version.split()[0]}, Ray {details.get('ray', '')}, {details.get('cpu', '')}. "
        f"Best of {rounds} alternating {duration_s:g} s cells; zero-latency simulator; budget {BUDGET}.",
        "",
        *table(cells),
        "",
    ]
    print("\n".join(lines))
    OUT.write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The command line: `serve --simulate` needs no credentials and serves real Responses; `simulate` runs the
simulator alone; overrides and config problems are reported as a user would want."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from support.cli import serving
from support.ports import free_port, isolated_ray_env
from support.sim_admin import SimAdmin
from support.waiting import once_listening

from serve_app.cli import point_at_simulator
from serve_app.cluster import ingress_env
from serve_app.config import (
    DEFAULT_CONFIG,
    SIMULATED_API_VERSION,
    SIMULATED_DEPLOYMENT,
    SIMULATOR_KEY,
    load_tree,
    model_servers_from_tree,
)
from serve_app.simulator import BackgroundSimulator, SimulatorConfig

ROOT = Path(__file__).resolve().parent.parent


def test_simulate_fills_what_is_missing_and_keeps_what_the_config_gives() -> None:
    tree = load_tree([DEFAULT_CONFIG], ["+policy_model_name=my-deployment"], env_file=None)
    point_at_simulator(tree, "http://127.0.0.1:9/azure_simulator")
    config = model_servers_from_tree(tree)["policy_model"]
    assert config.openai_base_url == "http://127.0.0.1:9/azure_simulator"
    assert config.openai_api_key.get_secret_value() == SIMULATOR_KEY
    assert config.openai_model == "my-deployment"
    assert config.default_query == {"api-version": SIMULATED_API_VERSION}


def test_simulate_keeps_the_v1_form_the_config_gives_and_uses_the_simulators_key() -> None:
    overrides = [
        "+policy_base_url=https://example.openai.azure.com/openai/v1",
        "+policy_model_name=my-o3",
        "+policy_model.responses_api_models.azure_openai_model.auth=entra",
    ]
    tree = load_tree([DEFAULT_CONFIG], overrides, env_file=None)
    point_at_simulator(tree, "http://127.0.0.1:9/azure_simulator")
    config = model_servers_from_tree(tree)["policy_model"]
    assert config.openai_base_url == "http://127.0.0.1:9/azure_simulator/openai/v1"
    assert config.default_query == {}
    assert config.auth == "key" and config.openai_api_key is not None


def test_ingress_env_evaluated_by_a_shell_sets_exactly_the_haproxy_environment() -> None:
    shell = f'eval "$({sys.executable} -m serve_app ingress-env --longest-call-s 600)" && env -0'
    out = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, check=True, env={}).stdout
    env = dict(entry.split("=", 1) for entry in out.split("\0") if entry.startswith("RAY_SERVE_"))
    assert env == ingress_env("haproxy", 600)


def test_without_simulate_missing_credentials_are_an_error_naming_them() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "serve_app", "serve", "--env-file", "/nonexistent"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    for key in ("openai_base_url", "openai_api_key", "openai_model", "default_query.api-version"):
        assert f"policy_model.responses_api_models.azure_openai_model.{key}" in run.stderr


def test_simulate_alone_serves_azures_contract() -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "serve_app", "simulate", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/openai/deployments/gpt-4o/chat/completions?api-version={SIMULATED_API_VERSION}"
        response = once_listening(
            lambda: httpx.post(
                url, headers={"api-key": SIMULATOR_KEY}, json={"messages": [{"role": "user", "content": "hi"}]}
            ),
            server,
        )
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "hi"
        assert httpx.post(url, headers={"api-key": "wrong"}, json={}).status_code == 401
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


@pytest.fixture
def simulated_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, **isolated_ray_env(), "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
    with serving(["--simulate", "--env-file", "/nonexistent", "--port", str(port)], log, env):
        assert "SIMULATED AZURE" in log.read_text()
        assert f"policy_model: http://127.0.0.1:{port}/policy_model/v1" in log.read_text()
        yield f"http://127.0.0.1:{port}/policy_model/v1"


@pytest.mark.serve
def test_serve_simulate_answers_a_response_with_status_usage_and_the_deployment_as_model(simulated_server: str) -> None:
    response = httpx.post(f"{simulated_server}/responses", json={"model": "whatever", "input": "Say hello"}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed" and body["model"] == SIMULATED_DEPLOYMENT
    assert body["usage"]["total_tokens"] > 0 and body["output"][0]["content"][0]["text"] == "Say hello"


@pytest.mark.serve
def test_sigterm_refuses_new_calls_lets_those_in_flight_finish_and_exits_promptly(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    # Serve's default draining period (30 s) on purpose: stopping must not wait for it.
    args = ["--simulate", "--env-file", "/nonexistent", "--port", str(port)]
    with serving(args, log, {**os.environ, **isolated_ray_env()}) as server:
        base = f"http://127.0.0.1:{port}"
        httpx.post(f"{base}/azure_simulator/sim/config", json={"latency_s": 4.0}, timeout=10).raise_for_status()

        async def calls_across_a_sigterm() -> tuple[list[httpx.Response], httpx.Response, float]:
            async with httpx.AsyncClient(timeout=60) as client:
                url = f"{base}/policy_model/v1/responses"
                in_flight = [asyncio.create_task(client.post(url, json={"input": "hi"})) for _ in range(8)]
                await asyncio.sleep(1.5)
                server.send_signal(signal.SIGTERM)
                await asyncio.sleep(2.0)  # the replicas have been told to stop admitting
                late = await client.post(url, json={"input": "hi"})
                done = await asyncio.gather(*in_flight)
                return done, late, time.monotonic()

        done, late, finished = asyncio.run(calls_across_a_sigterm())
        assert [r.status_code for r in done] == [200] * 8
        assert late.status_code == 503 and late.json()["error"]["code"] == "server_shutting_down"
        assert int(late.headers["retry-after"]) >= 1
        server.wait(timeout=60)
        assert time.monotonic() - finished < 10, log.read_text()[-2000:]
        assert server.returncode == 0 and "All calls in flight finished." in log.read_text()


@pytest.mark.serve
def test_serve_runs_a_nemo_gym_config_with_upstreams_as_one_pool_each_budget_kept(tmp_path: Path) -> None:
    regions = [BackgroundSimulator(SimulatorConfig(latency_s=0.3)) for _ in range(2)]
    for region in regions:
        region.start()
    try:
        east, west = regions
        server = {
            "openai_base_url": f"{east.base_url}/openai/v1",
            "openai_api_key": SIMULATOR_KEY,
            "openai_model": "gpt-4o",
            "num_concurrent_requests": 2,
            "upstreams": [
                {
                    "name": "westus",
                    "openai_base_url": f"{west.base_url}/openai/v1",
                    "openai_api_key": SIMULATOR_KEY,
                    "num_concurrent_requests": 3,
                }
            ],
        }
        config = tmp_path / "pool.yaml"
        config.write_text(yaml.safe_dump({"policy_model": {"responses_api_models": {"azure_openai_model": server}}}))
        port, log = free_port(), tmp_path / "serve.log"
        args = ["--config", str(config), "--env-file", "/nonexistent", "--port", str(port)]
        with serving(args, log, {**os.environ, **isolated_ray_env()}):

            async def burst() -> list[int]:
                async with httpx.AsyncClient(timeout=60) as client:
                    url = f"http://127.0.0.1:{port}/policy_model/v1/responses"
                    calls = [client.post(url, json={"input": "hi"}) for _ in range(30)]
                    return [r.status_code for r in await asyncio.gather(*calls)]

            assert asyncio.run(burst()) == [200] * 30
        peaks = [SimAdmin(region).stats()["peak_in_flight"] for region in regions]
        calls = [SimAdmin(region).stats()["by_status"].get("200", 0) for region in regions]
        assert peaks == [2, 3], (peaks, calls)  # each region's own budget, filled and never exceeded
        assert sum(calls) == 30
    finally:
        for region in regions:
            region.stop()

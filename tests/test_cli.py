"""The command line: `serve --simulate` needs no credentials and serves real Responses; `simulate` runs the
simulator alone; overrides and config problems are reported as a user would want."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.cli import serving
from support.ports import free_port, isolated_ray_env
from support.waiting import once_listening

from serve_app.cli import point_at_simulator
from serve_app.config import (
    DEFAULT_CONFIG,
    SIMULATED_API_VERSION,
    SIMULATED_DEPLOYMENT,
    SIMULATOR_KEY,
    load_tree,
    model_servers_from_tree,
)

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

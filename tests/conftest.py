"""Shared fixtures for the tests that run the real Serve app: one Ray + Serve and one simulator per session."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from serve_app import cluster
from serve_app.cluster import replica_url, wait_ingress_settled  # noqa: F401 (for the tests)
from serve_app.config import AzureModelConfig, Retries
from serve_app.serve_config import model_server_app
from serve_app.simulator import BackgroundSimulator, SimulatorConfig

SIM_KEY = "sim-key"
KEY_ENV = "TEST_SIM_API_KEY"
WRONG_KEY_ENV = "TEST_WRONG_API_KEY"
INBOUND_KEYS_ENV = "TEST_INBOUND_KEYS"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """The session's Serve instance: deploy apps (declaratively, replacing the previous set) and reach them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def deploy(self, *apps: dict[str, Any]) -> None:
        cluster.deploy(apps)

    def base_url(self, app: str) -> str:
        return f"{self.url}/{app}/v1"


# Away from the default range (30000-31000), which a `make run` or a benchmark may be using.
_port_blocks = iter(range(31000, 39000, 500))


def isolated_ports() -> dict[str, str]:
    """Ports for one more Ray instance on this machine, apart from every other one the tests start.

    HAProxy's stats and metrics ports are fixed. And each Ray hands replica ports out of one range,
    keeping a stopped replica's port from its own new replicas, but not from another Ray's: a port
    freed by one instance and bound by another can receive the first instance's traffic, which the
    other answers 404."""
    http = next(_port_blocks)
    return {
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http + 499),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(http + 11000),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(http + 11499),
    }


@pytest.fixture(scope="session")
def simulator() -> Iterator[BackgroundSimulator]:
    with BackgroundSimulator(SimulatorConfig(api_keys=(SIM_KEY,))) as sim:
        yield sim


@pytest.fixture(scope="session")
def serve_instance() -> Iterator[Serve]:
    port = free_port()
    # A stopping replica keeps accepting for the draining period (30 s by default) so that HAProxy
    # notices; with one HAProxy on one machine, a second is plenty and keeps redeploys quick.
    env = {
        KEY_ENV: SIM_KEY,
        WRONG_KEY_ENV: "not-the-key",
        INBOUND_KEYS_ENV: "client-key-1, client-key-2",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        # Serve batches request-path log lines by the thousand in throughput mode; tests read them at once.
        "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
        **isolated_ports(),
    }
    cluster.start(port=port, env=env, num_cpus=2)
    try:
        yield Serve(port)
    finally:
        cluster.stop()


def sim_app(
    name: str,
    simulator: BackgroundSimulator,
    *,
    budget: int = 4,
    replicas: int = 1,
    deployment: str = "gpt-4o",
    base_url: str | None = None,
    key_env: str = KEY_ENV,
    # The last dated GA; reasoning_effort needs a preview or v1 (as on Azure).
    api_version: str = "2024-10-21",
    **upstream: Any,
) -> dict[str, Any]:
    """A model server app pointed at the simulator, as the CLI would generate it (with quick retries)."""
    upstream.setdefault("retries", Retries(backoff_initial_s=0.05, backoff_max_s=0.2))
    config = AzureModelConfig(
        openai_base_url=base_url or simulator.base_url,
        openai_api_key="unused-here",
        openai_model=deployment,
        default_query={"api-version": api_version},
        num_concurrent_requests=budget,
        **upstream,
    )
    app = model_server_app(name, config, num_replicas=replicas)
    app["args"]["openai_api_key_env"] = key_env
    app["deployments"][0]["ray_actor_options"] = {"num_cpus": 0}
    return app


class SimAdmin:
    def __init__(self, simulator: BackgroundSimulator) -> None:
        self._http = httpx.Client(base_url=simulator.base_url, timeout=10)

    def stats(self) -> dict[str, Any]:
        return self._http.get("/sim/stats").json()

    def reset(self) -> dict[str, Any]:
        return self._http.post("/sim/reset").json()

    def configure(self, **patch: Any) -> None:
        self._http.post("/sim/config", json=patch).raise_for_status()

    def fault(self, status: int, count: int = 1, retry_after_s: float | None = None) -> None:
        self._http.post(
            "/sim/faults", json={"status": status, "count": count, "retry_after_s": retry_after_s}
        ).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        return self._http.get("/sim/requests").json()["requests"]


@pytest.fixture
def sim_admin(simulator: BackgroundSimulator) -> Iterator[SimAdmin]:
    admin = SimAdmin(simulator)
    admin.reset()
    defaults = simulator.app.state.simulator.config
    yield admin
    admin.configure(
        latency_s=defaults.latency_s,
        ttft_s=defaults.ttft_s,
        inter_token_s=defaults.inter_token_s,
        rpm=defaults.rpm,
        tpm=defaults.tpm,
    )

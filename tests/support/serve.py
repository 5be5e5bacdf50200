"""The session's Serve instance and the model server apps the end-to-end tests deploy on it."""

from __future__ import annotations

from typing import Any

from serve_app import cluster
from serve_app.config import AzureModelConfig, Retries
from serve_app.serve_config import model_server_app
from serve_app.simulator import BackgroundSimulator

SIM_KEY = "sim-key"
KEY_ENV = "TEST_SIM_API_KEY"
WRONG_KEY_ENV = "TEST_WRONG_API_KEY"
INBOUND_KEYS_ENV = "TEST_INBOUND_KEYS"


class Serve:
    """The session's Serve instance: deploy apps (declaratively, replacing the previous set) and reach them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def deploy(self, *apps: dict[str, Any]) -> None:
        cluster.deploy(apps)

    def base_url(self, app: str) -> str:
        return f"{self.url}/{app}/v1"


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
    upstream.setdefault("default_query", {"api-version": api_version})
    config = AzureModelConfig(
        openai_base_url=base_url or simulator.base_url,
        openai_api_key="unused-here",
        openai_model=deployment,
        num_concurrent_requests=budget,
        **upstream,
    )
    app = model_server_app(name, config, num_replicas=replicas)
    app["args"]["openai_api_key_env"] = key_env
    app["deployments"][0]["ray_actor_options"] = {"num_cpus": 0}
    return app

"""Ray Serve configs for model servers: generated from NeMo Gym config, and checked for consistency.

A Serve config is where a cluster is scaled (replicas, budget) and upgraded, so the settings
that keep the budget exact live here, in one place:

- `num_concurrent_requests` travels in `user_config`, which Serve applies to running replicas;
  application `args` are hashed into the code version, so changing them restarts every replica.
- `max_ongoing_requests` is each replica's largest share, ceil(N / R): Serve then keeps what
  the replicas cannot take in its own queue and hands it to the first replica with a free slot.
- The router re-polls saturated replicas every 5-20 ms instead of its default backoff of up to
  0.5 s, which otherwise leaves a freed slot idle for ~0.4 s.
- `max_surge_percent: 0` (stop old replicas before starting replacements); the budget ledger
  is shared across versions anyway.
- `graceful_shutdown_timeout_s` outlasts the longest upstream call, so scaling down or
  upgrading drains calls instead of cutting them.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .config import AzureModelConfig, ModelServerArgs

DEPLOYMENT = "AzureModelServer"
IMPORT_PATH = "serve_app.server:build_app"
SIMULATOR_IMPORT_PATH = "serve_app.simulator.deployment:build_app"
ROUTER = {"initial_backoff_s": 0.005, "backoff_multiplier": 1.5, "max_backoff_s": 0.02}
MAX_QUEUED_REQUESTS = 5000
# Longer than the longest call (Timeouts.total_s defaults to 1200 s) plus a margin.
SHUTDOWN_MARGIN_S = 60.0


def key_env(app: str) -> str:
    """The environment variable that carries an app's Azure key (from a Kubernetes Secret, or set by the CLI)."""
    return re.sub(r"[^A-Z0-9_]", "_", app.upper()) + "_API_KEY"


def model_server_app(name: str, config: AzureModelConfig, *, num_replicas: int = 1) -> dict[str, Any]:
    args = ModelServerArgs(
        openai_base_url=config.openai_base_url,
        openai_model=config.openai_model,
        default_query=config.default_query,
        timeouts=config.timeouts,
        retries=config.retries,
        openai_api_key_env=key_env(name),
    )
    budget = config.num_concurrent_requests
    return {
        "name": name,
        "route_prefix": f"/{name}",
        "import_path": IMPORT_PATH,
        "args": args.model_dump(mode="json"),
        "deployments": [model_server_deployment(budget, num_replicas, args.timeouts.total_s)],
    }


def model_server_deployment(budget: int, num_replicas: int, longest_call_s: float) -> dict[str, Any]:
    return {
        "name": DEPLOYMENT,
        "num_replicas": num_replicas,
        "max_ongoing_requests": math.ceil(budget / num_replicas),
        "max_queued_requests": MAX_QUEUED_REQUESTS,
        "user_config": {"num_concurrent_requests": budget},
        "request_router_config": dict(ROUTER),
        "max_surge_percent": 0,
        "graceful_shutdown_timeout_s": longest_call_s + SHUTDOWN_MARGIN_S,
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
    }


def simulator_app(name: str, route_prefix: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "route_prefix": route_prefix, "import_path": SIMULATOR_IMPORT_PATH, "args": args}

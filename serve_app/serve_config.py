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


# --- checking a Serve config -----------------------------------------------------------------------

# Environment variables whose values must come from a Secret, never from the config file.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)


def check(config: dict[str, Any]) -> list[str]:
    """Every inconsistency in a Serve config that would break the budget, the routes or a secret."""
    problems: list[str] = []
    apps = config.get("applications") or []
    if not apps:
        return ["applications: none listed"]
    prefixes: dict[str, str] = {}
    for i, app in enumerate(apps):
        name = app.get("name", f"applications[{i}]")
        prefix = app.get("route_prefix", "/")
        if prefix in prefixes:
            problems.append(f"{name}: route_prefix {prefix} is also {prefixes[prefix]}'s")
        prefixes.setdefault(prefix, name)
        for var, value in ((app.get("runtime_env") or {}).get("env_vars") or {}).items():
            if _SECRET_NAME.search(var) and value:
                problems.append(f"{name}.runtime_env.env_vars.{var}: a secret written inline; "
                                "set it in the environment from a Secret instead")
        if app.get("import_path") == IMPORT_PATH:
            problems += [f"{name}.{p}" for p in _check_model_server(app)]
    return problems


def _check_model_server(app: dict[str, Any]) -> list[str]:
    from .config import ConfigError, validate_model

    problems = []
    args = dict(app.get("args") or {})
    if "openai_api_key" in args:
        problems.append("args.openai_api_key: a secret written inline; put the key in the environment variable "
                        "named by args.openai_api_key_env (from a Kubernetes Secret)")
        args.pop("openai_api_key")
    try:
        parsed: ModelServerArgs = validate_model(ModelServerArgs, args, "args")
    except ConfigError as exc:
        return problems + exc.problems
    deployments = [d for d in app.get("deployments") or [] if d.get("name") == DEPLOYMENT]
    if not deployments:
        return problems + [f"deployments: no entry for {DEPLOYMENT}; it carries the budget in user_config"]
    deployment = deployments[0]
    budget = (deployment.get("user_config") or {}).get("num_concurrent_requests")
    replicas = deployment.get("num_replicas", 1)
    if not isinstance(budget, int) or budget < 1:
        return problems + [f"deployments.{DEPLOYMENT}.user_config.num_concurrent_requests: missing (the budget N, >= 1)"]
    if "autoscaling_config" in deployment or replicas == "auto":
        problems.append(f"deployments.{DEPLOYMENT}.autoscaling_config: the budget N, not replicas, limits throughput; "
                        "more replicas only split N thinner. Set num_replicas instead")
        return problems
    if budget < replicas:
        problems.append(f"deployments.{DEPLOYMENT}: budget {budget} is below the replica count {replicas}; "
                        "some replicas would never call Azure")
    largest_share = math.ceil(budget / replicas)
    if deployment.get("max_ongoing_requests") != largest_share:
        problems.append(f"deployments.{DEPLOYMENT}.max_ongoing_requests: must be ceil(N / replicas) = {largest_share}, "
                        "so that requests beyond the budget wait in Serve's queue for the first free slot")
    shutdown = deployment.get("graceful_shutdown_timeout_s", 20)
    if shutdown < parsed.timeouts.total_s:
        problems.append(f"deployments.{DEPLOYMENT}.graceful_shutdown_timeout_s: {shutdown} s cuts calls that may last "
                        f"{parsed.timeouts.total_s:g} s (args.timeouts.total_s)")
    if deployment.get("request_router_config") is None:
        problems.append(f"deployments.{DEPLOYMENT}.request_router_config: unset; Serve's default backoff leaves a freed "
                        f"slot idle for up to 0.5 s; use {ROUTER}")
    return problems

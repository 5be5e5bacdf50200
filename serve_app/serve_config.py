"""Ray Serve configs for model servers: generated from NeMo Gym config, and checked for consistency.

A Serve config is where a cluster is scaled (replicas, budget) and upgraded, so the settings
that keep the budget exact live here, in one place:

- `num_concurrent_requests` and the replica's queue bound travel in `user_config`, which Serve
  applies to running replicas; application `args` are hashed into the code version, so
  changing them restarts every replica.
- Each replica holds its exact share (its limiters) and its queue (its pool of upstreams; server.py),
  so Serve must hand it every request at once: `max_ongoing_requests` is far above any share plus queue. Behind
  HAProxy nothing queues in front of a replica anyway; HAProxy picks the replica with the
  fewest open connections, which keeps the queues even in requests, and the budget ledger moves
  slots to where they queue (`budget.division`). A queue dies with its replica, so HAProxy keeps
  each request to send it again elsewhere (`cluster.ingress_env`). Serve's own `max_queued_requests` is
  left unlimited: its rejection is plain text, ours is a 429 in the OpenAI envelope.
- `max_surge_percent: 0` (stop old replicas before starting replacements); the budget ledger
  is shared across versions anyway.
- `graceful_shutdown_timeout_s` outlasts the longest upstream call, so scaling down or
  upgrading drains calls instead of cutting them.
- Serve's access log is off: the replica writes one structured line per request instead.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .config import AzureModelConfig, BudgetConfig, ConfigError, ModelServerArgs, PoolMember, validate_model
from .deployment_constants import (
    DEFAULT_MAX_QUEUED_REQUESTS,
    HARD_STOP_ENV,
    MAX_ONGOING_REQUESTS,
    hard_stop_s,
    shutdown_s,
)

DEPLOYMENT = "AzureModelServer"
IMPORT_PATH = "serve_app.server:build_app"
SIMULATOR_IMPORT_PATH = "serve_app.simulator.deployment:build_app"


def key_env(app: str) -> str:
    """The environment variable that carries an app's Azure key (from a Kubernetes Secret, or set by the CLI)."""
    return re.sub(r"[^A-Z0-9_]", "_", app.upper()) + "_API_KEY"


def model_server_app(name: str, config: AzureModelConfig, *, num_replicas: int = 1) -> dict[str, Any]:
    # Every setting the two shapes share is carried over; the keys are named instead of written.
    shared = config.model_dump(
        include=set(ModelServerArgs.model_fields) & set(AzureModelConfig.model_fields) - {"upstreams"}
    )
    members = [
        PoolMember(
            **member.model_dump(exclude={"openai_api_key", "num_concurrent_requests"}),
            openai_api_key_env=key_env(f"{name}_{member.name}"),
        )
        for member in config.upstreams
    ]
    args = ModelServerArgs(**shared, openai_api_key_env=key_env(name), upstreams=tuple(members))
    deployment = model_server_deployment(config.num_concurrent_requests, num_replicas, args.timeouts.total_s)
    if config.upstreams:
        deployment["user_config"]["upstream_budgets"] = {m.name: m.num_concurrent_requests for m in config.upstreams}
    return {
        "name": name,
        "route_prefix": f"/{name}",
        "import_path": IMPORT_PATH,
        "args": args.model_dump(mode="json"),
        "deployments": [deployment],
    }


def model_server_keys(name: str, config: AzureModelConfig) -> dict[str, str]:
    """Where the replicas of `model_server_app(name, config)` find their Azure keys (none under Entra ID)."""
    keys = {key_env(name): config.openai_api_key} if config.openai_api_key is not None else {}
    for member in config.upstreams:
        if member.openai_api_key is not None:
            keys[key_env(f"{name}_{member.name}")] = member.openai_api_key
    return {env: key.get_secret_value() for env, key in keys.items()}


def model_server_deployment(budget: int, num_replicas: int, longest_call_s: float) -> dict[str, Any]:
    return {
        "name": DEPLOYMENT,
        "num_replicas": num_replicas,
        "max_ongoing_requests": MAX_ONGOING_REQUESTS,
        "user_config": {"num_concurrent_requests": budget, "max_queued_requests": DEFAULT_MAX_QUEUED_REQUESTS},
        "max_surge_percent": 0,
        "graceful_shutdown_timeout_s": shutdown_s(longest_call_s),
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        "logging_config": {"enable_access_log": False},
    }


def simulator_app(name: str, route_prefix: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "route_prefix": route_prefix, "import_path": SIMULATOR_IMPORT_PATH, "args": args}


# --- checking a Serve config -----------------------------------------------------------------------

# Environment variables whose values must come from a Secret, never from the config file.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)


def check(config: dict[str, Any], *, hard_stop_after_s: float | None = None) -> list[str]:
    """Every inconsistency in a Serve config that would break the budget, the routes, a secret or a
    long call. `hard_stop_after_s` is HAProxy's hard stop the cluster runs with, when known
    (RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S, set in the Ray pods' environment, not in the config)."""
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
                problems.append(
                    f"{name}.runtime_env.env_vars.{var}: a secret written inline; "
                    "set it in the environment from a Secret instead"
                )
        if app.get("import_path") == IMPORT_PATH:
            problems += [f"{name}.{p}" for p in _check_model_server(app, hard_stop_after_s)]
    return problems


def _check_model_server(app: dict[str, Any], hard_stop_after_s: float | None) -> list[str]:
    problems = []
    args = dict(app.get("args") or {})
    if "openai_api_key" in args:
        problems.append(
            "args.openai_api_key: a secret written inline; put the key in the environment variable "
            "named by args.openai_api_key_env (from a Kubernetes Secret)"
        )
        args.pop("openai_api_key")
    try:
        parsed: ModelServerArgs = validate_model(ModelServerArgs, args, "args")
    except ConfigError as exc:
        return problems + exc.problems
    deployments = [d for d in app.get("deployments") or [] if d.get("name") == DEPLOYMENT]
    if not deployments:
        return problems + [f"deployments: no entry for {DEPLOYMENT}; it carries the budget in user_config"]
    deployment = deployments[0]
    where = f"deployments.{DEPLOYMENT}"
    try:
        budget: BudgetConfig = validate_model(BudgetConfig, deployment.get("user_config") or {}, f"{where}.user_config")
        budgets = budget.budgets(parsed.pool(), f"{where}.user_config")
    except ConfigError as exc:
        return problems + exc.problems
    if "autoscaling_config" in deployment or deployment.get("num_replicas") == "auto":
        return problems + [
            f"{where}.autoscaling_config: the budget N, not replicas, limits throughput; "
            "more replicas only split N thinner. Set num_replicas instead"
        ]
    replicas = deployment.get("num_replicas", 1)
    for name, n in budgets.items():
        if n < replicas:
            whose = "" if len(budgets) == 1 else f" of upstream {name}"
            problems.append(
                f"{where}: budget {n}{whose} is below the replica count {replicas}; "
                "some replicas would never call Azure"
            )
    needed = sum(math.ceil(n / replicas) for n in budgets.values()) + budget.max_queued_requests
    if deployment.get("max_ongoing_requests", 5) < needed:
        problems.append(
            f"{where}.max_ongoing_requests: below a replica's share plus its queue ({needed}); Serve would "
            "hold requests back where no slot can reach them"
        )
    if deployment.get("max_queued_requests", -1) != -1:
        problems.append(
            f"{where}.max_queued_requests: leave it unset; the replica's own queue "
            "(user_config.max_queued_requests) answers 429 in the OpenAI envelope, Serve's in plain text"
        )
    shutdown = deployment.get("graceful_shutdown_timeout_s", 20)
    if shutdown < parsed.timeouts.total_s:
        problems.append(
            f"{where}.graceful_shutdown_timeout_s: {shutdown} s cuts calls that may last "
            f"{parsed.timeouts.total_s:g} s (args.timeouts.total_s)"
        )
    if hard_stop_after_s is not None and hard_stop_after_s < hard_stop_s(parsed.timeouts.total_s):
        problems.append(
            f"args.timeouts.total_s: calls may last {parsed.timeouts.total_s:g} s, but {HARD_STOP_ENV}="
            f"{hard_stop_after_s:g} lets an HAProxy reload cut them; it needs at least "
            f"{hard_stop_s(parsed.timeouts.total_s)} (the longest call, a replica's drain and a margin)"
        )
    return problems

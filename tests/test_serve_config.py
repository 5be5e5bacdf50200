"""The Serve config check: the shipped config passes; each kind of inconsistency is caught by name."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from serve_app.config import AzureModelConfig
from serve_app.serve_config import check, model_server_app

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = yaml.safe_load((ROOT / "configs" / "serve_config.yaml").read_text())


def model(config: dict[str, Any], name: str = "policy_model") -> dict[str, Any]:
    return next(app for app in config["applications"] if app["name"] == name)


def deployment(config: dict[str, Any], name: str = "policy_model") -> dict[str, Any]:
    return model(config, name)["deployments"][0]


def test_the_shipped_config_passes() -> None:
    assert check(SHIPPED) == []


def test_a_generated_config_passes() -> None:
    config = AzureModelConfig(
        openai_base_url="https://x.openai.azure.com",
        openai_api_key="k",
        openai_model="gpt-4o",
        default_query={"api-version": "2024-10-21"},
        num_concurrent_requests=10,
    )
    assert check({"applications": [model_server_app("policy_model", config, num_replicas=3)]}) == []


def _set(path: Callable[[dict[str, Any]], dict[str, Any]], key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        path(config)[key] = value

    return change


def _drop(path: Callable[[dict[str, Any]], dict[str, Any]], key: str) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        del path(config)[key]

    return change


def _args(config: dict[str, Any]) -> dict[str, Any]:
    return model(config)["args"]


BROKEN = {
    "budget below the replica count": (lambda c: deployment(c).update(num_replicas=20), "below the replica count"),
    "missing api-version on the classic form": (
        _set(lambda c: model(c, "judge_model")["args"], "default_query", {"foo": "bar"}),
        "api-version",
    ),
    "duplicate route prefix": (
        _set(lambda c: model(c, "judge_model"), "route_prefix", "/policy_model"),
        "route_prefix /policy_model",
    ),
    "key written inline in args": (_set(_args, "openai_api_key", "sk-live-123"), "secret written inline"),
    "key written inline in runtime_env": (
        _set(lambda c: model(c), "runtime_env", {"env_vars": {"POLICY_MODEL_API_KEY": "sk-live-123"}}),
        "secret written inline",
    ),
    "budget missing": (_drop(deployment, "user_config"), "user_config.num_concurrent_requests: Field required"),
    "max_ongoing_requests below share plus queue": (
        _set(deployment, "max_ongoing_requests", 8),
        "share plus its queue (5008)",
    ),
    "Serve's plain-text queue limit set": (_set(deployment, "max_queued_requests", 100), "leave it unset"),
    "shutdown shorter than the longest call": (_set(deployment, "graceful_shutdown_timeout_s", 30), "cuts calls"),
    "autoscaling": (
        lambda c: deployment(c).update(autoscaling_config={"min_replicas": 1, "max_replicas": 4}),
        "autoscaling_config",
    ),
    "unknown arg": (_set(_args, "openai_modle", "x"), "args.openai_modle: unknown key"),
    "no model server deployment entry": (_set(lambda c: model(c), "deployments", []), "no entry for AzureModelServer"),
}


@pytest.mark.parametrize("change, message", BROKEN.values(), ids=BROKEN.keys())
def test_each_inconsistency_is_reported(change: Callable[[dict[str, Any]], None], message: str) -> None:
    config = copy.deepcopy(SHIPPED)
    change(config)
    problems = check(config)
    assert any(message in problem for problem in problems), problems


def test_the_command_fails_on_a_broken_config_and_passes_the_shipped_one(tmp_path: Path) -> None:
    broken = copy.deepcopy(SHIPPED)
    deployment(broken)["num_replicas"] = 100
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    run = [sys.executable, "-m", "serve_app", "check-config"]
    ok = subprocess.run([*run, str(ROOT / "configs" / "serve_config.yaml")], capture_output=True, text=True)
    bad = subprocess.run([*run, str(path)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert bad.returncode == 1 and "below the replica count" in bad.stderr

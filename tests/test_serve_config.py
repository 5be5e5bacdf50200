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

from serve_app.cli import main
from serve_app.config import AzureModelConfig, Timeouts
from serve_app.deployment_constants import DEFAULT_TOTAL_S, HARD_STOP_ENV, hard_stop_s, shutdown_s
from serve_app.serve_config import check, model_server_app

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = yaml.safe_load((ROOT / "configs" / "serve_config.yaml").read_text())


def model(config: dict[str, Any], name: str = "policy_model") -> dict[str, Any]:
    return next(app for app in config["applications"] if app["name"] == name)


def deployment(config: dict[str, Any], name: str = "policy_model") -> dict[str, Any]:
    return model(config, name)["deployments"][0]


def test_the_shipped_config_passes() -> None:
    assert check(SHIPPED) == []


def generated(total_s: float = DEFAULT_TOTAL_S) -> dict[str, Any]:
    config = AzureModelConfig(
        openai_base_url="https://x.openai.azure.com",
        openai_api_key="k",
        openai_model="gpt-4o",
        default_query={"api-version": "2024-10-21"},
        num_concurrent_requests=10,
        timeouts=Timeouts(total_s=total_s),
    )
    return {"applications": [model_server_app("policy_model", config, num_replicas=3)]}


def test_a_generated_config_passes() -> None:
    assert check(generated()) == []


def test_a_longer_call_lengthens_the_generated_drain() -> None:
    config = generated(total_s=3000)
    assert deployment(config)["graceful_shutdown_timeout_s"] == shutdown_s(3000) > 3000
    assert check(config) == []


@pytest.mark.parametrize("total_s", [1.0, DEFAULT_TOTAL_S, 3000.0, 86_400.0])
def test_the_hard_stop_outlasts_the_drain_which_outlasts_the_call(total_s: float) -> None:
    assert hard_stop_s(total_s) > shutdown_s(total_s) > total_s


def test_calls_longer_than_the_clusters_haproxy_hard_stop_are_refused() -> None:
    config = generated(total_s=3000)
    assert check(config, hard_stop_after_s=hard_stop_s(3000)) == []
    problems = check(config, hard_stop_after_s=hard_stop_s(DEFAULT_TOTAL_S))
    assert any(HARD_STOP_ENV in p and "args.timeouts.total_s" in p for p in problems), problems


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


def test_the_command_checks_against_the_hard_stop_its_environment_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(generated(total_s=3000)))
    monkeypatch.delenv(HARD_STOP_ENV, raising=False)
    assert main(["check-config", str(path)]) == 0
    monkeypatch.setenv(HARD_STOP_ENV, "1320")
    assert main(["check-config", str(path)]) == 1
    assert HARD_STOP_ENV in capsys.readouterr().err
    monkeypatch.setenv(HARD_STOP_ENV, "soon")
    assert main(["check-config", str(path)]) == 2
    assert "not a number" in capsys.readouterr().err


def pooled(**budgets: int) -> dict[str, Any]:
    config = generated()
    model(config)["args"]["upstreams"] = [
        {"name": "eastus2", "openai_base_url": "https://east.openai.azure.com/openai/v1"},
        {"name": "westus", "openai_base_url": "https://west.openai.azure.com/openai/v1"},
    ]
    deployment(config)["user_config"]["upstream_budgets"] = budgets
    return config


def test_a_pool_passes_with_a_budget_for_each_upstream() -> None:
    assert check(pooled(eastus2=6, westus=3)) == []


def test_a_pools_budgets_are_checked_upstream_by_upstream() -> None:
    where = "policy_model.deployments.AzureModelServer"
    assert check(pooled(eastus2=6)) == [
        f"{where}.user_config.upstream_budgets.westus: missing; args.upstreams names it"
    ]
    assert check(pooled(eastus2=6, westus=2)) == [
        f"{where}: budget 2 of upstream westus is below the replica count 3; some replicas would never call Azure"
    ]

"""Simulator: its settings model, defaults and the Ray Serve builder's argument handling."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.simulator import DeploymentSpec, SimulatorConfig


def test_defaults_need_no_credentials_and_add_no_delay() -> None:
    config = SimulatorConfig()
    assert config.api_keys == ("sim-key",)
    assert (config.latency_s, config.ttft_s, config.inter_token_s) == (0, 0, 0)
    assert (config.rpm, config.tpm) == (None, None)
    assert config.deployments["gpt-4o"] == DeploymentSpec(model="gpt-4o-2024-11-20", reasoning=False)
    assert config.deployments["gpt-5-mini"] == DeploymentSpec(model="gpt-5-mini-2025-08-07", reasoning=True)
    assert {"2024-02-01", "2024-06-01", "2024-10-21", "2024-12-01-preview", "2025-04-01-preview"} <= set(
        config.api_versions
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"unknown": 1},
        {"latency_s": -0.1},
        {"rpm": 0},
        {"tpm": -5},
        {"rate_limit_window_s": 0},
        {"deployments": {"x": 3}},
    ],
)
def test_invalid_settings_are_refused(settings: dict) -> None:
    with pytest.raises(ValidationError):
        SimulatorConfig.model_validate(settings)


@pytest.mark.parametrize(
    "model, reasoning",
    [
        ("o1-2024-12-17", True),
        ("o3-mini-2025-01-31", True),
        ("o4-mini-2025-04-16", True),
        ("gpt-5-2025-08-07", True),
        ("gpt-5-chat-2025-08-07", False),
        ("gpt-4o-2024-11-20", False),
        ("gpt-4.1-mini-2025-04-14", False),
    ],
)
def test_a_deployment_given_as_a_model_version_guesses_whether_it_reasons(model: str, reasoning: bool) -> None:
    config = SimulatorConfig.model_validate({"deployments": {"d": model}})
    assert config.deployments["d"] == DeploymentSpec(model=model, reasoning=reasoning)


def test_an_explicit_reasoning_flag_wins_over_the_guess() -> None:
    config = SimulatorConfig.model_validate({"deployments": {"d": {"model": "o3-mini", "reasoning": False}}})
    assert config.deployments["d"].reasoning is False


def test_with_deployments_adds_names_and_keeps_the_defaults() -> None:
    config = SimulatorConfig().with_deployments("a", "b").with_deployments("r", reasoning=True)
    assert (
        config.deployments["a"] == config.deployments["b"] == DeploymentSpec(model="gpt-4o-2024-11-20", reasoning=False)
    )
    assert config.deployments["r"].reasoning is True
    assert "gpt-4o" in config.deployments


def test_patching_merges_deployments_and_a_null_removes_one() -> None:
    patched = SimulatorConfig().patched({"rpm": 60, "deployments": {"new": "gpt-4o-2024-08-06", "gpt-4o": None}})
    assert patched.rpm == 60
    assert patched.deployments["new"].model == "gpt-4o-2024-08-06"
    assert "gpt-4o" not in patched.deployments and "gpt-5-mini" in patched.deployments


# Ray's own models trigger pydantic deprecation warnings on import.
@pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`")
def test_the_serve_builder_validates_its_args_before_deploying() -> None:
    from ray.serve import Application

    from serve_app.simulator.deployment import build_app

    assert isinstance(build_app({"latency_s": 0.1, "deployments": {"d": "gpt-4o-2024-11-20"}}), Application)
    with pytest.raises(ValidationError):
        build_app({"latency": 0.1})

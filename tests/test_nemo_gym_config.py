"""Our NeMo Gym component: what gym hands its entrypoint, read into one model server's settings (no Ray)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from serve_app.config import SIMULATED_DEPLOYMENT, SIMULATOR_KEY, ConfigError
from serve_app.nemo_gym import KIND, component_root, gym_model_server

COMPONENT = component_root() / "responses_api_models" / KIND


def global_config(**server: Any) -> str:
    """gym's global config as its entrypoint sees it: YAML, interpolations unresolved, host and port assigned."""
    section = {
        "entrypoint": "app.py",
        "host": "127.0.0.1",
        "port": 18001,
        "openai_base_url": "${policy_base_url}",
        "openai_api_key": "${policy_api_key}",
        "openai_model": "${policy_model_name}",
        "default_query": {"api-version": "2024-10-21"},
        "num_concurrent_requests": 8,
        **server,
    }
    return yaml.safe_dump(
        {
            "policy_base_url": "https://example.openai.azure.com",
            "policy_api_key": "the-key",
            "policy_model_name": "gpt-4o-prod",
            "ray_head_node_address": "127.0.0.1:6379",
            "policy_model": {"responses_api_models": {KIND: section}},
        }
    )


def test_the_component_ships_what_gym_looks_for() -> None:
    assert (COMPONENT / "app.py").is_file()
    assert (COMPONENT / "requirements.txt").is_file()  # gym builds the server's venv from it
    shipped = yaml.safe_load((COMPONENT / "configs" / f"{KIND}.yaml").read_text())
    assert shipped["policy_model"]["responses_api_models"][KIND]["entrypoint"] == "app.py"


def test_a_server_is_read_with_its_interpolations_resolved() -> None:
    config = gym_model_server(global_config(), "policy_model")
    assert config.openai_base_url == "https://example.openai.azure.com"
    assert config.openai_api_key.get_secret_value() == "the-key"
    assert config.openai_model == "gpt-4o-prod"
    assert (config.host, config.port, config.num_replicas, config.simulate) == ("127.0.0.1", 18001, 1, False)


def test_simulate_needs_no_credentials_and_keeps_the_deployment_name() -> None:
    text = global_config(simulate=True, openai_base_url=None, openai_api_key=None, openai_model="judge")
    config = gym_model_server(text, "policy_model")
    assert config.openai_api_key.get_secret_value() == SIMULATOR_KEY
    assert config.openai_model == "judge"


def test_simulate_fills_a_missing_deployment_name() -> None:
    text = global_config(simulate=True, openai_model="???")
    assert gym_model_server(text, "policy_model").openai_model == SIMULATED_DEPLOYMENT


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"openai_api_key": "???"}, f"policy_model.responses_api_models.{KIND}.openai_api_key: missing value"),
        ({"openai_model": "${nowhere}"}, f"policy_model.responses_api_models.{KIND}.openai_model: cannot resolve"),
        ({"max_tokens": 5}, f"policy_model.responses_api_models.{KIND}.max_tokens: unknown key"),
        ({"num_workers": 4}, "num_workers: replicas share the budget; set num_replicas instead"),
        ({"num_replicas": 9}, "num_concurrent_requests: below num_replicas"),
        ({"port": 0}, f"policy_model.responses_api_models.{KIND}.port"),
    ],
)
def test_a_bad_server_config_is_refused_naming_the_key(server: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("$", r"\$").replace("{", r"\{")):
        gym_model_server(global_config(**server), "policy_model")


def test_a_server_missing_from_the_global_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="judge_model"):
        gym_model_server(global_config(), "judge_model")


def test_the_key_is_never_in_an_error() -> None:
    with pytest.raises(ConfigError) as raised:
        gym_model_server(global_config(port="not-a-port"), "policy_model")
    assert "the-key" not in str(raised.value)

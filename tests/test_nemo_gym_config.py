"""Our NeMo Gym component: what gym hands its entrypoint, read into one model server's settings (no Ray)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from serve_app.config import SIMULATED_DEPLOYMENT, SIMULATOR_KEY, ConfigError, ModelServerArgs, validate_model
from serve_app.nemo_gym import KIND, component_root, gym_model_server
from serve_app.serve_config import check, model_server_app, model_server_keys

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


# --- a pool of upstreams, written the NeMo Gym way (each key from env.yaml, each budget beside it) --------------

EASTUS2 = {
    "name": "eastus2",
    "openai_base_url": "https://east.openai.azure.com/openai/v1",
    "openai_api_key": "east-key",
    "num_concurrent_requests": 4,
}
WESTUS = {
    "name": "westus",
    "openai_base_url": "https://west.openai.azure.com",
    "default_query": {"api-version": "2025-04-01-preview"},
    "auth": "entra",
    "num_concurrent_requests": 2,
}


def test_upstreams_make_one_model_server_over_several_deployments_each_with_its_key_and_budget() -> None:
    config = gym_model_server(global_config(upstreams=[EASTUS2, WESTUS]), "policy_model")
    app = model_server_app("policy_model", config)
    args = validate_model(ModelServerArgs, app["args"], "args")
    assert [(s.name, s.openai_base_url, s.openai_model, s.auth) for s in args.pool()] == [
        ("primary", "https://example.openai.azure.com", "gpt-4o-prod", "key"),
        ("eastus2", "https://east.openai.azure.com/openai/v1", "gpt-4o-prod", "key"),
        ("westus", "https://west.openai.azure.com", "gpt-4o-prod", "entra"),
    ]
    user_config = app["deployments"][0]["user_config"]
    assert (user_config["num_concurrent_requests"], user_config["upstream_budgets"]) == (8, {"eastus2": 4, "westus": 2})
    # Keys travel in the replicas' environment, one variable per upstream; never in the args.
    keys = model_server_keys("policy_model", config)
    assert keys == {"POLICY_MODEL_API_KEY": "the-key", "POLICY_MODEL_EASTUS2_API_KEY": "east-key"}
    assert args.pool()[1].openai_api_key_env == "POLICY_MODEL_EASTUS2_API_KEY"
    assert "east-key" not in str(app)
    assert check({"applications": [app]}) == []


def test_a_server_without_upstreams_is_the_same_single_upstream_server_as_before() -> None:
    app = model_server_app("policy_model", gym_model_server(global_config(), "policy_model"))
    assert app["args"]["upstreams"] == [] and "upstream_budgets" not in app["deployments"][0]["user_config"]


@pytest.mark.parametrize(
    ("upstreams", "num_replicas", "problem"),
    [
        ([{**EASTUS2, "openai_api_key": None}], 1, "eastus2.openai_api_key: must not be empty"),
        ([EASTUS2, {**WESTUS, "name": "eastus2"}], 1, "names must differ"),
        ([{**EASTUS2, "name": "primary"}], 1, "names must differ"),
        ([{**EASTUS2, "num_concurrent_requests": 0}], 1, "num_concurrent_requests"),
        ([EASTUS2, WESTUS], 3, "policy_model.responses_api_models.azure_openai_ray_serve.upstreams.westus."),
    ],
)
def test_a_pool_member_that_cannot_work_is_refused_by_name(upstreams: Any, num_replicas: int, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        gym_model_server(global_config(upstreams=upstreams, num_replicas=num_replicas), "policy_model")
    assert problem in str(caught.value)


def test_simulate_answers_for_every_upstream_of_a_pool() -> None:
    text = global_config(simulate=True, openai_base_url=None, openai_api_key=None, upstreams=[EASTUS2, WESTUS])
    config = gym_model_server(text, "policy_model")
    assert [(m.openai_api_key.get_secret_value(), m.auth, m.openai_model) for m in config.upstreams] == [
        (SIMULATOR_KEY, None, None),  # the top-level auth, key, as the simulator's
        (SIMULATOR_KEY, "key", None),
    ]
    assert {m.openai_base_url for m in config.upstreams} <= {"http://127.0.0.1", "http://127.0.0.1/openai/v1"}

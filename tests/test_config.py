"""Configuration: the NeMo Gym contract, env.yaml interpolation, +overrides, and one report of every problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from serve_app.config import (
    DEFAULT_CONFIG,
    AzureModelConfig,
    BudgetConfig,
    ConfigError,
    ModelServerArgs,
    load_model_servers,
    validate_model,
)

PREFIX = "policy_model.responses_api_models.azure_openai_model"
CREDENTIALS = [
    "+policy_base_url=https://example.openai.azure.com/",
    "+policy_api_key=secret-key-123",
    "+policy_model_name=gpt-4o",
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_shipped_config_with_env_yaml_values_loads(tmp_path: Path) -> None:
    env = write(
        tmp_path,
        "env.yaml",
        "policy_base_url: https://example.openai.azure.com\npolicy_api_key: k1\npolicy_model_name: gpt-4o\n"
        "policy_model:\n  responses_api_models:\n    azure_openai_model:\n      default_query:\n        api-version: 2024-10-21\n",
    )
    servers = load_model_servers([DEFAULT_CONFIG], env_file=env)
    config = servers["policy_model"]
    assert config.openai_base_url == "https://example.openai.azure.com"
    assert config.openai_model == "gpt-4o"
    assert config.openai_api_key.get_secret_value() == "k1"
    assert config.default_query == {"api-version": "2024-10-21"}
    assert config.num_concurrent_requests == 8


def test_nemo_gym_plus_overrides_fill_and_override_values(tmp_path: Path) -> None:
    servers = load_model_servers(
        [DEFAULT_CONFIG],
        [*CREDENTIALS, f"+{PREFIX}.default_query.api-version=2024-10-21", f"+{PREFIX}.num_concurrent_requests=3"],
        env_file=None,
    )
    config = servers["policy_model"]
    assert config.default_query["api-version"] == "2024-10-21"  # a string, not a YAML date
    assert config.num_concurrent_requests == 3
    assert config.openai_base_url == "https://example.openai.azure.com"


def test_overrides_win_over_env_yaml(tmp_path: Path) -> None:
    env = write(
        tmp_path, "env.yaml", "policy_base_url: https://a.openai.azure.com\npolicy_api_key: k\npolicy_model_name: m\n"
    )
    servers = load_model_servers(
        [DEFAULT_CONFIG], ["+policy_model_name=other", f"+{PREFIX}.default_query.api-version=2024-10-21"], env_file=env
    )
    assert servers["policy_model"].openai_model == "other"


def test_every_missing_and_unresolved_key_is_named_in_one_message() -> None:
    with pytest.raises(ConfigError) as info:
        load_model_servers([DEFAULT_CONFIG], env_file=None)
    message = str(info.value)
    for path in ("openai_base_url", "openai_api_key", "openai_model", "default_query.api-version"):
        assert f"{PREFIX}.{path}" in message
    assert "${policy_base_url}" in message
    assert len(info.value.problems) == 4


def test_unknown_keys_are_an_error_by_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_model_servers(
            [DEFAULT_CONFIG],
            [*CREDENTIALS, f"+{PREFIX}.default_query.api-version=2024-10-21", f"+{PREFIX}.entrypoint=app.py"],
            env_file=None,
        )
    assert f"{PREFIX}.entrypoint: unknown key" in str(info.value)


def test_nemo_gym_config_paths_override_is_accepted(tmp_path: Path) -> None:
    judge = Path(DEFAULT_CONFIG).parent / "judge_model.yaml"
    servers = load_model_servers(
        [DEFAULT_CONFIG],
        [
            f"+config_paths=[{judge}]",
            *CREDENTIALS,
            f"+{PREFIX}.default_query.api-version=2024-10-21",
            "+judge_base_url=https://j.openai.azure.com",
            "+judge_api_key=jk",
            "+judge_model_name=gpt-4o-mini",
        ],
        env_file=None,
    )
    assert set(servers) == {"policy_model", "judge_model"}
    assert servers["judge_model"].num_concurrent_requests == 4


def test_other_model_server_kinds_are_refused(tmp_path: Path) -> None:
    other = write(
        tmp_path, "other.yaml", "x_model:\n  responses_api_models:\n    vllm_model:\n      base_url: http://x\n"
    )
    with pytest.raises(ConfigError, match="x_model.responses_api_models.vllm_model"):
        load_model_servers([other], env_file=None)


def test_a_missing_config_file_is_reported() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_model_servers(["no/such/file.yaml"], env_file=None)


VALID = {
    "openai_base_url": "https://example.openai.azure.com",
    "openai_api_key": "super-secret-key",
    "openai_model": "gpt-4o",
    "default_query": {"api-version": "2024-10-21"},
    "num_concurrent_requests": 8,
}

INVALID = {
    "api-version missing": ({"default_query": {"foo": "bar"}}, "default_query"),
    "budget below one": ({"num_concurrent_requests": 0}, "num_concurrent_requests"),
    "not a URL": ({"openai_base_url": "example.openai.azure.com"}, "openai_base_url"),
    "empty key": ({"openai_api_key": ""}, "openai_api_key"),
    "empty deployment": ({"openai_model": ""}, "openai_model"),
    "unknown timeout": ({"timeouts": {"idle_s": 3}}, "timeouts.idle_s"),
}


@pytest.mark.parametrize("change, path", INVALID.values(), ids=INVALID.keys())
def test_invalid_values_are_named(change: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_model(AzureModelConfig, {**VALID, **change}, "m")
    assert f"m.{path}" in str(info.value)


def test_the_key_never_appears_in_reprs_or_errors() -> None:
    config = validate_model(AzureModelConfig, VALID, "m")
    assert "super-secret-key" not in repr(config) and "super-secret-key" not in str(config)
    with pytest.raises(ConfigError) as info:
        validate_model(AzureModelConfig, {**VALID, "openai_api_key": ["super-secret-key"]}, "m")
    assert "super-secret-key" not in str(info.value)


def test_default_query_values_become_strings() -> None:
    config = validate_model(AzureModelConfig, {**VALID, "default_query": {"api-version": "2024-10-21", "x": 3}}, "m")
    assert config.default_query == {"api-version": "2024-10-21", "x": "3"}


def test_serve_args_name_the_key_variable_instead_of_holding_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    args = validate_model(
        ModelServerArgs,
        {k: v for k, v in VALID.items() if k not in ("openai_api_key", "num_concurrent_requests")}
        | {"openai_api_key_env": "MY_KEY"},
        "args",
    )
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_KEY"):
        args.api_key()
    monkeypatch.setenv("MY_KEY", "k")
    assert args.api_key().get_secret_value() == "k"
    with pytest.raises(ConfigError, match="args.openai_api_key: unknown key"):
        validate_model(ModelServerArgs, {**VALID}, "args")


def test_the_budget_is_at_least_one() -> None:
    with pytest.raises(ConfigError, match="user_config.num_concurrent_requests"):
        validate_model(BudgetConfig, {"num_concurrent_requests": 0}, "user_config")


def test_request_opt_ins_are_off_by_default_and_travel_to_the_serve_args() -> None:
    from serve_app.serve_config import model_server_app

    assert validate_model(AzureModelConfig, VALID, "m").ignored_extra_body_keys == ()
    config = validate_model(
        AzureModelConfig,
        {**VALID, "ignored_extra_body_keys": ["top_k"], "ignored_hosted_tools": ["web_search"]},
        "m",
    )
    args = validate_model(ModelServerArgs, model_server_app("m", config)["args"], "args")
    assert (args.ignored_extra_body_keys, args.ignored_hosted_tools) == (("top_k",), ("web_search",))

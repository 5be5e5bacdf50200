"""Configuration: the NeMo Gym contract, env.yaml interpolation, +overrides, and one report of every problem."""

from __future__ import annotations

import re
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

ROOT = Path(__file__).resolve().parent.parent
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
        "policy_model:\n  responses_api_models:\n    azure_openai_model:\n"
        "      default_query:\n        api-version: 2024-10-21\n",
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
    judge = ROOT / "configs" / "judge_model.yaml"
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
    with pytest.raises(ConfigError, match=re.escape("x_model.responses_api_models.vllm_model")):
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


def test_the_v1_api_needs_no_api_version() -> None:
    v1 = {**VALID, "openai_base_url": "https://example.openai.azure.com/openai/v1/", "default_query": {}}
    config = validate_model(AzureModelConfig, v1, "m")
    assert config.openai_base_url == "https://example.openai.azure.com/openai/v1"
    assert config.default_query == {}
    without = {k: v for k, v in v1.items() if k != "default_query"}
    assert validate_model(AzureModelConfig, without, "m").default_query == {}


def test_the_shipped_configs_placeholder_api_version_is_not_missing_on_the_v1_api() -> None:
    servers = load_model_servers(
        [DEFAULT_CONFIG],
        [
            "+policy_base_url=https://example.services.ai.azure.com/openai/v1",
            "+policy_api_key=secret-key-123",
            "+policy_model_name=o3-mini",
        ],
        env_file=None,
    )
    assert servers["policy_model"].default_query == {}


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
        args.pool()[0].api_key()
    monkeypatch.setenv("MY_KEY", "k")
    key = args.pool()[0].api_key()
    assert key is not None and key.get_secret_value() == "k"
    with pytest.raises(ConfigError, match=re.escape("args.openai_api_key: unknown key")):
        validate_model(ModelServerArgs, {**VALID}, "args")


def test_the_budget_is_at_least_one() -> None:
    with pytest.raises(ConfigError, match=re.escape("user_config.num_concurrent_requests")):
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


POOL_ARGS = {
    **{k: v for k, v in VALID.items() if k not in ("openai_api_key", "num_concurrent_requests")},
    "openai_api_key_env": "SWEDEN_KEY",
    "rejected_parameters": ["temperature"],
    "upstreams": [
        {"name": "eastus2", "openai_base_url": "https://east.openai.azure.com/openai/v1", "openai_api_key_env": "EAST"},
        {
            "name": "westus",
            "openai_base_url": "https://west.openai.azure.com",
            "openai_model": "gpt-4o-west",
            "default_query": {"api-version": "2025-04-01-preview"},
            "auth": "entra",
            "rejected_parameters": [],
        },
    ],
}


def test_a_pool_member_takes_what_it_leaves_unset_from_the_top_level_upstream() -> None:
    args: ModelServerArgs = validate_model(ModelServerArgs, POOL_ARGS, "args")
    primary, east, west = args.pool()
    assert (primary.name, primary.openai_model, primary.openai_api_key_env) == ("primary", "gpt-4o", "SWEDEN_KEY")
    assert (east.openai_model, east.openai_api_key_env, east.default_query, east.auth) == ("gpt-4o", "EAST", {}, "key")
    assert east.rejected_parameters == ("temperature",)
    assert (west.openai_model, west.auth, west.rejected_parameters) == ("gpt-4o-west", "entra", ())
    assert west.api_key() is None


def test_without_upstreams_a_model_server_is_a_pool_of_one() -> None:
    args: ModelServerArgs = validate_model(ModelServerArgs, {**POOL_ARGS, "upstreams": []}, "args")
    assert [spec.name for spec in args.pool()] == ["primary"]
    assert BudgetConfig(num_concurrent_requests=8).budgets(args.pool()) == {"primary": 8}


POOL_INVALID = {
    "a repeated name": ([{"name": "primary", "openai_base_url": "https://a.openai.azure.com/openai/v1"}], "upstreams"),
    "a classic URL without api-version": (
        [{"name": "a", "openai_base_url": "https://a.openai.azure.com"}],
        "upstreams.0.default_query",
    ),
    "an unknown key": (
        [{"name": "a", "openai_base_url": "https://a.openai.azure.com/openai/v1", "timeouts": {}}],
        "upstreams.0.timeouts: unknown key",
    ),
    "a name unfit for a metric tag": (
        [{"name": "East US", "openai_base_url": "https://a.openai.azure.com/openai/v1"}],
        "upstreams.0.name",
    ),
}


@pytest.mark.parametrize("upstreams, path", POOL_INVALID.values(), ids=POOL_INVALID.keys())
def test_invalid_pool_members_are_named(upstreams: list[dict[str, Any]], path: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"args.{path}")):
        validate_model(ModelServerArgs, {**POOL_ARGS, "upstreams": upstreams}, "args")


def test_each_upstream_needs_its_own_budget_and_no_budget_names_an_unknown_upstream() -> None:
    pool = validate_model(ModelServerArgs, POOL_ARGS, "args").pool()
    budget = BudgetConfig(num_concurrent_requests=8, upstream_budgets={"eastus2": 4, "westus": 2})
    assert budget.budgets(pool) == {"primary": 8, "eastus2": 4, "westus": 2}
    with pytest.raises(ConfigError) as problem:
        BudgetConfig(num_concurrent_requests=8, upstream_budgets={"eastus2": 4, "centralus": 2}).budgets(pool)
    assert problem.value.problems == [
        "user_config.upstream_budgets.westus: missing; args.upstreams names it",
        "user_config.upstream_budgets.centralus: no such upstream in args.upstreams",
    ]
    with pytest.raises(ConfigError, match=re.escape("user_config.upstream_budgets")):
        validate_model(BudgetConfig, {"num_concurrent_requests": 8, "upstream_budgets": {"eastus2": 0}}, "user_config")

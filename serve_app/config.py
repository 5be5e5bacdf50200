"""Configuration: the NeMo Gym `azure_openai_model` contract, the Serve app's args, and the YAML loader.

Two shapes describe the same model server:

- `AzureModelConfig` is what a NeMo Gym user writes (`policy_model.responses_api_models.
  azure_openai_model.*`), key included. `load_model_servers` reads it from YAML + env.yaml +
  `+dotted.key=value` overrides.
- `ModelServerArgs` is what a Ray Serve config carries as application `args`. It names the
  environment variable that holds the key instead of holding it, because Serve logs application
  args and stores them in the cluster's state; and it leaves out `num_concurrent_requests`,
  which travels in the deployment's `user_config` so that it can change without restarting
  replicas (changing application args restarts every replica).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

MODEL_SERVER_KIND = ("responses_api_models", "azure_openai_model")
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "azure_openai_model.yaml"
DEFAULT_KEY_ENV = "AZURE_OPENAI_API_KEY"


class ConfigError(ValueError):
    """A configuration cannot be used; the message names every offending key by its dotted path."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


class Timeouts(BaseModel):
    """Upstream timeouts, in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_s: float = Field(default=10.0, gt=0, description="Opening a connection to Azure")
    # A non-streaming call to a reasoning deployment is silent until the whole answer is ready,
    # and a stream can be silent while the model reasons: minutes, not seconds.
    read_s: float = Field(default=600.0, gt=0, description="Longest silence between bytes from Azure")
    total_s: float = Field(default=1200.0, gt=0, description="Whole call, retries and their waits included")


class Retries(BaseModel):
    """How failed upstream calls are retried (408, 409, 429, 5xx, connection errors, timeouts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=5, ge=1, description="Attempts per call, the first one included")
    backoff_initial_s: float = Field(default=0.5, ge=0, description="First backoff when Azure gives no retry-after")
    backoff_max_s: float = Field(default=8.0, ge=0, description="Largest backoff between attempts")
    retry_after_max_s: float = Field(default=60.0, ge=0, description="Longest retry-after honoured; above it, give up")


class _Upstream(BaseModel):
    """Where the Azure deployment is and how to talk to it; shared by both shapes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    openai_base_url: str = Field(description="Azure endpoint, e.g. https://NAME.openai.azure.com")
    openai_model: str = Field(min_length=1, description="Azure deployment name; always overrides a request's model")
    default_query: dict[str, str] = Field(description="Query parameters sent on every upstream call")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retries: Retries = Field(default_factory=Retries)

    @field_validator("openai_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL such as https://NAME.openai.azure.com")
        return value.rstrip("/")

    @field_validator("default_query", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # YAML turns `api-version: 2024-10-21` into a date and bare numbers into ints; Azure wants text.
        if isinstance(value, Mapping):
            return {str(k): str(v) for k, v in value.items()}
        return value

    @field_validator("default_query")
    @classmethod
    def _has_api_version(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get("api-version"):
            raise ValueError("must hold 'api-version' (for example 2024-10-21)")
        return value


class Inbound(BaseModel):
    """What this server lets in; shared by both shapes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_request_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)"
    )
    inbound_api_keys_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the comma-separated keys clients must send as Bearer; unset: no auth",
    )

    def inbound_keys(self) -> tuple[str, ...]:
        """Accepted client keys; empty when auth is off. Named but empty is an error: fail closed."""
        if self.inbound_api_keys_env is None:
            return ()
        keys = tuple(k.strip() for k in os.environ.get(self.inbound_api_keys_env, "").split(",") if k.strip())
        if not keys:
            raise ConfigError(
                [f"environment variable {self.inbound_api_keys_env} (accepted client keys) is empty or unset"]
            )
        return keys


class AzureModelConfig(_Upstream, Inbound):
    """One `azure_openai_model` server as NeMo Gym configures it."""

    openai_api_key: SecretStr
    num_concurrent_requests: int = Field(ge=1, description="Most calls in flight to Azure at once, whole deployment")

    @field_validator("openai_api_key")
    @classmethod
    def _non_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value


class ModelServerArgs(_Upstream, Inbound):
    """Application `args` of one model server in a Ray Serve config."""

    openai_api_key_env: str = Field(
        default=DEFAULT_KEY_ENV, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Environment variable holding the key"
    )

    def api_key(self) -> SecretStr:
        value = os.environ.get(self.openai_api_key_env)
        if not value:
            raise ConfigError([f"environment variable {self.openai_api_key_env} (the Azure API key) is not set"])
        return SecretStr(value)


class BudgetConfig(BaseModel):
    """The deployment's `user_config`: what may change without restarting replicas."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_concurrent_requests: int = Field(ge=1, description="Most calls in flight to Azure at once, whole deployment")
    max_queued_requests: int = Field(
        default=5000, ge=0, description="Requests that may wait for an upstream slot, per replica; beyond: 429"
    )
    draining: bool = Field(
        default=False, description="Stopping: new calls get a 503 with Retry-After; those accepted finish"
    )


def validate_model(model: type[BaseModel], data: Any, prefix: str) -> Any:
    """Validate `data`, reporting problems by dotted path and never echoing values (one may be a key)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, prefix)) from None


def _describe(exc: ValidationError, prefix: str) -> list[str]:
    problems = []
    for err in exc.errors():
        path = ".".join([prefix, *(str(p) for p in err["loc"])]) if prefix else ".".join(str(p) for p in err["loc"])
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(f"{path}: {message}")
    return problems


# ---------------------------------------------------------------------------------------------
# NeMo Gym style YAML loading


def parse_overrides(overrides: Iterable[str]) -> list[str]:
    """`+a.b=c` (Hydra's "add") and `a.b=c` both set a.b; OmegaConf reads the value as YAML."""
    dotlist = []
    for item in overrides:
        key, sep, _ = item.lstrip("+").partition("=")
        if not sep or not key:
            raise ConfigError([f"override {item!r} is not of the form +dotted.key=value"])
        dotlist.append(item.lstrip("+"))
    return dotlist


def load_tree(
    config_paths: Iterable[str | Path], overrides: Iterable[str] = (), env_file: str | Path | None = "env.yaml"
) -> DictConfig:
    """Merge config files, then env.yaml (when present), then overrides; resolve nothing yet."""
    override_conf = OmegaConf.from_dotlist(parse_overrides(overrides))
    paths = [Path(p) for p in config_paths]
    # NeMo Gym's launcher takes its files as `+config_paths=[a.yaml,b.yaml]`; accept that too.
    if "config_paths" in override_conf:
        extra = override_conf.pop("config_paths")
        paths += [Path(str(p).strip()) for p in (extra if isinstance(extra, ListConfig) else str(extra).split(","))]
    layers = []
    for path in paths:
        if not path.is_file():
            raise ConfigError([f"config file {path} does not exist"])
        layers.append(OmegaConf.load(path))
    if env_file is not None and Path(env_file).is_file():
        layers.append(OmegaConf.load(env_file))
    layers.append(override_conf)
    merged = OmegaConf.merge(*layers)
    if not isinstance(merged, DictConfig):
        raise ConfigError(["the configuration must be a mapping at the top level"])
    return merged


def resolve_tree(tree: DictConfig) -> dict[str, Any]:
    """Resolve every interpolation, or fail naming every missing (`???`) and unresolved key."""
    problems = []
    for path, node, key in _leaves(tree):
        if OmegaConf.is_missing(node, key):
            problems.append(f"{path}: missing value (???); set it in env.yaml or with +{path}=...")
            continue
        try:
            node[key]
        except OmegaConfBaseException as exc:
            reason = str(exc).splitlines()[0]
            problems.append(f"{path}: cannot resolve {_raw(node, key)}: {reason}")
    if problems:
        raise ConfigError(problems)
    return OmegaConf.to_container(tree, resolve=True)  # type: ignore[return-value]


def _raw(node: DictConfig | ListConfig, key: Any) -> str:
    return str(node._get_node(key)._value())  # the interpolation text, e.g. ${policy_base_url}


def _leaves(node: DictConfig | ListConfig, prefix: str = "") -> Iterable[tuple[str, Any, Any]]:
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        path = f"{prefix}.{key}" if prefix else str(key)
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_interpolation() and not child._is_missing():
            yield from _leaves(child, path)
        else:
            yield path, node, key


def find_model_servers(tree: DictConfig) -> dict[str, DictConfig]:
    """Each top-level key holding `responses_api_models.azure_openai_model` is one model server."""
    servers: dict[str, DictConfig] = {}
    problems = []
    for name in tree:
        section = tree._get_node(name)
        if not isinstance(section, DictConfig) or "responses_api_models" not in section:
            continue  # env values such as policy_base_url, or other NeMo Gym servers
        models = section.responses_api_models
        for kind in models:
            if kind != MODEL_SERVER_KIND[1]:
                problems.append(f"{name}.responses_api_models.{kind}: only azure_openai_model servers are served here")
        if MODEL_SERVER_KIND[1] in models:
            servers[str(name)] = models[MODEL_SERVER_KIND[1]]
    if problems:
        raise ConfigError(problems)
    return servers


def load_model_servers(
    config_paths: Iterable[str | Path] = (DEFAULT_CONFIG,),
    overrides: Iterable[str] = (),
    env_file: str | Path | None = "env.yaml",
) -> dict[str, AzureModelConfig]:
    """Read NeMo Gym style config into one validated `AzureModelConfig` per model server."""
    tree = load_tree(config_paths, overrides, env_file)
    return model_servers_from_tree(tree)


def model_servers_from_tree(tree: DictConfig) -> dict[str, AzureModelConfig]:
    sections = find_model_servers(tree)
    if not sections:
        raise ConfigError(["no model server found: expected <name>.responses_api_models.azure_openai_model"])
    resolved = resolve_tree(tree)
    problems: list[str] = []
    servers = {}
    for name in sections:
        data = resolved[name]["responses_api_models"]["azure_openai_model"]
        try:
            servers[name] = validate_model(AzureModelConfig, data, f"{name}.responses_api_models.azure_openai_model")
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return servers

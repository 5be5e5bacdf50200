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

import importlib.resources
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, ListConfig, Node, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator

from .deployment_constants import DEFAULT_MAX_QUEUED_REQUESTS, DEFAULT_TOTAL_S

MODEL_SERVER_KIND = ("responses_api_models", "azure_openai_model")
# Package data, so that an installed package (the k8s image holds no source tree) has it; configs/ in
# the repository links to it. Installed from a wheel or editable, a resource is a plain file, which
# the loaders and the CLI's --config default take as a path.
DEFAULT_CONFIG = Path(str(importlib.resources.files("serve_app") / "configs" / "azure_openai_model.yaml"))
DEFAULT_KEY_ENV = "AZURE_OPENAI_API_KEY"
# An endpoint ending here is Azure's v1 API: no api-version, the deployment named in the body.
V1_PATH = "/openai/v1"


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
    total_s: float = Field(default=DEFAULT_TOTAL_S, gt=0, description="Whole call, retries and their waits included")

    @property
    def stalled_reader_s(self) -> float:
        """How long a stream's write may wait for a client that stopped reading: as long as Azure may be
        silent, and never past the whole call (http.EventStreamResponse)."""
        return min(self.read_s, self.total_s)


class Retries(BaseModel):
    """How failed upstream calls are retried (408, 409, 429, 5xx, connection errors, timeouts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=5, ge=1, description="Attempts per call, the first one included")
    backoff_initial_s: float = Field(default=0.5, ge=0, description="First backoff when Azure gives no retry-after")
    backoff_max_s: float = Field(default=8.0, ge=0, description="Largest backoff between attempts")
    retry_after_max_s: float = Field(default=60.0, ge=0, description="Longest retry-after honoured; above it, give up")


class _Endpoint(BaseModel):
    """Where one Azure deployment is reached: its URL and the query every call carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    openai_base_url: str = Field(
        description="Azure endpoint: https://NAME.openai.azure.com (classic) or https://NAME.openai.azure.com/openai/v1"
    )
    default_query: dict[str, str] = Field(
        default_factory=dict, validate_default=True, description="Query parameters sent on every upstream call"
    )

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
    def _classic_needs_api_version(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        base_url = info.data.get("openai_base_url")
        if not value.get("api-version") and not (isinstance(base_url, str) and is_v1_url(base_url)):
            raise ValueError(
                "must hold 'api-version' (for example 2025-04-01-preview), "
                f"unless openai_base_url is the v1 API (ending in {V1_PATH})"
            )
        return value


AuthKind = Literal["key", "entra"]


class _Upstream(_Endpoint):
    """Where the Azure deployment is and how to talk to it; shared by both shapes."""

    openai_model: str = Field(min_length=1, description="Azure deployment name; always overrides a request's model")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retries: Retries = Field(default_factory=Retries)
    auth: AuthKind = Field(
        default="key",
        description=(
            "key: the Azure key as api-key; entra: Microsoft Entra ID tokens from azure-identity (workload or"
            " managed identity, environment, Azure CLI), for resources with key auth off"
        ),
    )
    rejected_parameters: tuple[str, ...] = Field(
        default=(),
        description=(
            "Chat Completions parameters the deployment refuses (o-series: temperature, top_p, parallel_tool_calls,"
            " ...); unlisted ones are learned from Azure's first unsupported_parameter answer"
        ),
    )


def is_v1_url(base_url: str) -> bool:
    return base_url.rstrip("/").endswith(V1_PATH)


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


class RequestPolicy(BaseModel):
    """Opt-ins that let clients' requests through which would otherwise be a 400; shared by both shapes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ignored_extra_body_keys: tuple[str, ...] = Field(
        default=(), description="metadata.extra_body keys Azure cannot honour that are left out instead of refused"
    )
    ignored_hosted_tools: tuple[str, ...] = Field(
        default=(), description="Hosted tool types (web_search, ...) left out of requests instead of refused"
    )


# The upstream the top-level fields describe, in metrics, logs and the budget ledger's name.
PRIMARY_UPSTREAM = "primary"
_KEY_ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _upstream_name() -> Any:
    return Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Its name in metrics, request logs and budgets")


def _distinct_upstream_names(names: Iterable[str]) -> None:
    every = [PRIMARY_UPSTREAM, *names]
    repeated = sorted({name for name in every if every.count(name) > 1})
    if repeated:
        raise ValueError(f"names must differ from each other and from {PRIMARY_UPSTREAM!r}: {', '.join(repeated)}")


def _key_needed(auth: str, key: SecretStr | None) -> None:
    if auth == "key" and (key is None or not key.get_secret_value()):
        raise ValueError("must not be empty (or set auth: entra)")


class GymPoolMember(_Endpoint):
    """One more Azure deployment of the same model, in NeMo Gym's shape: its key written (from env.yaml) like the
    top-level one's, its own budget beside it. What it leaves unset is the top-level one's, as in `PoolMember`."""

    name: str = _upstream_name()
    openai_model: str | None = Field(default=None, min_length=1, description="Its deployment name")
    auth: AuthKind | None = None
    openai_api_key: SecretStr | None = None
    rejected_parameters: tuple[str, ...] | None = None
    num_concurrent_requests: int = Field(ge=1, description="Most calls in flight to this deployment at once")


class AzureModelConfig(_Upstream, Inbound, RequestPolicy):
    """One `azure_openai_model` server as NeMo Gym configures it (and `upstreams`, our addition: a pool)."""

    # Declared after `auth` (in _Upstream), so that its validator can see which auth is chosen.
    openai_api_key: SecretStr | None = Field(default=None, validate_default=True)
    num_concurrent_requests: int = Field(ge=1, description="Most calls in flight to Azure at once, whole deployment")
    upstreams: tuple[GymPoolMember, ...] = Field(
        default=(), description="More deployments of the same model, each with its own key and budget"
    )

    @field_validator("openai_api_key")
    @classmethod
    def _needed_for_key_auth(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        _key_needed(info.data.get("auth", "key"), value)
        return value

    @field_validator("upstreams")
    @classmethod
    def _members_valid(cls, value: tuple[GymPoolMember, ...], info: ValidationInfo) -> tuple[GymPoolMember, ...]:
        _distinct_upstream_names(member.name for member in value)
        for member in value:
            try:
                _key_needed(member.auth or info.data.get("auth", "key"), member.openai_api_key)
            except ValueError as exc:
                raise ValueError(f"{member.name}.openai_api_key: {exc}") from None
        return value


class PoolMember(_Endpoint):
    """One more Azure deployment of the same model (another region or resource), beside the one the top-level
    fields describe. What it leaves unset is the top-level one's: deployment name, auth, key variable and refused
    parameters; timeouts and retries are the whole pool's, since they bound one request wherever it goes."""

    name: str = _upstream_name()
    openai_model: str | None = Field(default=None, min_length=1, description="Its deployment name")
    auth: AuthKind | None = None
    openai_api_key_env: str | None = Field(default=None, pattern=_KEY_ENV_PATTERN)
    rejected_parameters: tuple[str, ...] | None = None


class UpstreamSpec(BaseModel):
    """One upstream of a model server's pool, every setting resolved."""

    model_config = ConfigDict(frozen=True)

    name: str
    openai_base_url: str
    openai_model: str
    default_query: dict[str, str]
    auth: AuthKind
    openai_api_key_env: str
    rejected_parameters: tuple[str, ...]

    def api_key(self) -> SecretStr | None:
        """The Azure key from the environment; None under Entra ID auth, which needs none."""
        if self.auth == "entra":
            return None
        value = os.environ.get(self.openai_api_key_env)
        if not value:
            whose = "" if self.name == PRIMARY_UPSTREAM else f" of upstream {self.name}"
            raise ConfigError([f"environment variable {self.openai_api_key_env} (the Azure API key{whose}) is not set"])
        return SecretStr(value)


class ModelServerArgs(_Upstream, Inbound, RequestPolicy):
    """Application `args` of one model server in a Ray Serve config."""

    openai_api_key_env: str = Field(
        default=DEFAULT_KEY_ENV, pattern=_KEY_ENV_PATTERN, description="Environment variable holding the key"
    )
    upstreams: tuple[PoolMember, ...] = Field(
        default=(), description="More deployments of the same model; each needs its budget in upstream_budgets"
    )

    @field_validator("upstreams")
    @classmethod
    def _distinct_names(cls, value: tuple[PoolMember, ...]) -> tuple[PoolMember, ...]:
        _distinct_upstream_names(member.name for member in value)
        return value

    def pool(self) -> tuple[UpstreamSpec, ...]:
        """Every upstream, the top-level one first; a model server without `upstreams` is a pool of one."""
        primary = UpstreamSpec(
            name=PRIMARY_UPSTREAM,
            openai_base_url=self.openai_base_url,
            openai_model=self.openai_model,
            default_query=self.default_query,
            auth=self.auth,
            openai_api_key_env=self.openai_api_key_env,
            rejected_parameters=self.rejected_parameters,
        )
        members = (
            UpstreamSpec(
                name=member.name,
                openai_base_url=member.openai_base_url,
                openai_model=member.openai_model or self.openai_model,
                default_query=member.default_query,
                auth=member.auth or self.auth,
                openai_api_key_env=member.openai_api_key_env or self.openai_api_key_env,
                rejected_parameters=(
                    self.rejected_parameters if member.rejected_parameters is None else member.rejected_parameters
                ),
            )
            for member in self.upstreams
        )
        return (primary, *members)


class BudgetConfig(BaseModel):
    """The deployment's `user_config`: what may change without restarting replicas."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_concurrent_requests: int = Field(
        ge=1, description="Most calls in flight to Azure at once, whole deployment (the top-level upstream's)"
    )
    upstream_budgets: dict[str, int] = Field(
        default_factory=dict, description="The same, for each upstream that args.upstreams names, by name"
    )
    max_queued_requests: int = Field(
        default=DEFAULT_MAX_QUEUED_REQUESTS,
        ge=0,
        description="Requests that may wait for an upstream slot, per replica; beyond: 429",
    )
    draining: bool = Field(
        default=False, description="Stopping: new calls get a 503 with Retry-After; those accepted finish"
    )

    @field_validator("upstream_budgets")
    @classmethod
    def _at_least_one(cls, value: dict[str, int]) -> dict[str, int]:
        low = sorted(name for name, n in value.items() if n < 1)
        if low:
            raise ValueError(f"each budget must be at least 1: {', '.join(low)}")
        return value

    def budgets(self, pool: tuple[UpstreamSpec, ...], prefix: str = "user_config") -> dict[str, int]:
        """Each upstream's N, by name; ConfigError naming what is missing or unknown."""
        names = [spec.name for spec in pool]
        missing = [name for name in names[1:] if name not in self.upstream_budgets]
        unknown = sorted(set(self.upstream_budgets) - set(names[1:]))
        problems = [f"{prefix}.upstream_budgets.{name}: missing; args.upstreams names it" for name in missing]
        problems += [f"{prefix}.upstream_budgets.{name}: no such upstream in args.upstreams" for name in unknown]
        if problems:
            raise ConfigError(problems)
        return {PRIMARY_UPSTREAM: self.num_concurrent_requests, **{n: self.upstream_budgets[n] for n in names[1:]}}


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


def _drop_unneeded_placeholders(section: DictConfig) -> None:
    """NeMo Gym's config leaves `api-version` as `???` and the key to `${...}`: the v1 API has no api-version,
    and Entra ID auth no key, so there they are not missing."""
    base_url, auth = _resolved_or_none(section, "openai_base_url"), _resolved_or_none(section, "auth")
    query = section.get("default_query")
    v1 = isinstance(base_url, str) and is_v1_url(base_url)
    if v1 and isinstance(query, DictConfig) and OmegaConf.is_missing(query, "api-version"):
        del query["api-version"]
    if auth == "entra" and "openai_api_key" in section and _resolved_or_none(section, "openai_api_key") is None:
        del section["openai_api_key"]


def _resolved_or_none(section: DictConfig, key: str) -> Any:
    try:
        return None if OmegaConf.is_missing(section, key) else section.get(key)
    except OmegaConfBaseException:
        return None  # an unresolved value is reported, by path, when the tree is resolved


def _raw(node: DictConfig | ListConfig, key: Any) -> str:
    child = node._get_node(key)
    # The interpolation text, e.g. ${policy_base_url}.
    return str(child._value() if isinstance(child, Node) else child)


def _leaves(node: DictConfig | ListConfig, prefix: str = "") -> Iterable[tuple[str, Any, Any]]:
    keys: Iterable[Any] = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        path = f"{prefix}.{key}" if prefix else str(key)
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_interpolation() and not child._is_missing():
            yield from _leaves(child, path)
        else:
            yield path, node, key


# The built-in simulator's credentials and defaults, for model servers run without Azure.
SIMULATOR_KEY = "sim-key"
SIMULATED_DEPLOYMENT = "gpt-4o"
SIMULATED_API_VERSION = "2025-04-01-preview"


def fill_with_simulator(section: DictConfig, simulator_url: str) -> None:
    """Fill one model server with the simulator's endpoint and key; keep the deployment name, api-version and
    API form (classic or v1) it gives."""
    v1 = not _unresolved(section, "openai_base_url") and is_v1_url(str(section.openai_base_url))
    section.openai_base_url = simulator_url + V1_PATH if v1 else simulator_url
    section.openai_api_key = SIMULATOR_KEY
    if "auth" in section:
        section.auth = "key"  # the simulator's key; an Entra credential would reach out to Azure
    if _unresolved(section, "openai_model"):
        section.openai_model = SIMULATED_DEPLOYMENT
    if not v1 and ("default_query" not in section or _unresolved(section.default_query, "api-version")):
        OmegaConf.update(section, "default_query.api-version", SIMULATED_API_VERSION, force_add=True)
    # A pool's members answer from the same simulator, under the one deployment name it knows.
    for member in section.get("upstreams") or ():
        fill_with_simulator(member, simulator_url)
        member.openai_model = None


def _unresolved(node: DictConfig, key: str) -> bool:
    try:
        return key not in node or OmegaConf.is_missing(node, key) or node[key] is None
    except OmegaConfBaseException:
        return True


def find_model_servers(tree: DictConfig) -> dict[str, DictConfig]:
    """Each top-level key holding `responses_api_models.azure_openai_model` is one model server."""
    servers: dict[str, DictConfig] = {}
    problems = []
    for name in tree:
        section = tree._get_node(name)
        if not isinstance(section, DictConfig) or "responses_api_models" not in section:
            continue  # env values such as policy_base_url, or other NeMo Gym servers
        models, label = section.responses_api_models, str(name)
        for kind in models:
            if kind != MODEL_SERVER_KIND[1]:
                problems.append(f"{label}.responses_api_models.{kind}: only azure_openai_model servers are served here")
        if MODEL_SERVER_KIND[1] in models:
            servers[label] = models[MODEL_SERVER_KIND[1]]
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
    for section in sections.values():
        _drop_unneeded_placeholders(section)
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

"""Settings of the Azure OpenAI simulator."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .validation import ModelRules, rules_for

# Real GA and preview data-plane versions of the classic route; any other value gets Azure's 404.
DEFAULT_API_VERSIONS: tuple[str, ...] = (
    "2022-12-01",
    "2023-05-15",
    "2023-06-01-preview",
    "2023-07-01-preview",
    "2023-08-01-preview",
    "2023-09-01-preview",
    "2023-10-01-preview",
    "2023-12-01-preview",
    "2024-02-01",
    "2024-02-15-preview",
    "2024-03-01-preview",
    "2024-04-01-preview",
    "2024-05-01-preview",
    "2024-06-01",
    "2024-07-01-preview",
    "2024-08-01-preview",
    "2024-09-01-preview",
    "2024-10-01-preview",
    "2024-10-21",
    "2024-12-01-preview",
    "2025-01-01-preview",
    "2025-02-01-preview",
    "2025-03-01-preview",
    "2025-04-01-preview",
)

DEFAULT_CHAT_MODEL = "gpt-4o-2024-11-20"
DEFAULT_REASONING_MODEL = "gpt-5-mini-2025-08-07"

_REASONING_FAMILIES = ("o1", "o3", "o4", "gpt-5")
_NON_REASONING_FAMILIES = ("gpt-5-chat",)


def is_reasoning_model(model: str) -> bool:
    """Guess from a model version whether Azure serves it with reasoning-model rules."""
    return model.startswith(_REASONING_FAMILIES) and not model.startswith(_NON_REASONING_FAMILIES)


class DeploymentSpec(BaseModel):
    """One Azure deployment: the model version it serves and whether reasoning-model rules apply.

    A bare string is accepted as the model version; `reasoning` defaults to a guess from that name so a
    YAML file can say `deployments: {my-o3: o3-mini-2025-01-31}`. Which parameters the deployment refuses,
    and how, follows from the model (`validation.rules_for`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    reasoning: bool
    context_tokens: int = Field(
        default=128_000, ge=1, description="The model's context window: longer requests get context_length_exceeded."
    )
    async_filter: bool = Field(
        default=False,
        description=(
            "Azure's asynchronous content filter: tokens stream unannotated, annotations trail (even past the stop"
            " chunk), and a block ends the stream with a no-delta content_filter choice."
        ),
    )

    @property
    def rules(self) -> ModelRules:
        return rules_for(self.model, self.reasoning)

    @model_validator(mode="before")
    @classmethod
    def _expand_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = {"model": value}
        if isinstance(value, Mapping) and "reasoning" not in value and isinstance(value.get("model"), str):
            value = {**value, "reasoning": is_reasoning_model(value["model"])}
        return value


def _default_deployments() -> dict[str, DeploymentSpec]:
    return {
        "gpt-4o": DeploymentSpec(model=DEFAULT_CHAT_MODEL, reasoning=False),
        "gpt-4o-mini": DeploymentSpec(model="gpt-4o-mini-2024-07-18", reasoning=False),
        "gpt-4.1": DeploymentSpec(model="gpt-4.1-2025-04-14", reasoning=False),
        "gpt-5-mini": DeploymentSpec(model=DEFAULT_REASONING_MODEL, reasoning=True),
        "gpt-5.4": DeploymentSpec(model="gpt-5.4", reasoning=True),
        "o3-mini": DeploymentSpec(model="o3-mini-2025-01-31", reasoning=True),
        "o4-mini": DeploymentSpec(model="o4-mini-2025-04-16", reasoning=True),
    }


class SimulatorConfig(BaseModel):
    """Everything the simulator can be told; `POST /sim/config` patches the same fields at runtime."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: tuple[str, ...] = ("sim-key",)
    entra_signing_key: str | None = Field(
        default=None,
        description="Accept Entra ID bearer tokens signed with this key (see simulator.entra); None: refuse all.",
    )
    api_versions: tuple[str, ...] = DEFAULT_API_VERSIONS
    deployments: dict[str, DeploymentSpec] = Field(default_factory=_default_deployments)
    latency_s: float = Field(default=0.0, ge=0, description="Delay before a non-streaming answer.")
    ttft_s: float = Field(default=0.0, ge=0, description="Delay before a stream's first bytes.")
    inter_token_s: float = Field(default=0.0, ge=0, description="Delay between a stream's content chunks.")
    rpm: int | None = Field(default=None, ge=1, description="Requests per minute per deployment; None: unlimited.")
    tpm: int | None = Field(default=None, ge=1, description="Tokens per minute per deployment; None: unlimited.")
    rate_limit_window_s: float = Field(
        default=10.0, gt=0, description="Azure enforces the per-minute quotas pro rata over 1 s or 10 s windows."
    )
    rate_limit_default_max_tokens: int = Field(
        default=1000, ge=1, description="Completion tokens charged to the TPM quota when a request names no maximum."
    )
    retry_after_headers: bool = Field(
        default=True,
        description=(
            "False: 429s say when to retry only in x-ratelimit-reset-requests/-tokens and their message, as Azure's"
            " sometimes do."
        ),
    )
    region: str = "swedencentral"
    recorded_requests: int = Field(default=100, ge=0, description="How many recent request bodies /sim/requests keeps.")

    @cached_property
    def api_version_set(self) -> frozenset[str]:
        return frozenset(self.api_versions)

    def with_deployments(self, *names: str, model: str | None = None, reasoning: bool = False) -> SimulatorConfig:
        """A copy that also serves `names`, e.g. `SimulatorConfig().with_deployments("prod-gpt4o")`."""
        chosen = model or (DEFAULT_REASONING_MODEL if reasoning else DEFAULT_CHAT_MODEL)
        added = {name: DeploymentSpec(model=chosen, reasoning=reasoning) for name in names}
        return self.patched({"deployments": added})

    def patched(self, patch: Mapping[str, Any]) -> SimulatorConfig:
        """A validated copy with `patch` applied; `deployments` merges by name and a null entry removes one."""
        merged = self.model_dump()
        for key, value in patch.items():
            if key == "deployments" and isinstance(value, Mapping):
                deployments = dict(merged["deployments"])
                for name, spec in value.items():
                    if spec is None:
                        deployments.pop(name, None)
                    else:
                        deployments[name] = spec
                merged["deployments"] = deployments
            else:
                merged[key] = value
        return SimulatorConfig.model_validate(merged)

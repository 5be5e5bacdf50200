"""NeMo Gym's `metadata.extra_body`: per-request sampling keys, as a JSON string, applied upstream. Pure.

NeMo Gym puts a per-rollout `seed` there (`num_repeats_add_seed`), and datasets put `stop` and
vLLM-only keys there. It documents them as honoured by vLLM model servers only; here every key is
either sent to Azure under its Chat Completions name, already what Azure does, refused by name, or
left out because the model server's config lists it as ignorable (keys Azure has are always sent).
`null` means unset, as NeMo Gym datasets write most fields. `metadata` itself is still echoed as sent.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InvalidRequest, UnsupportedField

PARAM = "metadata.extra_body"


class _ChatSampling(BaseModel):
    """The keys Azure Chat Completions takes, checked here so that a bad one is named as the client wrote it."""

    model_config = ConfigDict(extra="forbid")

    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    reasoning_effort: str | None = None
    verbosity: str | None = None


# Keys whose value is what Azure does anyway: accepted with that value, refused with another.
_AZURE_BEHAVIOUR = {
    "n": 1,  # one upstream slot carries one generation
    "include_stop_str_in_output": False,  # Azure never returns the stop string
}


def apply(body: dict[str, Any], metadata: dict[str, str] | None, ignorable: Collection[str] = ()) -> None:
    """Add the keys of `metadata.extra_body` to the chat `body`, or raise naming the one we cannot honour.

    `body` already holds what the request's own fields asked for; a key that sets the same chat
    parameter again is refused, since only one of the two values could be honoured."""
    raw = (metadata or {}).get("extra_body")
    if raw is None:
        return
    try:
        decoded = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid '{PARAM}': not valid JSON ({exc}).", param=PARAM, code="invalid_value") from None
    if not isinstance(decoded, dict):
        raise InvalidRequest(f"Invalid '{PARAM}': must be a JSON object.", param=PARAM, code="invalid_value")
    chat: dict[str, Any] = {}
    for key, value in decoded.items():
        param = f"{PARAM}.{key}"
        if value is None:
            continue
        if key in _ChatSampling.model_fields:
            if key in body:
                raise InvalidRequest(
                    f"Invalid '{param}': the request already sets '{key}' through its own fields.", param=param
                )
            chat[key] = value
        elif key in ignorable:
            continue
        elif key in _AZURE_BEHAVIOUR:
            if value != _AZURE_BEHAVIOUR[key]:
                raise UnsupportedField(param, f"Azure Chat Completions always behaves as {key}={_AZURE_BEHAVIOUR[key]}")
        else:
            raise UnsupportedField(
                param,
                "not a parameter of Azure Chat Completions (vLLM-only keys are honoured by vLLM servers only); "
                "the model server's ignored_extra_body_keys setting can list it to be left out",
            )
    try:
        _ChatSampling.model_validate(chat)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        param = f"{PARAM}.{error['loc'][0]}"
        raise InvalidRequest(f"Invalid '{param}': {error['msg']}.", param=param, code="invalid_value") from None
    if chat.get("top_logprobs") is not None:
        chat.setdefault("logprobs", True)
    body.update(chat)

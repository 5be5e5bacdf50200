"""`/v1/chat/completions` passthrough rules. Pure.

The body goes to Azure as sent, except `model`, which is always the configured deployment.
Azure's answer comes back as Azure sent it, with `model` set to the deployment name (Azure
reports a model version there). In a stream, frames that OpenAI clients do not expect are
dropped: Azure's first frame (empty `choices`, empty `id`, only `prompt_filter_results`) and
choices that carry only `content_filter_results` and no `delta`, wherever they come (the
asynchronous filter sends them late, even after the stop chunk). A no-delta choice that
finishes (the asynchronous filter's block, `finish_reason: "content_filter"`) is forwarded with
an empty `delta`, so the client learns that its output was cut. The usage chunk, which we
always ask Azure for, is forwarded only when the client asked for it.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequest, UnsupportedField, UpstreamUnavailable
from ..schemas import ChatRequest


def to_upstream(req: ChatRequest, body: dict[str, Any], deployment: str) -> dict[str, Any]:
    if req.n is not None and req.n > 1:
        raise UnsupportedField("n", "one upstream slot carries one generation; send n requests instead")
    if req.stream_options is not None and not req.stream:
        # Azure's answer to this is a 400 too; saying so here saves a round trip and a slot.
        raise InvalidRequest("Invalid 'stream_options': only allowed when 'stream' is true.", param="stream_options")
    upstream = {**body, "model": deployment}
    upstream.pop("stream", None)
    upstream.pop("stream_options", None)  # the client sets stream and asks for usage itself
    return upstream


def wants_usage(req: ChatRequest) -> bool:
    return bool((req.stream_options or {}).get("include_usage"))


def from_upstream(completion: dict[str, Any], deployment: str) -> dict[str, Any]:
    completion["model"] = deployment
    return completion


def stream_chunk(chunk: dict[str, Any], deployment: str, include_usage: bool) -> dict[str, Any] | None:
    """The chunk to forward to the client (`chunk` itself, changed in place: it is parsed for this call
    alone, and a copy per token costs a replica more than anything else here), or None to drop it."""
    choices = chunk.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
        raise UpstreamUnavailable(
            "Azure sent a stream chunk whose 'choices' is not a list of objects.", code="upstream_invalid_response"
        )
    if not all("delta" in choice for choice in choices):
        choices = [
            choice if "delta" in choice else {**choice, "delta": {}}
            for choice in choices
            if "delta" in choice or choice.get("finish_reason")
        ]
    has_usage = bool(chunk.get("usage"))
    if not choices and not (has_usage and include_usage):
        return None
    # The filter's own frames have empty `id` and `object`; clients expect a chunk's `object`.
    chunk["choices"], chunk["model"], chunk["object"] = choices, deployment, "chat.completion.chunk"
    if not include_usage:
        chunk.pop("usage", None)
    return chunk

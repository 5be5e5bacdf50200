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

Over HTTP, a chunk these rules leave alone but for its `model` (nearly every token's chunk) goes out as
the bytes Azure sent, with only the model's value put in its place (`relayed`): parsing each chunk
whole and writing it again made up a quarter of a replica's CPU per streamed chunk.
"""

from __future__ import annotations

import functools
from typing import Any, TypedDict

from .. import jsonwire
from ..errors import InvalidRequest, UnsupportedField, UpstreamUnavailable
from ..schemas import ChatRequest
from .stream import ChunkDelta


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
    if _shows_nothing(chunk, include_usage):
        return None
    if not all("delta" in choice for choice in choices):
        choices = [choice if "delta" in choice else {**choice, "delta": {}} for choice in choices if _shown(choice)]
    # The filter's own frames have empty `id` and `object`; clients expect a chunk's `object`.
    chunk["choices"], chunk["model"], chunk["object"] = choices, deployment, "chat.completion.chunk"
    if not include_usage:
        chunk.pop("usage", None)
    return chunk


def _shown(choice: dict[str, Any]) -> bool:
    return "delta" in choice or bool(choice.get("finish_reason"))


def _shows_nothing(chunk: dict[str, Any], include_usage: bool) -> bool:
    """No choice of the chunk is shown, nor its usage."""
    return not any(_shown(choice) for choice in chunk.get("choices") or ()) and not (
        include_usage and chunk.get("usage")
    )


class _Choice(TypedDict, total=False):
    delta: ChunkDelta | None
    finish_reason: Any


class _Read(TypedDict, total=False):
    """What the rules, the replica's telemetry and the Azure client read of a chunk to be relayed; its
    content-filter verdicts and logprobs, most of its bytes, are not built (`jsonwire.LoadsOnly`)."""

    choices: list[_Choice] | None
    model: Any
    object: Any
    usage: Any
    error: Any


class Relayed(dict[str, Any]):
    """A chunk read for relaying: what `_Read` names of it, and Azure's bytes (`raw`)."""

    __slots__ = ("raw",)
    raw: bytes


_read = jsonwire.LoadsOnly(_Read)


def read_relayed(data: bytes) -> Relayed:
    """A `Relayed` chunk, refused (JSONDecodeError) unless all of `data` is well-formed JSON in valid UTF-8:
    what is relayed unread is still checked to be that much."""
    if not data.isascii():
        try:
            data.decode()
        except UnicodeDecodeError as exc:
            raise jsonwire.JSONDecodeError(str(exc), data.decode(errors="replace"), 0) from None
    chunk = Relayed(_read(data))
    chunk.raw = data
    return chunk


# A null `usage` as Azure writes it, the chunk's last member: the text before the top-level closing brace.
_LAST_NULL_USAGE = b',"usage":null}'


@functools.lru_cache(maxsize=64)
def _model_pair(model: str) -> bytes:
    return b'"model":' + jsonwire.dumps(model)


def relayed(chunk: Relayed, deployment: str, include_usage: bool) -> bytes | None:
    """`stream_chunk`'s answer for a chunk from `read_relayed`, as JSON to forward (or None, to drop it).

    When all the rules change is `model` (and a null `usage` the client did not ask for), Azure's bytes are
    changed only there. That needs the place. Where the key `"model"` occurs once in the whole chunk, it is the
    top-level one (a quote inside a JSON string is escaped, so no string holds the key's five letters between
    bare quotes), and the pair `"model":<value>`, written compactly, is that key's. A `usage` is the top-level
    one where it ends the chunk. Any other chunk is parsed whole, and written again, by `stream_chunk`."""
    if _shows_nothing(chunk, include_usage):  # Azure's filter frames, mostly: no need to read them whole
        return None
    raw = chunk.raw
    model = chunk.get("model")
    choices = chunk.get("choices")
    if isinstance(model, str) and choices and chunk.get("object") == "chat.completion.chunk":
        pair = _model_pair(model)
        at = raw.find(pair)
        alone = at >= 0 and raw.find(b'"model"', 0, at) < 0 and raw.find(b'"model"', at + 1) < 0
        keep_usage = "usage" not in chunk or include_usage
        if (
            alone
            and (keep_usage or (chunk["usage"] is None and raw.endswith(_LAST_NULL_USAGE)))
            and all("delta" in choice for choice in choices)
        ):
            shown = raw.replace(pair, _model_pair(deployment), 1)
            return shown if keep_usage else shown[: -len(_LAST_NULL_USAGE)] + b"}"
    parsed = stream_chunk(jsonwire.loads(raw), deployment, include_usage)
    return None if parsed is None else jsonwire.dumps(parsed)

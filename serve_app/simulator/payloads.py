"""Azure-shaped Chat Completions bodies and stream frames for an Answer (pure).

Streams reproduce Azure's quirks: a first frame carrying only `prompt_filter_results` (empty id, model and
object), a role chunk with empty content, one chunk per token, periodic content-filter annotation frames
whose choice has no `delta`, tool calls whose id and name come once before argument fragments, a final
chunk with an empty delta, then an optional usage chunk with `choices: []`, except after a content-filter
stop, which goes straight to `[DONE]`.

Under the asynchronous filter the first frame says `prompt_annotations`, tokens come unannotated and the
annotation frames trail them by one block, the last ones after the stop chunk; a blocked answer ends with
a no-delta choice whose `finish_reason` is `content_filter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .answers import Answer, Choice, Usage
from .content_filter import CHOICE_RESULTS, FILTERED_CHOICE_RESULTS, PROMPT_FILTER_RESULTS
from .errors import stream_error_event
from .tokens import tokenize

# Azure's asynchronous filter reports on the text in blocks; one annotation frame per this many deltas.
ANNOTATION_INTERVAL = 8
DONE_FRAME = b"data: [DONE]\n\n"

_ALTERNATIVE_TOKENS = (
    " the", " a", " and", " of", " to", " in", " is", " it", " that", " for",
    " on", " with", " as", " was", " at", " by", " this", " be", " or", " an", " from",
)  # fmt: skip

# error: an in-band error frame then a clean end; drop: cut after some deltas; reset: cut halfway through the bytes.
Interruption = Literal["error", "drop", "reset"]


@dataclass(frozen=True)
class ResponseMeta:
    id: str
    created: int
    model: str
    system_fingerprint: str
    service_tier: str = "default"


@dataclass(frozen=True)
class Frame:
    data: bytes
    # Paced frames carry generated tokens; the client waits inter_token_s between them.
    paced: bool = False


@dataclass(frozen=True)
class StreamPlan:
    frames: tuple[Frame, ...]
    # Cut the connection after the frames instead of ending the body properly.
    abrupt: bool = False


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion_body(answer: Answer, meta: ResponseMeta, *, top_logprobs: int | None) -> dict[str, Any]:
    """The non-streaming body; `top_logprobs` is None when logprobs were not asked for."""
    return {
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": meta.system_fingerprint,
        "service_tier": meta.service_tier,
        "choices": [
            {
                "index": index,
                "message": _message(choice),
                "finish_reason": choice.finish_reason,
                "logprobs": None if top_logprobs is None else _choice_logprobs(choice, top_logprobs),
                "content_filter_results": FILTERED_CHOICE_RESULTS if choice.filtered else CHOICE_RESULTS,
            }
            for index, choice in enumerate(answer.choices)
        ],
        "usage": usage_body(answer.usage),
        "prompt_filter_results": PROMPT_FILTER_RESULTS,
    }


def stream_plan(
    answer: Answer,
    meta: ResponseMeta,
    *,
    include_usage: bool,
    top_logprobs: int | None,
    interruption: Interruption | None = None,
    async_filter: bool = False,
) -> StreamPlan:
    chunks = _Chunks(meta, include_usage)
    opening = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
    prompt_key = "prompt_annotations" if async_filter else "prompt_filter_results"
    frames = [_sse({**opening, prompt_key: PROMPT_FILTER_RESULTS})]
    for index, choice in enumerate(answer.choices):
        frames.extend(_choice_frames(chunks, index, choice, top_logprobs, async_filter))
    if include_usage and not any(choice.filtered for choice in answer.choices):
        frames.append(chunks.frame([], usage=usage_body(answer.usage)))
    frames.append(Frame(DONE_FRAME))
    if interruption is None:
        return StreamPlan(tuple(frames))
    if interruption == "reset":
        payload = b"".join(frame.data for frame in frames)
        return StreamPlan((Frame(payload[: len(payload) // 2]),), abrupt=True)
    kept = frames[: _interruption_point(frames)]
    if interruption == "error":
        return StreamPlan((*kept, _sse(stream_error_event())))
    return StreamPlan(tuple(kept), abrupt=True)


def _sse(event: dict[str, Any], *, paced: bool = False) -> Frame:
    # orjson: the standard library's encoder was two thirds of the simulator's CPU in a long stream.
    return Frame(b"data: " + orjson.dumps(event) + b"\n\n", paced)


class _Chunks:
    def __init__(self, meta: ResponseMeta, include_usage: bool) -> None:
        self._meta = meta
        self._include_usage = include_usage

    def frame(self, choices: list[dict[str, Any]], *, paced: bool = False, usage: Any = None) -> Frame:
        chunk: dict[str, Any] = {
            "id": self._meta.id,
            "object": "chat.completion.chunk",
            "created": self._meta.created,
            "model": self._meta.model,
            "system_fingerprint": self._meta.system_fingerprint,
            "service_tier": self._meta.service_tier,
            "choices": choices,
        }
        if self._include_usage:
            chunk["usage"] = usage
        return _sse(chunk, paced=paced)

    def delta(
        self,
        index: int,
        delta: dict[str, Any],
        *,
        paced: bool = True,
        finish_reason: str | None = None,
        logprobs: dict[str, Any] | None = None,
        filter_results: dict[str, Any] | None = CHOICE_RESULTS,
    ) -> Frame:
        """A delta chunk; `filter_results` None leaves the annotation out (the asynchronous filter sends it later)."""
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}
        if filter_results is not None:
            choice["content_filter_results"] = filter_results
        return self.frame([choice], paced=paced)


def _choice_frames(
    chunks: _Chunks, index: int, choice: Choice, top_logprobs: int | None, async_filter: bool = False
) -> list[Frame]:
    role = {
        "role": "assistant",
        "content": None if choice.content is None else "",
        "refusal": None if choice.refusal is None else "",
    }
    frames = [chunks.delta(index, role, paced=False, filter_results={})]
    text_field = "content" if choice.refusal is None else "refusal"
    token_results = None if async_filter else CHOICE_RESULTS
    blocks: list[tuple[int, int]] = []  # (start, end) offsets of each annotated block of text
    pending: list[Frame] = []  # annotations the asynchronous filter has not sent yet
    written = 0
    for position, token in enumerate(choice.text_tokens):
        logprobs = None
        if top_logprobs is not None:
            entries = [_logprob_entry(token, position, top_logprobs)]
            logprobs = {"content": None, "refusal": None, text_field: entries}
        frames.append(chunks.delta(index, {text_field: token}, logprobs=logprobs, filter_results=token_results))
        written += len(token)
        if (position + 1) % ANNOTATION_INTERVAL == 0:
            start = blocks[-1][1] if blocks else 0
            blocks.append((start, written))
            if async_filter:
                # One block behind: this block's verdict comes after the next block's tokens.
                frames.extend(pending)
                pending = [_annotation(index, start, written)]
            else:
                frames.append(_annotation(index, start, written))
    for call_index, call in enumerate(choice.tool_calls):
        function = {"name": call.name, "arguments": ""}
        opening = {"index": call_index, "id": call.id, "type": "function", "function": function}
        frames.append(chunks.delta(index, {"tool_calls": [opening]}, filter_results=token_results))
        for fragment in tokenize(call.arguments):
            fragment_delta = {"index": call_index, "function": {"arguments": fragment}}
            frames.append(chunks.delta(index, {"tool_calls": [fragment_delta]}, filter_results=token_results))
    if async_filter:
        start = blocks[-1][1] if blocks else 0
        if choice.filtered:
            # The filter blocks what it has seen: no stop chunk, its verdict instead, then [DONE].
            return [*frames, *pending, _annotation(index, start, written, blocked=True)]
        closing = chunks.delta(index, {}, paced=False, finish_reason=choice.finish_reason, filter_results=None)
        tail = [_annotation(index, start, written)] if written > start else []
        return [*frames, closing, *pending, *tail]
    closing_filter = FILTERED_CHOICE_RESULTS if choice.filtered else {}
    frames.append(
        chunks.delta(index, {}, paced=False, finish_reason=choice.finish_reason, filter_results=closing_filter)
    )
    return frames


def _annotation(index: int, start: int, end: int, *, blocked: bool = False) -> Frame:
    choice = {
        "index": index,
        "finish_reason": "content_filter" if blocked else None,
        "content_filter_results": FILTERED_CHOICE_RESULTS if blocked else CHOICE_RESULTS,
        "content_filter_offsets": {"check_offset": start, "start_offset": start, "end_offset": end},
    }
    return _sse({"choices": [choice], "created": 0, "id": "", "model": "", "object": ""})


def _interruption_point(frames: Sequence[Frame]) -> int:
    """Where a stream breaks: after half of its deltas (at least one), or after the role chunk if it has none."""
    paced = [position for position, frame in enumerate(frames) if frame.paced]
    if not paced:
        return 2
    return paced[max(1, len(paced) // 2) - 1] + 1


def _message(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.content,
        "refusal": choice.refusal,
        "annotations": [],
    }
    if choice.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in choice.tool_calls
        ]
    return message


def _choice_logprobs(choice: Choice, top_logprobs: int) -> dict[str, Any]:
    entries = [_logprob_entry(token, position, top_logprobs) for position, token in enumerate(choice.text_tokens)]
    if choice.refusal is not None:
        return {"content": None, "refusal": entries}
    return {"content": entries if choice.content is not None else None, "refusal": None}


def _logprob_entry(token: str, position: int, top: int) -> dict[str, Any]:
    logprob = round(-0.001 * (1 + position % 9), 4)
    alternatives = [alternative for alternative in _ALTERNATIVE_TOKENS if alternative != token][: max(0, top - 1)]
    top_entries = [_top_entry(token, logprob)] if top else []
    top_entries += [_top_entry(alternative, logprob - 2.0 * rank) for rank, alternative in enumerate(alternatives, 1)]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": top_entries}


def _top_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

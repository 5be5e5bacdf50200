"""Azure Chat Completions chunks -> Responses stream events, as an explicit state machine. Pure.

States: *started* (`start()` emitted `response.created` and `response.in_progress`) -> *streaming*
(`feed()` opens output items on their first delta and emits deltas) -> *items closed* (a
`finish_reason` arrived: every open item gets its `.done` events, in output order) ->
*finished* (`finish()` emits `response.completed` or `response.incomplete`; `fail()` closes
what is still open as incomplete and emits `response.failed`). Items are closed together when
generation stops, because only then is it known whether the last one was cut off; that keeps the
terminal Response equal to what `to_response` builds from the same answer.

Chat carries one message and any number of tool calls, each keyed by its `index` and possibly
interleaved; output items are numbered densely in order of first appearance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import OpenAIError
from ..schemas import ResponsesRequest
from .response import (
    finish,
    finish_status,
    function_call_item,
    logprob_entries,
    mark_incomplete,
    message_item,
    new_id,
    report_service_tier,
    response_envelope,
    usage,
)


@dataclass
class _Message:
    id: str
    output_index: int
    text: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    # content_index of each part, in order of appearance
    parts: dict[str, int] = field(default_factory=dict)

    def item(self) -> dict[str, Any]:
        item = message_item(self.id, "".join(self.text), "".join(self.refusal), self.logprobs)
        # Parts keep the order they appeared in, which their content_index already promised.
        order = {"output_text": self.parts.get("text", 0), "refusal": self.parts.get("refusal", 1)}
        item["content"].sort(key=lambda part: order[part["type"]])
        return item


@dataclass
class _Call:
    id: str
    output_index: int
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    def item(self) -> dict[str, Any]:
        return function_call_item(self.id, self.call_id, self.name, "".join(self.arguments))


class ResponseEventStream:
    def __init__(self, req: ResponsesRequest, *, model: str, response_id: str, created_at: int) -> None:
        self._response = response_envelope(req, model=model, response_id=response_id, created_at=created_at)
        self._sequence = 0
        self._items: list[_Message | _Call] = []
        self._message: _Message | None = None
        self._calls: dict[int, _Call] = {}
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._service_tier: Any = None
        self._closed: list[dict[str, Any]] | None = None  # final output items, once closed

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        return [
            self._event("response.created", response={**self._response, "output": []}),
            self._event("response.in_progress", response={**self._response, "output": []}),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        if chunk.get("service_tier"):
            self._service_tier = chunk["service_tier"]
        for choice in chunk.get("choices") or ():
            # Azure sends choices with only content_filter_results and no delta; they carry no output.
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text(delta["content"], (choice.get("logprobs") or {}).get("content"))
            if delta.get("refusal"):
                events += self._refusal(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                events += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
                events += self._close_items()
        return events

    def finish(self, completed_at: int) -> list[dict[str, Any]]:
        events = self._close_items()
        status, incomplete = finish_status(self._finish_reason)
        response = dict(self._response)
        finish(response, status, incomplete, self._closed or [], usage(self._usage), completed_at)
        report_service_tier(response, self._service_tier)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return events + [self._event(kind, response=response)]

    def fail(self, error: OpenAIError) -> list[dict[str, Any]]:
        """Upstream failed after the stream began: close what is open as incomplete, then `response.failed`."""
        events = self._close_items(failed=True)
        response = {
            **self._response,
            "status": "failed",
            "output": self._closed,
            "usage": usage(self._usage),
            # Response.error.code is a closed set; Azure's own code and type are kept in message and type.
            "error": {
                "code": "rate_limit_exceeded" if error.status == 429 else "server_error",
                "message": error.message if not error.code else f"{error.message} (upstream code: {error.code})",
                "param": error.param,
                "type": error.type,
            },
        }
        return events + [self._event("response.failed", response=response)]

    # --- opening items and their deltas ---------------------------------------------------------

    def _open_message(self) -> tuple[_Message, list[dict[str, Any]]]:
        if self._message is not None:
            return self._message, []
        self._message = _Message(new_id("msg"), len(self._items))
        self._items.append(self._message)
        item = {"id": self._message.id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        return self._message, [
            self._event("response.output_item.added", output_index=self._message.output_index, item=item)
        ]

    def _open_part(self, message: _Message, kind: str) -> list[dict[str, Any]]:
        if kind in message.parts:
            return []
        message.parts[kind] = len(message.parts)
        part = (
            {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            if kind == "text"
            else {"type": "refusal", "refusal": ""}
        )
        return [self._event("response.content_part.added", **self._where(message, kind), part=part)]

    def _where(self, message: _Message, kind: str) -> dict[str, Any]:
        return {"item_id": message.id, "output_index": message.output_index, "content_index": message.parts[kind]}

    def _text(self, text: str, logprobs: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        message, events = self._open_message()
        events += self._open_part(message, "text")
        entries = logprob_entries(logprobs)
        message.text.append(text)
        message.logprobs += entries
        events.append(
            self._event("response.output_text.delta", **self._where(message, "text"), delta=text, logprobs=entries)
        )
        return events

    def _refusal(self, text: str) -> list[dict[str, Any]]:
        message, events = self._open_message()
        events += self._open_part(message, "refusal")
        message.refusal.append(text)
        events.append(self._event("response.refusal.delta", **self._where(message, "refusal"), delta=text))
        return events

    def _tool_call(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        index = delta.get("index", 0)
        function = delta.get("function") or {}
        call = self._calls.get(index)
        if call is None:
            # The first chunk of a call carries its id and name, once.
            call = _Call(new_id("fc"), len(self._items), delta.get("id") or "", function.get("name") or "")
            self._calls[index] = call
            self._items.append(call)
            item = {**call.item(), "status": "in_progress"}
            events.append(self._event("response.output_item.added", output_index=call.output_index, item=item))
        if function.get("arguments"):
            call.arguments.append(function["arguments"])
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=call.id,
                    output_index=call.output_index,
                    delta=function["arguments"],
                )
            )
        return events

    # --- closing -------------------------------------------------------------------------------

    def _close_items(self, failed: bool = False) -> list[dict[str, Any]]:
        if self._closed is not None:
            return []
        status, _ = finish_status(self._finish_reason)
        output = [item.item() for item in self._items]
        mark_incomplete(output, status)
        if failed:
            for item in output:
                item["status"] = "incomplete"
        self._closed = output
        events: list[dict[str, Any]] = []
        for state, item in zip(self._items, output, strict=False):
            if isinstance(state, _Message):
                for part in item["content"]:
                    kind = "text" if part["type"] == "output_text" else "refusal"
                    where = self._where(state, kind)
                    if kind == "text":
                        events.append(
                            self._event(
                                "response.output_text.done", **where, text=part["text"], logprobs=part["logprobs"]
                            )
                        )
                    else:
                        events.append(self._event("response.refusal.done", **where, refusal=part["refusal"]))
                    events.append(self._event("response.content_part.done", **where, part=part))
            else:
                events.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=state.id,
                        output_index=state.output_index,
                        name=state.name,
                        arguments=item["arguments"],
                    )
                )
            events.append(self._event("response.output_item.done", output_index=state.output_index, item=item))
        return events

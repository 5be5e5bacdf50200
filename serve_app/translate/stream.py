"""Azure Chat Completions chunks -> Responses stream events, as an explicit state machine. Pure.

States: *started* (`start()` emitted `response.created` and `response.in_progress`) -> *streaming*
(`feed()` records each delta on its output item; the *live* item's events go out at once) ->
*items closed* (a `finish_reason` arrived: each item's remaining events and its `.done` events, in
output order) -> *finished* (`finish()` emits `response.completed` or `response.incomplete`;
`fail()` closes what is still open as incomplete and emits `response.failed`).

OpenAI closes each output item before it opens the next, but Chat carries one message and any
number of tool calls keyed by `index`, which may interleave. So only the first item streams
live; the events of the items after it are held, in order, and go out when it closes. Items close
when generation stops, because only then is it known whether the last one was cut off; that
keeps the terminal Response equal to what `to_response` builds from the same answer. Output items
are numbered densely in order of first appearance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from .. import jsonwire
from ..errors import OpenAIError
from ..schemas import ResponseSettings, ResponsesRequest
from .response import (
    call_item,
    finish,
    finish_status,
    logprob_entries,
    mark_incomplete,
    message_item,
    new_id,
    report_service_tier,
    response_envelope,
    tools_of,
    usage,
)
from .tools import CustomInputDecoder, ToolMap

Event = tuple[str, dict[str, Any]]  # (type, fields) before it gets its sequence number


@dataclass
class _Item:
    id: str
    output_index: int
    pending: list[Event] = field(default_factory=list)  # events not yet sent
    opened: bool = False  # output_item.added sent

    def where(self) -> dict[str, Any]:
        return {"item_id": self.id, "output_index": self.output_index}


@dataclass
class _Message(_Item):
    text: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    # content_index of each part, in order of appearance
    parts: dict[str, int] = field(default_factory=dict)
    # each part's address (item, output and content index), made once: every delta of the part carries it
    addresses: dict[str, dict[str, Any]] = field(default_factory=dict)

    def added(self) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}

    def item(self, tools: ToolMap) -> dict[str, Any]:
        item = message_item(self.id, "".join(self.text), "".join(self.refusal), self.logprobs)
        # Parts keep the order they appeared in, which their content_index already promised.
        order = {"output_text": self.parts.get("text", 0), "refusal": self.parts.get("refusal", 1)}
        item["content"].sort(key=lambda part: order[part["type"]])
        return item

    def part_where(self, kind: str) -> dict[str, Any]:
        address = self.addresses.get(kind)
        if address is None:
            address = self.addresses[kind] = {**self.where(), "content_index": self.parts[kind]}
        return address

    def done(self, item: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        for part in item["content"]:
            if part["type"] == "output_text":
                where = self.part_where("text")
                events.append(
                    ("response.output_text.done", {**where, "text": part["text"], "logprobs": part["logprobs"]})
                )
            else:
                where = self.part_where("refusal")
                events.append(("response.refusal.done", {**where, "refusal": part["refusal"]}))
            events.append(("response.content_part.done", {**where, "part": part}))
        return events


@dataclass
class _Call(_Item):
    call_id: str = ""
    name: str = ""  # the upstream (chat) function name
    arguments: list[str] = field(default_factory=list)
    decoder: CustomInputDecoder = field(default_factory=CustomInputDecoder)  # for custom tool calls
    streamed: list[str] = field(default_factory=list)  # custom input sent in deltas so far

    def added(self, tools: ToolMap) -> dict[str, Any]:
        return {**call_item(tools, self.id, self.call_id, self.name, ""), "status": "in_progress"}

    def item(self, tools: ToolMap) -> dict[str, Any]:
        return call_item(tools, self.id, self.call_id, self.name, "".join(self.arguments))

    def delta(self, tools: ToolMap, text: str) -> list[Event]:
        kind = tools.kind(self.name)
        if kind == "function":
            return [("response.function_call_arguments.delta", {**self.where(), "delta": text})]
        if kind == "custom":
            decoded = self.decoder.feed(text)
            if decoded:
                self.streamed.append(decoded)
                return [("response.custom_tool_call_input.delta", {**self.where(), "delta": decoded})]
        return []  # a tool_search_call's arguments are an object, whole when the call closes

    def done(self, item: dict[str, Any]) -> list[Event]:
        if item["type"] == "function_call":
            fields = {**self.where(), "name": item["name"], "arguments": item["arguments"]}
            return [("response.function_call_arguments.done", fields)]
        if item["type"] == "custom_tool_call":
            # What the deltas could not decode as it came (arguments not of the strict shape) comes now.
            rest = item["input"].removeprefix("".join(self.streamed))
            events: list[Event] = (
                [("response.custom_tool_call_input.delta", {**self.where(), "delta": rest})] if rest else []
            )
            return [*events, ("response.custom_tool_call_input.done", {**self.where(), "input": item["input"]})]
        return []  # a tool_search_call has no events of its own


class ChunkDelta(TypedDict, total=False):
    """What is read of a chunk's `delta`, on either path: whether it carries output, and which."""

    content: Any
    refusal: Any
    tool_calls: Any


class _Choice(TypedDict, total=False):
    delta: ChunkDelta | None
    finish_reason: Any
    logprobs: Any


class ChatChunk(TypedDict, total=False):
    """What `ResponseEventStream.feed` reads of a Chat Completions chunk (and `error`, Azure's in-band failure):
    the rest of it (ids, content-filter verdicts) is not built at all (`jsonwire.LoadsOnly`)."""

    choices: list[_Choice] | None
    usage: Any
    service_tier: Any
    error: Any


read_chunk = jsonwire.LoadsOnly(ChatChunk)


class ResponseEventStream:
    def __init__(
        self,
        req: ResponsesRequest | ResponseSettings,
        *,
        model: str,
        response_id: str,
        created_at: int,
        tools: ToolMap | None = None,
    ) -> None:
        self._tools = tools or tools_of(req)
        self._response = response_envelope(req, model=model, response_id=response_id, created_at=created_at)
        self._sequence = 0
        self._items: list[_Message | _Call] = []
        self._live = 0  # index of the item whose events go out as they come
        self._message: _Message | None = None
        self._calls: dict[int, _Call] = {}
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._service_tier: Any = None
        self._closed: list[dict[str, Any]] | None = None  # final output items, once closed

    def _event(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        return [
            self._event("response.created", {"response": {**self._response, "output": []}}),
            self._event("response.in_progress", {"response": {**self._response, "output": []}}),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if usage := chunk.get("usage"):
            self._usage = usage
        if tier := chunk.get("service_tier"):
            self._service_tier = tier
        events: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or ():
            # Azure sends choices with only content_filter_results and no delta; they carry no output.
            if delta := choice.get("delta"):
                if content := delta.get("content"):
                    logprobs = choice.get("logprobs")
                    self._text(content, logprobs.get("content") if logprobs else None)
                if refusal := delta.get("refusal"):
                    self._refusal(refusal)
                for call in delta.get("tool_calls") or ():
                    self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
                events += self._close_items()
        if self._closed is None and self._live < len(self._items):
            events += self._send(self._items[self._live])
        return events

    def feed_all(self, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`feed` for each of `chunks` that arrived together, their events in order."""
        return [event for chunk in chunks for event in self.feed(chunk)]

    def finish(self, completed_at: int) -> list[dict[str, Any]]:
        events = self._close_items()
        status, incomplete = finish_status(self._finish_reason)
        response = dict(self._response)
        finish(response, status, incomplete, self._closed or [], usage(self._usage), completed_at)
        report_service_tier(response, self._service_tier)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return events + [self._event(kind, {"response": response})]

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
        return events + [self._event("response.failed", {"response": response})]

    # --- recording deltas on their items ---------------------------------------------------------

    def _open_message(self) -> _Message:
        if self._message is None:
            self._message = _Message(new_id("msg"), len(self._items))
            self._items.append(self._message)
        return self._message

    def _open_part(self, message: _Message, kind: str) -> None:
        if kind in message.parts:
            return
        message.parts[kind] = len(message.parts)
        part = (
            {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            if kind == "text"
            else {"type": "refusal", "refusal": ""}
        )
        message.pending.append(("response.content_part.added", {**message.part_where(kind), "part": part}))

    def _text(self, text: str, logprobs: list[dict[str, Any]] | None) -> None:
        message = self._open_message()
        self._open_part(message, "text")
        entries = logprob_entries(logprobs) if logprobs else []
        message.text.append(text)
        message.logprobs += entries
        message.pending.append(
            ("response.output_text.delta", {**message.part_where("text"), "delta": text, "logprobs": entries})
        )

    def _refusal(self, text: str) -> None:
        message = self._open_message()
        self._open_part(message, "refusal")
        message.refusal.append(text)
        message.pending.append(("response.refusal.delta", {**message.part_where("refusal"), "delta": text}))

    def _tool_call(self, delta: dict[str, Any]) -> None:
        index = delta.get("index", 0)
        function = delta.get("function") or {}
        call = self._calls.get(index)
        if call is None:
            # The first chunk of a call carries its id and name, once.
            name = function.get("name") or ""
            call = _Call(
                new_id(self._tools.id_prefix(name)), len(self._items), call_id=delta.get("id") or "", name=name
            )
            self._calls[index] = call
            self._items.append(call)
        if function.get("arguments"):
            call.arguments.append(function["arguments"])
            call.pending += call.delta(self._tools, function["arguments"])

    # --- sending and closing ---------------------------------------------------------------------

    def _send(self, state: _Message | _Call) -> list[dict[str, Any]]:
        """The item's events not yet sent, `output_item.added` first."""
        events = []
        if not state.opened:
            state.opened = True
            item = state.added(self._tools) if isinstance(state, _Call) else state.added()
            events.append(self._event("response.output_item.added", {"output_index": state.output_index, "item": item}))
        for kind, fields in state.pending:
            events.append(self._event(kind, fields))
        state.pending.clear()
        return events

    def _close_items(self, failed: bool = False) -> list[dict[str, Any]]:
        if self._closed is not None:
            return []
        status, _ = finish_status(self._finish_reason)
        output = [state.item(self._tools) for state in self._items]
        mark_incomplete(output, status)
        if failed:
            for item in output:
                item["status"] = "incomplete"
        self._closed = output
        events: list[dict[str, Any]] = []
        for state, item in zip(self._items, output, strict=True):
            events += self._send(state)
            events += [self._event(kind, fields) for kind, fields in state.done(item)]
            events.append(self._event("response.output_item.done", {"output_index": state.output_index, "item": item}))
        self._live = len(self._items)
        return events

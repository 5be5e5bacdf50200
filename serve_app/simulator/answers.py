"""Deterministic answers to validated Chat Completions requests (pure).

The assistant echoes the last user message, calls tools with arguments derived from their JSON Schemas,
reports tool results back, and honours response formats and token limits, so tests can predict every
answer exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .schema_values import value_for_schema
from .tokens import count_tokens, lorem, tokenize
from .triggers import Triggers

REFUSAL_TEXT = "I'm sorry, but I can't assist with that request."
REASONING_TOKENS = {"none": 0, "minimal": 0, "low": 8, "medium": 16, "high": 32}
DEFAULT_REASONING_EFFORT = "medium"
IMAGE_TOKENS = 85
# Chat formatting costs a few tokens per message and for priming the reply, as with OpenAI's tokenizer.
_TOKENS_PER_MESSAGE = 4
_REPLY_PRIMING_TOKENS = 3

Message = Mapping[str, Any]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Choice:
    content: str | None
    refusal: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    # The visible text (content or refusal) as tokens: the streaming deltas and the logprobs entries.
    text_tokens: tuple[str, ...]
    output_tokens: int
    filtered: bool = False


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Answer:
    choices: tuple[Choice, ...]
    usage: Usage


def content_text(content: str | Sequence[Mapping[str, Any]] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(part["text"] for part in content if part["type"] == "text")


def last_user_text(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return content_text(message["content"])
    return ""


def prompt_tokens(body: Mapping[str, Any]) -> int:
    total = _REPLY_PRIMING_TOKENS
    for message in body["messages"]:
        total += _TOKENS_PER_MESSAGE + _content_tokens(message.get("content"))
        for call in message.get("tool_calls") or ():
            total += count_tokens(call["function"]["name"]) + count_tokens(call["function"]["arguments"])
    if body.get("tools"):
        total += count_tokens(json.dumps(body["tools"]))
    return total


def generate(body: Mapping[str, Any], *, reasoning: bool, triggers: Triggers) -> Answer:
    effort = body.get("reasoning_effort") or DEFAULT_REASONING_EFFORT
    reasoning_tokens = REASONING_TOKENS[effort] if reasoning else 0
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    budget = None
    if limit is not None:
        # Reasoning is spent first and counts against max_completion_tokens, as on Azure.
        reasoning_tokens = min(reasoning_tokens, limit)
        budget = limit - reasoning_tokens
    choice = _choice(body, triggers, budget)
    n = body.get("n") or 1
    usage = Usage(
        prompt_tokens=prompt_tokens(body),
        completion_tokens=n * (choice.output_tokens + reasoning_tokens),
        reasoning_tokens=n * reasoning_tokens,
    )
    return Answer(choices=(choice,) * n, usage=usage)


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_tokens(content)
    total = 0
    for part in content:
        if part["type"] in ("text", "refusal"):
            total += count_tokens(part[part["type"]])
        elif part["type"] == "image_url":
            total += IMAGE_TOKENS
    return total


def _choice(body: Mapping[str, Any], triggers: Triggers, budget: int | None) -> Choice:
    if triggers.refusal:
        return _text_choice(REFUSAL_TEXT, budget, refusal=True)
    if triggers.content_filter_output:
        return _filtered_choice(_answer_text(body, triggers), budget)
    tools, forced = _tools_to_call(body, triggers)
    if tools:
        return _tool_choice(body, tools, forced, budget)
    return _text_choice(_answer_text(body, triggers), budget)


def _spend(pieces: list[str], budget: int | None) -> tuple[list[str], bool]:
    if budget is None or len(pieces) <= budget:
        return pieces, False
    return pieces[:budget], True


def _text_choice(text: str, budget: int | None, *, refusal: bool = False) -> Choice:
    pieces, cut = _spend(tokenize(text), budget)
    visible = "".join(pieces)
    return Choice(
        content=None if refusal else visible,
        refusal=visible if refusal else None,
        tool_calls=(),
        finish_reason="length" if cut else "stop",
        text_tokens=tuple(pieces),
        output_tokens=len(pieces),
    )


def _filtered_choice(text: str, budget: int | None) -> Choice:
    pieces, _ = _spend(tokenize(text), budget)
    shown = pieces[: len(pieces) // 2]
    return Choice(
        content="".join(shown),
        refusal=None,
        tool_calls=(),
        finish_reason="content_filter",
        text_tokens=tuple(shown),
        output_tokens=len(shown),
        filtered=True,
    )


def _tools_to_call(body: Mapping[str, Any], triggers: Triggers) -> tuple[list[Mapping[str, Any]], bool]:
    tools = body.get("tools") or []
    tool_choice = body.get("tool_choice") or "auto"
    if not tools or tool_choice == "none" or body["messages"][-1]["role"] == "tool":
        return [], False
    if isinstance(tool_choice, Mapping):
        name = tool_choice["function"]["name"]
        return [tool for tool in tools if tool["function"]["name"] == name][:1], True
    if triggers.parallel_tools and body.get("parallel_tool_calls") is not False:
        return list(tools), False
    return tools[:1], False


def _tool_choice(
    body: Mapping[str, Any], tools: Sequence[Mapping[str, Any]], forced: bool, budget: int | None
) -> Choice:
    text = last_user_text(body["messages"])
    seed = json.dumps(body["messages"], sort_keys=True)
    calls: list[ToolCall] = []
    spent = 0
    cut = False
    for index, tool in enumerate(tools):
        function = tool["function"]
        schema = {"type": "object", **(function.get("parameters") or {})}
        arguments = json.dumps(value_for_schema(schema, text), separators=(",", ":"), ensure_ascii=False)
        pieces, cut = _spend(tokenize(arguments), None if budget is None else budget - spent)
        if cut and not pieces:
            break
        calls.append(ToolCall(id=_call_id(seed, index), name=function["name"], arguments="".join(pieces)))
        spent += len(pieces)
        if cut:
            break
    if not calls:
        # The budget ran out before the first call began: an empty, truncated answer.
        return Choice(content="", refusal=None, tool_calls=(), finish_reason="length", text_tokens=(), output_tokens=0)
    finish_reason = "length" if cut else ("stop" if forced else "tool_calls")
    return Choice(
        content=None,
        refusal=None,
        tool_calls=tuple(calls),
        finish_reason=finish_reason,
        text_tokens=(),
        output_tokens=spent,
    )


def _call_id(seed: str, index: int) -> str:
    return "call_" + hashlib.blake2b(f"{index}:{seed}".encode(), digest_size=12).hexdigest()


def _answer_text(body: Mapping[str, Any], triggers: Triggers) -> str:
    messages = body["messages"]
    if triggers.tokens is not None:
        text = lorem(triggers.tokens)
    elif messages[-1]["role"] == "tool":
        text = _tool_results_text(messages)
    else:
        text = last_user_text(messages)
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_object":
        return json.dumps({"echo": text}, ensure_ascii=False)
    if response_format.get("type") == "json_schema":
        schema = response_format["json_schema"].get("schema") or {"type": "object"}
        return json.dumps(value_for_schema(schema, text), ensure_ascii=False)
    return text


def _tool_results_text(messages: Sequence[Message]) -> str:
    names = {
        call["id"]: call["function"]["name"]
        for message in messages
        if message["role"] == "assistant"
        for call in message.get("tool_calls") or ()
    }
    results: list[str] = []
    for message in reversed(messages):
        if message["role"] != "tool":
            break
        results.append(f"{names[message['tool_call_id']]} returned: {content_text(message['content'])}")
    return "\n".join(reversed(results))

"""Responses API request -> Azure Chat Completions request body. Pure: no I/O, no Ray.

Rules that are not obvious from the two specs:

- `instructions` and the leading run of system/developer messages become one system message,
  joined by blank lines; later system/developer messages stay where they are, as `system`
  (the `developer` role needs a newer api-version on Azure; `system` works on all of them).
- `function_call` items (and replayed `custom_tool_call`s and `tool_search_call`s, under the
  function names `tools.py` offers them as) merge into the assistant message right before them,
  so that "text, then tool calls" is one assistant turn as Chat Completions expects.
- `metadata.extra_body` keys are applied by `extra_body.py`; `truncation: auto` is the server's
  retry (`truncation.py`), nothing in the body.
- `reasoning` items are replayed by agents every turn but have no Chat Completions equivalent
  (Azure's reasoning state is not addressable); they are left out of the upstream body.
- A field we cannot honour is refused with a 400 naming it; fields that need no upstream action
  (`store`, `metadata`, `service_tier: auto|default`, `reasoning.summary`, `max_tool_calls`,
  `prompt_cache_retention: in_memory`) are accepted and only echoed; `client_metadata` is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from ..errors import InvalidRequest, UnsupportedField
from ..schemas import (
    CustomToolCallItem,
    CustomToolCallOutputItem,
    FormatJsonObject,
    FormatJsonSchema,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputImage,
    InputText,
    MessageItem,
    OutputText,
    ReasoningItem,
    RefusalPart,
    ResponsesRequest,
    ToolChoiceCustom,
    ToolChoiceFunction,
    ToolSearchCallItem,
    ToolSearchOutputItem,
    UnsupportedItem,
    UnsupportedPart,
    UnsupportedToolChoice,
)
from . import extra_body
from .tools import PROGRAMMATIC, ToolMap, custom_arguments, refuse_if_set

# `include` values we can honour: logprobs map to `logprobs: true`; encrypted reasoning is
# vacuously honoured because Azure chat returns no reasoning items to include it in.
SUPPORTED_INCLUDES = {"message.output_text.logprobs", "reasoning.encrypted_content"}
NO_OP_SERVICE_TIERS = {None, "auto", "default"}
AZURE_SERVICE_TIERS = {"priority", "flex"}  # Azure runs them and reports the tier it used

# Fields refused whenever they are set, and why.
_REFUSED_FIELDS = {
    "previous_response_id": "responses are not stored here; send the whole conversation as input",
    "background": "background responses need server-side storage, which this server does not keep",
    "conversation": "conversations are not stored here; send the whole conversation as input",
    "prompt": "stored prompt templates do not exist on Azure Chat Completions",
    "prompt_cache_options": "Azure Chat Completions has no prompt cache options",
    "access_programs": "OpenAI access programs do not apply to Azure deployments",
    "background_options": "background responses need server-side storage, which this server does not keep",
    "context_management": "Azure Chat Completions does not compact conversations",
    "image": "image context compression is not available on Azure Chat Completions",
    "moderation": "Azure applies its own content filters; OpenAI moderation policies cannot be set",
}


def to_chat_request(
    req: ResponsesRequest, tools: ToolMap | None = None, ignored_extra_body_keys: Collection[str] = ()
) -> dict[str, Any]:
    """Build the Chat Completions body (without `model` and `stream`, which the caller owns).

    `tools` is the request's `ToolMap` when the caller built it (to leave hosted tools out, and to
    map Azure's calls back with the same names); `ignored_extra_body_keys` are the
    `metadata.extra_body` keys the model server's config lets us leave out."""
    _refuse_unsupported(req)
    tools = tools or ToolMap.of(req)
    body: dict[str, Any] = {"messages": _messages(req, tools)}
    if tools.upstream:
        body["tools"] = tools.upstream
    _add_tool_choice(body, req, tools)
    if req.text is not None:
        if isinstance(req.text.format, FormatJsonSchema):
            schema: dict[str, Any] = {"name": req.text.format.name, "schema": req.text.format.schema_}
            if req.text.format.strict is not None:
                schema["strict"] = req.text.format.strict
            if req.text.format.description is not None:
                schema["description"] = req.text.format.description
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif isinstance(req.text.format, FormatJsonObject):
            body["response_format"] = {"type": "json_object"}
        if req.text.verbosity is not None:
            body["verbosity"] = req.text.verbosity
    if req.reasoning is not None and req.reasoning.effort is not None:
        body["reasoning_effort"] = req.reasoning.effort
    if req.max_output_tokens is not None:
        # `max_tokens` is rejected by reasoning deployments; `max_completion_tokens` works on all.
        body["max_completion_tokens"] = req.max_output_tokens
    if req.service_tier in AZURE_SERVICE_TIERS:
        body["service_tier"] = req.service_tier
    for name in ("temperature", "top_p", "user", "safety_identifier", "prompt_cache_key"):
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    if req.top_logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = req.top_logprobs
    elif "message.output_text.logprobs" in (req.include or ()):
        body["logprobs"] = True
    extra_body.apply(body, req.metadata, ignored_extra_body_keys)
    return body


_CACHE_BREAKPOINT = "explicit prompt cache breakpoints do not exist on Azure Chat Completions"


def _refuse_programmatic(param: str, item: Any) -> None:
    if item.caller is not None and item.caller.type != "direct":
        raise UnsupportedField(f"{param}.caller", PROGRAMMATIC)
    refuse_if_set(f"{param}.async", getattr(item, "async_", None), "asynchronous tool calls do not exist on Azure")


def _refuse_unsupported(req: ResponsesRequest) -> None:
    for name, reason in _REFUSED_FIELDS.items():
        refuse_if_set(name, getattr(req, name), reason)
    if req.service_tier not in NO_OP_SERVICE_TIERS | AZURE_SERVICE_TIERS:
        raise UnsupportedField("service_tier", "Azure has the tiers 'auto', 'default', 'priority' and 'flex'")
    for i, value in enumerate(req.include or ()):
        if value not in SUPPORTED_INCLUDES:
            raise UnsupportedField(f"include[{i}]", f"{value!r} cannot be produced from Azure Chat Completions")
    if req.prompt_cache_retention == "24h":
        raise UnsupportedField(
            "prompt_cache_retention", "Azure keeps prompt caches in memory only (at most an hour); use 'in_memory'"
        )
    if req.stream_options is not None and req.stream_options.include_obfuscation:
        raise UnsupportedField("stream_options.include_obfuscation", "stream obfuscation is not implemented")


# --- messages ------------------------------------------------------------------------------------


def _messages(req: ResponsesRequest, tools: ToolMap) -> list[dict[str, Any]]:
    items = [MessageItem(role="user", content=req.input)] if isinstance(req.input, str) else req.input
    system_texts = [req.instructions] if req.instructions else []
    start = 0
    while start < len(items) and _is_system(items[start]):
        system_texts.append(_system_text(items[start], start))  # type: ignore[arg-type]
        start += 1
    messages: list[dict[str, Any]] = []
    if system_texts:
        messages.append({"role": "system", "content": "\n\n".join(system_texts)})
    for index in range(start, len(items)):
        item = items[index]
        param = f"input[{index}]"
        if isinstance(item, MessageItem):
            messages.append(_message(item, index))
        elif isinstance(item, FunctionCallItem):
            _refuse_programmatic(param, item)
            name = tools.upstream_name("function", item.name, item.namespace)
            _attach_tool_call(messages, item.call_id, name, item.arguments)
        elif isinstance(item, CustomToolCallItem):
            _refuse_programmatic(param, item)
            name = tools.upstream_name("custom", item.name, item.namespace)
            _attach_tool_call(messages, item.call_id, name, custom_arguments(item.input))
        elif isinstance(item, ToolSearchCallItem):
            _refuse_hosted_search(param, item)
            arguments = item.arguments if isinstance(item.arguments, str) else json.dumps(item.arguments)
            _attach_tool_call(
                messages, _search_call_id(param, item), tools.upstream_name("tool_search", "tool_search"), arguments
            )
        elif isinstance(item, (FunctionCallOutputItem, CustomToolCallOutputItem)):
            _refuse_programmatic(param, item)
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": _tool_output(item, index)})
        elif isinstance(item, ToolSearchOutputItem):
            _refuse_hosted_search(param, item)
            content = _loaded_tools(item, tools)
            messages.append({"role": "tool", "tool_call_id": _search_call_id(param, item), "content": content})
        elif isinstance(item, ReasoningItem):
            continue
        elif isinstance(item, UnsupportedItem):
            raise UnsupportedField(
                param, f"input items of type {item.type!r} have no Azure Chat Completions equivalent"
            )
    if not messages:
        raise InvalidRequest("'input' must contain at least one message.", param="input")
    return messages


def _refuse_hosted_search(param: str, item: ToolSearchCallItem | ToolSearchOutputItem) -> None:
    if item.execution != "client":
        raise UnsupportedField(f"{param}.execution", "hosted tool search does not exist on Azure Chat Completions")


def _search_call_id(param: str, item: ToolSearchCallItem | ToolSearchOutputItem) -> str:
    # Optional in the API, but a client-executed search pairs its call and output by it.
    if not item.call_id:
        raise InvalidRequest(
            f"Missing '{param}.call_id': a client-executed tool search needs one.", param=f"{param}.call_id"
        )
    return item.call_id


def _loaded_tools(item: ToolSearchOutputItem, tools: ToolMap) -> str:
    """What the model reads as the search's result: the functions it can call from now on."""
    loaded = []
    for name, target in tools.targets.items():
        if any(getattr(tool, "name", None) in (target.name, target.namespace) for tool in item.tools):
            loaded.append(name)
    return json.dumps({"loaded_tools": loaded})


def _is_system(item: Any) -> bool:
    return isinstance(item, MessageItem) and item.role in ("system", "developer")


def _system_text(item: MessageItem, index: int) -> str:
    refuse_if_set(f"input[{index}].phase", item.phase, "message phases do not exist on Azure Chat Completions")
    if isinstance(item.content, str):
        return item.content
    texts = []
    for j, part in enumerate(item.content):
        texts.append(_text(part, f"input[{index}].content[{j}]", item.role))
    return "\n\n".join(texts)


def _text(part: Any, param: str, role: str) -> str:
    if not isinstance(part, InputText):
        _refuse_part(part, param, role)
    refuse_if_set(f"{param}.prompt_cache_breakpoint", part.prompt_cache_breakpoint, _CACHE_BREAKPOINT)
    return str(part.text)


def _message(item: MessageItem, index: int) -> dict[str, Any]:
    refuse_if_set(f"input[{index}].phase", item.phase, "message phases do not exist on Azure Chat Completions")
    if item.role in ("system", "developer"):
        return {"role": "system", "content": _system_text(item, index)}
    if item.role == "assistant":
        return _assistant_message(item, index)
    if isinstance(item.content, str):
        return {"role": "user", "content": item.content}
    parts = []
    for j, part in enumerate(item.content):
        param = f"input[{index}].content[{j}]"
        if isinstance(part, InputImage):
            parts.append(_image_part(part, param))
        else:
            parts.append({"type": "text", "text": _text(part, param, item.role)})
    return {"role": "user", "content": parts}


def _assistant_message(item: MessageItem, index: int) -> dict[str, Any]:
    if isinstance(item.content, str):
        return {"role": "assistant", "content": item.content}
    texts, refusals = [], []
    for j, part in enumerate(item.content):
        if isinstance(part, OutputText):
            texts.append(part.text)
        elif isinstance(part, RefusalPart):
            refusals.append(part.refusal)
        else:
            _refuse_part(part, f"input[{index}].content[{j}]", "assistant")
    text = "".join(texts)
    if not refusals:
        # Never null: Azure rejects an assistant message with neither content nor tool calls.
        return {"role": "assistant", "content": text}
    parts = [{"type": "text", "text": text}] if text else []
    parts += [{"type": "refusal", "refusal": r} for r in refusals]
    return {"role": "assistant", "content": parts}


def _image_part(part: InputImage, param: str) -> dict[str, Any]:
    if part.image_url is None:
        raise UnsupportedField(
            f"{param}.file_id", "uploaded files are not reachable from Azure; send image_url (a URL or data: URL)"
        )
    if part.detail == "original":
        raise UnsupportedField(f"{param}.detail", "Azure Chat Completions takes detail 'low', 'high' or 'auto'")
    refuse_if_set(f"{param}.prompt_cache_breakpoint", part.prompt_cache_breakpoint, _CACHE_BREAKPOINT)
    return {"type": "image_url", "image_url": {"url": part.image_url, "detail": part.detail}}


def _refuse_part(part: Any, param: str, role: str) -> None:
    if isinstance(part, UnsupportedPart):
        raise UnsupportedField(param, f"content parts of type {part.type!r} have no Azure Chat Completions equivalent")
    if isinstance(part, InputImage):
        raise UnsupportedField(
            param, f"images are only accepted in user messages and tool outputs, not {role} messages"
        )
    raise InvalidRequest(f"Invalid '{param}': a {role} message cannot hold a {part.type!r} part.", param=param)


def _attach_tool_call(messages: list[dict[str, Any]], call_id: str, name: str, arguments: str) -> None:
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        if last["content"] == "":
            last["content"] = None  # an empty text turn before tool calls is just the tool calls
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_output(item: FunctionCallOutputItem | CustomToolCallOutputItem, index: int) -> str | list[dict[str, Any]]:
    if isinstance(item.output, str):
        return item.output
    parts = []
    for j, part in enumerate(item.output):
        param = f"input[{index}].output[{j}]"
        if isinstance(part, InputImage):
            raise UnsupportedField(param, "Azure Chat Completions tool messages carry text only")
        parts.append({"type": "text", "text": _text(part, param, "tool")})
    return parts


# --- tools ---------------------------------------------------------------------------------------


def _add_tool_choice(body: dict[str, Any], req: ResponsesRequest, tools: ToolMap) -> None:
    choice = req.tool_choice
    if isinstance(choice, UnsupportedToolChoice):
        raise UnsupportedField(
            "tool_choice", f"tool_choice of type {choice.type!r} has no Azure Chat Completions equivalent"
        )
    named = isinstance(choice, (ToolChoiceFunction, ToolChoiceCustom))
    if not tools.upstream:
        # Azure rejects tool_choice and parallel_tool_calls without tools; "none"/"auto" mean nothing then.
        if choice == "required" or named:
            raise InvalidRequest("Invalid 'tool_choice': a tool is required but 'tools' is empty.", param="tool_choice")
        return
    if isinstance(choice, (ToolChoiceFunction, ToolChoiceCustom)):
        name = tools.upstream_name(choice.type, choice.name)
        if tools.targets.get(name) is None or tools.targets[name].kind != choice.type:
            raise InvalidRequest(
                f"Invalid 'tool_choice': no {choice.type} tool named {choice.name!r} in 'tools'.",
                param="tool_choice.name",
            )
        body["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif choice is not None:
        body["tool_choice"] = choice
    if req.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = req.parallel_tool_calls

"""Responses API request -> Azure Chat Completions request body. Pure: no I/O, no Ray.

Rules that are not obvious from the two specs:

- `instructions` and the leading run of system/developer messages become one system message,
  joined by blank lines; later system/developer messages stay where they are, as `system`
  (the `developer` role needs a newer api-version on Azure; `system` works on all of them).
- `function_call` items merge into the assistant message right before them, so that
  "text, then tool calls" is one assistant turn as Chat Completions expects.
- `reasoning` items are replayed by agents every turn but have no Chat Completions equivalent
  (Azure's reasoning state is not addressable); they are left out of the upstream body.
- A field we cannot honour is refused with a 400 naming it; fields that need no upstream action
  (`store`, `metadata`, `service_tier: auto|default`, `reasoning.summary`, `max_tool_calls`,
  `prompt_cache_retention: in_memory`) are accepted and only echoed; `client_metadata` is ignored.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequest, UnsupportedField
from ..schemas import (
    FormatJsonObject,
    FormatJsonSchema,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputImage,
    InputText,
    MessageItem,
    OutputText,
    ReasoningItem,
    RefusalPart,
    ResponsesRequest,
    ToolChoiceFunction,
    UnsupportedItem,
    UnsupportedPart,
    UnsupportedTool,
    UnsupportedToolChoice,
)

# `include` values we can honour: logprobs map to `logprobs: true`; encrypted reasoning is
# vacuously honoured because Azure chat returns no reasoning items to include it in.
SUPPORTED_INCLUDES = {"message.output_text.logprobs", "reasoning.encrypted_content"}
NO_OP_SERVICE_TIERS = {None, "auto", "default"}

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


def to_chat_request(req: ResponsesRequest) -> dict[str, Any]:
    """Build the Chat Completions body (without `model` and `stream`, which the caller owns)."""
    _refuse_unsupported(req)
    body: dict[str, Any] = {"messages": _messages(req)}
    tool_names = _add_tools(body, req)
    _add_tool_choice(body, req, tool_names)
    if req.text is not None:
        if isinstance(req.text.format, FormatJsonSchema):
            schema = {"name": req.text.format.name, "schema": req.text.format.schema_}
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
    for name in ("temperature", "top_p", "user", "safety_identifier", "prompt_cache_key"):
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    if req.top_logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = req.top_logprobs
    elif "message.output_text.logprobs" in (req.include or ()):
        body["logprobs"] = True
    return body


_PROGRAMMATIC = "programmatic tool calling does not exist on Azure Chat Completions"
_CACHE_BREAKPOINT = "explicit prompt cache breakpoints do not exist on Azure Chat Completions"


def _refuse_if_set(param: str, value: Any, reason: str) -> None:
    if value not in (None, False):
        raise UnsupportedField(param, reason)


def _refuse_programmatic(param: str, item: FunctionCallItem | FunctionCallOutputItem) -> None:
    if item.caller is not None and item.caller.type != "direct":
        raise UnsupportedField(f"{param}.caller", _PROGRAMMATIC)
    _refuse_if_set(f"{param}.namespace", item.namespace, _PROGRAMMATIC)


def _refuse_unsupported(req: ResponsesRequest) -> None:
    for name, reason in _REFUSED_FIELDS.items():
        _refuse_if_set(name, getattr(req, name), reason)
    if req.truncation == "auto":
        raise UnsupportedField("truncation", "Azure Chat Completions does not truncate conversations; use 'disabled'")
    if req.service_tier not in NO_OP_SERVICE_TIERS:
        raise UnsupportedField("service_tier", "only 'auto' and 'default' are available through Azure Chat Completions")
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


def _messages(req: ResponsesRequest) -> list[dict[str, Any]]:
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
        if isinstance(item, MessageItem):
            messages.append(_message(item, index))
        elif isinstance(item, FunctionCallItem):
            _refuse_programmatic(f"input[{index}]", item)
            _refuse_if_set(f"input[{index}].async", item.async_, _PROGRAMMATIC)
            _attach_tool_call(messages, item)
        elif isinstance(item, FunctionCallOutputItem):
            _refuse_programmatic(f"input[{index}]", item)
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": _tool_output(item, index)})
        elif isinstance(item, ReasoningItem):
            continue
        elif isinstance(item, UnsupportedItem):
            raise UnsupportedField(
                f"input[{index}]", f"input items of type {item.type!r} have no Azure Chat Completions equivalent"
            )
    if not messages:
        raise InvalidRequest("'input' must contain at least one message.", param="input")
    return messages


def _is_system(item: Any) -> bool:
    return isinstance(item, MessageItem) and item.role in ("system", "developer")


def _system_text(item: MessageItem, index: int) -> str:
    _refuse_if_set(f"input[{index}].phase", item.phase, "message phases do not exist on Azure Chat Completions")
    if isinstance(item.content, str):
        return item.content
    texts = []
    for j, part in enumerate(item.content):
        texts.append(_text(part, f"input[{index}].content[{j}]", item.role))
    return "\n\n".join(texts)


def _text(part: Any, param: str, role: str) -> str:
    if not isinstance(part, InputText):
        _refuse_part(part, param, role)
    _refuse_if_set(f"{param}.prompt_cache_breakpoint", part.prompt_cache_breakpoint, _CACHE_BREAKPOINT)
    return part.text


def _message(item: MessageItem, index: int) -> dict[str, Any]:
    _refuse_if_set(f"input[{index}].phase", item.phase, "message phases do not exist on Azure Chat Completions")
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
    _refuse_if_set(f"{param}.prompt_cache_breakpoint", part.prompt_cache_breakpoint, _CACHE_BREAKPOINT)
    return {"type": "image_url", "image_url": {"url": part.image_url, "detail": part.detail}}


def _refuse_part(part: Any, param: str, role: str) -> None:
    if isinstance(part, UnsupportedPart):
        raise UnsupportedField(param, f"content parts of type {part.type!r} have no Azure Chat Completions equivalent")
    if isinstance(part, InputImage):
        raise UnsupportedField(
            param, f"images are only accepted in user messages and tool outputs, not {role} messages"
        )
    raise InvalidRequest(f"Invalid '{param}': a {role} message cannot hold a {part.type!r} part.", param=param)


def _attach_tool_call(messages: list[dict[str, Any]], item: FunctionCallItem) -> None:
    call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        if last["content"] == "":
            last["content"] = None  # an empty text turn before tool calls is just the tool calls
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_output(item: FunctionCallOutputItem, index: int) -> str | list[dict[str, Any]]:
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


def _add_tools(body: dict[str, Any], req: ResponsesRequest) -> set[str]:
    names: set[str] = set()
    tools = []
    for i, tool in enumerate(req.tools or ()):
        if isinstance(tool, UnsupportedTool):
            raise UnsupportedField(
                f"tools[{i}]",
                f"hosted tools ({tool.type!r}) do not exist on Azure Chat Completions; only function tools",
            )
        assert isinstance(tool, FunctionTool)
        if tool.allowed_callers is not None and "programmatic" in tool.allowed_callers:
            raise UnsupportedField(f"tools[{i}].allowed_callers", _PROGRAMMATIC)
        _refuse_if_set(
            f"tools[{i}].defer_loading",
            tool.defer_loading,
            "deferred tool loading needs tool search, which Azure Chat Completions lacks",
        )
        _refuse_if_set(f"tools[{i}].output_schema", tool.output_schema, _PROGRAMMATIC)
        function: dict[str, Any] = {"name": tool.name}
        for key in ("description", "parameters", "strict"):
            value = getattr(tool, key)
            if value is not None:
                function[key] = value
        tools.append({"type": "function", "function": function})
        names.add(tool.name)
    if tools:
        body["tools"] = tools
    return names


def _add_tool_choice(body: dict[str, Any], req: ResponsesRequest, tool_names: set[str]) -> None:
    choice = req.tool_choice
    if isinstance(choice, UnsupportedToolChoice):
        raise UnsupportedField(
            "tool_choice", f"tool_choice of type {choice.type!r} has no Azure Chat Completions equivalent"
        )
    if not tool_names:
        # Azure rejects tool_choice and parallel_tool_calls without tools; "none"/"auto" mean nothing then.
        if choice == "required" or isinstance(choice, ToolChoiceFunction):
            raise InvalidRequest("Invalid 'tool_choice': a tool is required but 'tools' is empty.", param="tool_choice")
        return
    if isinstance(choice, ToolChoiceFunction):
        if choice.name not in tool_names:
            raise InvalidRequest(
                f"Invalid 'tool_choice': no function named {choice.name!r} in 'tools'.", param="tool_choice.name"
            )
        body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice is not None:
        body["tool_choice"] = choice
    if req.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = req.parallel_tool_calls

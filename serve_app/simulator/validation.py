"""Azure-style validation of Chat Completions request bodies (pure).

Messages, params and codes follow what OpenAI and Azure answer for the same mistakes, because the code under
test must cope with exactly those errors. A null top-level value counts as absent, as it does upstream.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class InvalidRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


_PARAMETER_TYPES: dict[str, tuple[str, ...]] = {
    "messages": ("array",),
    "model": ("string",),
    "frequency_penalty": ("number",),
    "logit_bias": ("object",),
    "logprobs": ("boolean",),
    "top_logprobs": ("integer",),
    "max_tokens": ("integer",),
    "max_completion_tokens": ("integer",),
    "n": ("integer",),
    "presence_penalty": ("number",),
    "response_format": ("object",),
    "seed": ("integer",),
    "stop": ("string", "array"),
    "stream": ("boolean",),
    "stream_options": ("object",),
    "temperature": ("number",),
    "top_p": ("number",),
    "tools": ("array",),
    "tool_choice": ("string", "object"),
    "parallel_tool_calls": ("boolean",),
    "user": ("string",),
    "functions": ("array",),
    "function_call": ("string", "object"),
    "reasoning_effort": ("string",),
    "data_sources": ("array",),
    "store": ("boolean",),
    "metadata": ("object",),
    "modalities": ("array",),
    "prediction": ("object",),
    "audio": ("object",),
    "prompt_cache_key": ("string",),
    "safety_identifier": ("string",),
    "verbosity": ("string",),
    "user_security_context": ("object",),
    "service_tier": ("string",),
}
CHAT_COMPLETION_PARAMETERS = frozenset(_PARAMETER_TYPES)

REASONING_UNSUPPORTED_PARAMETERS = (
    "max_tokens",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
)

# The first dated data-plane version that knows each parameter; the v1 route knows them all. Older
# versions answer "Unrecognized request argument supplied".
PARAMETERS_SINCE = {
    "stream_options": "2024-09-01",
    "reasoning_effort": "2024-12-01",
    "verbosity": "2025-04-01",
    "prompt_cache_key": "2025-04-01",
}
# The developer role arrived with reasoning_effort.
REASONING_FEATURES_SINCE = PARAMETERS_SINCE["reasoning_effort"]


@dataclass(frozen=True)
class ModelRules:
    """How Azure treats parameters for one model, as it answers for it.

    `unsupported`: refused outright (`unsupported_parameter`); `default_only`: only the default, 1, is
    accepted (`unsupported_value`); `tools_with_effort`: function tools and a reasoning effort together."""

    model: str
    reasoning: bool
    unsupported: frozenset[str]
    default_only: frozenset[str] = frozenset()
    tools_with_effort: bool = True


_O_SERIES = ("o1", "o3", "o4")
_GPT5_MINOR = re.compile(r"gpt-5\.(\d+)")


def rules_for(model: str, reasoning: bool) -> ModelRules:
    """o-series refuse the sampling parameters and parallel_tool_calls (o4-mini takes temperature 1);
    gpt-5 takes temperature 1 only, and from gpt-5.4 on refuses function tools beside a reasoning effort."""
    if not reasoning:
        return ModelRules(model, False, frozenset({"reasoning_effort"}))
    sampling = frozenset(REASONING_UNSUPPORTED_PARAMETERS)
    if model.startswith(_O_SERIES):
        if model.startswith("o4-mini"):
            return ModelRules(
                model, True, sampling - {"temperature"} | {"parallel_tool_calls"}, frozenset({"temperature"})
            )
        return ModelRules(model, True, sampling | {"parallel_tool_calls"})
    minor = _GPT5_MINOR.match(model)
    return ModelRules(
        model,
        True,
        sampling - {"temperature"},
        frozenset({"temperature"}),
        tools_with_effort=not (minor is not None and int(minor.group(1)) >= 4),
    )


_RANGES: dict[str, tuple[float, float | None]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
    "top_logprobs": (0, 20),
    "n": (1, 128),
    "max_tokens": (1, None),
    "max_completion_tokens": (1, None),
}
_ENUMS: dict[str, tuple[str, ...]] = {
    "reasoning_effort": ("none", "minimal", "low", "medium", "high"),
    "verbosity": ("low", "medium", "high"),
    "service_tier": ("auto", "default", "priority", "flex"),
}
_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_ROLES_BEFORE_DEVELOPER = _ROLES[:-1]
_PART_TYPES: dict[str, tuple[str, ...]] = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
    "function": ("text",),
}
_PART_PAYLOAD_TYPES: dict[str, tuple[str, ...]] = {
    "text": ("string",),
    "refusal": ("string",),
    "image_url": ("object",),
    "input_audio": ("object",),
    "file": ("object",),
}
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_MAX_STOP_SEQUENCES = 4

_EXPECTED = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
}
_GOT = {**_EXPECTED, "number": "a decimal", "null": "null"}


def knows(api_version: str | None, since: str) -> bool:
    """Whether `api_version` (None meaning the v1 route) is `since` or later."""
    return api_version is None or api_version[:10] >= since


def validate_chat_request(body: Mapping[str, Any], *, rules: ModelRules, api_version: str | None) -> None:
    """Raise InvalidRequest for the first problem Azure would report about `body`."""
    modern = knows(api_version, REASONING_FEATURES_SINCE)
    for name in body:
        if name not in _PARAMETER_TYPES or not knows(api_version, PARAMETERS_SINCE.get(name, "")):
            # The v1 route names a code; the dated versions leave it null.
            code = "unrecognized_request_argument" if api_version is None else None
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", None, code)
    params = {name: value for name, value in body.items() if value is not None}
    if "messages" not in params:
        raise _missing("messages")
    for name, value in params.items():
        _require_type(value, _PARAMETER_TYPES[name], name)
    for name, (low, high) in _RANGES.items():
        if name in params:
            _check_range(params[name], low, high, name)
    for name, allowed in _ENUMS.items():
        if name in params:
            _check_enum(params[name], allowed, name)
    _check_deployment_rules(params, rules)
    _check_stream_options(params)
    _check_logprobs(params)
    _check_stop(params)
    _check_tools(params)
    _check_messages(params["messages"], _ROLES if modern else _ROLES_BEFORE_DEVELOPER)
    _check_response_format(params)


def check_context_length(body: Mapping[str, Any], prompt_tokens: int, context_tokens: int) -> None:
    """Azure's answer when the prompt, plus the completion asked for, does not fit the model's context."""
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    if prompt_tokens + completion <= context_tokens:
        return
    if completion:
        asked = (
            f"you requested {prompt_tokens + completion} tokens ({prompt_tokens} in the messages, "
            f"{completion} in the completion). Please reduce the length of the messages or completion."
        )
    else:
        asked = f"your messages resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
    raise InvalidRequest(
        f"This model's maximum context length is {context_tokens} tokens. However, {asked}",
        "messages",
        "context_length_exceeded",
    )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _require_type(value: Any, expected: tuple[str, ...], param: str) -> None:
    kind = _kind(value)
    if kind in expected or (kind == "integer" and "number" in expected):
        return
    wanted = " or ".join(_EXPECTED[name] for name in expected)
    if len(expected) > 1:
        wanted = f"one of {wanted}"
    raise InvalidRequest(
        f"Invalid type for '{param}': expected {wanted}, but got {_GOT[kind]} instead.", param, "invalid_type"
    )


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _field(parent: Mapping[str, Any], key: str, param: str, kinds: tuple[str, ...], *, required: bool = True) -> Any:
    value = parent.get(key)
    if value is None:
        if required:
            raise _missing(param)
        return None
    _require_type(value, kinds, param)
    return value


def _quoted_list(values: Sequence[str]) -> str:
    quoted = [f"'{value}'" for value in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def _check_enum(value: str, allowed: Sequence[str], param: str) -> None:
    if value not in allowed:
        raise InvalidRequest(
            f"Invalid value: '{value}'. Supported values are: {_quoted_list(allowed)}.", param, "invalid_value"
        )


def _check_range(value: float, low: float, high: float | None, param: str) -> None:
    noun = "integer" if _PARAMETER_TYPES[param] == ("integer",) else "decimal"
    if value < low:
        raise InvalidRequest(
            f"Invalid '{param}': {noun} below minimum value. Expected a value >= {low}, but got {value} instead.",
            param,
            f"{noun}_below_min_value",
        )
    if high is not None and value > high:
        raise InvalidRequest(
            f"Invalid '{param}': {noun} above maximum value. Expected a value <= {high}, but got {value} instead.",
            param,
            f"{noun}_above_max_value",
        )


def _empty_array(param: str, reported_param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        reported_param,
        "empty_array",
    )


def _check_deployment_rules(params: Mapping[str, Any], rules: ModelRules) -> None:
    for name in sorted(rules.unsupported & params.keys()):
        hint = " Use 'max_completion_tokens' instead." if name == "max_tokens" else ""
        raise InvalidRequest(
            f"Unsupported parameter: '{name}' is not supported with this model.{hint}", name, "unsupported_parameter"
        )
    for name in sorted(rules.default_only & params.keys()):
        if params[name] != 1:
            raise InvalidRequest(
                f"Unsupported value: '{name}' does not support {params[name]} with this model. "
                "Only the default (1) value is supported.",
                name,
                "unsupported_value",
            )
    effort = params.get("reasoning_effort")
    if not rules.tools_with_effort and params.get("tools") and effort not in (None, "none"):
        raise InvalidRequest(
            f"Function tools with reasoning_effort are not supported for {_family(rules.model)} in "
            "/v1/chat/completions. Please use /v1/responses instead.",
            "reasoning_effort",
        )


def _family(model: str) -> str:
    """`gpt-5.4-2026-03-05` -> `gpt-5.4`: Azure names the model, not its version, in this message."""
    return re.sub(r"-\d{4}-\d{2}-\d{2}$", "", model)


def _check_stream_options(params: Mapping[str, Any]) -> None:
    options = params.get("stream_options")
    if options is None:
        return
    if not params.get("stream"):
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"
        )
    _field(options, "include_usage", "stream_options.include_usage", ("boolean",), required=False)


def _check_logprobs(params: Mapping[str, Any]) -> None:
    if "top_logprobs" in params and not params.get("logprobs"):
        raise InvalidRequest(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
            "top_logprobs",
            "invalid_value",
        )


def _check_stop(params: Mapping[str, Any]) -> None:
    stop = params.get("stop")
    if not isinstance(stop, list):
        return
    if len(stop) > _MAX_STOP_SEQUENCES:
        raise InvalidRequest(
            f"Invalid 'stop': array too long. Expected an array with maximum length {_MAX_STOP_SEQUENCES}, "
            f"but got an array with length {len(stop)} instead.",
            "stop",
            "array_above_max_length",
        )
    for index, sequence in enumerate(stop):
        _require_type(sequence, ("string",), f"stop[{index}]")


def _check_tools(params: Mapping[str, Any]) -> None:
    tools = params.get("tools")
    if tools is not None:
        if not tools:
            raise _empty_array("tools", "tools")
        for index, tool in enumerate(tools):
            _check_tool(tool, f"tools[{index}]")
    for name in ("tool_choice", "parallel_tool_calls"):
        if name in params and tools is None:
            raise InvalidRequest(
                f"Invalid value for '{name}': '{name}' is only allowed when 'tools' are specified.", name
            )
    choice = params.get("tool_choice")
    if isinstance(choice, str):
        _check_enum(choice, ("none", "auto", "required"), "tool_choice")
    elif isinstance(choice, dict):
        _check_enum(_field(choice, "type", "tool_choice.type", ("string",)), ("function",), "tool_choice.type")
        function = _field(choice, "function", "tool_choice.function", ("object",))
        name = _field(function, "name", "tool_choice.function.name", ("string",))
        if name not in {tool["function"]["name"] for tool in tools or ()}:
            raise InvalidRequest(
                f"Invalid value for 'tool_choice': function '{name}' is not one of the supplied 'tools'.",
                "tool_choice",
                "invalid_value",
            )


def _check_tool(tool: Any, param: str) -> None:
    _require_type(tool, ("object",), param)
    _check_enum(_field(tool, "type", f"{param}.type", ("string",)), ("function",), f"{param}.type")
    function = _field(tool, "function", f"{param}.function", ("object",))
    name = _field(function, "name", f"{param}.function.name", ("string",))
    if not _FUNCTION_NAME.fullmatch(name):
        raise InvalidRequest(
            f"Invalid '{param}.function.name': string does not match pattern. "
            "Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.",
            f"{param}.function.name",
            "invalid_value",
        )
    _field(function, "description", f"{param}.function.description", ("string",), required=False)
    _field(function, "parameters", f"{param}.function.parameters", ("object",), required=False)
    _field(function, "strict", f"{param}.function.strict", ("boolean",), required=False)


def _check_response_format(params: Mapping[str, Any]) -> None:
    response_format = params.get("response_format")
    if response_format is None:
        return
    kind = _field(response_format, "type", "response_format.type", ("string",))
    _check_enum(kind, ("text", "json_object", "json_schema"), "response_format.type")
    if kind == "json_schema":
        spec = _field(response_format, "json_schema", "response_format.json_schema", ("object",))
        _field(spec, "name", "response_format.json_schema.name", ("string",))
        _field(spec, "schema", "response_format.json_schema.schema", ("object",), required=False)
        _field(spec, "strict", "response_format.json_schema.strict", ("boolean",), required=False)
    elif kind == "json_object" and not any("json" in _text_of(message).lower() for message in params["messages"]):
        raise InvalidRequest(
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
            "messages",
        )


def _text_of(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content or () if part["type"] == "text")


def _check_messages(messages: list[Any], roles: tuple[str, ...]) -> None:
    if not messages:
        raise _empty_array("messages", "messages")
    for index, message in enumerate(messages):
        _check_message(message, index, roles)
    _check_tool_call_pairing(messages)


def _check_message(message: Any, index: int, roles: tuple[str, ...]) -> None:
    param = f"messages[{index}]"
    _require_type(message, ("object",), param)
    role = _field(message, "role", f"{param}.role", ("string",))
    _check_enum(role, roles, f"{param}.role")
    content = message.get("content")
    if role == "assistant":
        calls = _field(message, "tool_calls", f"{param}.tool_calls", ("array",), required=False)
        if calls is not None:
            if not calls:
                raise _empty_array(f"{param}.tool_calls", f"messages.[{index}].tool_calls")
            for position, call in enumerate(calls):
                _check_tool_call(call, f"{param}.tool_calls[{position}]")
        if content is None and not calls and message.get("function_call") is None:
            raise InvalidRequest(
                "Invalid value for 'content': expected a string, got null.", f"messages.[{index}].content"
            )
    elif role == "tool":
        _field(message, "tool_call_id", f"{param}.tool_call_id", ("string",))
    elif role == "function":
        _field(message, "name", f"{param}.name", ("string",))
    if content is not None or role not in ("assistant", "function"):
        _check_content(content, f"{param}.content", _PART_TYPES[role])


def _check_content(content: Any, param: str, part_types: tuple[str, ...]) -> None:
    if content is None:
        raise _missing(param)
    _require_type(content, ("string", "array"), param)
    if isinstance(content, str):
        return
    if not content:
        raise _empty_array(param, param)
    for index, part in enumerate(content):
        part_param = f"{param}[{index}]"
        _require_type(part, ("object",), part_param)
        kind = _field(part, "type", f"{part_param}.type", ("string",))
        _check_enum(kind, part_types, f"{part_param}.type")
        payload = _field(part, kind, f"{part_param}.{kind}", _PART_PAYLOAD_TYPES[kind])
        if kind == "image_url":
            _field(payload, "url", f"{part_param}.image_url.url", ("string",))
            detail = _field(payload, "detail", f"{part_param}.image_url.detail", ("string",), required=False)
            if detail is not None:
                _check_enum(detail, ("auto", "low", "high"), f"{part_param}.image_url.detail")


def _check_tool_call(call: Any, param: str) -> None:
    _require_type(call, ("object",), param)
    _field(call, "id", f"{param}.id", ("string",))
    _check_enum(_field(call, "type", f"{param}.type", ("string",)), ("function",), f"{param}.type")
    function = _field(call, "function", f"{param}.function", ("object",))
    _field(function, "name", f"{param}.function.name", ("string",))
    _field(function, "arguments", f"{param}.function.arguments", ("string",))


def _check_tool_call_pairing(messages: list[Mapping[str, Any]]) -> None:
    # Tool results must answer the closest assistant tool calls, and every one of those calls needs a result
    # before the conversation moves on.
    unanswered: dict[str, None] = {}
    answerable: frozenset[str] = frozenset()
    opened_at = 0
    for index, message in enumerate(messages):
        if message["role"] == "tool":
            if message["tool_call_id"] not in answerable:
                raise InvalidRequest(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    "with 'tool_calls'.",
                    f"messages.[{index}].role",
                )
            unanswered.pop(message["tool_call_id"], None)
            continue
        _require_answered(unanswered, opened_at)
        ids = [call["id"] for call in message.get("tool_calls") or ()] if message["role"] == "assistant" else []
        unanswered, answerable, opened_at = dict.fromkeys(ids), frozenset(ids), index
    _require_answered(unanswered, opened_at)


def _require_answered(unanswered: Mapping[str, None], index: int) -> None:
    if unanswered:
        raise InvalidRequest(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            "'tool_call_id'. The following tool_call_ids did not have response messages: " + ", ".join(unanswered),
            f"messages.[{index}].role",
        )

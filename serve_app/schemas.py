"""Typed request bodies at the edge: what a client may send to `/v1/responses` and `/v1/chat/completions`.

Validation answers "is this a well-formed request?"; whether we can honour a well-formed request is
the translator's question. So item and tool types that exist in the OpenAI API but have no Azure
Chat Completions equivalent validate as `Unsupported*` here and are refused, by name, in translation.
Anything the OpenAI API does not define at all is rejected here (`extra="forbid"`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from .errors import InvalidRequest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Loose(BaseModel):
    """A known OpenAI type we cannot honour: its shape does not matter, only that it was sent."""

    model_config = ConfigDict(extra="allow")
    type: str


# --- content parts -------------------------------------------------------------------------------


class InputText(_Strict):
    type: Literal["input_text"]
    text: str
    prompt_cache_breakpoint: dict[str, Any] | None = None  # refused when set


class InputImage(_Strict):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] = "auto"
    prompt_cache_breakpoint: dict[str, Any] | None = None  # refused when set


class OutputText(_Strict):
    type: Literal["output_text"]
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] | None = None


class RefusalPart(_Strict):
    type: Literal["refusal"]
    refusal: str


class UnsupportedPart(_Loose):
    pass


_UNSUPPORTED_PARTS = frozenset({"input_file", "input_audio", "summary_text", "reasoning_text"})


def _tagger(prefix: str, unsupported: frozenset[str] = frozenset(), untyped: str | None = None) -> Callable[[Any], str]:
    """A discriminator: `prefix:<type>`, or `prefix:unsupported` for types we know but cannot honour.
    The prefix keeps the tag recognisable in error locations (see `_param_path`)."""

    def tag(value: Any) -> str:
        kind = value.get("type", untyped) if isinstance(value, dict) else getattr(value, "type", None)
        return f"{prefix}:unsupported" if isinstance(kind, str) and kind in unsupported else f"{prefix}:{kind}"

    return tag


ContentPart = Annotated[
    Annotated[InputText, Tag("part:input_text")]
    | Annotated[InputImage, Tag("part:input_image")]
    | Annotated[OutputText, Tag("part:output_text")]
    | Annotated[RefusalPart, Tag("part:refusal")]
    | Annotated[UnsupportedPart, Tag("part:unsupported")],
    Discriminator(_tagger("part", _UNSUPPORTED_PARTS)),
]


# --- tools ---------------------------------------------------------------------------------------


class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    # Programmatic tool calling and deferred loading; refused when they ask for more than a plain call.
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None
    defer_loading: bool | None = None
    output_schema: dict[str, Any] | None = None


class FormatGrammar(_Strict):
    type: Literal["grammar"]
    syntax: Literal["lark", "regex"]
    definition: str


class FormatFreeText(_Strict):
    type: Literal["text"]


class CustomTool(_Strict):
    """A freeform tool: the model writes its input as plain text, optionally to a grammar."""

    type: Literal["custom"]
    name: str = Field(min_length=1)
    description: str | None = None
    format: (
        Annotated[
            Annotated[FormatFreeText, Tag("format:text")] | Annotated[FormatGrammar, Tag("format:grammar")],
            Discriminator(_tagger("format")),
        ]
        | None
    ) = None
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None
    defer_loading: bool | None = None
    async_: bool | None = Field(default=None, alias="async")


class NamespaceTool(_Strict):
    """A group of function and custom tools the model calls as `namespace` + `name` (Codex's `multi_agent_v1`)."""

    type: Literal["namespace"]
    name: str = Field(min_length=1)
    description: str | None = None
    tools: list[
        Annotated[
            Annotated[FunctionTool, Tag("tool:function")] | Annotated[CustomTool, Tag("tool:custom")],
            Discriminator(_tagger("tool")),
        ]
    ]


class ToolSearchTool(_Strict):
    type: Literal["tool_search"]
    description: str | None = None
    execution: Literal["server", "client"] | None = None
    parameters: dict[str, Any] | None = None


class UnsupportedTool(_Loose):
    pass


_TYPED_TOOLS = frozenset({"function", "custom", "namespace", "tool_search"})


def _tool_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"tool:{kind}" if isinstance(kind, str) and kind in _TYPED_TOOLS else "tool:unsupported"


Tool = Annotated[
    Annotated[FunctionTool, Tag("tool:function")]
    | Annotated[CustomTool, Tag("tool:custom")]
    | Annotated[NamespaceTool, Tag("tool:namespace")]
    | Annotated[ToolSearchTool, Tag("tool:tool_search")]
    | Annotated[UnsupportedTool, Tag("tool:unsupported")],
    Discriminator(_tool_tag),
]


# --- input items ---------------------------------------------------------------------------------


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class Caller(_Strict):
    type: Literal["direct", "program"]
    caller_id: str | None = None


class MessageItem(_Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]
    id: str | None = None
    status: ItemStatus | None = None
    phase: Literal["commentary", "final_answer"] | None = None  # refused when set


class _ToolCall(_Strict):
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    id: str | None = None
    status: ItemStatus | None = None
    namespace: str | None = None
    # Programmatic tool calling; refused unless it says the model called directly.
    caller: Caller | None = None
    async_: bool | None = Field(default=None, alias="async")


class _ToolOutput(_Strict):
    call_id: str = Field(min_length=1)
    output: str | list[ContentPart]
    id: str | None = None
    status: ItemStatus | None = None
    caller: Caller | None = None


class FunctionCallItem(_ToolCall):
    type: Literal["function_call"]
    arguments: str


class FunctionCallOutputItem(_ToolOutput):
    type: Literal["function_call_output"]
    name: str | None = None  # informational: call_id already names the call
    namespace: str | None = None


class CustomToolCallItem(_ToolCall):
    type: Literal["custom_tool_call"]
    input: str


class CustomToolCallOutputItem(_ToolOutput):
    type: Literal["custom_tool_call_output"]


class _ToolSearchItem(_Strict):
    call_id: str | None = None  # optional in the API; a client-executed search needs it
    id: str | None = None
    execution: Literal["server", "client"] | None = None
    status: ItemStatus | None = None
    created_by: str | None = None


class ToolSearchCallItem(_ToolSearchItem):
    type: Literal["tool_search_call"]
    arguments: Any


class ToolSearchOutputItem(_ToolSearchItem):
    type: Literal["tool_search_output"]
    tools: list[Tool]


class SummaryText(_Strict):
    type: Literal["summary_text"]
    text: str


class ReasoningItem(_Strict):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[Any] | None = None
    encrypted_content: str | None = None
    status: str | None = None


class UnsupportedItem(_Loose):
    pass


_UNSUPPORTED_ITEMS = frozenset(
    {
        "item_reference",
        "additional_tools",
        "configuration_update",
        "compaction_trigger",
        "program",
        "program_output",
        "file_search_call",
        "web_search_call",
        "computer_call",
        "computer_call_output",
        "code_interpreter_call",
        "image_generation_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "compaction",
    }
)


InputItem = Annotated[
    Annotated[MessageItem, Tag("item:message")]
    | Annotated[FunctionCallItem, Tag("item:function_call")]
    | Annotated[FunctionCallOutputItem, Tag("item:function_call_output")]
    | Annotated[ReasoningItem, Tag("item:reasoning")]
    | Annotated[CustomToolCallItem, Tag("item:custom_tool_call")]
    | Annotated[CustomToolCallOutputItem, Tag("item:custom_tool_call_output")]
    | Annotated[ToolSearchCallItem, Tag("item:tool_search_call")]
    | Annotated[ToolSearchOutputItem, Tag("item:tool_search_output")]
    | Annotated[UnsupportedItem, Tag("item:unsupported")],
    # An "easy" input message ({"role", "content"}) carries no type.
    Discriminator(_tagger("item", _UNSUPPORTED_ITEMS, untyped="message")),
]


# --- tool choice and settings --------------------------------------------------------------------------


class ToolChoiceFunction(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1)


class ToolChoiceCustom(_Strict):
    type: Literal["custom"]
    name: str = Field(min_length=1)


class UnsupportedToolChoice(_Loose):
    pass


def _tool_choice_tag(value: Any) -> str:
    if isinstance(value, str):
        return "choice:mode"
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"choice:{kind}" if kind in ("function", "custom") else "choice:unsupported"


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("choice:mode")]
    | Annotated[ToolChoiceFunction, Tag("choice:function")]
    | Annotated[ToolChoiceCustom, Tag("choice:custom")]
    | Annotated[UnsupportedToolChoice, Tag("choice:unsupported")],
    Discriminator(_tool_choice_tag),
]


class FormatText(_Strict):
    type: Literal["text"]


class FormatJsonObject(_Strict):
    type: Literal["json_object"]


class FormatJsonSchema(_Strict):
    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    description: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


TextFormat = Annotated[
    Annotated[FormatText, Tag("format:text")]
    | Annotated[FormatJsonObject, Tag("format:json_object")]
    | Annotated[FormatJsonSchema, Tag("format:json_schema")],
    Discriminator(_tagger("format")),
]


class TextConfig(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(_Strict):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    # Accepted and echoed, never produced: OpenAI documents summaries as not guaranteed, and Azure
    # Chat Completions returns none. Codex sends "none" to mean "no summary".
    summary: Literal["auto", "concise", "detailed", "none"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(_Strict):
    include_obfuscation: bool | None = None


class ResponsesRequest(_Strict):
    """`POST /v1/responses` body (OpenAI Responses API, create)."""

    model: str | None = None  # ignored: the configured deployment always answers
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None  # "24h" refused
    # Built-in tools only: none run here, so any cap is honoured as given.
    max_tool_calls: int | None = Field(default=None, ge=1)
    # Codex sends its own request-scoped metadata to every provider; it changes no output and is
    # not part of the Response.
    client_metadata: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    include: list[str] | None = None
    service_tier: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    # Defined by the API but never honoured here; the translator refuses them when set.
    previous_response_id: str | None = None
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None
    prompt_cache_options: dict[str, Any] | None = None
    access_programs: dict[str, Any] | None = None
    background_options: dict[str, Any] | None = None
    context_management: list[Any] | None = None
    image: dict[str, Any] | None = None
    moderation: dict[str, Any] | None = None


class ResponseSettings:
    """What a Response echoes of its request (`translate.response.response_envelope`) and what a retry may
    need of it (`truncation`): all that is kept of a `ResponsesRequest` while Azure works. The validated
    request (its 35 fields' dict and the set of those given) was more than a kilobyte of every call in
    flight; this is a fifth of that."""

    __slots__ = (
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "parallel_tool_calls",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    )
    instructions: str | None
    max_output_tokens: int | None
    max_tool_calls: int | None
    metadata: dict[str, str] | None
    parallel_tool_calls: bool | None
    prompt_cache_key: str | None
    prompt_cache_retention: Literal["in_memory", "24h"] | None
    reasoning: ReasoningConfig | None
    safety_identifier: str | None
    service_tier: str | None
    store: bool | None
    temperature: float | None
    text: TextConfig | None
    tool_choice: ToolChoice | None
    tools: list[Tool] | None
    top_logprobs: int | None
    top_p: float | None
    truncation: Literal["auto", "disabled"] | None
    user: str | None

    def __init__(self, req: ResponsesRequest) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(req, name))


class ChatRequest(BaseModel):
    """`POST /v1/chat/completions` body: only what this server acts on is typed; the rest is Azure's to judge."""

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] = Field(min_length=1)
    model: str | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    n: int | None = Field(default=None, ge=1)


def parse(model: type[BaseModel], data: Any) -> Any:
    """Validate a decoded JSON body, turning its problem into a 400 that names the field."""
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        # With unions (`str | list[...]`) pydantic reports every branch; the deepest error is the one
        # about what the client actually sent.
        first = max(exc.errors(include_url=False, include_input=False), key=lambda e: len(e["loc"]))
        param = _param_path(first["loc"])
        code = "invalid_value" if param else None
        if first["type"] == "extra_forbidden":
            message, code = f"Unknown parameter: '{param}'.", "unknown_parameter"  # OpenAI's code
        elif first["type"] == "union_tag_invalid":
            kind = str(first.get("ctx", {}).get("tag", "")).partition(":")[2]
            param = f"{param}.type"
            message = f"Invalid value for '{param}': unknown type {kind!r}."
        else:
            message = f"Invalid '{param}': {first['msg']}."
        raise InvalidRequest(message, param=param, code=code) from None


def _param_path(loc: tuple[Any, ...]) -> str:
    # pydantic puts union branches ("item:message", "str", "list[...]") in the location; OpenAI's
    # params read like input[2].content[0].text.
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "str" or ":" in part or "[" in part:
            continue
        else:
            path += f".{part}" if path else part
    return path

"""Responses tools <-> the function tools Azure Chat Completions has, both ways. Pure.

Azure Chat Completions knows only function tools, so every tool a client sends is offered as one
function, and every call Azure returns is mapped back to the item type the client expects:

- a function tool is offered as it is and comes back as a `function_call`;
- a custom (freeform) tool is a function of one string argument, `input`, whose description
  carries the tool's description and grammar; it comes back as a `custom_tool_call` with that text;
- the function and custom tools in a `namespace` are offered as `<namespace>__<name>` (made unique
  against every other offered name) and come back with `name` and `namespace` as the client sent them;
- a client-executed `tool_search` is a function with the tool's parameters; it comes back as a
  `tool_search_call`, and the tools a `tool_search_output` loaded are offered from then on (tools
  sent with `defer_loading` wait for that; without a client tool_search they are refused);
- hosted tools are refused, unless the model server's config lists their type to leave out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import UnsupportedField
from ..schemas import (
    CustomTool,
    FunctionTool,
    NamespaceTool,
    ResponsesRequest,
    ToolSearchOutputItem,
    ToolSearchTool,
    UnsupportedTool,
)

Kind = Literal["function", "custom", "tool_search"]

CUSTOM_ARGUMENT = "input"
TOOL_SEARCH_DESCRIPTION = "Search for more tools to use; the matching tools become callable after this call."
TOOL_SEARCH_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"query": {"type": "string", "description": "What the tools you need should do"}},
    "required": ["query"],
}
_ITEM_PREFIX = {"function": "fc", "custom": "ctc", "tool_search": "ts"}
PROGRAMMATIC = "programmatic tool calling does not exist on Azure Chat Completions"
_NAME_LIMIT = 64  # Chat Completions function names: ^[a-zA-Z0-9_-]{1,64}$


@dataclass(frozen=True)
class Target:
    """What an upstream function is to the client."""

    kind: Kind
    name: str
    namespace: str | None = None


@dataclass
class ToolMap:
    """The functions offered to Azure for one request, and what each one is to the client."""

    upstream: list[dict[str, Any]] = field(default_factory=list)
    targets: dict[str, Target] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)  # hosted tool types left out by config
    client_search: bool = False  # a client-executed tool_search is offered: deferred tools wait for it
    _names: dict[Target, str] = field(default_factory=dict)

    @classmethod
    def of(cls, req: ResponsesRequest, leave_out: Iterable[str] = ()) -> ToolMap:
        tools = cls()
        leave_out = frozenset(leave_out)
        # Names the client gave its own top-level tools stay as they are; generated names avoid them.
        for tool in req.tools or ():
            if isinstance(tool, (FunctionTool, CustomTool)):
                tools._names[_target(tool)] = tool.name
            tools.client_search |= isinstance(tool, ToolSearchTool) and tool.execution == "client"
        for i, tool in enumerate(req.tools or ()):
            tools._add(tool, f"tools[{i}]", leave_out, loaded=False)
        for index, item in enumerate(req.input if isinstance(req.input, list) else ()):
            if isinstance(item, ToolSearchOutputItem):
                for j, tool in enumerate(item.tools):
                    tools._add(tool, f"input[{index}].tools[{j}]", leave_out, loaded=True)
        return tools

    def target(self, upstream_name: str) -> Target:
        # A name Azure made up (or a tool since removed) is a plain function call, as Azure named it.
        return self.targets.get(upstream_name, Target("function", upstream_name))

    def kind(self, upstream_name: str) -> Kind:
        return self.target(upstream_name).kind

    def id_prefix(self, upstream_name: str) -> str:
        return _ITEM_PREFIX[self.kind(upstream_name)]

    def upstream_name(self, kind: Kind, name: str, namespace: str | None = None) -> str:
        """The function name a replayed call of this tool goes back to Azure under."""
        target = Target(kind, name, namespace)
        return self._names.get(target) or self._unique(target)

    # --- building --------------------------------------------------------------------------------

    def _add(self, tool: Any, param: str, leave_out: frozenset[str], *, loaded: bool) -> None:
        """Offer `tool`; `loaded` when a tool_search_output brought it, so that it is no longer deferred."""
        if isinstance(tool, UnsupportedTool) or (isinstance(tool, ToolSearchTool) and tool.execution != "client"):
            if tool.type in leave_out:
                self.left_out.append(tool.type)
                return
            raise UnsupportedField(
                param,
                f"hosted tools ({tool.type!r}) do not exist on Azure Chat Completions; only function, custom, "
                "namespace and client-executed tool_search tools",
            )
        if isinstance(tool, NamespaceTool):
            for j, inner in enumerate(tool.tools):
                function = self._offer(inner, f"{param}.tools[{j}]", tool.name, loaded)
                if function is not None and tool.description:
                    # The namespace's description is the model's only context for the group.
                    own = function.get("description")
                    function["description"] = f"{tool.name}: {tool.description}" + (f"\n\n{own}" if own else "")
        elif isinstance(tool, ToolSearchTool):
            target = Target("tool_search", "tool_search")
            function = self._put(target, TOOL_SEARCH_DESCRIPTION if tool.description is None else tool.description)
            function["parameters"] = tool.parameters or TOOL_SEARCH_PARAMETERS
        else:
            self._offer(tool, param, None, loaded)

    def _offer(
        self, tool: FunctionTool | CustomTool, param: str, namespace: str | None, loaded: bool
    ) -> dict[str, Any] | None:
        """The function offered for `tool`, or None while it is deferred."""
        if tool.allowed_callers is not None and "programmatic" in tool.allowed_callers:
            raise UnsupportedField(f"{param}.allowed_callers", PROGRAMMATIC)
        if tool.defer_loading and not loaded:
            if self.client_search:
                return None  # the model finds it through tool_search; a tool_search_output then offers it
            raise UnsupportedField(
                f"{param}.defer_loading", "deferred tools are found by tool search: add a client-executed tool_search"
            )
        if isinstance(tool, FunctionTool):
            refuse_if_set(f"{param}.output_schema", tool.output_schema, PROGRAMMATIC)
            function = self._put(_target(tool, namespace), tool.description)
            for key in ("parameters", "strict"):
                value = getattr(tool, key)
                if value is not None:
                    function[key] = value
        else:
            refuse_if_set(f"{param}.async", tool.async_, "asynchronous tool calls do not exist on Azure")
            function = self._put(_target(tool, namespace), _custom_description(tool))
            # Strict, so that Azure always sends the one string argument the item's `input` comes from.
            function["parameters"] = {
                "type": "object",
                "properties": {CUSTOM_ARGUMENT: {"type": "string", "description": "The tool's input, as raw text"}},
                "required": [CUSTOM_ARGUMENT],
                "additionalProperties": False,
            }
            function["strict"] = True
        return function

    def _put(self, target: Target, description: str | None) -> dict[str, Any]:
        name = self.upstream_name(target.kind, target.name, target.namespace)
        if name in self.targets:  # the same tool offered twice (again by a later tool_search_output)
            self.upstream = [t for t in self.upstream if t["function"]["name"] != name]
        self.targets[name] = target
        function: dict[str, Any] = {"name": name}
        if description is not None:
            function["description"] = description
        self.upstream.append({"type": "function", "function": function})
        return function

    def _unique(self, target: Target) -> str:
        base = target.name if target.namespace is None else f"{target.namespace}__{target.name}"
        base = re.sub(r"[^A-Za-z0-9_-]", "_", base)[:_NAME_LIMIT]
        taken = set(self._names.values())
        name, n = base, 1
        while name in taken:
            n += 1
            suffix = f"_{n}"
            name = base[: _NAME_LIMIT - len(suffix)] + suffix
        self._names[target] = name
        return name


def _target(tool: FunctionTool | CustomTool, namespace: str | None = None) -> Target:
    return Target("function" if isinstance(tool, FunctionTool) else "custom", tool.name, namespace)


def _custom_description(tool: CustomTool) -> str:
    lines = [tool.description] if tool.description else []
    lines.append(
        f"Freeform tool: put the raw text for {tool.name} in the `{CUSTOM_ARGUMENT}` string argument, not JSON."
    )
    if tool.format is not None and tool.format.type == "grammar":
        lines.append(f"The text must match this {tool.format.syntax} grammar:\n{tool.format.definition}")
    return "\n\n".join(lines)


def refuse_if_set(param: str, value: Any, reason: str) -> None:
    if value not in (None, False):
        raise UnsupportedField(param, reason)


def custom_input(arguments: str) -> str:
    """A custom tool call's text from the function arguments Azure sent; unparsable arguments are the text."""
    try:
        decoded = json.loads(arguments)
    except ValueError:
        return arguments
    value = decoded.get(CUSTOM_ARGUMENT) if isinstance(decoded, dict) else None
    return value if isinstance(value, str) else arguments


_JSON_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class CustomInputDecoder:
    """A custom call's text, decoded from its function arguments (`{"input": "<text>"}`) as they arrive.

    Strict mode makes Azure send exactly that shape, so the text can stream as it comes. Arguments of
    any other shape decode to nothing here; the call's whole input then comes when it closes."""

    _PREFIX = '{"' + CUSTOM_ARGUMENT + '":"'

    def __init__(self) -> None:
        self._raw = ""
        self._at: int | None = None  # where the string's next undecoded character is
        self._stopped = False

    def feed(self, piece: str) -> str:
        self._raw += piece
        if self._stopped:
            return ""
        if self._at is None:
            opening = re.match(r'\s*\{\s*"' + CUSTOM_ARGUMENT + r'"\s*:\s*"', self._raw)
            if opening is None:
                self._stopped = not self._PREFIX.startswith(re.sub(r"\s", "", self._raw))
                return ""
            self._at = opening.end()
        try:
            return self._decode()
        except ValueError:  # a malformed \u escape
            self._stopped = True
            return ""

    def _decode(self) -> str:
        raw, at, out = self._raw, self._at or 0, []
        while at < len(raw):
            char = raw[at]
            if char == '"':
                self._stopped = True
                break
            if char != "\\":
                out.append(char)
                at += 1
                continue
            if at + 1 >= len(raw):
                break  # the escape's other half has not arrived
            kind = raw[at + 1]
            if kind != "u":
                out.append(_JSON_ESCAPES.get(kind, kind))
                at += 2
                continue
            if at + 6 > len(raw):
                break
            code = int(raw[at + 2 : at + 6], 16)
            if 0xD800 <= code < 0xDC00:  # a surrogate pair: wait for its low half
                if at + 12 > len(raw):
                    break
                code = 0x10000 + ((code - 0xD800) << 10) + (int(raw[at + 8 : at + 12], 16) - 0xDC00)
                at += 6
            out.append(chr(code))
            at += 6
        self._at = at
        return "".join(out)


def custom_arguments(text: str) -> str:
    return json.dumps({CUSTOM_ARGUMENT: text}, ensure_ascii=False)


def search_arguments(arguments: str) -> Any:
    """A tool_search_call's `arguments` object; arguments that are not JSON stay the text Azure sent."""
    try:
        return json.loads(arguments) if arguments else {}
    except ValueError:
        return arguments

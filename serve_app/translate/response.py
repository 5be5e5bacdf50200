"""Azure Chat Completion -> Responses API `Response` object. Pure: no I/O, no Ray.

The streaming translator builds its Responses from the same pieces (`response_envelope`,
`finish_status`, `message_item`, `call_item`, `usage`), so that a stream accumulates
to exactly the object this module returns for the same upstream answer.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import UpstreamError
from ..schemas import ResponseSettings, ResponsesRequest, ToolChoiceCustom, ToolChoiceFunction, UnsupportedTool
from .tools import ToolMap, custom_input, search_arguments

# Chat `finish_reason` -> (Response status, incomplete_details.reason).
_FINISH = {
    "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
}


def new_id(prefix: str) -> str:
    # 32 random hex digits, the shape uuid4().hex gave, without building a UUID object on every request.
    return f"{prefix}_{os.urandom(16).hex()}"


def finish_status(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    status, reason = _FINISH.get(finish_reason or "", ("completed", None))
    return status, ({"reason": reason} if reason else None)


def response_envelope(
    req: ResponsesRequest | ResponseSettings, *, model: str, response_id: str, created_at: int
) -> dict[str, Any]:
    """A Response with no output yet: the request's settings echoed, status `in_progress`."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "model": model,
        "output": [],
        "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        "previous_response_id": None,
        "prompt_cache_key": req.prompt_cache_key,
        "prompt_cache_retention": req.prompt_cache_retention,
        "reasoning": _reasoning_echo(req),
        "safety_identifier": req.safety_identifier,
        "service_tier": req.service_tier or "auto",
        "store": bool(req.store),  # nothing is stored, whatever was asked
        # Unset sampling settings echo the values Azure, like OpenAI, uses when they are not sent.
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "text": _text_echo(req),
        "tool_choice": _tool_choice_echo(req),
        # Hosted tools reach here only when the config leaves them out; they are not the Response's.
        "tools": [
            tool.model_dump(by_alias=True, exclude_unset=True)
            for tool in req.tools or ()
            if not isinstance(tool, UnsupportedTool)
        ],
        "top_logprobs": req.top_logprobs or 0,
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "truncation": req.truncation or "disabled",
        "usage": None,
        "user": req.user,
        "metadata": dict(req.metadata or {}),
    }


def _reasoning_echo(req: ResponsesRequest | ResponseSettings) -> dict[str, Any]:
    reasoning = req.reasoning
    if reasoning is None:
        return {"effort": None, "summary": None}
    echo: dict[str, Any] = {
        "effort": reasoning.effort,
        # "none" asks for no summary, which a Response says as null (the SDK's types know no "none").
        "summary": None if reasoning.summary == "none" else reasoning.summary,
    }
    if reasoning.generate_summary is not None:
        echo["generate_summary"] = reasoning.generate_summary
    return echo


def _text_echo(req: ResponsesRequest | ResponseSettings) -> dict[str, Any]:
    text = req.text
    fmt = text.format.model_dump(by_alias=True, exclude_none=True) if text and text.format else {"type": "text"}
    return {"format": fmt, "verbosity": text.verbosity if text and text.verbosity else "medium"}


def _tool_choice_echo(req: ResponsesRequest | ResponseSettings) -> Any:
    choice = req.tool_choice
    if isinstance(choice, (ToolChoiceFunction, ToolChoiceCustom)):
        return choice.model_dump()
    return choice or "auto"


def to_response(
    completion: dict[str, Any],
    req: ResponsesRequest | ResponseSettings,
    *,
    model: str,
    response_id: str,
    created_at: int,
    completed_at: int,
    tools: ToolMap | None = None,
) -> dict[str, Any]:
    """The Response for Azure's `completion` of `req` (or of the request whose settings these are: then with
    the request's `tools`, which map Azure's calls back)."""
    tools = tools or tools_of(req)
    choices = completion.get("choices") or []
    if not choices:
        raise UpstreamError(
            "Azure returned a completion without choices.", status=502, code="upstream_invalid_response"
        )
    choice = choices[0]
    message = choice.get("message") or {}
    status, incomplete = finish_status(choice.get("finish_reason"))
    output: list[dict[str, Any]] = []
    if message.get("content") or message.get("refusal"):
        output.append(message_item(new_id("msg"), message.get("content"), message.get("refusal"), _logprobs(choice)))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        name = function.get("name", "")
        output.append(
            call_item(tools, new_id(tools.id_prefix(name)), call.get("id", ""), name, function.get("arguments", ""))
        )
    mark_incomplete(output, status)
    response = response_envelope(req, model=model, response_id=response_id, created_at=created_at)
    finish(response, status, incomplete, output, usage(completion.get("usage")), completed_at)
    report_service_tier(response, completion.get("service_tier"))
    return response


def tools_of(req: ResponsesRequest | ResponseSettings) -> ToolMap:
    if not isinstance(req, ResponsesRequest):
        raise TypeError("a request kept as its settings needs its ToolMap given")
    return ToolMap.of(req)


def report_service_tier(response: dict[str, Any], used: Any) -> None:
    """The tier Azure says it used, in place of the one asked for (`auto` resolves to a real tier)."""
    if isinstance(used, str) and used:
        response["service_tier"] = used


def finish(
    response: dict[str, Any],
    status: str,
    incomplete: dict[str, str] | None,
    output: list[dict[str, Any]],
    response_usage: dict[str, Any] | None,
    completed_at: int,
) -> None:
    """Give an envelope its final state (shared with the stream's terminal event)."""
    response.update(
        status=status,
        incomplete_details=incomplete,
        output=output,
        usage=response_usage,
        completed_at=completed_at if status == "completed" else None,
    )


def message_item(item_id: str, text: str | None, refusal: str | None, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "role": "assistant", "status": "completed", "content": content}


def call_item(tools: ToolMap, item_id: str, call_id: str, upstream_name: str, arguments: str) -> dict[str, Any]:
    """The output item for a call of the upstream function `upstream_name`, as the client's tool type has it."""
    target = tools.target(upstream_name)
    item: dict[str, Any] = {"id": item_id}
    if target.kind == "function":
        item.update(type="function_call", call_id=call_id, name=target.name, arguments=arguments)
    elif target.kind == "custom":
        item.update(type="custom_tool_call", call_id=call_id, name=target.name, input=custom_input(arguments))
    else:
        item.update(type="tool_search_call", call_id=call_id, execution="client", arguments=search_arguments(arguments))
    if target.namespace is not None:
        item["namespace"] = target.namespace
    item["status"] = "completed"
    return item


def mark_incomplete(output: list[dict[str, Any]], status: str) -> None:
    # Chat says only that generation stopped early: the item being written when it stopped (the
    # last one) is the incomplete one.
    if status == "incomplete" and output:
        output[-1]["status"] = "incomplete"


def _logprobs(choice: dict[str, Any]) -> list[dict[str, Any]]:
    return logprob_entries((choice.get("logprobs") or {}).get("content"))


def logprob_entries(content: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [
        {
            "token": entry.get("token", ""),
            "logprob": entry.get("logprob", 0.0),
            "bytes": entry.get("bytes") or [],
            "top_logprobs": [
                {"token": top.get("token", ""), "logprob": top.get("logprob", 0.0), "bytes": top.get("bytes") or []}
                for top in entry.get("top_logprobs") or ()
            ],
        }
        for entry in content or ()
    ]


def usage(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not chat_usage:
        return None
    input_tokens = chat_usage.get("prompt_tokens") or 0
    output_tokens = chat_usage.get("completion_tokens") or 0
    prompt_details = chat_usage.get("prompt_tokens_details") or {}
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": prompt_details.get("cached_tokens") or 0,
            "cache_write_tokens": prompt_details.get("cache_write_tokens") or 0,
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        },
        "total_tokens": chat_usage.get("total_tokens") or input_tokens + output_tokens,
    }

"""Chat chunks -> Responses events: the grammar of the stream, and its result equal to the non-streaming Response."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from support.bad_input import bodies
from support.stream_checks import check_event_sequence, without_volatile

from serve_app.errors import OpenAIError, UpstreamError
from serve_app.schemas import ResponsesRequest, parse
from serve_app.translate import to_chat_request, to_response
from serve_app.translate.chat import stream_chunk
from serve_app.translate.stream import ResponseEventStream, read_chunk
from serve_app.translate.tools import CustomInputDecoder, ToolMap

REQUEST = parse(ResponsesRequest, {"input": "hi", "stream": True})
FILTERS = {"hate": {"filtered": False, "severity": "safe"}}
USAGE = {
    "prompt_tokens": 5,
    "completion_tokens": 7,
    "total_tokens": 12,
    "completion_tokens_details": {"reasoning_tokens": 2},
}


def azure_chunks(
    content: str | None = None,
    refusal: str | None = None,
    calls: list[tuple[str, str, str]] = (),
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = USAGE,
    interleave: bool = False,
) -> list[dict[str, Any]]:
    """An answer as Azure streams it: the prompt-filter frame, word deltas, annotation frames,
    tool-call arguments in pieces, the finish chunk, then usage (not after a content filter)."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-11-20"}
    chunks: list[dict[str, Any]] = [
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTERS}],
        }
    ]

    def delta(d: dict[str, Any]) -> None:
        chunks.append(
            {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None, "content_filter_results": FILTERS}]}
        )

    delta({"role": "assistant", "content": ""})
    for word in (content or "").split(" ") if content else ():
        delta({"content": word + " "})
        chunks.append({**base, "choices": [{"index": 0, "content_filter_results": FILTERS}]})  # no delta
    for word in (refusal or "").split(" ") if refusal else ():
        delta({"refusal": word + " "})
    pieces = []
    for i, (call_id, name, arguments) in enumerate(calls):
        half = len(arguments) // 2
        pieces.append(
            [
                {"index": i, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}},
                {"index": i, "function": {"arguments": arguments[:half]}},
                {"index": i, "function": {"arguments": arguments[half:]}},
            ]
        )
    order = (
        [p for group in zip(*pieces, strict=False) for p in group]
        if interleave
        else [p for group in pieces for p in group]
    )
    for piece in order:
        delta({"tool_calls": [piece]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]})
    if usage and finish_reason != "content_filter":
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks


def completion_for(
    content: str | None = None,
    refusal: str | None = None,
    calls: list[tuple[str, str, str]] = (),
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = USAGE,
    interleave: bool = False,
) -> dict[str, Any]:
    def words(text: str | None) -> str | None:
        return "".join(w + " " for w in text.split(" ")) if text else None

    message: dict[str, Any] = {"role": "assistant", "content": words(content), "refusal": words(refusal)}
    if calls:
        message["tool_calls"] = [
            {"id": c, "type": "function", "function": {"name": n, "arguments": a}} for c, n, a in calls
        ]
    return {
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage if finish_reason != "content_filter" else None,
    }


def run(chunks: list[dict[str, Any]], req: ResponsesRequest = REQUEST) -> list[dict[str, Any]]:
    machine = ResponseEventStream(req, model="dep", response_id="resp_s", created_at=1)
    events = machine.start()
    for chunk in chunks:
        events += machine.feed(chunk)
    return events + machine.finish(2)


CASES = {
    "text": dict(content="Hello there world"),
    "refusal": dict(refusal="I cannot help"),
    "one tool call": dict(calls=[("call_1", "lookup", '{"q": "x"}')], finish_reason="tool_calls"),
    "several tool calls interleaved by index": dict(
        calls=[("call_1", "a", '{"x": 1}'), ("call_2", "b", '{"y": 2}'), ("call_3", "c", "{}")],
        finish_reason="tool_calls",
        interleave=True,
    ),
    "text then tool calls": dict(
        content="Let me check", calls=[("call_1", "lookup", '{"q": "x"}')], finish_reason="tool_calls"
    ),
    "tool call forced by name finishes with stop": dict(calls=[("call_1", "lookup", "{}")], finish_reason="stop"),
    "json mode": dict(content='{"answer": 42}'),
    "truncated by length": dict(content="cut off mid", finish_reason="length"),
    "content filter": dict(content="partial", finish_reason="content_filter"),
}


@pytest.mark.parametrize("answer", CASES.values(), ids=CASES.keys())
def test_the_stream_is_well_formed_and_ends_in_the_non_streaming_response(answer: dict[str, Any]) -> None:
    events = run(azure_chunks(**answer))
    final = check_event_sequence(events)
    expected = to_response(
        completion_for(**answer), REQUEST, model="dep", response_id="resp_x", created_at=9, completed_at=9
    )
    assert without_volatile(final) == without_volatile(expected)


@pytest.mark.parametrize(
    "finish_reason, terminal",
    [
        ("stop", "response.completed"),
        ("tool_calls", "response.completed"),
        ("length", "response.incomplete"),
        ("content_filter", "response.incomplete"),
    ],
)
def test_the_terminal_event_follows_the_finish_reason(finish_reason: str, terminal: str) -> None:
    assert run(azure_chunks(content="a b", finish_reason=finish_reason))[-1]["type"] == terminal


def test_text_events_in_order() -> None:
    kinds = [e["type"] for e in run(azure_chunks(content="a b"))]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]


def test_each_item_closes_before_the_next_opens_even_when_azure_interleaves_calls() -> None:
    calls = [("call_1", "a", '{"x": 1}'), ("call_2", "b", '{"y": 2}')]
    events = run(azure_chunks(content="Two calls", calls=calls, finish_reason="tool_calls", interleave=True))
    kinds = [(e["type"], e.get("output_index")) for e in events[2:-1]]
    first_done = [kinds.index(("response.output_item.done", i)) for i in range(3)]
    first_added = [kinds.index(("response.output_item.added", i)) for i in range(3)]
    assert first_done[0] < first_added[1] and first_done[1] < first_added[2]
    arguments = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert [(e["output_index"], e["delta"]) for e in arguments] == [
        (1, '{"x"'),
        (1, ": 1}"),
        (2, '{"y"'),
        (2, ": 2}"),
    ]


def test_the_first_item_streams_as_azure_sends_it() -> None:
    machine = ResponseEventStream(REQUEST, model="dep", response_id="resp_s", created_at=1)
    machine.start()
    chunks = azure_chunks(content="a b")
    fed = [[e["type"] for e in machine.feed(chunk)] for chunk in chunks[:4]]
    assert fed[2] == ["response.output_item.added", "response.content_part.added", "response.output_text.delta"]
    assert fed[3] == []  # the annotation frame carries no delta


def test_a_tool_only_answer_starts_its_output_at_index_0() -> None:
    events = run(azure_chunks(calls=[("call_1", "f", "{}")], finish_reason="tool_calls"))
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [(0, "function_call")]


def test_call_id_and_name_are_set_once_and_arguments_arrive_as_deltas() -> None:
    events = run(azure_chunks(calls=[("call_1", "lookup", '{"q": "abc"}')], finish_reason="tool_calls"))
    added = next(e for e in events if e["type"] == "response.output_item.added")["item"]
    assert (added["call_id"], added["name"], added["arguments"], added["status"]) == (
        "call_1",
        "lookup",
        "",
        "in_progress",
    )
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert deltas == done["arguments"] == '{"q": "abc"}' and done["name"] == "lookup"


def test_usage_from_the_final_chunk_is_in_the_terminal_response() -> None:
    final = run(azure_chunks(content="x"))[-1]["response"]
    assert final["usage"]["output_tokens"] == 7 and final["usage"]["output_tokens_details"]["reasoning_tokens"] == 2


def test_logprobs_travel_on_deltas_and_into_the_final_part() -> None:
    chunk = {
        "choices": [
            {
                "index": 0,
                "delta": {"content": "Hi"},
                "logprobs": {"content": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}]},
            }
        ]
    }
    events = run([chunk, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}])
    delta = next(e for e in events if e["type"] == "response.output_text.delta")
    assert delta["logprobs"][0]["token"] == "Hi"
    assert events[-1]["response"]["output"][0]["content"][0]["logprobs"] == delta["logprobs"]


def test_an_upstream_failure_mid_stream_ends_in_response_failed() -> None:
    machine = ResponseEventStream(REQUEST, model="dep", response_id="resp_s", created_at=1)
    events = machine.start()
    events += machine.feed(azure_chunks(content="partial answer")[2])
    events += machine.fail(UpstreamError("connection reset", status=502, code="upstream_unavailable"))
    final = events[-1]
    assert final["type"] == "response.failed" and final["sequence_number"] == len(events) - 1
    assert final["response"]["status"] == "failed"
    assert (
        final["response"]["error"]["code"] == "server_error"
        and "connection reset" in final["response"]["error"]["message"]
    )
    assert final["response"]["output"][0]["status"] == "incomplete"


def test_events_are_json_and_valid_openai_sdk_events() -> None:
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    adapter = TypeAdapter(ResponseStreamEvent)
    for event in run(azure_chunks(content="a", refusal="b", calls=[("c", "f", "{}")], finish_reason="length")):
        adapter.validate_python(json.loads(json.dumps(event)))


# --- chat completions stream normalisation --------------------------------------------------------


def test_chat_stream_drops_azure_only_frames_and_names_the_deployment() -> None:
    chunks = azure_chunks(content="a b")
    forwarded = [c for c in (stream_chunk(chunk, "dep", include_usage=False) for chunk in chunks) if c is not None]
    assert all(c["choices"] and all("delta" in ch for ch in c["choices"]) for c in forwarded)
    assert {c["model"] for c in forwarded} == {"dep"} and all(c["id"] for c in forwarded)
    assert not any("usage" in c for c in forwarded)


def test_chat_stream_forwards_usage_only_when_asked() -> None:
    usage_chunk = azure_chunks(content="a")[-1]
    assert stream_chunk(usage_chunk, "dep", include_usage=False) is None
    assert stream_chunk(usage_chunk, "dep", include_usage=True)["usage"] == USAGE


@pytest.mark.parametrize(
    "choices", [3, "abc", {"delta": {}}, ["text"]], ids=["number", "string", "object", "list of strings"]
)
def test_a_chat_chunk_whose_choices_are_not_a_list_of_objects_is_an_upstream_error(choices: Any) -> None:
    with pytest.raises(OpenAIError) as info:
        stream_chunk({"id": "c", "choices": choices}, "dep", include_usage=False)
    assert (info.value.status, info.value.code) == (502, "upstream_invalid_response")


def test_a_streamed_response_reports_the_service_tier_azure_used() -> None:
    chunks = [{**chunk, "service_tier": "flex"} for chunk in azure_chunks(content="a")]
    assert run(chunks)[-1]["response"]["service_tier"] == "flex"


# --- calls of custom, namespace and tool_search tools --------------------------------------------

TOOLS_REQUEST = parse(
    ResponsesRequest,
    {
        "input": "hi",
        "stream": True,
        "tools": [
            {"type": "custom", "name": "apply_patch"},
            {"type": "namespace", "name": "ns", "description": "d", "tools": [{"type": "function", "name": "f"}]},
            {"type": "tool_search", "execution": "client"},
        ],
    },
)
EVERY_KIND = dict(
    content="Editing",
    calls=[
        ("call_1", "apply_patch", '{"input": "*** Begin Patch"}'),
        ("call_2", "ns__f", '{"a": 1}'),
        ("call_3", "tool_search", '{"query": "q"}'),
    ],
    finish_reason="tool_calls",
)


def test_every_tool_kind_streams_well_formed_valid_sdk_events_ending_in_the_non_streaming_response() -> None:
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    events = run(azure_chunks(**EVERY_KIND), TOOLS_REQUEST)
    final = check_event_sequence(events)
    expected = to_response(
        completion_for(**EVERY_KIND), TOOLS_REQUEST, model="dep", response_id="r", created_at=9, completed_at=9
    )
    assert without_volatile(final) == without_volatile(expected)
    adapter = TypeAdapter(ResponseStreamEvent)
    for event in events:
        adapter.validate_python(json.loads(json.dumps(event)))


def test_a_custom_tool_call_streams_its_decoded_input() -> None:
    events = run(azure_chunks(**EVERY_KIND), TOOLS_REQUEST)
    custom = [e for e in events if e.get("output_index") == 1 and e["type"] != "response.output_item.added"]
    kinds = [e["type"] for e in custom]
    assert kinds[-2:] == ["response.custom_tool_call_input.done", "response.output_item.done"]
    assert set(kinds[:-2]) == {"response.custom_tool_call_input.delta"}
    assert "".join(e["delta"] for e in custom[:-2]) == custom[-2]["input"] == custom[-1]["item"]["input"]
    assert custom[-2]["input"] == "*** Begin Patch"
    added = next(e for e in events if e["type"] == "response.output_item.added" and e["output_index"] == 1)["item"]
    assert (added["type"], added["input"], added["status"]) == ("custom_tool_call", "", "in_progress")


def test_the_first_custom_call_streams_its_input_as_it_comes() -> None:
    text = 'line "one"\nline two \u00e9'
    arguments = json.dumps({"input": text})
    machine = ResponseEventStream(TOOLS_REQUEST, model="dep", response_id="resp_s", created_at=1)
    machine.start()
    live = []
    for i in range(0, len(arguments), 5):
        call = {"index": 0, "function": {"arguments": arguments[i : i + 5]}}
        if i == 0:
            call.update(id="call_1", type="function", function={"name": "apply_patch", "arguments": arguments[:5]})
        live += machine.feed({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    assert "".join(e["delta"] for e in live if e["type"] == "response.custom_tool_call_input.delta") == text
    rest = machine.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    assert [e["type"] for e in rest] == ["response.custom_tool_call_input.done", "response.output_item.done"]


def test_custom_arguments_not_of_the_strict_shape_come_whole_when_the_call_closes() -> None:
    answer = dict(calls=[("call_1", "apply_patch", "*** Begin Patch")], finish_reason="tool_calls")
    events = run(azure_chunks(**answer), TOOLS_REQUEST)
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert deltas == ["*** Begin Patch"]


@pytest.mark.parametrize("text", ["plain", 'quote " backslash \\ slash /', "tab\tnewline\n", "é 😀 \u0001", ""])
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_the_custom_input_decoder_decodes_any_split_of_the_arguments(text: str, ensure_ascii: bool) -> None:
    arguments = json.dumps({"input": text}, ensure_ascii=ensure_ascii)
    for size in (1, 2, 3, 7):
        decoder = CustomInputDecoder()
        assert "".join(decoder.feed(arguments[i : i + size]) for i in range(0, len(arguments), size)) == text


def test_only_function_calls_stream_json_arguments() -> None:
    events = run(azure_chunks(**EVERY_KIND), TOOLS_REQUEST)
    deltas = {e["output_index"] for e in events if e["type"] == "response.function_call_arguments.delta"}
    assert deltas == {2}
    search = [e for e in events if e.get("output_index") == 3]
    assert [e["type"] for e in search] == ["response.output_item.added", "response.output_item.done"]
    assert search[1]["item"]["arguments"] == {"query": "q"}


@settings(max_examples=300, deadline=None)
@given(body=bodies)
def test_any_request_that_translates_gives_sdk_valid_responses_and_streams_for_a_call_of_each_tool(body: Any) -> None:
    from openai.types.responses import Response, ResponseStreamEvent
    from pydantic import TypeAdapter

    try:
        req = parse(ResponsesRequest, body)
        tools = ToolMap.of(req, ("web_search",))
        to_chat_request(req, tools)
    except OpenAIError:
        return
    calls = [(f"call_{i}", tool["function"]["name"], "{}") for i, tool in enumerate(tools.upstream)]
    answer = dict(content="ok", calls=calls, finish_reason="tool_calls" if calls else "stop")
    plain = to_response(
        completion_for(**answer), req, model="d", response_id="r", created_at=1, completed_at=2, tools=tools
    )
    Response.model_validate(plain)
    machine = ResponseEventStream(req, model="d", response_id="r", created_at=1, tools=tools)
    events = machine.start()
    for chunk in azure_chunks(**answer):
        events += machine.feed(chunk)
    events += machine.finish(2)
    assert without_volatile(check_event_sequence(events)) == without_volatile(plain)
    adapter = TypeAdapter(ResponseStreamEvent)
    for event in events:
        adapter.validate_python(json.loads(json.dumps(event)))


def test_the_service_tier_azure_reports_in_its_chunks_is_the_one_in_the_terminal_response() -> None:
    chunks = [{**chunk, "service_tier": "default"} if chunk.get("id") else chunk for chunk in azure_chunks(content="a")]
    assert run(chunks)[-1]["response"]["service_tier"] == "default"
    assert run(azure_chunks(content="a"))[0]["response"]["service_tier"] == "auto"


LOGPROBS_CHUNK = {
    "choices": [
        {
            "index": 0,
            "delta": {"content": "Hi"},
            "logprobs": {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]},
            "finish_reason": None,
            "content_filter_results": FILTERS,
        }
    ],
    "service_tier": "priority",
}


@pytest.mark.parametrize(
    "chunks",
    [*(azure_chunks(**answer) for answer in CASES.values()), [LOGPROBS_CHUNK, *azure_chunks(content="a")]],
    ids=[*CASES.keys(), "logprobs and service tier"],
)
def test_building_only_what_the_translation_reads_of_a_chunk_changes_no_event(
    chunks: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def events(parse: Any) -> list[dict[str, Any]]:
        ids = iter(range(1000))
        monkeypatch.setattr("serve_app.translate.stream.new_id", lambda prefix: f"{prefix}_{next(ids)}")
        return run([parse(json.dumps(chunk).encode()) for chunk in chunks])

    assert events(read_chunk) == events(json.loads)

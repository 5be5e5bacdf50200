"""Azure's asynchronous content filter, as the simulator streams it, through both of our stream translations:
a block ends the chat stream as a filtered finish and a Responses stream as `response.incomplete`
(`content_filter`); annotation frames, late ones included, never crash a stream or reach a client."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from support.stream_checks import check_event_sequence

from serve_app.schemas import ResponsesRequest, parse
from serve_app.simulator.answers import generate
from serve_app.simulator.payloads import ANNOTATION_INTERVAL, ResponseMeta, stream_plan
from serve_app.simulator.triggers import CONTENT_FILTER_OUTPUT, parse_triggers, tokens_trigger
from serve_app.translate.chat import stream_chunk
from serve_app.translate.stream import ResponseEventStream

META = ResponseMeta(id="chatcmpl-1", created=1, model="gpt-4o-2024-11-20", system_fingerprint="fp_1")
LONG = tokens_trigger(3 * ANNOTATION_INTERVAL + 2)  # annotations before and after the stop chunk


def azure_stream(text: str) -> list[dict[str, Any]]:
    """Azure's chunks under the asynchronous filter, for an answer to `text`."""
    body = {"messages": [{"role": "user", "content": text}], "stream": True}
    answer = generate(body, reasoning=False, triggers=parse_triggers(text))
    plan = stream_plan(answer, META, include_usage=True, top_logprobs=None, async_filter=True)
    payloads = [frame.data.removeprefix(b"data: ").strip() for frame in plan.frames]
    return [json.loads(payload) for payload in payloads if payload != b"[DONE]"]


def chat(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in (stream_chunk(chunk, "dep", include_usage=True) for chunk in chunks) if c is not None]


def responses(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    machine = ResponseEventStream(parse(ResponsesRequest, {"input": "x"}), model="dep", response_id="r", created_at=1)
    events = machine.start()
    for chunk in chunks:
        events += machine.feed(chunk)
    return events + machine.finish(2)


def test_a_block_ends_the_chat_stream_with_a_content_filter_finish() -> None:
    forwarded = chat(azure_stream(f"{CONTENT_FILTER_OUTPUT} one two three four five six"))
    last = forwarded[-1]["choices"][0]
    assert last["finish_reason"] == "content_filter" and last["delta"] == {}
    assert last["content_filter_results"]["violence"]["filtered"] is True
    assert all(choice.get("delta") is not None for chunk in forwarded for choice in chunk["choices"])


def test_a_block_ends_the_responses_stream_incomplete_for_content_filter() -> None:
    events = responses(azure_stream(f"{CONTENT_FILTER_OUTPUT} one two three four five six"))
    response = check_event_sequence(events)
    assert events[-1]["type"] == "response.incomplete"
    assert response["incomplete_details"] == {"reason": "content_filter"}
    assert response["output"][0]["content"][0]["text"]  # what was shown before the block stays


@pytest.mark.parametrize("translate", [chat, responses], ids=["chat", "responses"])
def test_late_annotation_frames_neither_crash_nor_leak(translate: Any) -> None:
    chunks = azure_stream(LONG)
    stop = next(i for i, chunk in enumerate(chunks) if chunk["choices"] and chunk["choices"][0].get("finish_reason"))
    assert any(chunk["id"] == "" and chunk["choices"] for chunk in chunks[stop + 1 :])  # the stream under test
    out = translate(chunks)
    text = json.dumps(out)
    assert "content_filter_offsets" not in text and "prompt_annotations" not in text
    if translate is responses:
        assert check_event_sequence(out)["status"] == "completed"
    else:
        finishes = [choice["finish_reason"] for chunk in out for choice in chunk["choices"] if choice["finish_reason"]]
        assert finishes == ["stop"] and out[-1]["usage"]


def test_the_openai_sdk_reads_a_blocked_chat_stream_as_blocked() -> None:
    state = ChatCompletionStreamState()
    for chunk in chat(azure_stream(f"{CONTENT_FILTER_OUTPUT} one two three four five six")):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    with pytest.raises(openai.ContentFilterFinishReasonError):
        state.get_final_completion()

"""A chat stream's chunks relayed over HTTP (`chat.read_relayed`, `chat.relayed`): always what the rules of
`stream_chunk` make of them, and, for the chunks those rules leave alone but for `model`, Azure's own bytes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from serve_app import jsonwire
from serve_app.simulator.answers import generate
from serve_app.simulator.payloads import ResponseMeta, stream_plan
from serve_app.simulator.triggers import CONTENT_FILTER_OUTPUT, REFUSAL, parse_triggers
from serve_app.translate.chat import read_relayed, relayed, stream_chunk

META = ResponseMeta(id="chatcmpl-1", created=1, model="gpt-4o-2024-11-20", system_fingerprint="fp_1")
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}

STREAMS = {
    "text": ({"content": "one two three"}, {}),
    "refusal": ({"content": f"no {REFUSAL}"}, {}),
    "tool call": ({"content": "weather?"}, {"tools": [WEATHER]}),
    "logprobs": ({"content": "one two"}, {"top_logprobs": 2}),
    "content filter": ({"content": f"{CONTENT_FILTER_OUTPUT} one two three four"}, {}),
    "asynchronous filter": ({"content": f"{CONTENT_FILTER_OUTPUT} " + "word " * 20}, {"async_filter": True}),
}


def azure_frames(message: dict[str, Any], options: dict[str, Any]) -> list[bytes]:
    """The data of each frame the simulator streams for one user message, [DONE] left out."""
    body = {"messages": [{"role": "user", **message}], "stream": True, "tools": options.get("tools")}
    answer = generate(body, reasoning=False, triggers=parse_triggers(message["content"]))
    plan = stream_plan(
        answer,
        META,
        include_usage=True,
        top_logprobs=options.get("top_logprobs"),
        async_filter=options.get("async_filter", False),
    )
    data = [frame.data.removeprefix(b"data: ").strip() for frame in plan.frames]
    return [payload for payload in data if payload != b"[DONE]"]


def shown_whole(raw: bytes, include_usage: bool) -> dict[str, Any] | None:
    return stream_chunk(jsonwire.loads(raw), "dep", include_usage)


def shown_relayed(raw: bytes, include_usage: bool) -> dict[str, Any] | None:
    sent = relayed(read_relayed(raw), "dep", include_usage)
    return None if sent is None else orjson.loads(sent)


@pytest.mark.parametrize("include_usage", [False, True], ids=["usage not asked", "usage asked"])
@pytest.mark.parametrize("stream", STREAMS.values(), ids=STREAMS.keys())
def test_every_relayed_chunk_is_what_the_chat_rules_make_of_it(
    stream: tuple[dict[str, Any], dict[str, Any]], include_usage: bool
) -> None:
    frames = azure_frames(*stream)
    assert len(frames) > 3
    for raw in frames:
        assert shown_relayed(raw, include_usage) == shown_whole(raw, include_usage), raw


def test_a_token_chunk_goes_out_as_azures_bytes_but_for_the_model() -> None:
    # Written again, the escape and the exponent would come out as orjson writes them (é, 100.0).
    raw = (
        b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-11-20",'
        b'"choices":[{"index":0,"delta":{"content":"caf\\u00e9"},"finish_reason":null,"x":1E2}],"usage":null}'
    )
    sent = b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"dep","choices":[{"index":0,"delta":'
    assert relayed(read_relayed(raw), "dep", include_usage=False) == (
        sent + b'{"content":"caf\\u00e9"},"finish_reason":null,"x":1E2}]}'
    )
    assert relayed(read_relayed(raw), "dep", include_usage=True) == (
        sent + b'{"content":"caf\\u00e9"},"finish_reason":null,"x":1E2}],"usage":null}'
    )


def chunk(**fields: Any) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-2024-11-20",
        "choices": [{"index": 0, "delta": {"content": "hi"}}],
        **fields,
    }


PLACES = {
    # Where the rules' change cannot be placed in Azure's bytes for sure, the chunk is written again.
    "model also a nested key, before": (orjson.dumps({"extra": {"model": "gpt-4o-2024-11-20"}, **chunk()}), False),
    "model also a nested key, after": (orjson.dumps(chunk(extra={"model": "gpt-4o-2024-11-20"})), False),
    "model's name also a value": (orjson.dumps(chunk(choices=[{"index": 0, "delta": {"content": "model"}}])), False),
    "spaces around the colon": (orjson.dumps(chunk()).replace(b'"model":', b'"model" : '), False),
    "usage the first key": (orjson.dumps({"usage": None, **chunk()}), False),
    "usage not last": (orjson.dumps(chunk(usage=None, extra=1)), False),
    "usage last in a nested object": (orjson.dumps({"usage": None, **chunk(extra={"a": 1, "usage": None})}), False),
    "a space after the chunk": (orjson.dumps(chunk(usage=None)) + b" ", False),
    "usage not null": (orjson.dumps(chunk(usage={"total_tokens": 1})), False),
    "usage not null, asked for": (orjson.dumps(chunk(usage={"total_tokens": 1})), True),
    "a filter's frame": (orjson.dumps(chunk(object="", model="", id="")), False),
    "a choice without delta": (orjson.dumps(chunk(choices=[{"index": 0, "finish_reason": "stop"}])), False),
    "no model": (orjson.dumps({k: v for k, v in chunk().items() if k != "model"}), False),
}


@pytest.mark.parametrize(("raw", "include_usage"), PLACES.values(), ids=PLACES.keys())
def test_a_chunk_whose_change_has_no_certain_place_is_written_again(raw: bytes, include_usage: bool) -> None:
    assert shown_relayed(raw, include_usage) == shown_whole(raw, include_usage)


def test_the_top_level_model_is_the_one_renamed() -> None:
    raw = orjson.dumps({"extra": {"model": "gpt-4o-2024-11-20"}, **chunk()})
    shown = shown_relayed(raw, include_usage=False)
    assert shown is not None and (shown["model"], shown["extra"]["model"]) == ("dep", "gpt-4o-2024-11-20")


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps(chunk(extra="x")).replace(b'"x"', b'"\xff"'),
        orjson.dumps(chunk(extra=1)).replace(b'"extra":1', b'"extra":NaN'),
        orjson.dumps(chunk(extra=[1])).replace(b"[1]", b"[1,]"),
        orjson.dumps(chunk(choices=[{"index": 0, "delta": "text"}])),
        orjson.dumps(chunk(choices=[None])),
    ],
    ids=["invalid UTF-8", "NaN", "malformed", "delta not an object", "choice not an object"],
)
def test_what_is_relayed_unread_is_still_well_formed_json_of_the_chunks_shape(raw: bytes) -> None:
    with pytest.raises(jsonwire.JSONDecodeError):
        read_relayed(raw)

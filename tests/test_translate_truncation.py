"""`truncation: "auto"`: the oldest whole turns go, never the instructions nor a tool call without its output."""

from __future__ import annotations

from contextlib import aclosing
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest

from serve_app.errors import UpstreamError
from serve_app.schemas import ResponseSettings, ResponsesRequest, parse
from serve_app.translate.stream import read_chunk
from serve_app.translate.truncation import MAX_RETRIES, drop_oldest_turns

SYSTEM = {"role": "system", "content": "Be brief."}
NO_FIGURES = "This model's context is too small."


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def calls(*ids: str) -> dict[str, Any]:
    tool_calls = [{"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in ids]
    return {"role": "assistant", "content": None, "tool_calls": tool_calls}


def tool(call_id: str, text: str = "result") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


CASES = {
    "without figures, the oldest turn goes first, the system message stays": (
        [SYSTEM, user("a"), {"role": "assistant", "content": "b"}, user("c")],
        NO_FIGURES,
        [SYSTEM, {"role": "assistant", "content": "b"}, user("c")],
    ),
    "a tool call goes with all its outputs": (
        [SYSTEM, user("q"), calls("c1", "c2"), tool("c1"), tool("c2"), calls("c3"), tool("c3")],
        NO_FIGURES,
        [SYSTEM, calls("c1", "c2"), tool("c1"), tool("c2"), calls("c3"), tool("c3")],
    ),
    "Azure's figures say how much to drop": (
        [SYSTEM, user("x" * 100), user("y" * 100), user("z" * 100), user("last")],
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 256000 tokens.",
        [SYSTEM, user("z" * 100), user("last")],
    ),
    "however much is asked, the last turn stays": (
        [user("x" * 1000), user("last")],
        "This model's maximum context length is 10 tokens. However, your messages resulted in 100000 tokens.",
        [user("last")],
    ),
    "the whole leading run of system messages stays": (
        [SYSTEM, {"role": "developer", "content": "d"}, user("a"), user("b")],
        NO_FIGURES,
        [SYSTEM, {"role": "developer", "content": "d"}, user("b")],
    ),
}


@pytest.mark.parametrize("messages, error, expected", CASES.values(), ids=CASES.keys())
def test_dropping(messages: list[dict[str, Any]], error: str, expected: list[dict[str, Any]]) -> None:
    assert drop_oldest_turns(messages, error) == expected


@pytest.mark.parametrize(
    "messages",
    [[SYSTEM, user("only")], [user("q"), calls("c1"), tool("c1")][:1], []],
    ids=["one turn", "one user message", "nothing"],
)
def test_nothing_to_drop_is_none(messages: list[dict[str, Any]]) -> None:
    assert drop_oldest_turns(messages, NO_FIGURES) is None


def test_a_conversation_never_starts_with_a_tool_message() -> None:
    messages = [SYSTEM, user("q"), calls("c1"), tool("c1"), calls("c2"), tool("c2"), user("next")]
    while (shorter := drop_oldest_turns(messages, NO_FIGURES)) is not None:
        assert shorter[0] == SYSTEM and shorter[1]["role"] != "tool"
        messages = shorter
    assert messages == [SYSTEM, user("next")]


# --- the server's retry, in the caller's upstream slot ---------------------------------------------

TOO_LONG = UpstreamError(
    "This model's maximum context length is 100 tokens. However, your messages resulted in 150 tokens.",
    status=400,
    code="context_length_exceeded",
    param="messages",
)


class Upstream:
    """Answers `context_length_exceeded` while the conversation has more than `fits` messages."""

    def __init__(self, fits: int) -> None:
        self.fits, self.sent = fits, []

    async def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(body["messages"])
        if len(body["messages"]) > self.fits:
            raise TOO_LONG
        return {"messages": body["messages"]}


async def fitting(truncation: str | None, upstream: Upstream, messages: list[dict[str, Any]]) -> Any:
    from serve_app.config import Timeouts
    from serve_app.server import AzureModelServer

    server = SimpleNamespace(_args=SimpleNamespace(timeouts=Timeouts()))
    server._shortened_until_it_fits = partial(AzureModelServer.func_or_class._shortened_until_it_fits, server)
    req = parse(ResponsesRequest, {"input": "x", "truncation": truncation})
    return await AzureModelServer.func_or_class._fitting(server, req, {"messages": messages}, upstream)


LONG = [SYSTEM, user("a"), calls("c1"), tool("c1"), user("b"), user("c")]


async def test_auto_drops_the_oldest_turns_until_azure_takes_it() -> None:
    upstream = Upstream(fits=3)
    answer = await fitting("auto", upstream, LONG)
    assert answer["messages"][0] == SYSTEM and answer["messages"][-1] == user("c")
    assert len(upstream.sent) > 1 and all(
        len(a) > len(b) for a, b in zip(upstream.sent, upstream.sent[1:], strict=False)
    )


@pytest.mark.parametrize("truncation", [None, "disabled"])
async def test_without_auto_the_error_goes_back_as_azure_sent_it(truncation: str | None) -> None:
    upstream = Upstream(fits=3)
    with pytest.raises(UpstreamError) as info:
        await fitting(truncation, upstream, LONG)
    assert info.value is TOO_LONG and len(upstream.sent) == 1


async def test_auto_gives_up_after_a_few_tries_or_when_only_the_last_turn_is_left() -> None:
    upstream = Upstream(fits=0)
    with pytest.raises(UpstreamError):
        await fitting("auto", upstream, [SYSTEM, *[user(str(i)) for i in range(20)]])
    assert len(upstream.sent) == MAX_RETRIES + 1
    upstream = Upstream(fits=0)
    with pytest.raises(UpstreamError):
        await fitting("auto", upstream, [SYSTEM, user("a"), user("b")])
    assert upstream.sent[-1] == [SYSTEM, user("b")]


async def test_a_stream_is_retried_shorter_before_its_first_chunk() -> None:
    from serve_app.config import Timeouts
    from serve_app.server import AzureModelServer, _HeldStream
    from serve_app.telemetry import RequestRecord

    upstream = Upstream(fits=3)

    async def rest() -> Any:
        return
        yield  # an empty async generator: the stream's one batch came first

    async def open_stream(body: dict[str, Any], headers: dict[str, str] | None, decode: Any) -> Any:
        answer = await upstream(body)  # Azure's error comes before the first chunk
        return [{"choices": [{"index": 0, "delta": {"content": str(len(answer["messages"]))}}]}], rest()  # one batch

    client = SimpleNamespace(open_stream=open_stream)

    released: list[str] = []
    server = SimpleNamespace(_args=SimpleNamespace(timeouts=Timeouts()))
    server._fitting = partial(AzureModelServer.func_or_class._fitting, server)
    server._shortened_until_it_fits = partial(AzureModelServer.func_or_class._shortened_until_it_fits, server)
    pool = SimpleNamespace(release=lambda upstream, seconds: released.append(upstream))
    req = ResponseSettings(parse(ResponsesRequest, {"input": "x", "truncation": "auto"}))
    opened = await AzureModelServer.func_or_class._stream_opened(
        server, client, 0.0, {"messages": LONG}, None, read_chunk, req
    )
    async with aclosing(_HeldStream(pool, ("the upstream", 0.0, opened), RequestRecord("r", "e"))) as batches:
        contents = [chunk["choices"][0]["delta"]["content"] async for batch in batches for chunk in batch]
    assert contents == [str(len(upstream.sent[-1]))]
    assert len(upstream.sent) > 1 and len(upstream.sent[-1]) <= 3
    assert released == ["the upstream"]  # the one slot, given back when the stream ended

"""How an event stream reaches the socket, without Ray: the events ready together go out in one write, no
event is lost, reordered or held back by more than one turn of the event loop, and the source is closed
however the stream ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from serve_app import http
from serve_app.http import BATCH_BYTES, EventStreamResponse, ReadAhead

SPEC_VERSIONS = ["2.0", "2.4"]  # before 2.4 a departed client is seen on `receive`, from it by the send that fails


@contextmanager
def loop_turns() -> Iterator[list[int]]:
    """A counter of the event loop's turns so far: a task that counts one each time it is run."""
    turns = [0]

    async def count() -> None:
        while True:
            turns[0] += 1
            await asyncio.sleep(0)

    task = asyncio.get_running_loop().create_task(count())
    try:
        yield turns
    finally:
        task.cancel()


class Client:
    """The ASGI side of one response: what was sent, and in which turn of the loop."""

    def __init__(self, turns: list[int]) -> None:
        self.turns = turns
        self.writes: list[tuple[int, bytes]] = []  # (turn, body) of each body message
        self.disconnect = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            self.writes.append((self.turns[0], message["body"]))

    async def receive(self) -> dict[str, Any]:
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def serve(self, response: EventStreamResponse, spec_version: str) -> None:
        scope = {"type": "http", "asgi": {"spec_version": spec_version}}
        await response(scope, self.receive, self.send)  # type: ignore[arg-type]

    @property
    def body(self) -> bytes:
        return b"".join(body for _, body in self.writes)


def event(i: int) -> bytes:
    return b'data: {"n":%d}\n\n' % i


# Events by the turn of the loop in which the upstream delivers them: bursts, single events, gaps.
ARRIVALS = [[0, 1], [2, 3], [], [4], [5, 6, 7, 8, 9, 10, 11], [], [], [12], [13, 14]]


async def upstream_source(turns: list[int], made: dict[int, int]) -> AsyncGenerator[bytes, None]:
    """Yields each event of ARRIVALS as soon as it has arrived, noting the turn it was made in."""
    for arrived in ARRIVALS:
        for i in arrived:
            made[i] = turns[0]
            yield event(i)
        await asyncio.sleep(0)  # waiting on the upstream socket until its next read


@pytest.mark.parametrize("spec_version", SPEC_VERSIONS)
async def test_every_event_arrives_once_in_order_and_within_a_turn_of_being_made(spec_version: str) -> None:
    made: dict[int, int] = {}
    with loop_turns() as turns:
        client = Client(turns)
        await client.serve(EventStreamResponse(upstream_source(turns, made), stall_s=5), spec_version)
    count = sum(len(arrived) for arrived in ARRIVALS)
    assert client.body == b"".join(event(i) for i in range(count))
    for turn, body in client.writes:
        for frame in body.split(b"\n\n")[:-1]:
            i = int(frame.removeprefix(b'data: {"n":').removesuffix(b"}"))
            assert turn - made[i] <= 1, f"event {i} made in turn {made[i]}, written in turn {turn}"


@pytest.mark.parametrize("spec_version", SPEC_VERSIONS)
async def test_the_events_made_in_one_turn_go_out_in_one_write(spec_version: str) -> None:
    made: dict[int, int] = {}
    with loop_turns() as turns:
        client = Client(turns)
        await client.serve(EventStreamResponse(upstream_source(turns, made), stall_s=5), spec_version)
    first, *rest = [[event(i) for i in arrived] for arrived in ARRIVALS if arrived]
    bursts = [first[:1], first[1:], *rest]  # the stream's first event alone (below)
    assert [body for _, body in client.writes] == [b"".join(burst) for burst in bursts]


async def test_the_first_event_goes_out_alone_without_waiting_for_the_rest_of_its_burst() -> None:
    async def burst() -> AsyncGenerator[bytes, None]:
        for i in range(100):
            yield event(i)

    body = ReadAhead(burst())
    try:
        assert await anext(body) == event(0)
        assert await anext(body) == b"".join(event(i) for i in range(1, 100))
    finally:
        await body.aclose()


async def endless() -> AsyncGenerator[bytes, None]:
    i = 0
    while True:
        yield event(i)
        i += 1


async def test_a_burst_larger_than_a_batch_is_written_in_batches_and_read_no_further_ahead() -> None:
    source = endless()
    body = ReadAhead(source)
    try:
        batches = [await anext(body) for _ in range(3)]
        await asyncio.sleep(0)  # the reader's turn: it fills the next batch, then waits
        ahead = body._size
    finally:
        await body.aclose()
    largest = len(event(10**6))
    assert all(BATCH_BYTES <= len(b) < BATCH_BYTES + largest for b in batches[1:])
    assert BATCH_BYTES <= ahead < BATCH_BYTES + largest
    joined = b"".join(batches)
    assert joined == b"".join(event(i) for i in range(joined.count(b"\n\n")))


class Boom(Exception):
    pass


async def test_a_source_failing_midway_has_its_events_written_before_the_error() -> None:
    async def failing() -> AsyncGenerator[bytes, None]:
        yield event(0)
        yield event(1)
        raise Boom()

    body = ReadAhead(failing())
    written: list[bytes] = []
    with pytest.raises(Boom):
        async for batch in body:
            written.append(batch)
    await body.aclose()
    assert b"".join(written) == event(0) + event(1)


class Source:
    """A source that stops at a point of our choosing and notes whether it was closed."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.upstream: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def events(self, before_waiting: int) -> AsyncGenerator[bytes, None]:
        try:
            for i in range(before_waiting):
                yield event(i)
            await self.upstream  # Azure is silent
            yield event(before_waiting)
        finally:
            self.closed.set()  # where the upstream call ends and its slot is freed


@pytest.mark.parametrize("before_waiting", [1, BATCH_BYTES // len(event(0)) + 5], ids=["on Azure", "on the writer"])
async def test_closing_the_stream_closes_its_source_wherever_the_source_waits(before_waiting: int) -> None:
    source = Source()
    body = ReadAhead(source.events(before_waiting))
    await anext(body)
    await asyncio.sleep(0)
    await body.aclose()
    assert source.closed.is_set()


@pytest.mark.parametrize("spec_version", SPEC_VERSIONS)
async def test_a_stream_cancelled_while_azure_is_silent_closes_its_source(spec_version: str) -> None:
    # Serve cancels the request's task when the client leaves (and a request timeout does the same).
    source = Source()
    with loop_turns() as turns:
        client = Client(turns)
        task = asyncio.get_running_loop().create_task(
            client.serve(EventStreamResponse(source.events(3), stall_s=5), spec_version)
        )
        while client.body != event(0) + event(1) + event(2):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert source.closed.is_set()


async def test_a_client_leaving_before_asgi_2_4_ends_the_stream_and_closes_its_source() -> None:
    source = Source()
    with loop_turns() as turns:
        client = Client(turns)
        served = asyncio.get_running_loop().create_task(
            client.serve(EventStreamResponse(source.events(1), stall_s=5), "2.0")
        )
        while not client.writes:
            await asyncio.sleep(0)
        client.disconnect.set()
        await asyncio.wait_for(served, 2)
    assert source.closed.is_set()


async def chunks_of(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


async def test_a_source_with_nothing_to_say_ends_the_body_at_once() -> None:
    async def empty() -> AsyncGenerator[bytes, None]:
        return
        yield b""  # an async generator

    body = ReadAhead(empty())
    assert await chunks_of(body) == []
    await body.aclose()


@pytest.mark.parametrize("spec_version", SPEC_VERSIONS)
async def test_the_response_starts_and_writes_its_first_event_in_the_turn_it_is_called(spec_version: str) -> None:
    async def source() -> AsyncGenerator[bytes, None]:
        yield event(0)
        await asyncio.sleep(0)
        yield event(1)

    with loop_turns() as turns:
        client = Client(turns)
        started: list[int] = []
        send = client.send

        async def noting_start(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.append(turns[0])
            await send(message)

        client.send = noting_start  # type: ignore[method-assign]
        called = turns[0]
        await client.serve(EventStreamResponse(source(), stall_s=5), spec_version)
    assert started == [called]
    assert client.writes[0] == (called, event(0))


@pytest.mark.parametrize("spec_version", SPEC_VERSIONS)
async def test_the_replica_yields_its_core_once_right_after_the_first_event_is_written(
    spec_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: dict[int, int] = {}
    with loop_turns() as turns:
        client = Client(turns)
        yielded_after: list[int] = []  # how many body writes were done at each yield
        monkeypatch.setattr(http, "_sched_yield", lambda: yielded_after.append(len(client.writes)))
        await client.serve(EventStreamResponse(upstream_source(turns, made), stall_s=5), spec_version)
    assert len(client.writes) > 2
    assert yielded_after == [1]


async def test_a_send_failing_from_asgi_2_4_on_is_a_departed_client_and_closes_the_source() -> None:
    source = Source()

    async def gone(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise OSError("the client is gone")

    async def receive() -> dict[str, Any]:
        raise AssertionError("from ASGI 2.4 on, nothing listens for the disconnect")

    response = EventStreamResponse(source.events(1), stall_s=5)
    with pytest.raises(ClientDisconnect):
        await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, gone)  # type: ignore[arg-type]
    assert source.closed.is_set()

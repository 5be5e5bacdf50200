"""The HTTP/1.1 keep-alive client, against local servers that put scripted raw bytes on the wire.

Every test runs twice: on asyncio's own event loop and on uvloop's (what Ray Serve replicas run; its
create_connection may resume before connection_made was called).
"""

from __future__ import annotations

import asyncio
import math
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager, suppress
from typing import Any

import pytest
from support.loops import on_each_loop

from serve_app.http_client import (
    ConnectFailed,
    ConnectTimeout,
    DeadlinePassed,
    Disconnected,
    Endpoint,
    HTTPClient,
    HTTPError,
    ProtocolError,
    ReadTimeout,
)

MiB = 1 << 20


# --- a scripted server -------------------------------------------------------------------------------


class Peer:
    """The server's side of one connection."""

    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer

    async def request(self) -> bytes | None:
        """The next request, head and body as they came (None once the client closed the connection)."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.server.closed_by_client += 1
            return None
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        request = head + await self.reader.readexactly(length)
        self.server.requests.append(request)
        return request

    async def until_closed(self) -> None:
        """Wait for the client to close the connection (whatever else it sends is dropped)."""
        with suppress(ConnectionError):
            while await self.reader.read(1 << 16):
                pass
        self.server.closed_by_client += 1

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


Handler = Callable[[Peer], Awaitable[None]]


class Server:
    """Counts connections, the requests it read and the connections the client closed."""

    def __init__(self, handle: Handler) -> None:
        self._handle = handle
        self.connections = 0
        self.closed_by_client = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        # The client may go away mid-script (some tests make it), and a handler still running ends with the test.
        with suppress(ConnectionError, asyncio.CancelledError):
            await self._handle(Peer(self, reader, writer))

    def endpoint(self, path: str = "/v1/chat?api-version=1") -> Endpoint:
        return Endpoint.of(f"http://127.0.0.1:{self.port}{path}")

    async def until(self, condition: Callable[[], bool], within: float = 2.0) -> None:
        """Wait for what the server sees to meet `condition`."""
        async with asyncio.timeout(within):
            while not condition():
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.transport.abort()


@asynccontextmanager
async def serving(handle: Handler) -> AsyncIterator[Server]:
    server = Server(handle)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        await server.stop()
        await asyncio.sleep(0)


def answer(body: bytes = b"ok", *, status: str = "200 OK", headers: str = "", version: str = "HTTP/1.1") -> bytes:
    return f"{version} {status}\r\ncontent-length: {len(body)}\r\n{headers}\r\n".encode() + body


def answering(*answers: bytes) -> Handler:
    """Answers each request on a connection with the next of `answers`, the last one from then on."""

    async def handle(peer: Peer) -> None:
        turn = 0
        while await peer.request() is not None:
            await peer.send(answers[min(turn, len(answers) - 1)])
            turn += 1

    return handle


def new_client(
    *, read_timeout_s: float = 2.0, connect_timeout_s: float = 2.0, idle_s: float = 15.0, **headers: str
) -> aclosing[HTTPClient]:
    return aclosing(
        HTTPClient(
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            idle_s=idle_s,
            headers={name.replace("_", "-"): value for name, value in headers.items()},
        )
    )


async def post(client: HTTPClient, server: Server, body: bytes = b"{}", **kwargs: Any) -> tuple[int, bytes]:
    reply = await client.post(server.endpoint(), body, **kwargs)
    return reply.status, await reply.read()


# --- one exchange ------------------------------------------------------------------------------------


@on_each_loop
async def test_a_post_sends_one_request_with_host_length_fixed_and_per_call_headers() -> None:
    async with serving(answering(answer())) as server, new_client(api_key="k1", content_type="json") as client:
        await post(client, server, b'{"a": 1}', headers={"authorization": "Bearer t"})
        await client.aclose()
        await server.until(lambda: server.closed_by_client == 1)
    (request,) = server.requests
    head, body = request.split(b"\r\n\r\n")
    request_line, *fields = head.decode().split("\r\n")
    assert request_line == "POST /v1/chat?api-version=1 HTTP/1.1"
    assert dict(field.split(": ", 1) for field in fields) == {
        "host": f"127.0.0.1:{server.port}",
        "user-agent": "azure-openai-serve",
        "content-length": "8",
        "api-key": "k1",
        "content-type": "json",
        "authorization": "Bearer t",
    }
    assert body == b'{"a": 1}'


@on_each_loop
async def test_status_lower_case_headers_with_repeats_joined_and_a_content_length_body_come_back() -> None:
    wire = answer(b"hello", status="429 Too Many Requests", headers="Retry-After: 3\r\nX-Seen: a\r\nx-seen: b\r\n")
    async with serving(answering(wire)) as server, new_client() as client:
        reply = await client.post(server.endpoint(), b"{}")
        assert (reply.status, await reply.read()) == (429, b"hello")
    assert reply.headers == {"content-length": "5", "retry-after": "3", "x-seen": "a, b"}


@on_each_loop
async def test_a_chunked_body_comes_back_decoded() -> None:
    wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    async with serving(answering(wire)) as server, new_client() as client:
        assert await post(client, server) == (200, b"hello world")
        assert await post(client, server) == (200, b"hello world")
    assert server.connections == 1


@on_each_loop
async def test_an_answer_dribbled_byte_by_byte_is_parsed_whole() -> None:
    wire = answer(b"split body", headers="x-long-header-name: a long header value\r\n")

    async def dribble(peer: Peer) -> None:
        await peer.request()
        for byte in wire:
            await peer.send(bytes([byte]))
            await asyncio.sleep(0)

    async with serving(dribble) as server, new_client() as client:
        reply = await client.post(server.endpoint(), b"{}")
        assert await reply.read() == b"split body"
    assert reply.headers["x-long-header-name"] == "a long header value"


@on_each_loop
async def test_an_interim_100_continue_before_the_answer_is_skipped() -> None:
    wire = b"HTTP/1.1 100 Continue\r\nx-interim: yes\r\n\r\n" + answer(b"final", status="201 Created")
    async with serving(answering(wire)) as server, new_client() as client:
        reply = await client.post(server.endpoint(), b"{}")
        assert (reply.status, await reply.read()) == (201, b"final")
        assert "x-interim" not in reply.headers
        assert await post(client, server) == (201, b"final")
    assert server.connections == 1


# --- keep-alive ----------------------------------------------------------------------------------------


@on_each_loop
async def test_no_parser_is_held_by_an_idle_connection_nor_by_a_call_waiting_for_its_answer() -> None:
    # Thousands of calls wait on Azure at once, for minutes on a reasoning model: each parser is 0.9 KB.
    go = asyncio.Event()

    async def second_late(peer: Peer) -> None:
        turn = 0
        while await peer.request() is not None:
            if turn:
                await go.wait()
            await peer.send(answer())
            turn += 1

    async with serving(second_late) as server, new_client() as client:
        assert await post(client, server) == (200, b"ok")
        [connection] = client._idle[server.endpoint()]
        assert connection._parser is None
        call = asyncio.ensure_future(post(client, server))
        await server.until(lambda: len(server.requests) == 2)
        assert connection._parser is None and not client._idle[server.endpoint()]
        go.set()
        assert await call == (200, b"ok")
        assert client._idle[server.endpoint()] == [connection] and connection._parser is None


@on_each_loop
async def test_sequential_calls_reuse_one_connection() -> None:
    async with serving(answering(answer())) as server, new_client() as client:
        for _ in range(3):
            assert await post(client, server) == (200, b"ok")
    assert (server.connections, len(server.requests)) == (1, 3)


@on_each_loop
async def test_concurrent_calls_open_one_connection_each() -> None:
    release = asyncio.Event()

    async def held_until_all_arrived(peer: Peer) -> None:
        await peer.request()
        await release.wait()
        await peer.send(answer())

    async with serving(held_until_all_arrived) as server, new_client() as client:
        calls = [asyncio.create_task(post(client, server)) for _ in range(3)]
        await server.until(lambda: len(server.requests) == 3)
        release.set()
        assert await asyncio.gather(*calls) == [(200, b"ok")] * 3
    assert server.connections == 3


@pytest.mark.parametrize(
    "wire",
    [answer(headers="connection: close\r\n"), answer(version="HTTP/1.0")],
    ids=["connection-close", "http-1.0"],
)
@on_each_loop
async def test_an_answer_that_ends_its_connection_is_not_reused(wire: bytes) -> None:
    async with serving(answering(wire)) as server, new_client() as client:
        assert await post(client, server) == (200, b"ok")
        assert await post(client, server) == (200, b"ok")
        await server.until(lambda: server.closed_by_client >= 1)
    assert server.connections == 2


@on_each_loop
async def test_an_answer_closed_mid_body_closes_its_connection_and_the_next_call_opens_one() -> None:
    async def half_then_whole(peer: Peer) -> None:
        if peer.server.connections == 1:
            await peer.request()
            await peer.send(answer(b"0123456789")[:-5])
        await answering(answer())(peer)

    async with serving(half_then_whole) as server, new_client() as client:
        reply = await client.post(server.endpoint(), b"{}")
        assert await reply.next_chunk() == b"01234"
        reply.close()
        await server.until(lambda: server.closed_by_client == 1)
        assert await post(client, server) == (200, b"ok")
    assert server.connections == 2


@on_each_loop
async def test_an_answer_read_to_the_end_in_chunks_then_closed_keeps_its_connection() -> None:
    async with serving(answering(answer(b"body"))) as server, new_client() as client:
        reply = await client.post(server.endpoint(), b"{}")
        assert [await reply.next_chunk(), await reply.next_chunk(), await reply.next_chunk()] == [b"body", b"", b""]
        reply.close()
        assert await post(client, server) == (200, b"body")
    assert server.connections == 1


@on_each_loop
async def test_a_pooled_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def one_answer_then_close(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer())
        peer.close()

    async with serving(one_answer_then_close) as server, new_client() as client:
        assert await post(client, server) == (200, b"ok")
        await asyncio.sleep(0.05)
        assert await post(client, server) == (200, b"ok")
    assert (server.connections, len(server.requests)) == (2, 2)


@on_each_loop
async def test_a_pooled_connection_closed_with_no_byte_of_answer_is_replaced_and_the_request_sent_once_more() -> None:
    """The race the idle check cannot catch: the server closes just as the request goes out."""

    async def second_request_closes_first_connection(peer: Peer) -> None:
        if peer.server.connections == 1:
            await peer.request()
            await peer.send(answer(b"first"))
            await peer.request()
            peer.close()
        else:
            await answering(answer(b"second"))(peer)

    async with serving(second_request_closes_first_connection) as server, new_client() as client:
        assert await post(client, server, b"1") == (200, b"first")
        assert await post(client, server, b"2") == (200, b"second")
    assert server.connections == 2
    assert [request[-1:] for request in server.requests] == [b"1", b"2", b"2"]


@pytest.mark.parametrize(
    "sent",
    [b"H", b"HTTP/1.1 200 OK\r\n", answer(b"0123456789")[:-3]],
    ids=["one-byte", "status-line", "part-of-body"],
)
@on_each_loop
async def test_a_pooled_connection_closed_after_some_answer_bytes_fails_the_call_and_is_never_resent(
    sent: bytes,
) -> None:
    async def part_of_the_second_answer(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer())
        await peer.request()
        await peer.send(sent)
        peer.close()

    async with serving(part_of_the_second_answer) as server, new_client() as client:
        assert await post(client, server) == (200, b"ok")
        with pytest.raises(Disconnected):
            await post(client, server)
        await asyncio.sleep(0.05)
    assert (server.connections, len(server.requests)) == (1, 2)


@on_each_loop
async def test_a_new_connection_closed_with_no_answer_fails_the_call_and_is_never_resent() -> None:
    async def close_unanswered(peer: Peer) -> None:
        await peer.request()
        peer.close()

    async with serving(close_unanswered) as server, new_client() as client:
        with pytest.raises(Disconnected):
            await post(client, server)
        await asyncio.sleep(0.05)
    assert (server.connections, len(server.requests)) == (1, 1)


@on_each_loop
async def test_an_idle_connection_older_than_idle_s_is_not_handed_out() -> None:
    async with serving(answering(answer())) as server, new_client(idle_s=0.1) as client:
        assert await post(client, server) == (200, b"ok")
        time.sleep(0.15)  # blocks the loop: the sweep cannot run first, only the age check can refuse it
        assert await post(client, server) == (200, b"ok")
    assert server.connections == 2


@on_each_loop
async def test_idle_connections_older_than_idle_s_are_closed_by_the_sweep() -> None:
    async with serving(answering(answer())) as server, new_client(idle_s=0.1) as client:
        await asyncio.gather(post(client, server), post(client, server))
        assert server.connections == 2
        await server.until(lambda: server.closed_by_client == 2, within=0.5)


@on_each_loop
async def test_bytes_arriving_when_no_exchange_is_open_make_the_connection_unusable() -> None:
    async def answer_then_unasked_bytes(peer: Peer) -> None:
        if peer.server.connections == 1:
            await peer.request()
            await peer.send(answer(b"first"))
            await asyncio.sleep(0.02)
            await peer.send(answer(b"unasked"))
        await answering(answer(b"second"))(peer)

    async with serving(answer_then_unasked_bytes) as server, new_client() as client:
        assert await post(client, server) == (200, b"first")
        await server.until(lambda: server.closed_by_client == 1)
        assert await post(client, server) == (200, b"second")
    assert server.connections == 2


@on_each_loop
async def test_bytes_right_behind_a_complete_answer_do_not_join_it_and_make_the_connection_unusable() -> None:
    async def two_answers_at_once(peer: Peer) -> None:
        if peer.server.connections == 1:
            await peer.request()
            await peer.send(answer(b"first") + answer(b"unasked", headers="x-extra: 1\r\n"))
        await answering(answer(b"second"))(peer)

    async with serving(two_answers_at_once) as server, new_client() as client:
        reply = await client.post(server.endpoint(), b"{}")
        assert await reply.read() == b"first"
        assert reply.headers == {"content-length": "5"}
        assert await post(client, server) == (200, b"second")
    assert server.connections == 2


# --- errors --------------------------------------------------------------------------------------------


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose SYNs are dropped: a listener with a backlog of 0, filled by connections never accepted
    (Linux drops a SYN while the accept queue is full, so a connect there neither succeeds nor fails)."""
    if sys.platform != "linux":
        pytest.skip("a connect that hangs deterministically relies on Linux dropping SYNs to a full accept queue")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        fillers = [socket.socket() for _ in range(2)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            time.sleep(0.02)
            yield port
        finally:
            for filler in fillers:
                filler.close()


@on_each_loop
async def test_a_refused_connection_is_connect_failed() -> None:
    async with new_client() as client:
        with pytest.raises(ConnectFailed):
            await client.post(Endpoint.of(f"http://127.0.0.1:{unused_port()}/"), b"{}")


@on_each_loop
async def test_a_connect_that_hangs_past_connect_timeout_s_is_connect_timeout() -> None:
    async with new_client(connect_timeout_s=0.1) as client:
        with unanswered_port() as port:
            started = time.monotonic()
            with pytest.raises(ConnectTimeout):
                await client.post(Endpoint.of(f"http://127.0.0.1:{port}/"), b"{}")
            assert time.monotonic() - started >= 0.09


@on_each_loop
async def test_a_deadline_before_the_connect_timeout_is_deadline_passed_while_connecting() -> None:
    async with new_client(connect_timeout_s=5.0) as client:
        with unanswered_port() as port:
            deadline = asyncio.get_running_loop().time() + 0.1
            with pytest.raises(DeadlinePassed):
                await client.post(Endpoint.of(f"http://127.0.0.1:{port}/"), b"{}", deadline=deadline)


async def send_then_hold(peer: Peer, sent: bytes, dribble: bytes = b"", every: float = 0.02) -> None:
    """Answers with `sent`, then holds the connection until the client closes it, sending `dribble` (when
    given) every `every` seconds meanwhile."""

    async def dribbling() -> None:
        while True:
            await asyncio.sleep(every)
            peer.writer.write(dribble)

    await peer.request()
    await peer.send(sent)
    sending = asyncio.create_task(dribbling()) if dribble else None
    await peer.until_closed()
    if sending is not None:
        sending.cancel()


@pytest.mark.parametrize(
    "sent", [b"", b"HTTP/1.1 200 OK\r\n", answer(b"0123456789")[:-5]], ids=["no-byte", "part-of-head", "part-of-body"]
)
@on_each_loop
async def test_silence_past_read_timeout_s_is_read_timeout(sent: bytes) -> None:
    async with serving(lambda peer: send_then_hold(peer, sent)) as server, new_client(read_timeout_s=0.1) as client:
        started = time.monotonic()
        with pytest.raises(ReadTimeout):
            await post(client, server)
        assert time.monotonic() - started >= 0.09
        await server.until(lambda: server.closed_by_client == 1)


@on_each_loop
async def test_bytes_arriving_keep_the_read_timeout_from_firing() -> None:
    body = b"x" * 10

    async def slow_body(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(body)[: -len(body)])
        for byte in body:
            await asyncio.sleep(0.05)
            await peer.send(bytes([byte]))

    async with serving(slow_body) as server, new_client(read_timeout_s=0.3) as client:
        assert await post(client, server) == (200, body)  # 0.5 s in all, never 0.3 s of silence


@pytest.mark.parametrize("sent", [b"", answer(b"x" * 1000)[:-990]], ids=["waiting-for-the-head", "reading-the-body"])
@on_each_loop
async def test_the_deadline_is_deadline_passed_however_lively_the_server(sent: bytes) -> None:
    async def lively(peer: Peer) -> None:
        await send_then_hold(peer, sent, dribble=b"\r\n" if not sent else b"x")

    async with serving(lively) as server, new_client(read_timeout_s=5.0) as client:
        deadline = asyncio.get_running_loop().time() + 0.15
        with pytest.raises(DeadlinePassed):
            await post(client, server, deadline=deadline)
        assert asyncio.get_running_loop().time() >= deadline - 0.01
        await server.until(lambda: server.closed_by_client == 1)


@on_each_loop
async def test_exchanges_open_together_each_time_out_at_their_own_moment_whatever_order_they_opened_in() -> None:
    # One timer serves every exchange of a client: a later call with a sooner deadline, a call the server
    # keeps alive past the others' timeouts, and a silent one must each end when their own time comes.
    async def hold_or_dribble(peer: Peer) -> None:
        request = await peer.request() or b""
        while b"lively" in request and not peer.writer.is_closing():
            peer.writer.write(b"\r\n")  # blank lines before a status line: bytes, yet never an answer
            await asyncio.sleep(0.02)
        await peer.until_closed()

    async with serving(hold_or_dribble) as server, new_client(read_timeout_s=0.3) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def ended(body: bytes, deadline: float = math.inf) -> tuple[str, float]:
            try:
                await post(client, server, body, deadline=deadline)
            except HTTPError as error:
                return type(error).__name__, loop.time() - started
            return "answered", loop.time() - started

        silent = asyncio.create_task(ended(b"silent"))
        await asyncio.sleep(0.05)
        soon = asyncio.create_task(ended(b"soon", deadline=started + 0.15))
        lively = asyncio.create_task(ended(b"lively", deadline=started + 0.6))
        (silent_error, silent_s), (soon_error, soon_s), (lively_error, lively_s) = await asyncio.gather(
            silent, soon, lively
        )
    assert (silent_error, soon_error, lively_error) == ("ReadTimeout", "DeadlinePassed", "DeadlinePassed")
    assert 0.14 <= soon_s < silent_s and 0.29 <= silent_s < lively_s and lively_s >= 0.59
    assert soon_s < 0.25 and silent_s < 0.45  # not held back to a later exchange's time


@on_each_loop
async def test_the_deadline_is_deadline_passed_while_streaming_the_body() -> None:
    async with (
        serving(lambda peer: send_then_hold(peer, answer(b"x" * 100)[:-90], dribble=b"x")) as server,
        new_client(read_timeout_s=5.0) as client,
    ):
        reply = await client.post(server.endpoint(), b"{}", deadline=asyncio.get_running_loop().time() + 0.15)
        with pytest.raises(DeadlinePassed):
            while await reply.next_chunk():
                pass


@pytest.mark.parametrize(
    "wire",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 two hundred\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
    ],
    ids=["not-http", "bad-status", "bad-chunk-size", "two-lengths"],
)
@on_each_loop
async def test_garbage_on_the_wire_is_protocol_error_and_closes_the_connection(wire: bytes) -> None:
    async with serving(lambda peer: send_then_hold(peer, wire)) as server, new_client() as client:
        with pytest.raises(ProtocolError):
            await post(client, server)
        await server.until(lambda: server.closed_by_client == 1)


@pytest.mark.parametrize(
    "sent",
    [answer(b"0123456789")[:-5], b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"],
    ids=["content-length", "chunked"],
)
@on_each_loop
async def test_the_server_closing_mid_body_is_disconnected(sent: bytes) -> None:
    async def close_mid_body(peer: Peer) -> None:
        await peer.request()
        await peer.send(sent)
        peer.close()

    async with serving(close_mid_body) as server, new_client() as client:
        with pytest.raises(Disconnected):
            await post(client, server)


# --- streaming and back-pressure ----------------------------------------------------------------------------


@on_each_loop
async def test_next_chunk_returns_the_body_as_it_arrives_and_an_empty_chunk_at_its_end() -> None:
    taken = asyncio.Event()

    async def in_two_parts(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"first second")[:-6])
        await taken.wait()
        await peer.send(b"second")
        await answering(answer())(peer)

    async with serving(in_two_parts) as server, new_client() as client:
        reply = await client.post(server.endpoint(), b"{}")
        assert await reply.next_chunk() == b"first "
        taken.set()
        assert await reply.next_chunk() == b"second"
        assert await reply.next_chunk() == b""
        reply.close()
        assert await post(client, server) == (200, b"ok")
    assert server.connections == 1


class BigAnswer:
    """An answer far larger than the socket buffers on both sides: the server can send it all only
    if the client keeps reading."""

    def __init__(self, size: int = 48 * MiB) -> None:
        self.body = bytes(range(256)) * (size // 256)
        self.sent_all = False

    async def handle(self, peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(self.body))
        self.sent_all = True
        await answering(answer())(peer)


@on_each_loop
async def test_past_1_mib_unread_reading_pauses_without_read_timeout_and_resumes_as_chunks_are_taken() -> None:
    big = BigAnswer()
    async with serving(big.handle) as server, new_client(read_timeout_s=0.1) as client:
        reply = await client.post(server.endpoint(), b"{}")
        await asyncio.sleep(0.4)  # four read timeouts: the silence is ours, not the server's
        assert not big.sent_all
        received = []
        while chunk := await reply.next_chunk():
            assert len(chunk) <= 2 * MiB
            received.append(chunk)
        assert b"".join(received) == big.body and big.sent_all
        reply.close()
        assert await post(client, server) == (200, b"ok")
    assert server.connections == 1


@on_each_loop
async def test_read_takes_a_body_of_any_size() -> None:
    big = BigAnswer(8 * MiB)
    async with serving(big.handle) as server, new_client(read_timeout_s=0.5) as client:
        async with asyncio.timeout(5):
            assert await post(client, server) == (200, big.body)


# --- cancellation and closing --------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", answer(b"0123456789")[:-5]], ids=["waiting-for-the-head", "reading-the-body"])
@on_each_loop
async def test_a_cancelled_call_aborts_its_connection(sent: bytes) -> None:
    async def hold_then_answer(peer: Peer) -> None:
        if peer.server.connections == 1:
            await send_then_hold(peer, sent)
        else:
            await answering(answer())(peer)

    async with serving(hold_then_answer) as server, new_client() as client:
        call = asyncio.create_task(post(client, server))
        await server.until(lambda: len(server.requests) == 1)
        await asyncio.sleep(0.02)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await server.until(lambda: server.closed_by_client == 1)
        assert await post(client, server) == (200, b"ok")
    assert server.connections == 2


@on_each_loop
async def test_aclose_closes_idle_connections_and_a_closed_client_refuses_calls() -> None:
    async with serving(answering(answer())) as server, new_client() as client:
        await asyncio.gather(post(client, server), post(client, server))
        await client.aclose()
        await server.until(lambda: server.closed_by_client == 2)
        with pytest.raises(ConnectFailed):
            await post(client, server)
    assert len(server.requests) == 2


@on_each_loop
async def test_a_connection_in_use_at_aclose_is_closed_when_its_answer_is_done() -> None:
    async with serving(answering(answer(b"done"))) as server, new_client() as client:
        reply = await client.post(server.endpoint(), b"{}")
        await client.aclose()
        assert await reply.read() == b"done"
        await server.until(lambda: server.closed_by_client == 1)


# --- endpoints -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/a", Endpoint("example.com", 80, False, "example.com", "/a")),
        ("https://example.com/a", Endpoint("example.com", 443, True, "example.com", "/a")),
        ("https://example.com:8443/a", Endpoint("example.com", 8443, True, "example.com:8443", "/a")),
        ("http://example.com", Endpoint("example.com", 80, False, "example.com", "/")),
        (
            "https://h.example/p/q?api-version=1&x=2#frag",
            Endpoint("h.example", 443, True, "h.example", "/p/q?api-version=1&x=2"),
        ),
        ("http://[::1]:8080/a", Endpoint("::1", 8080, False, "[::1]:8080", "/a")),
        ("https://user:secret@example.com/a", Endpoint("example.com", 443, True, "example.com", "/a")),
    ],
)
def test_an_endpoint_holds_host_port_tls_host_header_and_target(url: str, expected: Endpoint) -> None:
    assert Endpoint.of(url) == expected


@pytest.mark.parametrize("url", ["ftp://example.com/a", "example.com/a", "http:///a", "ws://example.com/"])
def test_a_url_that_is_not_http_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        Endpoint.of(url)

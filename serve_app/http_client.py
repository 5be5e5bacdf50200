"""HTTP/1.1 calls upstream: a keep-alive connection pool over asyncio, answers parsed by httptools.

Knows HTTP only (no Azure, no JSON). It never limits or queues calls itself: whoever calls it holds
the upstream slots. One instance per replica, used from one event loop.

Why not aiohttp (which this replaced): its request and response objects, per-read timers and stream
readers were about a fifth of a replica's CPU per request. Measured on one 2-core machine: a call of
AzureClient cost 269 µs of CPU over aiohttp and 76 µs over this (64 callers, keep-alive), and 19.4 KB
against 10.1 KB of memory per call in flight (2,000 at once, new connections); the benchmark's
transport table keeps both side by side (tests/benchmark/RESULTS.md). A call here is one write, one
parser fed in C (httptools, the parser uvicorn runs), a dict of headers and the body's bytes; the read
timeouts and the callers' deadlines of every open exchange share one timer per client (`_Watch`).

Not supported, as Azure needs none of it: proxies, compressed answers (none are asked for), HTTP/2,
and answers whose end only the closing of the connection marks (Azure always sends a length or chunks).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

# Buffered answer bytes past which reading pauses until the caller catches up (a client of ours
# reading a stream slowly must not make us hold Azure's whole answer).
_PAUSE_AT = 1 << 20
_USER_AGENT = b"azure-openai-serve"
_JOIN_BELOW = 64 * 1024
_NEVER = math.inf


class HTTPError(Exception):
    """A call that got no complete HTTP answer. `reason` names what happened, for error messages."""

    reason = "http error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)


class ConnectFailed(HTTPError):
    reason = "connect failed"


class ConnectTimeout(HTTPError):
    reason = "connect timeout"


class ReadTimeout(HTTPError):
    reason = "read timeout"


class Disconnected(HTTPError):
    reason = "server disconnected"


class ProtocolError(HTTPError):
    reason = "invalid HTTP answer"


class DeadlinePassed(HTTPError):
    """The caller's deadline came before the answer was complete."""

    reason = "deadline passed"


@dataclass(frozen=True)
class Endpoint:
    """Where a URL's requests go, and the request target and Host header they carry."""

    host: str
    port: int
    tls: bool
    authority: str
    target: str

    @classmethod
    def of(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls, authority, target)


class Answer:
    """An answer's status and headers (names in lower case, repeats joined by ", "), then its body."""

    __slots__ = ("_connection", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], connection: _Connection) -> None:
        self.status = status
        self.headers = headers
        self._connection = connection

    async def read(self) -> bytes:
        """The whole body (the connection goes back to the pool)."""
        return await self._connection.read_all()

    async def next_chunk(self) -> bytes:
        """The body bytes received since the last call, waiting for some; b"" once the body is complete."""
        return await self._connection.next_chunk()

    def close(self) -> None:
        """Done with this answer: a connection whose answer was read to the end is kept for the next call,
        one left mid-answer is closed."""
        self._connection.finish()


class _Connection(asyncio.Protocol):
    """One connection; one exchange at a time (no pipelining)."""

    # One per call in flight: slots, not an instance dict.
    __slots__ = (
        "_active",
        "_buffered",
        "_chunks",
        "_complete",
        "_deadline",
        "_endpoint",
        "_error",
        "_head",
        "_headers",
        "_keep_alive",
        "_last_read",
        "_loop",
        "_parser",
        "_paused",
        "_pool",
        "_status",
        "_transport",
        "_waiter",
        "_whole",
        "closed",
        "got_bytes",
        "idle_since",
    )

    def __init__(self, pool: HTTPClient, endpoint: Endpoint) -> None:
        self._pool = pool
        self._endpoint = endpoint
        self._loop = pool._loop
        self._transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        # A parser per answer, made when its first byte comes: an exchange waiting on Azure (for minutes, on
        # a reasoning model), or a connection idle in the pool, holds none (0.9 KB; making one takes 0.6 µs).
        self._parser: httptools.HttpResponseParser | None = None
        self._active = False
        self.got_bytes = False
        self._status = 0
        self._headers: dict[str, str] = {}
        self._head: asyncio.Future[None] | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._whole = False
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._keep_alive = False
        self._error: HTTPError | None = None
        self._last_read = 0.0
        self._deadline = _NEVER

    # --- the exchange, as its caller sees it -------------------------------------------------

    def send(self, head: bytes, body: bytes, deadline: float) -> asyncio.Future[None]:
        """Send a request: the future is done once the answer's status and headers are in (`answer`). Until its
        body is complete, the exchange fails at `deadline` (event-loop time) or after a read timeout of silence.
        (Not a coroutine: the caller awaits the future, a frame less for every call in flight.)"""
        if self.closed or self._transport is None:
            raise Disconnected("closed before the request was sent")
        self._active = True
        self._last_read = self._loop.time()
        self._head = self._loop.create_future()
        self._deadline = deadline
        self._pool._watch.add(self, min(self._last_read + self._pool.read_timeout_s, deadline))
        # One write, one send: copying a short body costs less than a second system call.
        if len(body) < _JOIN_BELOW:
            self._transport.write(head + body)
        else:
            self._transport.writelines((head, body))
        return self._head

    def answer(self) -> Answer:
        return Answer(self._status, self._headers, self)

    async def read_all(self) -> bytes:
        # The caller takes the body whole: pausing would only stall it (nobody takes chunks to resume).
        self._whole = True
        self._resume()
        try:
            while not self._complete:
                self._raise_error()
                await self._wait()
            self._raise_error()
        except BaseException:
            self.abort()
            raise
        body = b"".join(self._chunks)
        self._chunks = []
        self.finish()
        return body

    async def next_chunk(self) -> bytes:
        try:
            while not self._chunks:
                self._raise_error()
                if self._complete:
                    return b""
                await self._wait()
        except BaseException:
            self.abort()
            raise
        chunks = self._chunks
        self._chunks = []
        self._buffered = 0
        self._resume()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    def finish(self) -> None:
        if not self._active:
            return
        if self._complete and self._keep_alive and self._error is None and not self.closed:
            self._pool._watch.discard(self)
            self._reset()
            self._pool._release(self)
        else:
            self.abort()

    def abort(self) -> None:
        self._pool._watch.discard(self)
        self._active = False
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: HTTPError) -> None:
        if self._error is None and not self._complete:
            self._error = error
        self._pool._watch.discard(self)
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        self._wake()

    # --- the read timeout and the deadline, as the client's `_Watch` asks ------------------------------

    def due(self, now: float) -> float:
        """When this exchange times out, as things stand at `now`."""
        if self._paused:
            return min(now + 1.0, self._deadline)  # the silence is our reader's, not the server's: look again later
        return min(self._last_read + self._pool.read_timeout_s, self._deadline)

    def time_out(self, now: float) -> None:
        if now >= self._deadline:
            self._fail(DeadlinePassed())
        else:
            self._fail(ReadTimeout(f"no byte for {self._pool.read_timeout_s:g} s"))
        self.abort()

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._transport is None:
            self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._active and not self._complete:
            self._fail(Disconnected(type(exc).__name__ if exc else "closed before the answer was complete"))

    def data_received(self, data: bytes) -> None:
        if not self._active:
            # Bytes nobody asked for (no exchange is open): this connection cannot be trusted again.
            self.abort()
            return
        self._last_read = self._loop.time()
        self.got_bytes = True
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("an upgrade was not asked for"))
            self.abort()
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(str(exc)))
            self.abort()

    # --- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            # Bytes behind a complete answer, which nobody asked for: stop llhttp before it mixes the next
            # message's headers and body into this answer's (data_received then closes the connection).
            raise ProtocolError("bytes after the answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        seen = self._headers.get(key)
        self._headers[key] = text if seen is None else f"{seen}, {text}"

    def on_headers_complete(self) -> None:
        self._status = cast(httptools.HttpResponseParser, self._parser).get_status_code()
        if 100 <= self._status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows on this connection.
            self._headers = {}
            return
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _PAUSE_AT and not self._whole and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:
            return
        self._complete = True
        # Only known inside this callback: llhttp has moved on to the next message once it returns.
        self._keep_alive = cast(httptools.HttpResponseParser, self._parser).should_keep_alive()
        self._pool._watch.discard(self)
        self._wake()


class _Watch:
    """The read timeouts and deadlines of every open exchange of one client, on one timer.

    A timer per exchange (uvloop's handle, its libuv timer, the bound callback and a copy of the context) was
    0.6 KB of every call in flight. This one is set for the soonest moment an exchange could time out; when it
    fires, it looks at each open exchange, times out those that are due and is set for the next soonest. Bytes
    arriving only move an exchange's due time, which is read when the timer fires; calls finish long before
    Azure's read timeout or their deadline, so it rarely fires."""

    # The timer's callback runs in a context of its own, not in the one of whichever call set it.
    _CONTEXT = contextvars.Context()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._open: dict[_Connection, None] = {}  # an insertion-ordered set
        self._timer: asyncio.TimerHandle | None = None
        self._at = _NEVER

    def add(self, connection: _Connection, due: float) -> None:
        self._open[connection] = None
        if due < self._at:
            self._set(due)

    def discard(self, connection: _Connection) -> None:
        if self._open.pop(connection, 0) is None and not self._open and self._timer is not None:
            self._timer.cancel()
            self._timer, self._at = None, _NEVER

    def _set(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._at = self._loop.call_at(when, self._fire, context=self._CONTEXT), when

    def _fire(self) -> None:
        self._timer, self._at = None, _NEVER
        now = self._loop.time()
        due = [(connection, connection.due(now)) for connection in self._open]
        for connection, when in due:
            if when <= now:
                connection.time_out(now)
        soonest = min((when for _, when in due if when > now), default=_NEVER)
        if soonest < _NEVER and self._open:
            self._set(soonest)


class HTTPClient:
    """POSTs over pooled keep-alive connections. Connections idle longer than `idle_s` are closed
    (Azure's front ends close idle ones too; a closed one is never handed out)."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        idle_s: float = 15.0,
        headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._idle_s = idle_s
        self._headers = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in (headers or {}).items())
        self._ssl = ssl_context
        self._idle: dict[Endpoint, list[_Connection]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False
        self.__loop: asyncio.AbstractEventLoop | None = None
        self.__watch: _Watch | None = None

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        if self.__loop is None:
            self.__loop = asyncio.get_running_loop()
        return self.__loop

    @property
    def _watch(self) -> _Watch:
        if self.__watch is None:
            self.__watch = _Watch(self._loop)
        return self.__watch

    async def post(
        self, endpoint: Endpoint, body: bytes, headers: Mapping[str, str] | None = None, deadline: float = math.inf
    ) -> Answer:
        """Send `body`; the answer once its status and headers are in. The caller must `close()` it (or
        `read()` it whole). Past `deadline` (event-loop time), connecting, waiting or reading the body raises
        `DeadlinePassed`. A pooled connection the server had closed meanwhile is replaced, and the
        request sent again, only when nothing at all came back on it: the server cannot have acted on it."""
        if self._closed:
            raise ConnectFailed("the client is closed")
        connection, reused = self._pooled(endpoint), True
        while True:
            if connection is None:
                connection, reused = await self._connect(endpoint, deadline), False
            try:
                # The head is made for each send, not kept in this frame while the answer is awaited.
                await connection.send(self._head(endpoint, len(body), headers), body, deadline)
            except BaseException as exc:
                connection.abort()
                if not isinstance(exc, Disconnected) or not reused or connection.got_bytes:
                    raise
                connection = None
                continue
            return connection.answer()

    def _head(self, endpoint: Endpoint, length: int, headers: Mapping[str, str] | None) -> bytes:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1") if headers else b""
        return b"POST %s HTTP/1.1\r\nhost: %s\r\nuser-agent: %s\r\ncontent-length: %d\r\n%s%s\r\n" % (
            endpoint.target.encode(),
            endpoint.authority.encode(),
            _USER_AGENT,
            length,
            self._headers,
            extra,
        )

    def _pooled(self, endpoint: Endpoint) -> _Connection | None:
        idle = self._idle.get(endpoint)
        now = self._loop.time()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to have been closed by the server
            if not connection.closed and now - connection.idle_since < self._idle_s:
                return connection
            connection.abort()
        return None

    async def _connect(self, endpoint: Endpoint, deadline: float) -> _Connection:
        context = (self._ssl or _default_tls()) if endpoint.tls else None
        left = deadline - self._loop.time()
        try:
            async with asyncio.timeout(min(self.connect_timeout_s, left)):
                transport, protocol = await self._loop.create_connection(
                    lambda: _Connection(self, endpoint),
                    endpoint.host,
                    endpoint.port,
                    ssl=context,
                    server_hostname=endpoint.host if context else None,
                )
        except TimeoutError:
            if left < self.connect_timeout_s:
                raise DeadlinePassed(f"connecting to {endpoint.authority}") from None
            raise ConnectTimeout(f"{endpoint.authority} after {self.connect_timeout_s:g} s") from None
        except OSError as exc:
            raise ConnectFailed(f"{endpoint.authority}: {type(exc).__name__}") from None
        # uvloop may resume this before it has called connection_made.
        protocol.connection_made(transport)
        return protocol

    def _release(self, connection: _Connection) -> None:
        if self._closed:
            connection.abort()
            return
        connection.idle_since = self._loop.time()
        self._idle.setdefault(connection._endpoint, []).append(connection)
        if self._sweep is None:
            self._sweep = self._loop.call_later(self._idle_s, self._close_expired)

    def _close_expired(self) -> None:
        self._sweep = None
        oldest_allowed = self._loop.time() - self._idle_s
        for idle in self._idle.values():
            expired = 0
            while expired < len(idle) and idle[expired].idle_since <= oldest_allowed:
                expired += 1
            for connection in idle[:expired]:
                connection.abort()
            del idle[:expired]
        if any(self._idle.values()):
            self._sweep = self._loop.call_later(self._idle_s, self._close_expired)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
        self._idle.clear()


_tls: ssl.SSLContext | None = None


def _default_tls() -> ssl.SSLContext:
    # One context for every connection (building one loads the CA bundle: milliseconds).
    global _tls
    if _tls is None:
        _tls = ssl.create_default_context()
    return _tls

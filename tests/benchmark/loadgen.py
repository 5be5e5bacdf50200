"""A CPU-cheap HTTP/1.1 load client: one asyncio protocol per keep-alive connection, uvloop when present.

Why not aiohttp or httpx here: the load generator shares two cores with HAProxy, the replica and the
simulator, so every microsecond it spends per request is taken from what is being measured. This
client sends pre-encoded request bytes and parses only what it needs (status, Content-Length or
chunked framing, SSE event boundaries), at a few tens of microseconds per request; each run
reports the client's own CPU so a saturated client would show.

Clock: `time.monotonic()` (CLOCK_MONOTONIC on Linux, shared by every process on the machine), so
the times taken here can be compared with those the benchmark's simulator records.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

_CRLF2 = b"\r\n\r\n"


@dataclass(frozen=True)
class Target:
    """One request, encoded once and sent many times."""

    name: str
    host: str
    port: int
    path: str
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()
    stream: bool = False

    def encoded(self) -> bytes:
        payload = json.dumps(self.body, separators=(",", ":")).encode()
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"host: {self.host}:{self.port}",
            "content-type: application/json",
            f"content-length: {len(payload)}",
            *(f"{k}: {v}" for k, v in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


class ConnectionLost(Exception):
    pass


class Window:
    """The measured window of a run: events that reach the client while it is open are counted, whichever
    stream they belong to (a 1,000-event stream outlasts a short window, and would count for nothing, or
    for all of its events, if counted when it ends)."""

    __slots__ = ("events", "open")

    def __init__(self) -> None:
        self.open = False
        self.events = 0


class _Response:
    __slots__ = ("done", "events", "first_event", "status")

    def __init__(self) -> None:
        self.status = 0
        self.first_event = 0.0
        self.events = 0
        self.done: asyncio.Future[None] | None = None


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, window: Window | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.window = window
        self._buf = bytearray()
        self._response: _Response | None = None
        self._count_events = False
        self._state = 0  # 0 head, 1 body by length, 2 chunk size line, 3 chunk data, 4 chunk CRLF, 5 trailer
        self._remaining = 0
        self._last_byte = 0
        self._close_after = False
        self.closed = False

    # --- asyncio callbacks ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self._response
        if response is not None and response.done is not None and not response.done.done():
            response.done.set_exception(ConnectionLost(str(exc) if exc else "closed by peer"))

    def data_received(self, data: bytes) -> None:
        if self._response is None:
            return
        self._buf += data
        try:
            self._parse()
        except Exception as exc:  # a malformed response: fail the request, drop the connection
            self._finish(exc)
            if self.transport is not None:
                self.transport.close()

    # --- requests ---

    async def request(self, payload: bytes, count_events: bool) -> _Response:
        response = _Response()
        response.done = asyncio.get_running_loop().create_future()
        self._response, self._count_events = response, count_events
        self._state, self._last_byte, self._close_after = 0, 0, False
        self._buf.clear()
        assert self.transport is not None
        self.transport.write(payload)
        await response.done
        if self._close_after:
            self.transport.close()
            self.closed = True
        return response

    # --- parsing ---

    def _parse(self) -> None:
        buf = self._buf
        while True:
            state = self._state
            if state == 0:
                end = buf.find(_CRLF2)
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                del buf[: end + 4]
                assert self._response is not None
                self._response.status = int(head[9:12])
                self._close_after = b"\r\nconnection: close" in head
                if b"\r\ntransfer-encoding: chunked" in head:
                    self._state = 2
                else:
                    at = head.find(b"\r\ncontent-length:")
                    if at < 0:
                        raise ValueError("response without length")
                    line_end = head.find(b"\r\n", at + 2)
                    self._remaining = int(head[at + 17 : line_end if line_end > 0 else len(head)])
                    self._state = 1
                    if self._remaining == 0:
                        return self._finish(None)
            elif state == 1:
                if not buf:
                    return
                if self._take(buf):
                    return self._finish(None)
            elif state == 2:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                del buf[: end + 2]
                if size == 0:
                    self._state = 5
                else:
                    self._remaining, self._state = size, 3
            elif state == 3:
                if not buf:
                    return
                if self._take(buf):
                    self._state = 4
            elif state == 4:
                if len(buf) < 2:
                    return
                del buf[:2]
                self._state = 2
            else:  # trailer section: ends with an empty line
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    return self._finish(None)

    def _take(self, buf: bytearray) -> bool:
        """Consume up to `_remaining` bytes of the body (or of a chunk); True once that part is complete."""
        take = min(len(buf), self._remaining)
        self._body(buf, take)
        del buf[:take]
        self._remaining -= take
        return self._remaining == 0

    def _body(self, buf: bytearray, take: int) -> None:
        if not self._count_events:
            return
        response = self._response
        assert response is not None
        chunk = bytes(buf[:take])
        found = chunk.count(b"\n\n") + (1 if self._last_byte == 10 and chunk[:1] == b"\n" else 0)
        if found and not response.events:
            response.first_event = time.monotonic()
        response.events += found
        if self.window is not None and self.window.open:
            self.window.events += found
        self._last_byte = chunk[-1]

    def _finish(self, error: Exception | None) -> None:
        response, self._response = self._response, None
        if response is not None and response.done is not None and not response.done.done():
            if error is None:
                response.done.set_result(None)
            else:
                response.done.set_exception(error)


async def connect(host: str, port: int, window: Window | None = None) -> _Connection:
    loop = asyncio.get_running_loop()
    for attempt in range(20):
        try:
            _, protocol = await loop.create_connection(lambda: _Connection(window), host, port)
            return protocol
        except OSError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass
class Run:
    """What one measurement saw. Times are monotonic seconds."""

    target: str
    concurrency: int
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    latencies: list[float] = field(default_factory=list)  # request sent -> response complete
    first_events: list[float] = field(default_factory=list)  # request sent -> first SSE event
    first_event_at: list[float] = field(default_factory=list)  # absolute monotonic time of each first event
    events: int = 0  # of the completed streams (burst), or reaching the client within the window (closed loop)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # the meter's reading over the window

    @property
    def completed(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        fe = sorted(self.first_events)
        return {
            "target": self.target,
            "concurrency": self.concurrency,
            "completed": self.completed,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "wall_s": self.wall_s,
            "rps": self.completed / self.wall_s if self.wall_s else 0.0,
            "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
            "ttfe_p50_ms": percentile(fe, 50) * 1e3 if fe else None,
            "ttfe_p99_ms": percentile(fe, 99) * 1e3 if fe else None,
            "events": self.events,
            "events_per_s": self.events / self.wall_s if self.wall_s else 0.0,
            "client_cpu": self.client_cpu_s / self.wall_s if self.wall_s else 0.0,
        }


def percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def _cpu() -> float:
    # This thread only: the event loop is the client; other threads of the process (a Ray driver's) are not.
    return time.thread_time()


class Meter(Protocol):
    def start(self) -> None: ...

    def stop(self) -> dict[str, float]: ...


async def closed_loop(
    target: Target, concurrency: int, duration_s: float, warmup_s: float = 0.5, meter: Meter | None = None
) -> Run:
    """`concurrency` clients, each sending its next request as soon as the last one is answered.

    Only requests sent after the warm-up and answered before the deadline count; the rate is over
    that window, and so are the events counted (as they arrive) and `meter`'s reading (started and
    stopped when the window opens and closes)."""
    payload = target.encoded()
    window = Window()
    connections = list(await asyncio.gather(*(connect(target.host, target.port, window) for _ in range(concurrency))))
    run = Run(target.name, concurrency)
    loop = asyncio.get_running_loop()
    loop_start = time.monotonic()
    begin = loop_start + warmup_s
    deadline = begin + duration_s

    def open_window() -> None:
        window.open = True
        if meter is not None:
            meter.start()

    def close_window() -> None:
        window.open = False
        if meter is not None:
            run.cpu = meter.stop()

    loop.call_later(warmup_s, open_window)
    closing = loop.call_later(deadline - time.monotonic(), close_window)

    async def client(index: int) -> None:
        conn = connections[index]
        while True:
            sent = time.monotonic()
            if sent >= deadline:
                return
            if conn.closed:
                conn = connections[index] = await connect(target.host, target.port, window)
            try:
                response = await conn.request(payload, target.stream)
            except (ConnectionLost, OSError, ValueError):
                if sent >= begin:
                    run.errors += 1
                conn.closed = True
                continue
            done = time.monotonic()
            if sent < begin or done > deadline:
                continue
            run.statuses[response.status] = run.statuses.get(response.status, 0) + 1
            if response.status != 200:
                run.errors += 1
                continue
            run.latencies.append(done - sent)
            if target.stream and response.events:
                run.first_events.append(response.first_event - sent)
                run.first_event_at.append(response.first_event)

    cpu = _cpu()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    run.client_cpu_s = _cpu() - cpu
    run.wall_s = deadline - begin
    if window.open:  # every client saw the deadline before its timer fired
        closing.cancel()
        close_window()
    run.events = window.events
    # CPU over the whole loop (warm-up included), as a share of the measured window's length.
    run.client_cpu_s *= duration_s / (time.monotonic() - loop_start)
    for conn in connections:
        if conn.transport is not None:
            conn.transport.close()
    return run


async def burst(target: Target, n: int, timeout_s: float = 60.0, on_sent: Callable[[float], None] | None = None) -> Run:
    """`n` requests on `n` connections opened beforehand, all sent at once; waits for every answer. `on_sent`
    hears the moment they were sent (monotonic)."""
    payload = target.encoded()
    connections: list[_Connection] = []
    while len(connections) < n:  # open in batches: a listen backlog is finite
        batch = min(256, n - len(connections))
        connections += await asyncio.gather(*(connect(target.host, target.port) for _ in range(batch)))
    run = Run(target.name, n)

    async def one(conn: _Connection) -> None:
        sent = time.monotonic()
        try:
            response = await conn.request(payload, target.stream)
        except (ConnectionLost, OSError, ValueError):
            run.errors += 1
            return
        run.statuses[response.status] = run.statuses.get(response.status, 0) + 1
        if response.status != 200:
            run.errors += 1
            return
        run.latencies.append(time.monotonic() - sent)
        run.events += response.events

    cpu, start = _cpu(), time.monotonic()
    if on_sent is not None:
        on_sent(start)
    await asyncio.wait_for(asyncio.gather(*(one(c) for c in connections)), timeout_s)
    run.wall_s = time.monotonic() - start
    run.client_cpu_s = _cpu() - cpu
    for conn in connections:
        if conn.transport is not None:
            conn.transport.close()
    return run


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_async(coro: Any) -> Any:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coro)

"""One HTTP exchange over raw ASGI: read the body, wait while watching for the client to leave, respond.

Raw ASGI rather than Starlette responses, so the simulator decides exactly when a response has ended,
notices a departed client during any wait, and can cut a response short on purpose.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Send

Headers = list[tuple[bytes, bytes]]


class ClientGone(Exception):
    """The client closed the connection before the response ended."""


class Exchange:
    __slots__ = ("_receive", "_send", "_watcher", "status")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._watcher: asyncio.Future[None] | None = None
        self.status: int | None = None

    async def read_body(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    def watch(self) -> None:
        """Start noticing disconnects (call after the body has been read); idempotent."""
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._until_disconnect())

    async def pause(self, seconds: float | None) -> None:
        """Wait `seconds`, or until the client leaves when None; raise ClientGone as soon as it does."""
        self.watch()
        assert self._watcher is not None
        done, _ = await asyncio.wait((self._watcher,), timeout=seconds)
        if done:
            raise ClientGone

    def ensure_connected(self) -> None:
        if self._watcher is not None and self._watcher.done():
            raise ClientGone

    async def start(self, status: int, headers: Headers) -> None:
        self.status = status
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, data: bytes, *, more: bool) -> None:
        try:
            await self._send({"type": "http.response.body", "body": data, "more_body": more})
        except OSError as error:
            # Servers implementing ASGI spec 2.4 raise on a send after the client left.
            raise ClientGone from error

    async def respond(self, status: int, body: bytes, headers: Headers) -> None:
        await self.start(status, headers)
        await self.write(body, more=False)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    async def _until_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

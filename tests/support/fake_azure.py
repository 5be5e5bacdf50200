"""A local HTTP server that answers like Azure from a script, for the Azure client's tests."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(
    status: int = 200, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> web.Response:
    payload = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
    return web.Response(
        status=status, body=payload, headers=headers, content_type=None if raw is not None else "application/json"
    )


def sse(*frames: Any) -> bytes:
    return b"".join(f"data: {f if isinstance(f, str) else json.dumps(f)}\n\n".encode() for f in frames)


class FakeAzure:
    """Serves `handler` on a free local port; `requests` records (path with query, headers, body) of each call."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self._handler = handler
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path_qs, dict(request.headers), await request.read()))
        return await self._handler(request)

    async def __aenter__(self) -> FakeAzure:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def script(*answers: Callable[[], web.StreamResponse]) -> Handler:
    """Answer each call with the next of `answers` (the last one repeats)."""
    queue = list(answers)

    async def handler(request: web.Request) -> web.StreamResponse:
        return (queue.pop(0) if len(queue) > 1 else queue[0])()

    return handler

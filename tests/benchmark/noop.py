"""The floor: a Serve app with our routes that does no work, deployed under the same flags as ours.

It reads and parses the JSON body (as ours must) and answers with a fixed object; a streaming
request gets `[sim:tokens=N]` events (N from the input, else 1), each about the size of one of
our `response.output_text.delta` events. `[sim:sleep=S]` in the input holds the request S seconds
first (the floor for memory per request in flight). Whatever this app costs per request is what Serve,
the ingress and the HTTP stack cost; the difference to ours is ours. `gc_gen0_threshold` gives it
our replica's collector setting (server.GC_GEN0_THRESHOLD), to show what that setting is worth to
the floor itself.

Given `relay` (the simulator's host, port, chat path and key), a streaming request is instead relayed: the body
goes to the simulator as it came and each chunk of its answer goes out as it is read, with Serve's ASGI
calls and nothing else (no anyio task group, no parsing): the floor for the first event after the
upstream's first chunk, which ours must translate. With `"hand_over": true` in `relay` it yields its core
after the first chunk is written, as ours does (`serve_app.http.hand_over_cpu`): the two relays side by side
say what that one yield is worth.
"""

# No `from __future__ import annotations`: FastAPI reads route signatures at runtime.
import asyncio
import gc
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from ray import serve
from ray.serve import Application
from starlette.types import Receive, Scope, Send

from serve_app.http import hand_over_cpu

api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

_TOKENS = re.compile(r"\[sim:tokens=([0-9]+)\]")
_SLEEP = re.compile(r"\[sim:sleep=([0-9.]+)\]")
_ANSWER = json.dumps(
    {
        "id": "resp_0123456789abcdef0123456789abcdef",
        "object": "response",
        "created_at": 0,
        "status": "completed",
        "model": "gpt-4o",
        "output": [
            {
                "type": "message",
                "id": "msg_0123456789abcdef",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "hello", "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
    },
    separators=(",", ":"),
).encode()
_EVENT = (
    b"event: response.output_text.delta\ndata: "
    + json.dumps(
        {
            "type": "response.output_text.delta",
            "sequence_number": 0,
            "item_id": "msg_0123456789abcdef",
            "output_index": 0,
            "content_index": 0,
            "delta": " lorem",
            "logprobs": [],
        },
        separators=(",", ":"),
    ).encode()
    + b"\n\n"
)


def _events_wanted(text: str) -> int:
    found = _TOKENS.search(text)
    return int(found.group(1)) if found else 1


async def _events(n: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield _EVENT


class RelayedStream(Response):
    """The simulator's answer to `body`, its chunks written as they are read (HTTP/1.1 chunked coding undone)."""

    def __init__(self, relay: dict[str, Any], body: bytes) -> None:
        super().__init__()
        # Set here: Response's own would say `content-length: 0`.
        self.raw_headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        self._relay = relay
        self._body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = self._relay
        reader, writer = await asyncio.open_connection(relay["host"], relay["port"])
        try:
            writer.write(
                b"POST %s HTTP/1.1\r\nhost: %s\r\napi-key: %s\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s"
                % (relay["path"].encode(), relay["host"].encode(), relay["key"].encode(), len(self._body), self._body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            if b"transfer-encoding: chunked" not in head.lower():
                raise RuntimeError(f"the relay expects a chunked answer, got {head!r}")
            await send(
                {"type": "http.response.start", "status": int(head.split(b" ", 2)[1]), "headers": self.raw_headers}
            )
            first = True
            while size := int((await reader.readline()).split(b";", 1)[0], 16):
                chunk = await reader.readexactly(size + 2)
                await send({"type": "http.response.body", "body": chunk[:-2], "more_body": True})
                if first and relay.get("hand_over"):
                    hand_over_cpu()
                first = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            writer.close()


@serve.deployment(max_ongoing_requests=100_000)
@serve.ingress(api)
class NoopServer:
    def __init__(self, gc_gen0_threshold: int | None = None, relay: dict[str, Any] | None = None) -> None:
        if gc_gen0_threshold is not None:
            gc.set_threshold(gc_gen0_threshold, *gc.get_threshold()[1:])
        self._relay = relay

    @api.post("/v1/responses")
    async def responses(self, request: Request) -> Response:
        return await self._answer(request)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._answer(request)

    async def _answer(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw)
        if self._relay is not None and body.get("stream"):
            return RelayedStream(self._relay, raw)
        text = json.dumps(body.get("input") or body.get("messages") or "")
        if "[sim:sleep=" in text and (sleep := _SLEEP.search(text)):
            await asyncio.sleep(float(sleep.group(1)))
        if body.get("stream"):
            return StreamingResponse(_events(_events_wanted(text)), media_type="text/event-stream")
        return Response(content=_ANSWER, media_type="application/json")


def build_app(args: dict[str, Any]) -> Application:
    return NoopServer.bind(args.get("gc_gen0_threshold"), args.get("relay"))


def noop_app(name: str, gc_gen0_threshold: int | None = None, relay: dict[str, Any] | None = None) -> dict[str, Any]:
    """Serve config for the floor, with the deployment options our model server uses."""
    args: dict[str, Any] = {}
    if gc_gen0_threshold is not None:
        args["gc_gen0_threshold"] = gc_gen0_threshold
    if relay is not None:
        args["relay"] = relay
    return {
        "name": name,
        "route_prefix": f"/{name}",
        "import_path": "tests.benchmark.noop:build_app",
        "args": args,
        "deployments": [
            {
                "name": "NoopServer",
                "max_ongoing_requests": 100_000,
                "ray_actor_options": {"num_cpus": 0},
                "logging_config": {"enable_access_log": False},
            }
        ],
    }

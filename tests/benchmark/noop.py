"""The floor: a Serve app with our routes that does no work, deployed under the same flags as ours.

It reads and parses the JSON body (as ours must) and answers with a fixed object; a streaming
request gets `[sim:tokens=N]` events (N from the input, else 1), each about the size of one of
our `response.output_text.delta` events. `[sim:sleep=S]` in the input holds the request S seconds
first (the floor for memory per request in flight). Whatever this app costs per request is what Serve,
the ingress and the HTTP stack cost; the difference to ours is ours. `gc_gen0_threshold` gives it
our replica's collector setting (server.GC_GEN0_THRESHOLD), to show what that setting is worth to
the floor itself.
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


@serve.deployment(max_ongoing_requests=100_000)
@serve.ingress(api)
class NoopServer:
    def __init__(self, gc_gen0_threshold: int | None = None) -> None:
        if gc_gen0_threshold is not None:
            gc.set_threshold(gc_gen0_threshold, *gc.get_threshold()[1:])

    @api.post("/v1/responses")
    async def responses(self, request: Request) -> Response:
        return await self._answer(request)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._answer(request)

    async def _answer(self, request: Request) -> Response:
        body = json.loads(await request.body())
        text = json.dumps(body.get("input") or body.get("messages") or "")
        if "[sim:sleep=" in text and (sleep := _SLEEP.search(text)):
            await asyncio.sleep(float(sleep.group(1)))
        if body.get("stream"):
            return StreamingResponse(_events(_events_wanted(text)), media_type="text/event-stream")
        return Response(content=_ANSWER, media_type="application/json")


def build_app(args: dict[str, Any]) -> Application:
    return NoopServer.bind(args.get("gc_gen0_threshold"))


def noop_app(name: str, gc_gen0_threshold: int | None = None) -> dict[str, Any]:
    """Serve config for the floor, with the deployment options our model server uses."""
    return {
        "name": name,
        "route_prefix": f"/{name}",
        "import_path": "tests.benchmark.noop:build_app",
        "args": {} if gc_gen0_threshold is None else {"gc_gen0_threshold": gc_gen0_threshold},
        "deployments": [
            {
                "name": "NoopServer",
                "max_ongoing_requests": 100_000,
                "ray_actor_options": {"num_cpus": 0},
                "logging_config": {"enable_access_log": False},
            }
        ],
    }

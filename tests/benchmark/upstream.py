"""The benchmark's upstream: the project's Azure simulator, alone in its own process.

    python -m tests.benchmark.upstream --port 9001 --config '{"latency_s": 2, "ttft_s": 2}'

Its own process so that it shares no GIL with the load client or the driver. One addition: a
thin ASGI wrapper notes the CLOCK_MONOTONIC time at which each event stream's first chunk is
handed to the socket, and `GET /bench/marks` returns (and forgets) those times. With one client
sending one stream at a time, the i-th mark belongs to the i-th stream, so the benchmark can say
how long after the upstream's first chunk our server's first event reaches the client.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.simulator import SimulatorConfig, create_app

SIM_KEY = "sim-key"


class FirstChunkMarks:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._marks: list[float] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/bench/marks":
            body = json.dumps(self._marks).encode()
            self._marks = []
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        streaming = marked = False

        async def marking_send(message: Message) -> None:
            nonlocal streaming, marked
            if message["type"] == "http.response.start":
                streaming = any(
                    k == b"content-type" and v.startswith(b"text/event-stream") for k, v in message["headers"]
                )
            elif streaming and not marked and message.get("body"):
                marked = True
                self._marks.append(time.monotonic())
            await send(message)

        await self._app(scope, receive, marking_send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", default="{}", help="SimulatorConfig fields as JSON")
    options = parser.parse_args()
    fields: dict[str, Any] = {"api_keys": [SIM_KEY], **json.loads(options.config)}
    app = FirstChunkMarks(create_app(SimulatorConfig.model_validate(fields)))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=options.port,
        log_level="warning",
        access_log=False,
        backlog=8192,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()

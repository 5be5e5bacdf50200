"""Helpers for tests that talk to the simulator: an in-process client, request paths, an SSE reader."""

from __future__ import annotations

import json
from typing import Any

import httpx
from starlette.types import ASGIApp

DEFAULT_API_KEY = "sim-key"
V1_PATH = "/openai/v1/chat/completions"


def classic_path(deployment: str = "gpt-4o", api_version: str = "2024-10-21") -> str:
    return f"/openai/deployments/{deployment}/chat/completions?api-version={api_version}"


def in_process_client(app: ASGIApp, *, api_key: str | None = DEFAULT_API_KEY) -> httpx.AsyncClient:
    """A client calling `app` directly, no sockets; responses (streams included) arrive whole."""
    headers = {} if api_key is None else {"api-key": api_key}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://simulator", headers=headers)


def sse_data(body: str) -> list[Any]:
    """The `data:` payload of each server-sent event, JSON-decoded except the final `[DONE]`."""
    events = []
    for block in body.split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: "), f"not an SSE data frame: {block!r}"
        data = block.removeprefix("data: ")
        events.append(data if data == "[DONE]" else json.loads(data))
    return events

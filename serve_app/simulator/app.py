"""The simulator's ASGI app: Azure's Chat Completions routes plus the /sim/ admin routes."""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import errors
from .admin import admin_routes
from .chat import ChatCompletionsEndpoint
from .config import SimulatorConfig
from .ratelimit import Clock
from .state import SimulatorState


def create_app(config: SimulatorConfig | None = None, *, clock: Clock = time.monotonic) -> Starlette:
    """A fresh simulator; its state is reachable as `app.state.simulator` (a SimulatorState).

    `clock` drives the rate-limit windows only, so tests can move quota time by hand.
    """
    state = SimulatorState(config or SimulatorConfig(), clock)
    routes = [
        Route(
            "/openai/deployments/{deployment}/chat/completions",
            ChatCompletionsEndpoint(state, classic=True),
            methods=["POST"],
        ),
        Route("/openai/v1/chat/completions", ChatCompletionsEndpoint(state, classic=False), methods=["POST"]),
        *admin_routes(state),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _azure_http_error})
    app.state.simulator = state
    return app


async def _azure_http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    reply = errors.status_reply(error.status_code, None)
    return JSONResponse(reply.body, reply.status, headers=error.headers)

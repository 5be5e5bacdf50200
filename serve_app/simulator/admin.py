"""Runtime control under /sim/: counters, configuration, injected faults, recorded requests."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import errors
from .faults import Fault
from .state import SimulatorState

_FAULTS = TypeAdapter(Fault | list[Fault])


def admin_routes(state: SimulatorState) -> list[Route]:
    async def stats(_: Request) -> JSONResponse:
        return JSONResponse(state.stats.snapshot())

    async def reset(_: Request) -> JSONResponse:
        state.reset()
        return JSONResponse(state.stats.snapshot())

    async def show_config(_: Request) -> JSONResponse:
        return JSONResponse(state.config.model_dump(mode="json"))

    async def update_config(request: Request) -> JSONResponse:
        patch = await _json(request)
        if not isinstance(patch, dict):
            return _bad_request("Expected a JSON object of configuration fields.")
        try:
            state.configure(state.config.patched(patch))
        except ValidationError as problem:
            return _bad_request(str(problem))
        return JSONResponse(state.config.model_dump(mode="json"))

    async def faults(request: Request) -> JSONResponse:
        if request.method == "POST":
            try:
                added = _FAULTS.validate_python(await _json(request))
            except ValidationError as problem:
                return _bad_request(str(problem))
            state.faults.add(added if isinstance(added, list) else [added])
        elif request.method == "DELETE":
            state.faults.clear()
        return JSONResponse({"pending": state.faults.pending()})

    async def recent_requests(_: Request) -> JSONResponse:
        return JSONResponse({"requests": list(state.recent_requests)})

    return [
        Route("/sim/stats", stats, methods=["GET"]),
        Route("/sim/reset", reset, methods=["POST"]),
        Route("/sim/config", show_config, methods=["GET"]),
        Route("/sim/config", update_config, methods=["POST"]),
        Route("/sim/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/sim/requests", recent_requests, methods=["GET"]),
    ]


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def _bad_request(message: str) -> JSONResponse:
    reply = errors.invalid_request(message)
    return JSONResponse(reply.body, reply.status)

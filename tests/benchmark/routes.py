"""What the ingress's route layer costs per call, in-process: why our routes are Starlette's (http.openai_app).

    python -m tests.benchmark.routes [--n 20000] [--out F]   (default: tests/benchmark/RESULTS_routes_py3XX.md)

One endpoint (reads the body, answers a small JSON with a header, as ours do) called straight through ASGI, no
sockets, no Ray, in three apps, interleaved in rounds:

- `FastAPI route + Depends`: how Serve's class-based view serves a route method of an `@serve.ingress(app)`
  class. It turns the method into a FastAPI route whose `self` is an async dependency returning the replica's
  instance (ray.serve._private.http_util.make_fastapi_class_based_view); here the dependency returns a plain
  object, since no replica runs. Our routes were served this way up to commit 88430e7.
- `Starlette route in FastAPI` (as shipped): `http.openai_app` with the endpoint as a Starlette `Route`, bound
  to the instance.
- `Starlette app`: the same route in a bare Starlette app with the same middleware (`LastResort`), for scale.

Prints µs per call and writes them to `--out` with the Python version.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp

from serve_app.http import LastResort, json_response, openai_app

from .common import ROOT

BODY = b'{"model":"gpt-4o","input":"hello"}'


class Instance:
    async def responses(self, request: Request) -> Response:
        await request.body()
        return json_response({"object": "response", "status": "completed"}, headers={"x-request-id": "abc"})


INSTANCE = Instance()


async def current_instance() -> Instance:
    return INSTANCE


def fastapi_depends() -> FastAPI:
    api = openai_app([], request_id=lambda: "id")

    @api.post("/v1/responses")
    async def responses(request: Request, self: Instance = Depends(current_instance)) -> Response:  # noqa: B008
        return await self.responses(request)

    return api


def starlette_in_fastapi() -> FastAPI:
    return openai_app([Route("/v1/responses", INSTANCE.responses, methods=["POST"])], request_id=lambda: "id")


def starlette_app() -> Starlette:
    app = Starlette(routes=[Route("/v1/responses", INSTANCE.responses, methods=["POST"])])
    app.add_middleware(LastResort, request_id=lambda: "id")
    return app


APPS = {
    "FastAPI route + Depends (Serve's class-based view)": fastapi_depends,
    "Starlette route in FastAPI (as shipped)": starlette_in_fastapi,
    "Starlette app": starlette_app,
}


async def per_call_us(app: ASGIApp, n: int) -> float:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/responses",
        "raw_path": b"/v1/responses",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), receive, send)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    if statuses != [200] * n:
        raise RuntimeError(f"unexpected statuses: {sorted(set(statuses))}")
    return elapsed / n * 1e6


async def measure(n: int, rounds: int) -> dict[str, list[float]]:
    apps = {name: build() for name, build in APPS.items()}
    for app in apps.values():
        await per_call_us(app, 500)  # warm-up
    results: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            results[name].append(await per_call_us(app, n))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="calls per app and round")
    parser.add_argument("--rounds", type=int, default=3)
    version = "".join(platform.python_version_tuple()[:2])
    parser.add_argument("--out", default=str(ROOT / f"tests/benchmark/RESULTS_routes_py{version}.md"))
    options = parser.parse_args()
    results = asyncio.run(measure(options.n, options.rounds))
    lines = [
        "# The route layer, per call in-process (tests/benchmark/routes.py)",
        "",
        f"Python {platform.python_version()}; {options.rounds} interleaved rounds of {options.n:,} calls per app; "
        "the median round.",
        "",
        "| app | µs per call |",
        "|---|---:|",
        *(f"| {name} | {sorted(us)[len(us) // 2]:.1f} |" for name, us in results.items()),
        "",
    ]
    print("\n".join(lines))
    with open(options.out, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()

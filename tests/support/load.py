"""Load on the real app over HTTP: a batch of requests at bounded concurrency, or steady load until stopped."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx

HI = {"input": "hi"}


def _client(concurrency: int, timeout_s: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout_s, limits=httpx.Limits(max_connections=concurrency))


async def fire(
    url: str, bodies: list[dict[str, Any]], concurrency: int, timeout_s: float = 60
) -> list[tuple[int, float, httpx.Response]]:
    """POST every body with at most `concurrency` in flight; (status, seconds, response) for each, in order."""
    gate = asyncio.Semaphore(concurrency)
    async with _client(concurrency, timeout_s) as client:

        async def one(body: dict[str, Any]) -> tuple[int, float, httpx.Response]:
            async with gate:
                started = time.monotonic()
                response = await client.post(url, json=body)
                return response.status_code, time.monotonic() - started, response

        return await asyncio.gather(*(one(body) for body in bodies))


# The status recorded for a request that got no HTTP answer (refused, reset, timed out).
NO_ANSWER = 0


class Load:
    """Steady load (`concurrency` clients, each POSTing `HI` again as soon as answered) on a background
    thread until stopped; records every status (`NO_ANSWER` for a connection that failed) with when it
    came back, and what came back with each failure."""

    def __init__(self, url: str, concurrency: int) -> None:
        self.statuses: list[int] = []
        self.answered_at: list[float] = []  # time.monotonic() of each status, in the same order
        self.failures: list[str] = []
        self._url, self._concurrency = url, concurrency
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with _client(self._concurrency, 120) as client:

            async def worker() -> None:
                while not self._stop.is_set():
                    try:
                        response = await client.post(self._url, json=HI)
                    except httpx.TransportError as error:
                        self._record(NO_ANSWER, f"no answer: {error!r}")
                        await asyncio.sleep(0.05)  # a refused connection fails at once: no busy loop
                        continue
                    # The headers tell who answered: HAProxy itself, Serve's fallback proxy or a replica.
                    failure = f"{response.status_code} {dict(response.headers)} {response.text[:200]}"
                    self._record(response.status_code, failure if response.status_code != 200 else None)

            await asyncio.gather(*(worker() for _ in range(self._concurrency)))

    def _record(self, status: int, failure: str | None) -> None:
        self.statuses.append(status)
        self.answered_at.append(time.monotonic())
        if failure is not None:
            self.failures.append(failure)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

"""The HTTP transport decision: httpx's own pool, httpx over its aiohttp transport, aiohttp alone, and ours.

    python -m tests.benchmark.transport --sim URL --n 2000 --out F

N concurrent Chat Completions calls against a simulator that answers after 2 s, in this process
alone (nothing else on its event loop), each variant with a fresh client. What is measured is
this process's CPU time per call and the wall time:

- all N calls on N connections (no waiting): httpx's pool, httpx over the aiohttp transport, aiohttp
  alone (a session's post, read and JSON parse: what AzureClient did before http_client.py), and
  `AzureClient` as shipped (http_client.py, with its retry loop, deadline and error mapping);
- N calls (the smallest N) with room for only N/4 at a time: waiting inside httpx's pool vs
  waiting in our pool of upstreams (`Pool` of one, N/4 slots) in front of `AzureClient` (the
  product's arrangement).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from contextlib import nullcontext
from typing import Any

import httpx
from pydantic import SecretStr

from serve_app.azure import AzureClient
from serve_app.config import Retries, Timeouts

from .common import pool_of_one, pool_slot
from .loadgen import run_async

BODY = {"messages": [{"role": "user", "content": "hello"}]}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


URL_PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


def _httpx_caller(sim: str, pool: int | None) -> tuple[Any, Any]:
    if pool is not None:
        transport: Any = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        )
    else:
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=httpx.Limits(max_connections=100_000))
    client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(120), headers={"api-key": "sim-key"})

    async def call() -> None:
        response = await client.post(sim + URL_PATH, json=BODY)
        response.raise_for_status()

    return call, client.aclose


def _aiohttp_caller(sim: str) -> tuple[Any, Any]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
        headers={"api-key": "sim-key", "content-type": "application/json"},
    )
    payload = json.dumps(BODY).encode()

    async def call() -> None:
        async with session.post(sim + URL_PATH, data=payload) as response:
            response.raise_for_status()
            json.loads(await response.read())

    return call, session.close


def _azure_caller(sim: str) -> tuple[Any, Any]:
    client = AzureClient(
        base_url=sim,
        deployment="gpt-4o",
        query={"api-version": "2024-10-21"},
        api_key=SecretStr("sim-key"),
        timeouts=Timeouts(connect_s=120, read_s=120, total_s=300),
        retries=Retries(max_attempts=1),
    )

    async def call() -> None:
        await client.complete(BODY)

    return call, client.aclose


async def variant(
    name: str, sim: str, n: int, *, kind: str, pool: int | None = None, slots: int | None = None
) -> dict[str, Any]:
    callers = {"ours": _azure_caller, "aiohttp": _aiohttp_caller}
    call, close = callers[kind](sim) if kind in callers else _httpx_caller(sim, pool)
    gate = pool_of_one(None, slots) if slots is not None else None
    errors = 0

    async def one() -> None:
        nonlocal errors
        try:
            async with pool_slot(gate) if gate is not None else nullcontext():
                await call()
        except Exception:
            errors += 1

    await asyncio.gather(*(one() for _ in range(4)))  # a first connection, code paths used once
    cpu, start = _cpu(), time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    wall, used = time.monotonic() - start, _cpu() - cpu
    await close()
    result = {
        "variant": name,
        "n": n,
        "errors": errors,
        "wall_s": wall,
        "cpu_s": used,
        "cpu_ms_per_call": used / n * 1e3,
    }
    print(
        f"  transport {name:44} n={n}: {used / n * 1e3:6.2f} ms CPU per call, wall {wall:5.2f} s, errors {errors}",
        file=sys.stderr,
        flush=True,
    )
    return result


async def measure(sim: str, sizes: list[int], waiting: bool) -> list[dict[str, Any]]:
    results = []
    for n in sizes:
        results.append(await variant(f"httpx pool, {n} connections", sim, n, kind="httpx", pool=n))
        results.append(await variant(f"httpx over aiohttp transport, {n} connections", sim, n, kind="httpx"))
        results.append(await variant(f"aiohttp alone, {n} connections", sim, n, kind="aiohttp"))
        results.append(await variant(f"AzureClient (http_client), {n} connections", sim, n, kind="ours"))
    if not waiting:
        return results
    n = min(sizes)
    results.append(
        await variant(f"httpx pool of {n // 4}, {n - n // 4} waiting in it", sim, n, kind="httpx", pool=n // 4)
    )
    results.append(
        await variant(
            f"Pool of one, {n // 4} slots + AzureClient, {n - n // 4} waiting in it",
            sim,
            n,
            kind="ours",
            slots=n // 4,
        )
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sim", required=True, help="simulator URL (answers after 2 s)")
    parser.add_argument("--sizes", default="1000,2000", help="concurrent calls per run, comma-separated")
    parser.add_argument("--no-waiting", action="store_true", help="skip the runs with calls waiting for a connection")
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    results = run_async(measure(options.sim, [int(s) for s in options.sizes.split(",")], not options.no_waiting))
    with open(options.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

"""Stopping a locally served set of applications without cutting a call: `python -m serve_app serve` on exit.

Serve's own shutdown stops the HTTP front with the replicas, so calls in flight through it are
reset, and it waits out each replica's draining period even when idle. So first the model servers
are told, through their `user_config` (the same replicas, reconfigured), to answer new calls with
a 503 and `Retry-After`; then the budget ledgers are watched until no replica reports a call in
flight, for at most a bound; then Ray is stopped, with nothing left to wait for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import cluster
from .budget import LEDGER_NAMESPACE, ledger_name
from .serve_config import DEPLOYMENT

POLL_S = 0.25
# Replicas report calls in flight twice a second; two quiet reports in a row mean nothing is left.
QUIET_S = 1.0


def draining(apps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same applications, each model server's deployment told to accept no new calls."""
    return [
        {
            **app,
            "deployments": [
                {**d, "user_config": {**d["user_config"], "draining": True}} if d.get("name") == DEPLOYMENT else d
                for d in app.get("deployments", ())
            ],
        }
        for app in apps
    ]


def in_flight(apps: Sequence[dict[str, Any]]) -> int:
    """Calls in flight (and so also any waiting behind them) over every model server, as their ledgers last heard."""
    import ray

    total = 0
    for app in apps:
        if any(d.get("name") == DEPLOYMENT for d in app.get("deployments", ())):
            ledger = ray.get_actor(ledger_name(app["name"], DEPLOYMENT), namespace=LEDGER_NAMESPACE)
            state: Any = ray.get(ledger.state.remote(), timeout=5)
            total += sum(member["in_flight"] for member in state["members"].values())
    return total


def wait_drained(
    busy: Callable[[], int], bound_s: float, cut_short: threading.Event, clock: Callable[[], float] = time.monotonic
) -> bool:
    """Wait until `busy()` has been 0 for `QUIET_S`, at most `bound_s` or until `cut_short`; whether it drained."""
    deadline = clock() + bound_s
    quiet_since: float | None = None
    while not cut_short.is_set() and clock() < deadline:
        now = clock()
        if busy():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= QUIET_S:
            return True
        cut_short.wait(POLL_S)
    return False


def stop(apps: Sequence[dict[str, Any]], bound_s: float, cut_short: threading.Event) -> None:
    import ray

    try:
        cluster.deploy(draining(apps))
        if wait_drained(lambda: in_flight(apps), bound_s, cut_short):
            print("All calls in flight finished.", flush=True)
        else:
            print(f"Stopping with {in_flight(apps)} calls still in flight.", flush=True)
    finally:
        ray.shutdown()

"""The model server deployment's numbers, each written once, and those that follow from the longest call.

A call may last `timeouts.total_s` (retries and their waits included). Three promises rest on it,
so they are derived from it here instead of written beside it:

- a replica that is scaled down or upgraded drains its calls: Serve's `graceful_shutdown_timeout_s`
  is `shutdown_s(total_s)`, the longest call plus a margin;
- an HAProxy reload does not cut a call: the old HAProxy process is stopped
  `RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S` after a reload, `hard_stop_s(total_s)`, which also outlasts
  a replica's drain (a reload can come while a replica drains);
- Serve hands every request to the replica at once: `MAX_ONGOING_REQUESTS` is far above any share
  plus queue, since the replica's own pool of upstreams is the queue (server.py, serve_config.py).

The deployment decorator (server.py), the generated Serve configs and their check (serve_config.py),
the Ray start-up environment (cluster.py) and the k8s manifests' drift test all read them from here.
No imports: config.py takes its defaults from here too.
"""

from __future__ import annotations

import math

# `Timeouts.total_s`: the whole of one call.
DEFAULT_TOTAL_S = 1200.0
# `user_config.max_queued_requests`: requests that may wait for an upstream slot, per replica.
DEFAULT_MAX_QUEUED_REQUESTS = 5000
MAX_ONGOING_REQUESTS = 100_000

# Stopping is not instantaneous: the last response still has to reach the client.
SHUTDOWN_MARGIN_S = 60.0
HARD_STOP_MARGIN_S = 60.0
# The variable Ray reads, when it starts, for HAProxy's hard stop (whole seconds).
HARD_STOP_ENV = "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"


def shutdown_s(total_s: float) -> float:
    """`graceful_shutdown_timeout_s` for calls that may last `total_s`."""
    return total_s + SHUTDOWN_MARGIN_S


def hard_stop_s(total_s: float) -> int:
    """HAProxy's hard stop after a reload, for calls that may last `total_s`: past a replica's drain."""
    return math.ceil(shutdown_s(total_s) + HARD_STOP_MARGIN_S)


DEFAULT_SHUTDOWN_S = shutdown_s(DEFAULT_TOTAL_S)

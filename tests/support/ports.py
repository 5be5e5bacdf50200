"""Local ports for the servers and Ray instances the tests start."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_handed_out: set[int] = set()  # bound by nobody yet, perhaps, but promised: never promised twice


def unclaimed_port() -> int:
    """A port for a listener that binds it later (HAProxy's stats and metrics), free now on every address, and
    out of the ranges others take ports from meanwhile: the kernel's for outgoing connections (a benchmark's
    HAProxy once failed to start on a port `free_port` had given) and Serve's for replicas (from 30000)."""
    try:
        top = min(30_000, int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return free_port()
    for port in random.sample(range(max(1024, top - 10_000), top), 100):
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    return free_port()


# Away from the default range (30000-31000), which a `make run` or a benchmark may be using.
_port_blocks = iter(range(31000, 39000, 500))


def isolated_ray_env() -> dict[str, str]:
    """The environment for one more Ray instance on this machine, apart from every other one.

    A new instance, even when a `ray start` elsewhere left its address in Ray's temp folder (which
    `ray.init()` would otherwise join).

    HAProxy's stats and metrics ports are fixed. And each Ray hands replica ports out of one range,
    keeping a stopped replica's port from its own new replicas, but not from another Ray's: a port
    freed by one instance and bound by another can receive the first instance's traffic, which the
    other answers 404."""
    http = next(_port_blocks)
    return {
        "RAY_ADDRESS": "local",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(unclaimed_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(unclaimed_port()),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http + 499),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(http + 11000),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(http + 11499),
    }

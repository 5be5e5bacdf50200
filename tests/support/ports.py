"""Local ports for the servers and Ray instances the tests start."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http + 499),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(http + 11000),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(http + 11499),
    }

"""Starting a local Ray + Serve and deploying Serve configs to it: used by the CLI, the tests and the benchmark.

Configs are applied declaratively, the way `serve deploy` and KubeRay apply them (the same
controller call), because that is the only path on which Serve updates `user_config` and replica
counts without restarting replicas; `serve.run` always starts a new code version.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .deployment_constants import DEFAULT_TOTAL_S, HARD_STOP_ENV, hard_stop_s

# "haproxy" (the default, chosen by measurement: README, "Performance") puts HAProxy in front of
# each replica's own HTTP server; "proxy" is Serve's classic proxy.
INGRESSES = ("haproxy", "proxy")

# What HAProxy itself answers when it cannot get an answer from a replica, in the OpenAI envelope with
# a retryable status, instead of Serve's plain-text 500 for all three: a replica that closed the
# connection after part of the answer, or whose request could not be sent again (502); no replica up,
# or every retry failed (503); a replica silent past a server timeout, when one is set (504).
_HAPROXY_ERRORS = {
    502: ("server_error", "replica_unavailable", 1, "The model server replica stopped before it answered."),
    503: ("server_error", "service_unavailable", 5, "No model server replica can take the request right now."),
    504: ("server_error", "gateway_timeout", 1, "The model server replica did not answer in time."),
}


def _haproxy_defaults() -> str:
    """Directives for the `defaults` section of the HAProxy config Serve generates, which inherit to
    every backend.

    Serve renders RAY_SERVE_HAPROXY_BALANCE_ALGORITHM verbatim as the last line of `defaults`, after
    its own `option splice-request` and error files, so what follows the algorithm there overrides
    them (tests/test_cluster.py checks the config with HAProxy's own parser):

    - The whole request is buffered before a replica is picked, not spliced through, so HAProxy
      still has it when the replica dies before answering and can send it to another
      (RAY_SERVE_HAPROXY_RETRY_ON `empty-response`). Without it the retry setting is accepted and
      does nothing: each request waiting in a killed replica's queue failed.
    - HAProxy's own errors in the OpenAI envelope (`_HAPROXY_ERRORS`)."""
    lines = ["leastconn", "no option splice-request", "option http-buffer-request"]
    for status, (kind, code, retry_after_s, message) in _HAPROXY_ERRORS.items():
        body = json.dumps(
            {"error": {"message": message + " Retry the request.", "type": kind, "param": None, "code": code}}
        )
        assert "'" not in body  # HAProxy's single-quoted string has no escapes
        lines.append(
            f"http-error status {status} content-type application/json string '{body}' hdr retry-after {retry_after_s}"
        )
    return "\n    ".join(lines)


def ingress_env(ingress: str, longest_call_s: float = DEFAULT_TOTAL_S) -> dict[str, str]:
    """Serve's process-wide switches for `ingress`, read when Ray starts its workers, for calls that
    may last `longest_call_s` (the largest `timeouts.total_s` to be served)."""
    if ingress not in INGRESSES:
        raise ValueError(f"unknown ingress {ingress!r}; one of {', '.join(INGRESSES)}")
    if ingress == "proxy":
        return {}
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        # HAProxy reloads whenever anything in the cluster changes, and cuts connections older
        # than this from the old process: it must outlast the longest call and a replica's drain.
        HARD_STOP_ENV: str(hard_stop_s(longest_call_s)),
        # A replica new to HAProxy counts as down until two health checks pass; meanwhile its traffic
        # takes Serve's fallback proxy (slower, and a client leaving there does not cancel the call).
        # Checking every second instead of every 5 s shortens that window after each deploy or scale.
        "RAY_SERVE_HAPROXY_HEALTH_CHECK_INTER": "1s",
        # A replica that dies closes the connections of every request queued in it, none of them sent
        # to Azure: HAProxy sends each again, to another replica. (Its calls already at Azure are sent
        # again too: HAProxy cannot tell them apart, and their answers are lost with the replica anyway.)
        "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
        "RAY_SERVE_HAPROXY_RETRIES": "3",
        "RAY_SERVE_HAPROXY_BALANCE_ALGORITHM": _haproxy_defaults(),
    }


_routes_url: str | None = None
_haproxy = False  # whether this Ray runs Serve's HAProxy ingress (whichever way the flag was set)


def start(
    *,
    port: int,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    num_cpus: int | None = None,
    ingress: str = "haproxy",
    longest_call_s: float = DEFAULT_TOTAL_S,
) -> None:
    """Start Ray and Serve in this process. `env` reaches every Ray worker (keys, Serve flags);
    `longest_call_s` is the largest `timeouts.total_s` of the apps to be deployed."""
    import ray
    from ray import serve

    # Workers inherit the environment of the raylet this process starts, so set it first.
    os.environ.update(ingress_env(ingress, longest_call_s))
    os.environ.update(env or {})
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    serve.start(http_options={"host": host, "port": port})
    global _routes_url, _haproxy
    _routes_url = f"http://127.0.0.1:{port}/-/routes"
    _haproxy = os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"


def deploy(applications: Iterable[dict[str, Any]], *, timeout_s: float = 180.0) -> None:
    """Apply a Serve config's applications (replacing what was deployed) and wait until they run."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    apps = list(applications)
    client = _get_global_client()
    if client is None:  # it raises first, unless told not to
        raise RuntimeError("Serve is not running")
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": apps}))
    deadline = time.monotonic() + timeout_s
    wait_running([app["name"] for app in apps], timeout_s=timeout_s)
    wait_routed([app.get("route_prefix", "/") for app in apps], timeout_s=deadline - time.monotonic())
    if _haproxy:
        wait_ingress_settled([app["name"] for app in apps], timeout_s=deadline - time.monotonic())


def wait_running(names: Iterable[str], *, timeout_s: float) -> None:
    from ray import serve

    wanted = set(names)
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = {name: app for name, app in serve.status().applications.items() if name in wanted}
        failed = {name: app.message for name, app in statuses.items() if app.status == "DEPLOY_FAILED"}
        if failed:
            raise RuntimeError("deployment failed: " + "; ".join(f"{n}: {m}" for n, m in failed.items()))
        if len(statuses) == len(wanted) and all(app.status == "RUNNING" for app in statuses.values()):
            return
        if time.monotonic() > deadline:
            state = {name: str(app.status) for name, app in statuses.items()}
            raise TimeoutError(f"applications not running after {timeout_s:.0f} s: {state}")
        time.sleep(0.2)


def wait_routed(prefixes: Iterable[str], *, timeout_s: float) -> None:
    """Running is not yet reachable: the HTTP front (HAProxy reloads its config) routes apps a moment later."""
    import httpx

    wanted = set(prefixes)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if wanted <= set(httpx.get(_routes_url or "", timeout=5).json()):
                return
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"routes {sorted(wanted)} not served after {timeout_s:.0f} s")
        time.sleep(0.2)


# --- HAProxy, through its admin socket (one per node, under Serve's socket directory) ------------------


def haproxy_admin(command: str) -> str:
    import socket

    import ray
    from ray.serve._private.constants import RAY_SERVE_HAPROXY_SOCKET_PATH

    path = os.path.join(
        os.path.dirname(RAY_SERVE_HAPROXY_SOCKET_PATH),
        ray.get_runtime_context().get_node_id(),
        os.path.basename(RAY_SERVE_HAPROXY_SOCKET_PATH),
    )
    with socket.socket(socket.AF_UNIX) as admin:
        admin.connect(path)
        admin.sendall(command.encode() + b"\n")
        return b"".join(iter(lambda: admin.recv(65536), b"")).decode()


def wait_ingress_settled(apps: Iterable[str], *, quiet_s: float = 2.0, timeout_s: float = 60.0) -> None:
    """Wait until HAProxy has stopped reloading and routes each app to its replicas directly.

    After a reload a new replica counts as down until two health checks pass, and its traffic
    takes Serve's fallback proxy: slower, and a client leaving there does not cancel its call."""
    wanted = set(apps)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            info = haproxy_admin("show info").splitlines()
            uptime = int(next(line.split(":")[1] for line in info if line.startswith("Uptime_sec")))
            rows = [
                line.split(",") for line in haproxy_admin("show stat").splitlines() if line and not line.startswith("#")
            ]
            up = {
                row[0].removeprefix("http-") for row in rows if row[1].startswith("SERVE_REPLICA") and row[17] == "UP"
            }
            if uptime >= quiet_s and wanted <= up:
                return
        except (OSError, StopIteration, IndexError, ValueError):
            pass  # between two HAProxy processes
        if time.monotonic() > deadline:
            raise TimeoutError(f"HAProxy did not settle on {sorted(wanted)}")
        time.sleep(0.25)


def replica_url(app: str) -> str:
    """The HTTP address of an app's (first) replica: the hop HAProxy forwards to."""
    state = haproxy_admin(f"show servers state http-{app}")
    fields = next(line.split() for line in state.splitlines() if "SERVE_REPLICA" in line)
    return f"http://{fields[4]}:{fields[18]}/{app}/v1"


def stop() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it unannotated
    finally:
        ray.shutdown()

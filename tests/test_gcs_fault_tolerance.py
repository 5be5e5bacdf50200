"""Head failure with GCS fault tolerance: the GCS keeps its state in an external Redis, so killing it and
the Serve controller under load, then starting the GCS again (what KubeRay's new head pod does,
k8s/rayservice.yaml), costs no request, leaves the budget ledger as it was, and keeps the budget.

The GCS is killed with SIGKILL and restarted on the same port against the same Redis, the way Ray's
own GCS fault tolerance tests do it (ray._private.node.Node.kill_gcs_server / start_gcs_server); the
Serve controller, which lives on the head too, is SIGKILLed with it, and the restarted GCS brings it
back. The head's raylet is spared: on one machine it also runs the replicas, which on KubeRay run on
the workers and survive the head.

This needs a Ray cluster of the test's own (cluster_utils, with its own temp folder, so the machine's
default cluster address is never touched), so it runs in a pytest process of its own:
`make test-gcs-ft`, which also installs redis-server.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
from support.ledger import ledger_state
from support.load import Load
from support.ports import free_port, isolated_ray_env
from support.serve import KEY_ENV, SIM_KEY, Serve, sim_app
from support.sim_admin import SimAdmin
from support.waiting import wait_until

from serve_app import cluster
from serve_app.budget import LEASE_S, LEDGER_NAMESPACE, ledger_name
from serve_app.serve_config import DEPLOYMENT
from serve_app.simulator import BackgroundSimulator

pytestmark = pytest.mark.gcs_ft

REQUIRED = os.environ.get("SERVE_APP_REQUIRE_REDIS") == "1"  # set by make test-gcs-ft: a missing Redis fails
APP = "gcs_model"
BUDGET, REPLICAS, CLIENTS = 4, 2, 16
# Longer than a ledger lease (10 s) and a replica's fence (8 s): anything on the request path or in the
# budget's heartbeat that needed the GCS would stop within it.
OUTAGE_S = 15.0
# Ray's default is 60 s: raylets and workers that cannot reach the GCS for that long exit.
RECONNECT_TIMEOUT_S = 60


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        reason = "redis-server is not installed (Debian: apt-get install redis-server; make test-gcs-ft does it)"
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def resp(*words: str) -> bytes:
    """One Redis command in its wire form (RESP)."""
    return f"*{len(words)}\r\n".encode() + b"".join(f"${len(w)}\r\n{w}\r\n".encode() for w in words)


class Redis:
    """A redis-server of the test's own on a free port, with a password, as k8s/redis.yaml runs it."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.port = free_port()
        self.password = os.urandom(16).hex()
        self._log = (directory / "redis.log").open("wb")
        # The configuration on stdin: the password never appears on a command line.
        self.process = subprocess.Popen(
            [binary, "-"], stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT, cwd=directory
        )
        assert self.process.stdin is not None
        config = f'port {self.port}\nbind 127.0.0.1\nrequirepass {self.password}\nsave ""\ndir {directory}\n'
        self.process.stdin.write(config.encode())
        self.process.stdin.close()
        wait_until(self._answers, "redis-server to listen", timeout_s=15)

    def command(self, *words: str) -> bytes:
        """The reply to one command (after AUTH), as it came."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(resp("AUTH", self.password) + resp(*words))
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"+OK\r\n"), reply
        return reply.removeprefix(b"+OK\r\n")

    def _answers(self) -> bool:
        assert self.process.poll() is None, "redis-server exited"
        try:
            return self.command("PING") == b"+PONG\r\n"
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@dataclass
class FaultTolerantRay:
    cluster: Cluster
    redis: Redis
    serve: Serve

    @property
    def head(self) -> Any:
        return self.cluster.head_node


def ray_address_file() -> Path:
    from ray._common.utils import get_ray_address_file

    return Path(get_ray_address_file(None))


@pytest.fixture
def ft_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultTolerantRay]:
    """A one-node Ray cluster of the test's own, its GCS's state in a Redis of its own, its files in a
    temporary folder; Serve started on it, from this process."""
    binary = redis_binary()
    if ray.is_initialized():
        pytest.fail("this test starts a Ray cluster of its own: run it alone (make test-gcs-ft)")
    # A short path: Ray's Unix sockets live below it, and their names are limited to 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="gcsft-"))
    address_file = ray_address_file()
    address_before = address_file.read_bytes() if address_file.exists() else None
    redis = Redis(binary, workdir)
    ray_cluster: Cluster | None = None
    try:
        port = free_port()
        env = {
            **isolated_ray_env(),
            **cluster.ingress_env("haproxy"),
            KEY_ENV: SIM_KEY,
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
            # Where `ray start --head` and KubeRay's gcsFaultToleranceOptions point the GCS.
            "RAY_REDIS_ADDRESS": f"127.0.0.1:{redis.port}",
            "RAY_gcs_rpc_server_reconnect_timeout_s": str(RECONNECT_TIMEOUT_S),
            # Ray's sessions, sockets and its cluster address file, all inside workdir.
            "RAY_TMPDIR": str(workdir),
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        ray_cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 2, "include_dashboard": False, "redis_password": redis.password},
        )
        monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
        cluster.start(port=port)
        yield FaultTolerantRay(ray_cluster, redis, Serve(port))
    finally:
        import psutil  # Ray's own copy (ray/thirdparty_files), on the path once ray is imported

        # Everything this test started (Redis, Ray's processes, their workers and HAProxy), before any of
        # it exits and leaves its children to init.
        started = psutil.Process().children(recursive=True)
        try:
            if ray.is_initialized():
                cluster.stop()
        finally:
            if ray_cluster is not None:
                ray_cluster.shutdown()
            redis.stop()
            end_leftovers(started)
            shutil.rmtree(workdir, ignore_errors=True)
    # The machine's default cluster address (what `ray.init()` joins) is as it was.
    assert (address_file.read_bytes() if address_file.exists() else None) == address_before


def end_leftovers(processes: list[Any]) -> None:
    """Kill, by pid, every process this test started that outlived the cluster's shutdown (a worker whose
    raylet went first). psutil checks each pid still names the same process (its start time)."""
    import psutil

    alive = [p for p in processes if p.is_running()]
    _, alive = psutil.wait_procs(alive, timeout=5)
    for process in alive:
        process.kill()
    psutil.wait_procs(alive, timeout=5)


def settled(total: int, replicas: int) -> bool:
    members = list(ledger_state(APP)["members"].values())
    shares = sorted(total // replicas + (i < total % replicas) for i in range(replicas))
    return len(members) == replicas and sorted(m["capacity"] for m in members) == shares


def division(state: dict[str, Any]) -> dict[str, Any]:
    """What the ledger holds apart from the moment's calls in flight: the budget, and each member's share."""
    return {
        "total": state["total"],
        "members": {rid: (m["rank"], m["granted"], m["capacity"]) for rid, m in state["members"].items()},
    }


def pid_of(actor: Any) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def longest_pause(times: list[float], start: float, end: float) -> float:
    """The longest time between answers (or the window's ends) within [start, end]."""
    marks = [start, *sorted(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(marks))


def test_killing_the_gcs_and_serve_controller_under_load_loses_no_request_and_keeps_the_ledger_and_budget(
    ft_ray: FaultTolerantRay, simulator: BackgroundSimulator, sim_admin: SimAdmin
) -> None:
    assert ft_ray.redis.command("DBSIZE") != b":0\r\n", "the GCS wrote nothing to Redis"
    ft_ray.serve.deploy(sim_app(APP, simulator, budget=BUDGET, replicas=REPLICAS))
    wait_until(lambda: settled(BUDGET, REPLICAS), f"shares of {BUDGET} over {REPLICAS}", timeout_s=60)
    ledger = ray.get_actor(ledger_name(APP, DEPLOYMENT), namespace=LEDGER_NAMESPACE)
    ledger_pid = pid_of(ledger)
    controller_pid = pid_of(ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE))
    sim_admin.configure(latency_s=0.2)

    with Load(f"{ft_ray.serve.base_url(APP)}/responses", concurrency=CLIENTS) as load:
        time.sleep(2)
        sim_admin.reset()
        before = division(ray.get(ledger.state.remote()))
        killed = time.monotonic()
        ft_ray.head.kill_gcs_server()  # SIGKILL, and waits until it is gone
        os.kill(controller_pid, signal.SIGKILL)  # a detached actor: the GCS restarts it once it is back
        time.sleep(OUTAGE_S)
        # Through the handle already held: the ledger answers without the GCS, and has not moved.
        during = division(ray.get(ledger.state.remote(), timeout=10))
        restarted = time.monotonic()
        ft_ray.head.start_gcs_server()  # same port, same Redis: it reloads the cluster's tables
        # The GCS knows the cluster again: names resolve, and Serve's controller is back.
        found = ray.get_actor(ledger_name(APP, DEPLOYMENT), namespace=LEDGER_NAMESPACE)
        recovered = time.monotonic()
        cluster.wait_running([APP], timeout_s=60)
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        back = time.monotonic()
        time.sleep(3)
    ended = time.monotonic()

    statuses = load.statuses
    during_outage = [s for s, t in zip(statuses, load.answered_at, strict=True) if killed <= t <= restarted]
    stats = sim_admin.stats()
    pause = longest_pause(load.answered_at, killed, ended)
    print(
        f"\n{len(statuses)} requests answered, {len(load.failures)} failed; {len(during_outage)} answered in the "
        f"{restarted - killed:.1f} s without a GCS; the GCS answered {recovered - restarted:.1f} s after its "
        f"restart, the Serve controller {back - restarted:.1f} s after; longest pause in answers {pause:.2f} s; "
        f"peak in flight at the simulator {stats['peak_in_flight']} (N={BUDGET}); "
        f"{stats['accepted_total']} upstream calls"
    )
    assert load.failures == []
    assert set(statuses) == {200}
    # Traffic kept flowing: answers all through the outage, never a pause near the ledger's lease.
    assert during_outage, "no request was answered while the GCS was down"
    assert pause < LEASE_S / 2
    # The ledger actor lived through it, with the same division; the budget was used and held.
    assert pid_of(found) == ledger_pid
    assert pid_of(controller) != controller_pid
    assert before == during == division(ray.get(found.state.remote()))
    assert stats["peak_in_flight"] == BUDGET

"""Fixtures for the tests that run the real Serve app: one Ray + Serve and one simulator per session.

The helpers they are built from live in tests/support/; tests import those, never this file.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.ports import free_port, isolated_ray_env
from support.serve import INBOUND_KEYS_ENV, KEY_ENV, SIM_KEY, WRONG_KEY_ENV, Serve
from support.sim_admin import SimAdmin

from serve_app import cluster
from serve_app.simulator import BackgroundSimulator, SimulatorConfig


@pytest.fixture(scope="session")
def simulator() -> Iterator[BackgroundSimulator]:
    with BackgroundSimulator(SimulatorConfig(api_keys=(SIM_KEY,))) as sim:
        yield sim


@pytest.fixture(scope="session")
def serve_instance() -> Iterator[Serve]:
    port = free_port()
    # A stopping replica keeps accepting for the draining period (30 s by default) so that HAProxy
    # notices; with one HAProxy on one machine, a second is plenty and keeps redeploys quick.
    env = {
        KEY_ENV: SIM_KEY,
        WRONG_KEY_ENV: "not-the-key",
        INBOUND_KEYS_ENV: "client-key-1, client-key-2",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        # Serve batches request-path log lines by the thousand in throughput mode; tests read them at once.
        "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
        **isolated_ray_env(),
    }
    cluster.start(port=port, env=env, num_cpus=2)
    try:
        yield Serve(port)
    finally:
        cluster.stop()


@pytest.fixture
def sim_admin(simulator: BackgroundSimulator) -> Iterator[SimAdmin]:
    admin = SimAdmin(simulator)
    admin.reset()
    defaults = simulator.app.state.simulator.config
    yield admin
    admin.configure(
        latency_s=defaults.latency_s,
        ttft_s=defaults.ttft_s,
        inter_token_s=defaults.inter_token_s,
        rpm=defaults.rpm,
        tpm=defaults.tpm,
    )

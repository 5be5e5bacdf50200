"""Stopping: model servers are reconfigured to refuse new calls, and the wait for calls in flight is bounded."""

from __future__ import annotations

import threading

from serve_app.drain import QUIET_S, draining, wait_drained
from serve_app.serve_config import DEPLOYMENT


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Ticking(threading.Event):
    """`cut_short` whose waits advance the fake clock instead of sleeping."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self._clock.now += timeout or 0
        return self.is_set()


def test_only_model_server_deployments_are_told_to_drain_and_nothing_else_changes() -> None:
    model = {"name": "m", "deployments": [{"name": DEPLOYMENT, "user_config": {"num_concurrent_requests": 8}}]}
    simulator = {"name": "sim", "deployments": [{"name": "Simulator"}]}
    assert draining([model, simulator]) == [
        {
            "name": "m",
            "deployments": [{"name": DEPLOYMENT, "user_config": {"num_concurrent_requests": 8, "draining": True}}],
        },
        simulator,
    ]
    assert "draining" not in model["deployments"][0]["user_config"]


def test_drained_once_nothing_has_been_in_flight_for_a_moment() -> None:
    clock = Clock()
    left = iter([3, 2, 1, 0, 1, 0])
    assert wait_drained(lambda: next(left, 0), bound_s=60, cut_short=Ticking(clock), clock=clock)
    assert 1.0 + QUIET_S <= clock.now < 60


def test_the_wait_ends_at_its_bound_or_when_cut_short() -> None:
    clock = Clock()
    assert not wait_drained(lambda: 1, bound_s=5, cut_short=Ticking(clock), clock=clock) and clock.now >= 5
    cut = Ticking(Clock())
    cut.set()
    assert not wait_drained(lambda: 1, bound_s=600, cut_short=cut)

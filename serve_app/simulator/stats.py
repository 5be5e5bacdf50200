"""Counters behind `GET /sim/stats`.

They are exact within one process: the event loop runs one step at a time, so no update interleaves.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    # Chat requests past routing and auth whose response has not fully ended and whose client is still there.
    in_flight: int = 0
    peak_in_flight: int = 0
    requests_total: int = 0
    accepted_total: int = 0
    # Final status of every chat request; 499 when the client left before any response was sent.
    by_status: Counter[int] = field(default_factory=Counter)
    by_deployment: Counter[str] = field(default_factory=Counter)
    requests_closed_by_client: int = 0
    # Non-streaming responses cut on purpose ([sim:reset_mid_body]).
    responses_aborted: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_closed_by_client: int = 0
    # Streams broken on purpose (error or drop mid stream, reset mid body).
    streams_aborted: int = 0
    rate_limited: int = 0
    faults_injected: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def accept(self) -> None:
        self.accepted_total += 1
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight

    def finish(self) -> None:
        self.in_flight -= 1

    def reset(self) -> None:
        """Zero everything except requests still in flight, which would otherwise be uncounted when they end."""
        for spec in dataclasses.fields(self):
            if spec.name == "in_flight":
                continue
            if spec.default_factory is not dataclasses.MISSING:
                setattr(self, spec.name, spec.default_factory())
            else:
                setattr(self, spec.name, spec.default)
        self.peak_in_flight = self.in_flight

    def snapshot(self) -> dict[str, Any]:
        snapshot = dataclasses.asdict(self)
        snapshot["by_status"] = {str(status): count for status, count in sorted(self.by_status.items())}
        snapshot["by_deployment"] = dict(sorted(self.by_deployment.items()))
        return snapshot

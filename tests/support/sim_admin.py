"""The simulator's admin API (/sim/...), for tests that run it behind the real app."""

from __future__ import annotations

from typing import Any

import httpx

from serve_app.simulator import BackgroundSimulator


class SimAdmin:
    def __init__(self, simulator: BackgroundSimulator) -> None:
        self._http = httpx.Client(base_url=simulator.base_url, timeout=10)

    def stats(self) -> dict[str, Any]:
        return self._http.get("/sim/stats").json()

    def reset(self) -> dict[str, Any]:
        return self._http.post("/sim/reset").json()

    def configure(self, **patch: Any) -> None:
        self._http.post("/sim/config", json=patch).raise_for_status()

    def fault(self, status: int, count: int = 1, retry_after_s: float | None = None) -> None:
        self._http.post(
            "/sim/faults", json={"status": status, "count": count, "retry_after_s": retry_after_s}
        ).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        return self._http.get("/sim/requests").json()["requests"]

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

    def fault(
        self, status: int, count: int = 1, retry_after_s: float | None = None, *, streams_only: bool = False
    ) -> None:
        fault = {"status": status, "count": count, "retry_after_s": retry_after_s, "streams_only": streams_only}
        self._http.post("/sim/faults", json=fault).raise_for_status()

    def clear_faults(self) -> None:
        self._http.delete("/sim/faults").raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        return self._http.get("/sim/requests").json()["requests"]

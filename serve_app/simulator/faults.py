"""Injected failures: a queue of statuses for the next requests, and the tally behind `[sim:status=NNN:K]`."""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .triggers import StatusFault


class Fault(BaseModel):
    """`count` consecutive chat requests answered with `status` (and retry-after headers when given); with
    `streams_only`, streaming requests only (a region whose streaming path is broken), the others pass."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: int = Field(ge=400, le=599)
    count: int = Field(default=1, ge=1)
    retry_after_s: float | None = Field(default=None, gt=0)
    streams_only: bool = False


class FaultQueue:
    def __init__(self) -> None:
        self._pending: deque[Fault] = deque()

    def add(self, faults: Iterable[Fault]) -> None:
        self._pending.extend(faults)

    def take(self, stream: bool | None = None) -> Fault | None:
        """The fault for the next request, if any, consuming one of its uses. `stream`: whether the request
        streams, None before its body is read (when only a fault for every request can apply)."""
        if not self._pending or (self._pending[0].streams_only and not stream):
            return None
        fault = self._pending.popleft()
        if fault.count > 1:
            self._pending.appendleft(fault.model_copy(update={"count": fault.count - 1}))
        return fault

    def pending(self) -> list[dict[str, Any]]:
        return [fault.model_dump() for fault in self._pending]

    def clear(self) -> None:
        self._pending.clear()


class StatusTally:
    """Counts identical conversations carrying a `[sim:status=NNN:K]` phrase so only the first K fail."""

    def __init__(self) -> None:
        self._seen: dict[bytes, int] = {}

    def should_fail(self, fault: StatusFault, messages: Sequence[Mapping[str, Any]]) -> bool:
        if fault.times is None:
            return True
        key = hashlib.blake2b(json.dumps(messages, sort_keys=True).encode(), digest_size=16).digest()
        seen = self._seen.get(key, 0)
        self._seen[key] = seen + 1
        return seen < fault.times

    def clear(self) -> None:
        self._seen.clear()

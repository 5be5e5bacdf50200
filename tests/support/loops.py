"""Tests that run once per event loop: asyncio's own and uvloop's (what Ray Serve replicas run)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def on_each_loop(scenario: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """A test that runs the coroutine `scenario` once per event loop in LOOPS; the scenario's own
    parameters stay the test's (fixtures, parametrize)."""

    def test(loop: str, **arguments: Any) -> None:
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(scenario(**arguments))

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [p.replace(kind=keyword) for p in inspect.signature(scenario).parameters.values()]
    test.__signature__ = inspect.Signature([inspect.Parameter("loop", keyword), *parameters])  # type: ignore[attr-defined]
    test.__name__, test.__qualname__, test.__doc__ = scenario.__name__, scenario.__qualname__, scenario.__doc__
    return pytest.mark.parametrize("loop", list(LOOPS))(test)

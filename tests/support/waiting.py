"""Waiting for something that happens elsewhere (another thread, process or Ray actor), with a deadline."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def wait_until(
    condition: Callable[[], bool], what: str | Callable[[], str], timeout_s: float = 30.0, poll_s: float = 0.1
) -> None:
    """Poll `condition` until it holds; fail naming `what` (or what it returns, then) past `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what() if callable(what) else what}"
        time.sleep(poll_s)


def wait_for_output(process: subprocess.Popen[Any], log: Path, text: str, timeout_s: float = 180.0) -> None:
    """Wait until the process writing `log` prints `text`; fail at once, with its last output, if it exits."""

    def printed() -> bool:
        output = log.read_text()
        assert process.poll() is None, output[-3000:]
        return text in output

    wait_until(printed, lambda: f"{text!r}; its output ends: {log.read_text()[-3000:]}", timeout_s, poll_s=0.5)


def once_listening(call: Callable[[], T], process: subprocess.Popen[Any], timeout_s: float = 30.0) -> T:
    """`call()`'s result once the process's server accepts connections; fail at once if it exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except httpx.ConnectError:
            assert process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start listening"
            time.sleep(0.05)

"""The command line as a user runs it: `python -m serve_app serve ...` in its own process."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .waiting import wait_for_output

ROOT = Path(__file__).resolve().parents[2]
SERVE = [sys.executable, "-m", "serve_app", "serve"]


@contextmanager
def serving(args: list[str], log: Path, env: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`serve <args>`, its output in `log`, from when it says it serves until stopped as Ctrl-C stops it."""
    with open(log, "w") as out:
        server = subprocess.Popen([*SERVE, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_output(server, log, "Serving;")
        yield server
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)

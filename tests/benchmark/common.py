"""What the benchmark's processes share: ports, child processes, /proc readings, machine details."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

from serve_app.config import Retries
from serve_app.limiter import Limiter
from serve_app.upstreams import Pool
from serve_app.upstreams import Upstream as PoolUpstream
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


C = TypeVar("C")


def pool_of_one(client: C, budget: int) -> Pool[C]:
    """The server's arrangement for one upstream: its queue is the pool's, its limiter holds the budget."""
    return Pool([PoolUpstream("upstream", client, Limiter(budget))], Retries())


@contextlib.asynccontextmanager
async def pool_slot(pool: Pool[C]) -> AsyncIterator[C]:
    """One slot of `pool`, waited for without a deadline, given back on leaving; yields its upstream's client."""
    upstream = await pool.acquire(math.inf)
    try:
        yield upstream.client
    finally:
        pool.release(upstream, None)


def http_json(url: str, data: Any = None, timeout: float = 10.0) -> Any:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(
        url, data=body, method="GET" if data is None else "POST", headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


# noop.py's relay apps, the first event's floor, by name: whether it yields its core after the first
# chunk, as ours does.
RELAYS = {"relay": False, "relayyield": True}


class Upstream:
    """A simulator process of our own (tests/benchmark/upstream.py) on a free port."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.port = free_port()
        self.config = config
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> Upstream:
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.benchmark.upstream",
                "--port",
                str(self.port),
                "--config",
                json.dumps(self.config),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                http_json(f"{self.url}/sim/config", timeout=1)
                return self
            except OSError as exc:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark simulator did not start") from exc
                time.sleep(0.1)

    def configure(self, **patch: Any) -> None:
        http_json(f"{self.url}/sim/config", patch)

    def reset(self) -> dict[str, Any]:
        return http_json(f"{self.url}/sim/reset", {})

    def stats(self) -> dict[str, Any]:
        return http_json(f"{self.url}/sim/stats")

    def marks(self) -> list[float]:
        return http_json(f"{self.url}/bench/marks")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- /proc -----------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


def run_queue_wait_s(pid: int) -> float:
    """How long the threads of a process have been ready to run but waiting for a CPU, so far (schedstat)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                total += int((task / "schedstat").read_text().split()[1])
    except OSError:
        return float("nan")
    return total / 1e9


def machine_ticks() -> list[int]:
    """Jiffies over all CPUs since boot, by state (/proc/stat: user nice system idle iowait irq softirq steal ...)."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def _busy(ticks: list[int]) -> int:
    return sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)


def _stolen(ticks: list[int]) -> int:
    # Time the hypervisor ran something else while one of this machine's CPUs had work.
    return ticks[7] if len(ticks) > 7 else 0


class CpuMeter:
    """CPU used by some processes, and by the whole machine, between `start` and `stop`; and how long each
    process's threads were ready to run but had no CPU, and how much of the machine's time its host took."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = {name: pid for name, pid in pids.items() if pid}
        self._before: dict[str, tuple[float, float]] = {}
        self._machine: list[int] = []
        self._t = 0.0

    def start(self) -> None:
        self._before = {name: (cpu_seconds(pid), run_queue_wait_s(pid)) for name, pid in self._pids.items()}
        self._machine = machine_ticks()
        self._t = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._t
        ticks = machine_ticks()
        usage: dict[str, float] = {}
        for name, pid in self._pids.items():
            cpu, waited = self._before[name]
            usage[f"{name}_cpu"] = (cpu_seconds(pid) - cpu) / wall
            usage[f"{name}_waited_s"] = run_queue_wait_s(pid) - waited
        total = max(1, sum(ticks) - sum(self._machine))
        usage["machine_busy"] = (_busy(ticks) - _busy(self._machine)) / total
        usage["machine_stolen"] = (_stolen(ticks) - _stolen(self._machine)) / total
        return usage


# --- machine ----------------------------------------------------------------------------------------


def machine_details() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(
            next(row for row in Path("/proc/meminfo").read_text().splitlines() if row.startswith("MemTotal")).split()[1]
        )
        ram = f"{mem_kb / 1024**2:.1f} GiB"
    except (OSError, StopIteration):
        ram = "unknown"
    try:
        import ray

        ray_version = ray.__version__
    except ImportError:  # pragma: no cover
        ray_version = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        # A benchmark's own reports don't count: `make bench-py313 && make bench` leaves the first one's uncommitted.
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":(exclude)tests/benchmark/RESULTS*.md",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "unknown"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": ram,
        "os": platform.platform(),
        "python": platform.python_version(),
        "ray": ray_version,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": commit,
        "load_before": load,
    }

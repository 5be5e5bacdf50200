"""The benchmark: `make bench`, or `python -m tests.benchmark.bench [--quick] [--out FILE]` from the repo root.

What runs, in order (every process below is started and stopped by this one):

1. Two simulators, each in its own process (upstream.py): one answering at once, one after 2 s.
2. For each Serve configuration, a process (cluster_run.py) that starts its own Ray (2 CPUs, no
   dashboard) with that configuration's flags, deploys the no-op app (noop.py, the floor) and our
   model server, and measures them side by side with the direct-to-simulator baseline, using
   the load client in loadgen.py:
   - "haproxy" (the project default) gets the full plan: requests/s and latency at 1-256
     clients, non-streaming and streaming; events/s with 1000-token answers; time from the
     upstream's first chunk to our first event; replica RSS with 2,000 requests held in flight
     by the upstream for 6 s (ours non-streaming and streaming, and the no-op app holding requests
     itself as the floor); and the variants of variants.py, which price the parts of our
     per-request CPU;
   - "proxy", "haproxy-only", "throughput-only" and "haproxy-thread" get the no-op app and
     /v1/responses at 1 and 64 clients and streaming events/s, to choose the ingress mode and
     flags by measurement (cluster_run.CONFIGS says what each sets).
3. transport.py: httpx's own pool, httpx over its aiohttp transport, aiohttp alone, and AzureClient (as
   shipped), 1,000 and 2,000 calls in flight.
4. retry_slot.py: 429 storms, every call finishing within the budget while its retry waits hold
   their upstream slot.

Then it prints the tables and writes them, with the machine's details, to tests/benchmark/RESULTS_py3XX.md
for the Python it runs on, and that Python's targets table to its own section of tests/benchmark/RESULTS.md
(full run; `--quick` prints only, unless `--out` is given). Beside every ratio stands the Python version and
the machine's speed in the same run (the direct-to-simulator and no-op cells): the machine is shared.
Each configuration's full Ray log is kept in a temporary directory, named at the end.

`--quick` (under 2 minutes): the default configuration only, at 1 and 64 clients, shorter cells,
no variants, and smaller transport and retry runs; a smoke test of the pipeline, not numbers to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .common import ROOT, Upstream, machine_details

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"  # one section (the targets table) per Python version
SECTION = re.compile(r"<!-- python (\d+)\.(\d+) -->\n.*?<!-- /python \1\.\2 -->\n", re.S)
# What a measuring process prints about its own progress (the rest of its output is Ray's, kept in the log).
PROGRESS = re.compile(r"^(  \S|\[[a-z-]+\] |Traceback|\S*Error: )")
MAIN_CONFIG = "haproxy"
OTHER_CONFIGS = ("proxy", "haproxy-only", "throughput-only", "haproxy-thread")
# Targets from the issues (16 for the current set).
IN_FLIGHT = 2000
MAX_ADDED_P50_MS = 1.0
MAX_KB_PER_REQUEST = 45.0
MAX_FIRST_EVENT_P99_MS = 2.0
MIN_EVENTS_RATIO = 0.5  # streamed events/s through our replica, against the no-op app's


def min_ratio_64(python: str) -> float:
    """/v1/responses req/s at 64 clients against the no-op's: from 3.12, asyncio no longer calls getpid on every
    `get_running_loop` (7% of a replica's CPU on 3.11), so the bar is higher there."""
    major, minor = (int(part) for part in python.split(".")[:2])
    return 0.6 if (major, minor) >= (3, 12) else 0.5


NAMES = {
    "direct": "direct to simulator",
    "noop": "no-op Serve app",
    "relay": "relay Serve app (the floor: the simulator's chunks written as read)",
    "relayyield": "relay Serve app yielding its core after the first chunk, as ours does",
    "responses": "/v1/responses",
    "chat": "/v1/chat/completions",
}
MEMORY_NAMES = {
    "mem": "/v1/responses",
    "memstream": "/v1/responses, streaming",
    "mem_noop": "no-op app holding each request 6 s (floor)",
}
VARIANT_NOTES = {
    "noop": "the floor",
    "responses": "ours, as shipped",
    "canned": "no upstream HTTP call (fixed answer); everything else as shipped",
    "nolog": "no per-request log line",
    "nometrics": "no per-request Ray metric updates",
    "lean": "nolog + nometrics",
    "defaultgc": "Python's default collector threshold (700) instead of ours",
    "noopgc": "the no-op app with our collector threshold: the floor, tuned as ours is",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_child(name: str, args: list[str], workdir: Path, timeout_s: float) -> int:
    """Run a measuring process; echo its progress lines, keep its whole output in workdir/name.log."""
    log_path = workdir / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

        def echo() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                log_file.write(line)
                if PROGRESS.match(line):
                    log(line.rstrip())

        reader = threading.Thread(target=echo, daemon=True)
        reader.start()
        try:
            code = process.wait(timeout_s)
        except (subprocess.TimeoutExpired, KeyboardInterrupt) as reason:
            # It runs in its own session (a Ctrl-C here does not reach it): stop it, and with it its Ray.
            why = "over its time limit" if isinstance(reason, subprocess.TimeoutExpired) else "interrupted"
            log(f"{name}: {why}; stopping it")
            process.send_signal(signal.SIGTERM)  # it stops its own Ray on the way out
            try:
                code = process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: only what it started
                code = process.wait()
            if isinstance(reason, KeyboardInterrupt):
                raise
        reader.join(10)
        return code


def load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --- formatting -----------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cells_of(run: dict[str, Any], section: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {(c["target"], c["concurrency"]): c for c in run.get("cells", []) if c["section"] == section}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# --- the report ------------------------------------------------------------------------------------------


def throughput_table(run: dict[str, Any], section: str) -> str:
    cells = cells_of(run, section)
    rows = []
    for concurrency in sorted({c for _, c in cells}):
        direct, noop = cells.get(("direct", concurrency)), cells.get(("noop", concurrency))
        for target in ("direct", "noop", "responses", "chat"):
            cell = cells.get((target, concurrency))
            if cell is None:
                continue
            ours = target in ("responses", "chat")
            row = [
                NAMES[target],
                concurrency,
                fmt(cell["rps"], 0),
                fmt(ratio(cell["rps"], noop["rps"]) if noop and target != "noop" else None),
                cell["p50_ms"],
                cell["p99_ms"],
                cell["p50_ms"] - direct["p50_ms"] if ours and direct else None,
                cell["p99_ms"] - direct["p99_ms"] if ours and direct else None,
            ]
            if section == "stream":
                row += [cell.get("ttfe_p50_ms"), cell.get("ttfe_p99_ms")]
            per_request = cell["replica_cpu"] / cell["rps"] * 1e6 if cell.get("replica_cpu") and cell["rps"] else None
            row += [
                fmt(cell.get("replica_cpu")),
                fmt(per_request, 0),
                fmt(cell.get("sim_cpu")),
                fmt(cell.get("client_cpu")),
                fmt(cell.get("machine_busy")),
                cell["errors"],
            ]
            rows.append(row)
    header = [
        "endpoint",
        "clients",
        "req/s",
        "× no-op",
        "p50 ms",
        "p99 ms",
        "p50 added over direct",
        "p99 added over direct",
    ]
    if section == "stream":
        header += ["first event p50 ms", "first event p99 ms"]
    header += ["replica CPU", "replica µs/request", "sim CPU", "client CPU", "machine busy", "errors"]
    return table(header, rows)


def events_table(run: dict[str, Any]) -> str:
    cells = cells_of(run, "events")
    rows = []
    for (target, concurrency), cell in sorted(cells.items(), key=lambda kv: (kv[0][1], list(NAMES).index(kv[0][0]))):
        noop = cells.get(("noop", concurrency))
        per_event = (
            cell["replica_cpu"] / cell["events_per_s"] * 1e6
            if cell.get("replica_cpu") and cell["events_per_s"]
            else None
        )
        rows.append(
            [
                NAMES[target],
                concurrency,
                fmt(cell["events_per_s"], 0),
                fmt(ratio(cell["events_per_s"], noop["events_per_s"]) if noop and target != "noop" else None),
                fmt(cell["rps"], 1),
                cell["p50_ms"],
                fmt(cell.get("replica_cpu")),
                fmt(per_event, 1),
                fmt(cell.get("sim_cpu")),
                fmt(cell.get("client_cpu")),
                fmt(cell.get("machine_busy")),
                cell["errors"],
            ]
        )
    return table(
        [
            "endpoint",
            "streams at once",
            "events/s",
            "× no-op",
            "streams/s",
            "stream p50 ms",
            "replica CPU",
            "replica µs/event",
            "sim CPU",
            "client CPU",
            "machine busy",
            "errors",
        ],
        rows,
    )


def ttfe_table(run: dict[str, Any]) -> str:
    header = [
        "endpoint",
        "first event after upstream's first chunk, p50 ms",
        "p90 ms",
        "p99 ms",
        "time to first event p50 ms (upstream ttft 50 ms)",
        "streams",
        "replica ready but waiting for a CPU, ms per stream",
        "machine's CPU time stolen by the host, %",
    ]
    rows = []
    for target, result in (run.get("ttfe") or {}).items():
        if "error" in result:
            rows.append([NAMES[target], result["error"], *[""] * (len(header) - 2)])
        else:
            rows.append(
                [
                    NAMES[target],
                    result["after_first_chunk_p50_ms"],
                    result.get("after_first_chunk_p90_ms"),
                    result["after_first_chunk_p99_ms"],
                    result["ttfe_p50_ms"],
                    result["n"],
                    result.get("replica_run_queue_ms_per_stream"),
                    result.get("steal_pct"),
                ]
            )
    return table(header, rows)


def memory_table(run: dict[str, Any]) -> str:
    rows = []
    for m in run.get("memory") or []:
        rows.append(
            [
                MEMORY_NAMES.get(m["kind"], m["kind"]),
                m["n"],
                m["errors"],
                fmt(m["upstream_peak_in_flight"]),
                m["wall_s"],
                m["p50_ms"],
                f"{m['idle_rss_mb']:.0f} → {fmt(m.get('held_rss_mb'), 0)} → {m['peak_rss_mb']:.0f}",
                m["kb_per_request"],
                fmt(m.get("kb_per_request_answering")),
                fmt(m.get("replica_cpu")),
            ]
        )
    return table(
        [
            "endpoint",
            "requests sent at once",
            "errors",
            "upstream peak in flight",
            "wall s",
            "p50 ms",
            "replica RSS MB idle → all held → peak answering",
            "KB per in-flight request (held)",
            "KB per request at the peak answering",
            "replica CPU",
        ],
        rows,
    )


def ingress_table(runs: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, run in runs.items():
        if run is None or "failure" in run:
            rows.append([name, "failed (see log)"] + [""] * 9)
            continue
        plain, events = cells_of(run, "plain"), cells_of(run, "events")
        n1, o1 = plain.get(("noop", 1)), plain.get(("responses", 1))
        n64, o64 = plain.get(("noop", 64)), plain.get(("responses", 64))
        en, eo = events.get(("noop", 16)), events.get(("responses", 16))
        rows.append(
            [
                name,
                run["description"],
                n1 and n1["p50_ms"],
                o1 and o1["p50_ms"],
                fmt(n64 and n64["rps"], 0),
                fmt(o64 and o64["rps"], 0),
                fmt(ratio(o64 and o64["rps"], n64 and n64["rps"])),
                fmt(en and en["events_per_s"], 0),
                fmt(eo and eo["events_per_s"], 0),
                fmt(eo and eo.get("replica_cpu")),
            ]
        )
    return table(
        [
            "config",
            "flags",
            "no-op p50 ms (1 client)",
            "/v1/responses p50 ms (1 client)",
            "no-op req/s (64)",
            "/v1/responses req/s (64)",
            "ratio (64)",
            "no-op events/s (16 streams)",
            "/v1/responses events/s (16 streams)",
            "replica CPU, /v1/responses streams",
        ],
        rows,
    )


def ablation_table(run: dict[str, Any]) -> str:
    cells = cells_of(run, "ablation")
    concurrencies = sorted({c for _, c in cells})
    rows = []
    for kind, note in VARIANT_NOTES.items():
        row: list[Any] = [NAMES.get(kind, kind), note]
        for concurrency in concurrencies:
            cell, noop = cells.get((kind, concurrency)), cells.get(("noop", concurrency))
            if cell is None:
                row += [None] * 4
                continue
            row += [
                fmt(cell["rps"], 0),
                fmt(ratio(cell["rps"], noop and noop["rps"]) if kind != "noop" else None),
                cell["p50_ms"],
                fmt(ratio(cell.get("replica_cpu"), cell["rps"]) and cell["replica_cpu"] / cell["rps"] * 1e6, 0),
            ]
        rows.append(row)
    header = ["deployment", "what differs"]
    for concurrency in concurrencies:
        header += [
            f"req/s ({concurrency})",
            f"× no-op ({concurrency})",
            f"p50 ms ({concurrency})",
            f"replica CPU µs per request ({concurrency})",
        ]
    return table(header, rows)


def transport_table(results: list[dict[str, Any]] | None) -> str:
    rows = [[r["variant"], r["n"], r["cpu_ms_per_call"], r["wall_s"], r["errors"]] for r in results or []]
    return table(["client", "calls at once", "CPU ms per call", "wall s", "errors"], rows)


def retry_table(results: list[dict[str, Any]] | None) -> str:
    rows = [
        [
            r["storm"],
            r["n"],
            r["budget"],
            r["wall_s"],
            r["ok"],
            r["failed"],
            r["upstream_calls"],
            r["upstream_429"],
            r["upstream_peak_in_flight"],
            "yes" if r["within_budget"] else "NO",
        ]
        for r in results or []
    ]
    return table(
        [
            "storm",
            "calls",
            "budget",
            "finished in s",
            "ok",
            "failed",
            "upstream calls",
            "429s",
            "upstream peak in flight",
            "within budget",
        ],
        rows,
    )


def speed(run: dict[str, Any]) -> str:
    """How fast the machine was in this run: the direct and no-op cells every ratio is taken against."""
    plain, events = cells_of(run, "plain"), cells_of(run, "events")
    parts = []
    for target in ("direct", "noop"):
        by_clients = [
            f"{cell['rps']:,.0f}" for (t, _), cell in sorted(plain.items(), key=lambda kv: kv[0][1]) if t == target
        ]
        clients = [str(c) for (t, c) in sorted(plain, key=lambda k: k[1]) if t == target]
        if by_clients:
            parts.append(f"{NAMES[target]} {' / '.join(by_clients)} req/s ({' / '.join(clients)} clients)")
    for target in ("direct", "noop"):
        cell = events.get((target, 16))
        if cell:
            parts.append(f"{NAMES[target]} {cell['events_per_s']:,.0f} events/s (16 streams)")
    return "; ".join(parts) or "—"


def speed_note(machine: dict[str, str], run: dict[str, Any]) -> str:
    return f"Python {machine['python']}; the machine's speed in this run: {speed(run)}."


def targets(run: dict[str, Any], python: str) -> tuple[str, list[str]]:
    """The targets, each with the cells of the same run it is measured against (the machine's speed)."""
    plain, events = cells_of(run, "plain"), cells_of(run, "events")
    memory = {m["kind"]: m for m in run.get("memory") or []}
    ttfe = run.get("ttfe") or {}
    rows: list[list[Any]] = []
    verdicts: list[str] = []

    def check(name: str, measured: str, ok: bool | None, against: str) -> None:
        verdict = "—" if ok is None else ("met" if ok else "MISSED")
        rows.append([name, measured, verdict, python, against])
        verdicts.append(f"{name}: {verdict} ({measured})")

    d64, n64, r64 = plain.get(("direct", 64)), plain.get(("noop", 64)), plain.get(("responses", 64))
    if n64 and r64:
        value, bar = r64["rps"] / n64["rps"], min_ratio_64(python)
        check(
            f"/v1/responses at 64 clients ≥ {bar}× the no-op app",
            f"{value:.2f}× ({r64['rps']:,.0f} req/s)",
            value >= bar,
            f"no-op {n64['rps']:,.0f} req/s" + (f", direct {d64['rps']:,.0f}" if d64 else ""),
        )
    d1, n1 = plain.get(("direct", 1)), plain.get(("noop", 1))
    for target in ("responses", "chat"):
        o1 = plain.get((target, 1))
        if d1 and n1 and o1:
            above = o1["p50_ms"] - d1["p50_ms"] - n1["p50_ms"]
            check(
                f"{NAMES[target]} p50 added at 1 client ≤ no-op + {MAX_ADDED_P50_MS:g} ms",
                f"{above:+.2f} ms (added {o1['p50_ms'] - d1['p50_ms']:.2f} ms)",
                above <= MAX_ADDED_P50_MS,
                f"no-op p50 {n1['p50_ms']:.2f} ms, direct {d1['p50_ms']:.2f} ms",
            )
    floor = memory.get("mem_noop")
    for kind in ("mem", "memstream"):
        m = memory.get(kind)
        if m is None:
            continue
        label = MEMORY_NAMES[kind]
        check(
            f"{label}: {IN_FLIGHT:,} sent at once all in flight upstream together, zero errors",
            f"{m['errors']} errors; {m['upstream_peak_in_flight']:,} in flight upstream at the peak",
            m["errors"] == 0 and m["upstream_peak_in_flight"] >= m["n"],
            f"wall {m['wall_s']:.2f} s for the {m['n']:,}",
        )
        check(
            f"{label}: ≤ {MAX_KB_PER_REQUEST:g} KB per in-flight request (all held upstream)",
            f"{m['kb_per_request']:.1f} KB ({fmt(m.get('kb_per_request_answering'), 1)} at the peak answering)",
            m["kb_per_request"] <= MAX_KB_PER_REQUEST,
            f"no-op floor {floor['kb_per_request']:.1f} KB" if floor else "—",
        )
    floor_names = {"direct": "direct", "relay": "relay app", "relayyield": "yielding relay"}
    floors = [
        f"{name} p99 {ttfe[kind]['after_first_chunk_p99_ms']:.2f} ms"
        for kind, name in floor_names.items()
        if "after_first_chunk_p99_ms" in ttfe.get(kind, {})
    ]
    for target, result in ttfe.items():
        if target in floor_names or "error" in result:
            continue
        check(
            f"{NAMES[target]} stream: first event p99 ≤ {MAX_FIRST_EVENT_P99_MS:g} ms after the upstream's first chunk",
            f"p99 {result['after_first_chunk_p99_ms']:.2f} ms (p50 {result['after_first_chunk_p50_ms']:.2f})",
            result["after_first_chunk_p99_ms"] <= MAX_FIRST_EVENT_P99_MS,
            ", ".join(floors) or "—",
        )
    for target in ("responses", "chat"):
        cell, noop, de = events.get((target, 16)), events.get(("noop", 16)), events.get(("direct", 16))
        if cell and noop:
            value = cell["events_per_s"] / noop["events_per_s"]
            per_event = ratio(cell.get("replica_cpu"), cell["events_per_s"])
            noop_per_event = ratio(noop.get("replica_cpu"), noop["events_per_s"])
            cpu = (
                f"; replica CPU {per_event * 1e6:.1f} µs/event (no-op {noop_per_event * 1e6:.1f})"
                if per_event and noop_per_event
                else ""
            )
            check(
                f"{NAMES[target]} stream: ≥ {MIN_EVENTS_RATIO}× the no-op's events/s (16 streams)",
                f"{value:.2f}× ({cell['events_per_s']:,.0f} events/s{cpu})",
                value >= MIN_EVENTS_RATIO,
                f"no-op {noop['events_per_s']:,.0f} events/s" + (f", direct {de['events_per_s']:,.0f}" if de else ""),
            )
    header = ["target", "measured (same run)", "verdict", "python", "against (same run: the machine's speed)"]
    return table(header, rows), verdicts


def summary(
    runs: dict[str, Any], transport: list[dict[str, Any]] | None, retry: list[dict[str, Any]] | None
) -> list[str]:
    """The decisions the numbers above support, stated from this run's numbers."""
    lines = []
    ok = {name: run for name, run in runs.items() if run and "failure" not in run}
    if len(ok) > 1:

        def ours64(run: dict[str, Any]) -> float:
            cell = cells_of(run, "plain").get(("responses", 64))
            return cell["rps"] if cell else 0.0

        def ours1(run: dict[str, Any]) -> float:
            cell = cells_of(run, "plain").get(("responses", 1))
            return cell["p50_ms"] if cell else float("inf")

        fastest, quickest = max(ok, key=lambda n: ours64(ok[n])), min(ok, key=lambda n: ours1(ok[n]))
        lines.append(
            f"- Ingress: /v1/responses at 64 clients is fastest under `{fastest}` ({ours64(ok[fastest]):,.0f} req/s; "
            + ", ".join(f"`{n}` {ours64(r):,.0f}" for n, r in ok.items() if n != fastest)
            + f"); p50 at one client is lowest under `{quickest}` ({ours1(ok[quickest]):.2f} ms; "
            + ", ".join(f"`{n}` {ours1(r):.2f}" for n, r in ok.items() if n != quickest)
            + ")."
        )

        def events16(run: dict[str, Any]) -> float:
            cell = cells_of(run, "events").get(("responses", 16))
            return cell["events_per_s"] if cell else 0.0

        streamiest = max(ok, key=lambda n: events16(ok[n]))
        lines.append(
            f"- Ingress, streaming: /v1/responses events/s (16 streams) is highest under `{streamiest}` "
            f"({events16(ok[streamiest]):,.0f}; "
            + ", ".join(f"`{n}` {events16(r):,.0f}" for n, r in ok.items() if n != streamiest)
            + ")."
        )
    if transport:
        by_name = {r["variant"]: r for r in transport}
        for r in transport:
            if r["variant"].startswith("httpx pool,"):
                over = by_name.get(r["variant"].replace("httpx pool", "httpx over aiohttp transport"))
                alone = by_name.get(r["variant"].replace("httpx pool", "aiohttp alone"))
                ours = by_name.get(r["variant"].replace("httpx pool", "AzureClient (http_client)"))
                if over and alone and ours:
                    lines.append(
                        f"- Transport, {r['n']:,} calls in flight: CPU per call {r['cpu_ms_per_call']:.2f} ms "
                        f"with httpx's pool, {over['cpu_ms_per_call']:.2f} ms with httpx over its aiohttp "
                        f"transport, {alone['cpu_ms_per_call']:.2f} ms with aiohttp alone, "
                        f"{ours['cpu_ms_per_call']:.2f} ms with AzureClient (http_client.py); wall "
                        f"{r['wall_s']:.1f} s, {over['wall_s']:.1f} s, {alone['wall_s']:.1f} s, {ours['wall_s']:.1f} s."
                    )
        waiting = [r for r in transport if "waiting" in r["variant"]]
        if len(waiting) == 2:
            pool, ours = waiting
            lines.append(
                f"- Transport, calls waiting for a connection: {pool['cpu_ms_per_call']:.2f} ms CPU per call "
                f"waiting in httpx's pool, {ours['cpu_ms_per_call']:.2f} ms waiting in our pool of upstreams in front "
                "of AzureClient."
            )
    for r in retry or []:
        lines.append(
            f"- Retry waits, {r['storm']} storm: finished in {r['wall_s']:.2f} s ({r['failed']} failed, "
            f"{r['upstream_calls']} upstream calls, peak {r['upstream_peak_in_flight']} in flight of a budget of "
            f"{r['budget']})."
        )
    return lines


def report(
    machine: dict[str, str],
    runs: dict[str, Any],
    transport: Any,
    retry: Any,
    quick: bool,
    load_after: str,
    elapsed_s: float,
) -> str:
    main = runs.get(MAIN_CONFIG) or {}
    parts = [
        "# Benchmark results" + (" (--quick: smoke run, not for quoting)" if quick else ""),
        "",
        "Generated by `make bench` (`python -m tests.benchmark.bench`); see tests/benchmark/bench.py for what is "
        "measured and how. Every ratio compares measurements taken in the same run, on the same machine, "
        "within one Ray instance per configuration.",
        "",
        "## Machine",
        "",
        table(
            ["", ""],
            [[k, v] for k, v in machine.items()]
            + [["load after", load_after], ["benchmark duration", f"{elapsed_s / 60:.1f} min"]],
        ),
        "",
        "The machine is shared: `machine busy` is the whole machine's CPU use (both cores, everyone's processes) "
        "during each cell; near 1.00 means the cell was CPU-bound somewhere. Replica/sim/client CPU are in cores "
        "(1.00 = one core fully used).",
    ]
    if "failure" in main or not main:
        parts += [
            "",
            f"**The {MAIN_CONFIG} configuration failed:**",
            "",
            "```",
            str(main.get("failure", "no result")),
            "```",
        ]
    else:
        target_table, _ = targets(main, machine["python"])
        note = speed_note(machine, main)
        parts += [
            "",
            f"## Targets (configuration `{MAIN_CONFIG}`: {main['description']})",
            "",
            note,
            "",
            target_table,
            "",
            "## Non-streaming, zero-latency upstream",
            "",
            "Closed loop: each client sends its next request when the last is answered. `added over direct` is "
            "this endpoint's latency minus the simulator's own at the same concurrency; the floor for it is the "
            "no-op app's latency (a request through Serve that does no work). Requests count when sent after "
            "the warm-up and answered before the deadline; CPU is read when the measured window opens and closes.",
            "",
            note,
            "",
            throughput_table(main, "plain"),
        ]
        if cells_of(main, "stream"):
            parts += [
                "",
                "## Streaming, short answers (zero-latency upstream)",
                "",
                note,
                "",
                throughput_table(main, "stream"),
            ]
        parts += [
            "",
            "## Streaming events/s (1000-token answers, no pacing)",
            "",
            "One replica; the no-op app streams the same number of events of the same size. Events count as "
            "they reach the client within the measured window, whichever stream they belong to; replica CPU "
            "per event is the replica process's CPU time over that window divided by them.",
            "",
            note,
            "",
            events_table(main),
        ]
        if main.get("ttfe"):
            parts += [
                "",
                "## Time to first event",
                "",
                "One client, one stream at a time, upstream time to first token 50 ms. The simulator notes when "
                "it hands each stream's first chunk to its socket (CLOCK_MONOTONIC, shared by all processes), "
                "the client when the first SSE event arrives: the difference is what the path after the "
                "upstream adds (for direct: loopback and client only; for the relay apps, Serve's path with no "
                "translation: the floor on this machine). The last two columns say where a slow "
                "first event spent its time: the replica's threads ready to run but given no CPU (schedstat), "
                "and the share of the machine's CPU time its host took for something else (steal).",
                "",
                ttfe_table(main),
            ]
        if main.get("memory"):
            parts += [
                "",
                "## Memory with 2,000 requests in flight (each held 6 s upstream)",
                "",
                "All requests sent at once on their own connections; replica RSS from /proc every 10 ms. Per "
                "in-flight request: (peak while held − idle) / requests, from the samples taken before the first "
                "hold can end (no answer has begun); at the peak answering: (peak of the whole burst − idle) / "
                "requests, which for streams adds the answers' chunks read from Azure ahead of the replica's CPU "
                "(2,000 answers arrive within a few milliseconds) and the writers of the streams answering "
                "together; pymalloc keeps what the burst took, so that peak is also RSS after it. "
                "`upstream peak in flight` is the simulator's count: it shows whether "
                "all of them really were in flight together. Each is held 6 s: a replica takes a burst in at "
                "a few hundred to a thousand requests a second, CPU-bound (each brings a new connection from "
                "HAProxy and makes a new one to the upstream), so a 2 s hold ended the first before the last "
                "arrived on a slower machine.",
                "",
                memory_table(main),
            ]
    if cells_of(main, "ablation"):
        parts += [
            "",
            "## What our per-request CPU goes to (benchmark-only variants, tests/benchmark/variants.py)",
            "",
            "Each variant is our deployment with one part swapped, deployed beside the others and measured in "
            "interleaved rounds, non-streaming /v1/responses. Replica CPU per request is the replica process's "
            "CPU time over the requests it answered.",
            "",
            speed_note(machine, main),
            "",
            ablation_table(main),
        ]
    parts += [
        "",
        "## Ingress modes",
        "",
        "Each configuration in its own Ray instance, one after another in this run; the ratio is within "
        f"one configuration (Python {machine['python']}; each row's no-op columns are its machine speed).",
        "",
        ingress_table(runs),
    ]
    if transport:
        parts += [
            "",
            "## HTTP transport (AzureClient to a 2 s upstream, client process CPU)",
            "",
            transport_table(transport),
        ]
    if retry:
        parts += ["", "## Retry waits: 429 storms, each wait holding its upstream slot", "", retry_table(retry)]
    notes = summary(runs, transport, retry)
    if notes:
        parts += ["", "## In short (from this run's numbers)", "", *notes]
    return "\n".join(parts) + "\n"


def full_report(python: str) -> Path:
    """Where a full run on this Python writes its whole report."""
    major, minor = python.split(".")[:2]
    return HERE / f"RESULTS_py{major}{minor}.md"


def version_section(machine: dict[str, str], runs: dict[str, Any], load_after: str, elapsed_s: float) -> str:
    """This run's section of RESULTS.md: the targets, with the machine's speed beside them."""
    major, minor = machine["python"].split(".")[:2]
    main = runs.get(MAIN_CONFIG) or {}
    report = full_report(machine["python"]).name
    lines = [
        f"<!-- python {major}.{minor} -->",
        f"## Python {machine['python']}",
        "",
        f"{machine['date']}, commit {machine['commit']}; {machine['cpu']}, {machine['cores']} cores; Ray "
        f"{machine['ray']}; load {machine['load_before']} before, {load_after} after; {elapsed_s / 60:.1f} min. "
        f"Every table of the run: [{report}]({report}).",
        "",
    ]
    if "failure" in main or not main:
        lines += [f"The {MAIN_CONFIG} configuration failed; see [{report}]({report}).", ""]
    else:
        lines += [speed_note(machine, main), "", targets(main, machine["python"])[0], ""]
    return "\n".join(lines) + f"<!-- /python {major}.{minor} -->\n"


def update_results(section: str) -> None:
    """RESULTS.md with this Python version's section replaced (or added); the other versions' are kept."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    sections = {(int(m[1]), int(m[2])): m[0] for m in SECTION.finditer(old)}
    found = SECTION.search(section)
    assert found is not None
    sections[(int(found[1]), int(found[2]))] = section
    header = (
        "# Benchmark results, one table per Python version\n\n"
        "`make bench` (Python 3.11, the project's .venv) and `make bench-py313` (Python 3.13, .venv-py313) each "
        "rewrite their own section here, and their full report beside it (tests/benchmark/bench.py says what "
        "is measured and how). Every ratio compares cells of one run; beside it are the cells it was taken "
        "against, the direct-to-simulator and no-op figures of that run, which say how fast the (shared) "
        "machine was at the time.\n\n"
    )
    RESULTS.write_text(header + "\n".join(sections[v] for v in sorted(sections, reverse=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (under 2 minutes)")
    parser.add_argument(
        "--out",
        help="where to write the report (default for a full run: tests/benchmark/RESULTS_py3XX.md, and this "
        f"Python's section of {RESULTS.relative_to(ROOT)}; none for --quick)",
    )
    parser.add_argument(
        "--configs",
        help=f"comma-separated configurations (default: {','.join((MAIN_CONFIG, *OTHER_CONFIGS))};"
        f" --quick: {MAIN_CONFIG})",
    )
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: transport, retry")
    options = parser.parse_args()
    quick = options.quick
    configs = options.configs.split(",") if options.configs else [MAIN_CONFIG] + ([] if quick else list(OTHER_CONFIGS))
    skip = set(filter(None, options.skip.split(",")))
    out = Path(options.out) if options.out else (None if quick else full_report(platform.python_version()))

    started = time.monotonic()
    machine = machine_details()
    workdir = Path(tempfile.mkdtemp(prefix="serve-app-bench-"))
    log(f"benchmark ({'quick' if quick else 'full'}); logs in {workdir}")
    runs: dict[str, Any] = {}
    transport = retry = None
    with Upstream({}) as fast, Upstream({"latency_s": 2.0, "ttft_s": 2.0}) as slow:
        for config in configs:
            plan = "quick" if quick else ("full" if config == MAIN_CONFIG else "ingress")
            path = workdir / f"{config}.json"
            log(f"[{config}] starting Ray and Serve ({plan} plan)")
            run_child(
                config,
                [
                    "tests.benchmark.cluster_run",
                    "--config",
                    config,
                    "--plan",
                    plan,
                    "--sim-fast",
                    f"{fast.url},{fast.pid}",
                    "--sim-slow",
                    f"{slow.url},{slow.pid}",
                    "--out",
                    str(path),
                ],
                workdir,
                timeout_s=900,
            )
            runs[config] = load(path) or {
                "failure": f"no result; see {workdir / (config + '.log')}",
                "description": config,
            }
        if "transport" not in skip:
            log("[transport] httpx pool vs httpx over aiohttp vs aiohttp alone vs ours")
            path = workdir / "transport.json"
            run_child(
                "transport",
                [
                    "tests.benchmark.transport",
                    "--sim",
                    slow.url,
                    "--sizes",
                    "300" if quick else "1000,2000",
                    *(["--no-waiting"] if quick else []),
                    "--out",
                    str(path),
                ],
                workdir,
                timeout_s=600,
            )
            transport = load(path)
    if "retry" not in skip:
        log("[retry] 429 storms")
        path = workdir / "retry.json"
        run_child(
            "retry",
            [
                "tests.benchmark.retry_slot",
                "--n",
                "200" if quick else "400",
                "--budget",
                "16" if quick else "32",
                "--window",
                "0.5" if quick else "1.0",
                "--out",
                str(path),
            ],
            workdir,
            timeout_s=600,
        )
        retry = load(path)

    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    text = report(machine, runs, transport, retry, quick, load_after, time.monotonic() - started)
    print(text)
    if out is not None:
        out.write_text(text)
        log(f"written to {out}")
    if not quick and not options.out:
        update_results(version_section(machine, runs, load_after, time.monotonic() - started))
        log(f"and this Python's section of {RESULTS}")
    log(f"logs: {workdir}")
    failed = [name for name, run in runs.items() if "failure" in run]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

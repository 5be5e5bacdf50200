"""JSON on the wire, in one place: strict RFC 8259 in, compact UTF-8 out.

orjson, because the standard library's json cost about a tenth of the replica's CPU per request
(tests/benchmark/RESULTS.md). It is also stricter where we want it: NaN, Infinity, numbers beyond
double range, invalid UTF-8 and lone surrogates are refused when parsing.
"""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError  # a ValueError
loads = orjson.loads


def dumps(data: Any) -> bytes:
    # orjson returns its whole working buffer (4 KiB at least, 128 KiB for a 10 KB body) as the
    # bytes object. Held by thousands of calls in flight, or queued log lines, that adds up; an
    # exact-size copy costs about 0.1 µs.
    return memoryview(orjson.dumps(data)).tobytes()

"""JSON on the wire, in one place: strict RFC 8259 in, compact UTF-8 out.

orjson, because the standard library's json cost about a tenth of the replica's CPU per request
(tests/benchmark/RESULTS.md). It is also stricter where we want it: NaN, Infinity, numbers beyond
double range, invalid UTF-8 and lone surrogates are refused when parsing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import orjson

JSONDecodeError = orjson.JSONDecodeError  # a ValueError
loads = orjson.loads


class LoadsOnly:
    """`loads`, building only what `shape` (a TypedDict, total=False) names, skipping every other key
    unbuilt. What it builds is held to `loads`' rules (no NaN or Infinity, no number beyond double range,
    valid UTF-8), and a value of the wrong kind under a named key is a JSONDecodeError too; what it skips
    must still be well-formed JSON.

    For Azure's stream chunks on the Responses path: each carries content-filter verdicts (six nested
    objects, most of its 600 bytes) that the translation never reads, and building them was a quarter of
    the replica's CPU per streamed event; msgspec skips them (measured 1.9 µs a chunk against orjson's 4.4)."""

    def __init__(self, shape: Any) -> None:
        self._shape = shape
        self._decode = msgspec.json.Decoder(shape).decode

    def __call__(self, data: bytes) -> Any:
        try:
            return self._decode(data)
        except msgspec.DecodeError as exc:
            raise JSONDecodeError(str(exc), data.decode(errors="replace"), 0) from None

    def __reduce__(self) -> tuple[Any, ...]:
        # Serve pickles what a deployment's module holds; a msgspec decoder is rebuilt rather than pickled.
        return (LoadsOnly, (self._shape,))


def dumps(data: Any) -> bytes:
    # orjson returns its whole working buffer (4 KiB at least, 128 KiB for a 10 KB body) as the
    # bytes object. Held by thousands of calls in flight, or queued log lines, that adds up; an
    # exact-size copy costs about 0.1 µs.
    return memoryview(orjson.dumps(data)).tobytes()


def framed(frames: Iterable[tuple[bytes, Any]], tail: bytes) -> bytes:
    """Each frame's head, the JSON of its data, then `tail`, all as one exact-size object (a stream's events
    that go out together): orjson's working buffers are dropped at once, so they need no copy of their own."""
    parts: list[bytes] = []
    for head, data in frames:
        parts += (head, orjson.dumps(data), tail)
    return b"".join(parts)


# orjson writes at most 254 nested levels, and a request's values go upstream a level or two deeper
# than they came (tool `parameters` under `function`, a schema under `json_schema`). So depth is
# limited when a body is read, well below that: a body that parses can always be written.
WRITE_LIMIT = 254
MAX_DEPTH = 128


def too_deep(data: Any, source: bytes | None = None) -> str | None:
    """The path (`tools[0].parameters.properties...`) to a value nested deeper than `MAX_DEPTH`, or None.

    Given the `source` it was parsed from, a body with no more than `MAX_DEPTH` brackets cannot be
    that deep, and counting them takes a fraction of a microsecond: most bodies are not examined
    further. Otherwise orjson itself answers whether the body, under `WRITE_LIMIT - MAX_DEPTH` more
    levels, can be written (14 µs for a small body, most of it the wrapping; a walk in Python costs
    ten times that). Only a body that is too deep is walked, for the path."""
    if source is not None and source.count(b"[") + source.count(b"{") <= MAX_DEPTH:
        return None
    wrapped = data
    for _ in range(WRITE_LIMIT - MAX_DEPTH):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:  # for parsed JSON, only depth: loads turns out-of-range integers to floats
        return _path_below(data, MAX_DEPTH)
    return None


def _path_below(data: Any, limit: int) -> str:
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            children: list[tuple[str, Any]] = [(f"{path}.{k}" if path else str(k), v) for k, v in value.items()]
        elif isinstance(value, list):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        else:
            continue
        if depth > limit:
            return path
        stack.extend((child, depth + 1, child_path) for child_path, child in children)
    raise ValueError("no value nested that deep")

"""JSON on the wire: `LoadsOnly` builds what its shape names and nothing else, as strictly as `loads`."""

from __future__ import annotations

import pickle
from typing import Any, TypedDict

import pytest

from serve_app import jsonwire


class Inner(TypedDict, total=False):
    text: Any


class Shape(TypedDict, total=False):
    items: list[Inner] | None
    count: Any


read = jsonwire.LoadsOnly(Shape)


def test_only_the_named_keys_are_built_at_every_level() -> None:
    raw = b'{"items": [{"text": "a", "verdicts": {"hate": {"filtered": false}}}], "count": 2, "id": "x"}'
    assert read(raw) == {"items": [{"text": "a"}], "count": 2}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"count": NaN}',
        b'{"count": Infinity}',
        b'{"count": 1e400}',
        b'{"count": "\xff"}',
        b'{"items": 3}',  # a named key with a value of the wrong kind
        b"[]",
        b'{"count": 1} trailing',
        b'{"other": [1, 2}',  # skipped, but still not JSON
    ],
)
def test_what_loads_refuses_it_refuses_too_as_a_json_decode_error(raw: bytes) -> None:
    with pytest.raises(jsonwire.JSONDecodeError):
        read(raw)


def test_it_survives_pickling_as_serve_pickles_a_deployment_s_module() -> None:
    assert pickle.loads(pickle.dumps(read))(b'{"count": 1, "x": 2}') == {"count": 1}


def nested_lists(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "data",
    [
        {"input": "hi"},
        nested_lists(jsonwire.MAX_DEPTH),
        nested_lists(jsonwire.MAX_DEPTH + 1),
        {"a": nested_lists(jsonwire.MAX_DEPTH + 5)},
        {"input": "[" * 500 + "{" * 500},  # brackets inside strings: counted, then found shallow
        [{"k": [1, 2, 3]} for _ in range(200)],  # many brackets, little depth
    ],
    ids=["plain", "at the limit", "one past it", "deep under a key", "brackets in text", "wide"],
)
def test_the_source_shortcut_gives_the_same_verdict_as_the_full_check(data: Any) -> None:
    source = jsonwire.dumps(data)
    assert jsonwire.too_deep(jsonwire.loads(source), source) == jsonwire.too_deep(data)


def test_a_too_deep_body_is_found_through_the_source_shortcut() -> None:
    source = jsonwire.dumps({"a": nested_lists(jsonwire.MAX_DEPTH + 5)})
    assert jsonwire.too_deep(jsonwire.loads(source), source) == "a" + "[0]" * (jsonwire.MAX_DEPTH - 1)

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

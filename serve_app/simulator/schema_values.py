"""Deterministic JSON values that satisfy a JSON Schema (pure), for tool arguments and structured outputs.

Covers the subset OpenAI accepts for function parameters and strict structured outputs: types (also as
lists), const, enum, anyOf/oneOf (first branch), allOf (merged objects), local $ref, string formats and
length bounds, numeric bounds, array item counts. Strings become `text`, so answers still echo the user.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_MAX_DEPTH = 8
_FORMATTED_STRINGS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00",
    "duration": "P1D",
    "email": "sim@example.com",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def value_for_schema(schema: Mapping[str, Any], text: str) -> Any:
    return _value(schema, root=schema, text=text, depth=0)


def _value(schema: Mapping[str, Any], *, root: Mapping[str, Any], text: str, depth: int) -> Any:
    if "$ref" in schema:
        return _value(_resolve(schema["$ref"], root), root=root, text=text, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf"):
        if schema.get(combinator):
            return _value(schema[combinator][0], root=root, text=text, depth=depth + 1)
    if schema.get("allOf"):
        return _value(_merge(schema, root), root=root, text=text, depth=depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        return _object(schema, root=root, text=text, depth=depth)
    if kind == "array":
        return _array(schema, root=root, text=text, depth=depth)
    if kind == "string":
        return _string(schema, text)
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def _type_of(schema: Mapping[str, Any]) -> str | None:
    declared = schema.get("type")
    if isinstance(declared, list):
        concrete = [name for name in declared if name != "null"]
        return concrete[0] if concrete else "null"
    if declared is None and "properties" in schema:
        return "object"
    return declared


def _resolve(reference: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not reference.startswith("#"):
        raise ValueError(f"only local $ref is supported, got {reference!r}")
    node: Any = root
    for part in reference.lstrip("#").split("/"):
        if part:
            node = node[part.replace("~1", "/").replace("~0", "~")]
    resolved: Mapping[str, Any] = node
    return resolved


def _merge(schema: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {key: value for key, value in schema.items() if key != "allOf"}
    for part in schema["allOf"]:
        resolved = _resolve(part["$ref"], root) if "$ref" in part else part
        for key, value in resolved.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _object(schema: Mapping[str, Any], *, root: Mapping[str, Any], text: str, depth: int) -> dict[str, Any]:
    properties: Mapping[str, Any] = schema.get("properties", {})
    # Fill what is required; a schema requiring nothing still gets every property so the value shows the
    # shape, unless recursion has gone deep enough that optional parts must stop.
    names = schema.get("required") or ([] if depth >= _MAX_DEPTH else list(properties))
    return {name: _value(properties.get(name, {}), root=root, text=text, depth=depth + 1) for name in names}


def _array(schema: Mapping[str, Any], *, root: Mapping[str, Any], text: str, depth: int) -> list[Any]:
    minimum = schema.get("minItems", 0)
    count = minimum if depth >= _MAX_DEPTH else max(minimum, min(1, schema.get("maxItems", 1)))
    prefix = schema.get("prefixItems", [])
    items = schema.get("items", {})
    item_schema = items if isinstance(items, Mapping) else {}
    return [
        _value(prefix[index] if index < len(prefix) else item_schema, root=root, text=text, depth=depth + 1)
        for index in range(max(count, len(prefix)))
    ]


def _string(schema: Mapping[str, Any], text: str) -> str:
    value = _FORMATTED_STRINGS.get(schema.get("format", ""), text)
    minimum = schema.get("minLength", 0)
    if len(value) < minimum:
        value = value + "x" * (minimum - len(value))
    maximum = schema.get("maxLength")
    return value if maximum is None else value[:maximum]


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum")
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum")
    if integer:
        if low is not None:
            return math.floor(low) + 1 if low_open else math.ceil(low)
        if high is not None:
            return min(0, math.ceil(high) - 1 if high_open else math.floor(high))
        return 0
    if low is not None and high is not None:
        return (low + high) / 2
    if low is not None:
        return float(low + 1 if low_open else low)
    if high is not None:
        return float(min(0, high - 1 if high_open else high))
    return 0.0


def _bound(schema: Mapping[str, Any], inclusive: str, exclusive: str) -> tuple[float | None, bool]:
    if inclusive in schema:
        return schema[inclusive], False
    return schema.get(exclusive), exclusive in schema

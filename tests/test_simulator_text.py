"""Simulator building blocks: the tokenizer, schema-driven values and trigger phrase parsing (all pure)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serve_app.simulator import (
    CONTENT_FILTER_OUTPUT,
    CONTENT_FILTER_PROMPT,
    DROP_MID_STREAM,
    ERROR_MID_STREAM,
    HANG,
    PARALLEL_TOOLS,
    REFUSAL,
    RESET_MID_BODY,
    sleep_trigger,
    status_trigger,
    tokens_trigger,
)
from serve_app.simulator.schema_values import value_for_schema
from serve_app.simulator.tokens import count_tokens, lorem, tokenize
from serve_app.simulator.triggers import NO_TRIGGERS, StatusFault, Triggers, UnknownTrigger, parse_triggers


@given(st.text())
def test_tokens_join_back_into_the_text(text: str) -> None:
    assert "".join(tokenize(text)) == text
    assert count_tokens(text) == len(tokenize(text))


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("Hello, world!", ["Hello", ",", " world", "!"]),
        ("  two  spaces ", ["  two", "  spaces", " "]),
        ('{"a":1}', ["{", '"', "a", '"', ":", "1", "}"]),
        ("x" * 20, ["x" * 16, "x" * 4]),
        ("", []),
    ],
)
def test_a_token_is_a_short_word_or_a_symbol_with_the_whitespace_before_it(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


@pytest.mark.parametrize("n", [0, 1, 7, 500])
def test_lorem_text_has_exactly_the_asked_number_of_tokens(n: int) -> None:
    assert count_tokens(lorem(n)) == n


SCHEMAS: list[tuple[str, dict[str, Any]]] = [
    ("empty object", {"type": "object"}),
    ("properties without type", {"properties": {"a": {"type": "string"}}}),
    ("only required properties", {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
                                  "required": ["b"], "additionalProperties": False}),
    ("string bounds", {"type": "string", "minLength": 40, "maxLength": 50}),
    ("short string", {"type": "string", "maxLength": 3}),
    ("formats", {"type": "object", "properties": {
        name: {"type": "string", "format": name} for name in ("date-time", "date", "email", "uri", "uuid", "ipv4")}}),
    ("integer bounds", {"type": "integer", "minimum": 5, "maximum": 9}),
    ("exclusive integer bounds", {"type": "integer", "exclusiveMinimum": 5}),
    ("negative maximum", {"type": "integer", "exclusiveMaximum": -3}),
    ("number range", {"type": "number", "exclusiveMinimum": 0.1, "exclusiveMaximum": 0.2}),
    ("nullable via type list", {"type": ["null", "number"], "minimum": 2}),
    ("enum", {"enum": ["red", "green"]}),
    ("const", {"const": {"fixed": True}}),
    ("anyOf", {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
    ("allOf", {"allOf": [{"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]},
                         {"properties": {"b": {"type": "null"}}, "required": ["b"]}]}),
    ("array bounds", {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 4}),
    ("tuple", {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}),
    ("local refs", {"type": "object", "properties": {"p": {"$ref": "#/definitions/point"}}, "required": ["p"],
                    "definitions": {"point": {"type": "object", "properties": {"x": {"type": "number"}},
                                              "required": ["x"]}}}),
    ("recursive tree", {"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {
        "label": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}}),
]  # fmt: skip


@pytest.mark.parametrize("schema", [case[1] for case in SCHEMAS], ids=[case[0] for case in SCHEMAS])
def test_generated_values_satisfy_their_schema(schema: dict[str, Any]) -> None:
    jsonschema.validate(value_for_schema(schema, "user text"), schema, format_checker=jsonschema.FormatChecker())


def test_generated_strings_echo_the_text_and_the_value_is_deterministic() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "number"}}}
    assert value_for_schema(schema, "find cats") == {"q": "find cats", "n": 0.0}
    assert value_for_schema(schema, "find cats") == value_for_schema(schema, "find cats")


def test_remote_references_are_refused() -> None:
    with pytest.raises(ValueError):
        value_for_schema({"$ref": "https://example.com/schema.json"}, "x")


FLAG_TRIGGERS = [
    (CONTENT_FILTER_PROMPT, Triggers(content_filter_prompt=True)),
    (CONTENT_FILTER_OUTPUT, Triggers(content_filter_output=True)),
    (REFUSAL, Triggers(refusal=True)),
    (PARALLEL_TOOLS, Triggers(parallel_tools=True)),
    (RESET_MID_BODY, Triggers(reset_mid_body=True)),
    (HANG, Triggers(hang=True)),
    (ERROR_MID_STREAM, Triggers(error_mid_stream=True)),
    (DROP_MID_STREAM, Triggers(drop_mid_stream=True)),
    (status_trigger(503), Triggers(status=StatusFault(503, None))),
    (status_trigger(429, 2), Triggers(status=StatusFault(429, 2))),
    (sleep_trigger(0.25), Triggers(sleep_s=0.25)),
    (sleep_trigger(2), Triggers(sleep_s=2.0)),
    (tokens_trigger(1000), Triggers(tokens=1000)),
]


@pytest.mark.parametrize("phrase, expected", FLAG_TRIGGERS, ids=[case[0] for case in FLAG_TRIGGERS])
def test_each_trigger_phrase_is_recognised_anywhere_in_the_text(phrase: str, expected: Triggers) -> None:
    assert parse_triggers(f"please {phrase} thanks") == expected


def test_several_trigger_phrases_combine() -> None:
    assert parse_triggers(f"{REFUSAL}{sleep_trigger(1)} and {HANG}") == Triggers(refusal=True, sleep_s=1.0, hang=True)


def test_text_without_trigger_phrases_has_no_triggers() -> None:
    assert parse_triggers("an ordinary [bracketed] sim: message") is NO_TRIGGERS


@pytest.mark.parametrize(
    "text",
    [
        "[sim:refusel]",
        "[sim:status=abc]",
        "[sim:status=1000]",
        "[sim:status=200]",
        "[sim:sleep=]",
        "[sim:tokens=1.5]",
        "[sim:hang=1]",
    ],
)
def test_a_misspelt_trigger_phrase_is_an_error(text: str) -> None:
    with pytest.raises(UnknownTrigger, match="Unknown simulator trigger phrase"):
        parse_triggers(text)

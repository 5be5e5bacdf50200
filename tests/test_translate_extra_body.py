"""NeMo Gym's `metadata.extra_body` (a JSON string): what goes upstream, what is refused by name."""

from __future__ import annotations

import json
from typing import Any

import pytest

from serve_app.errors import InvalidRequest, UnsupportedField
from serve_app.schemas import ResponsesRequest, parse
from serve_app.translate import to_chat_request, to_response


def chat(extra_body: Any, ignorable: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
    raw = extra_body if isinstance(extra_body, str) else json.dumps(extra_body)
    req = parse(ResponsesRequest, {"input": "hi", "metadata": {"extra_body": raw, "run": "7"}, **fields})
    body = to_chat_request(req, ignored_extra_body_keys=ignorable)
    return {k: v for k, v in body.items() if k != "messages"}


APPLIED = {
    "num_repeats_add_seed's seed reaches Azure as seed": ({"seed": 42}, {"seed": 42}),
    "stop, penalties and logit_bias keep their chat names": (
        {"stop": ["</answer>"], "frequency_penalty": 0.5, "presence_penalty": -0.5, "logit_bias": {"50256": -100}},
        {"stop": ["</answer>"], "frequency_penalty": 0.5, "presence_penalty": -0.5, "logit_bias": {"50256": -100}},
    ),
    "top_logprobs turns logprobs on": ({"top_logprobs": 2}, {"top_logprobs": 2, "logprobs": True}),
    "explicit nulls are unset": ({"seed": None, "top_k": None, "stop": None}, {}),
    "include_stop_str_in_output false is what Azure does": (
        {"stop": ["x"], "include_stop_str_in_output": False},
        {"stop": ["x"]},
    ),
    "n of one is what Azure does": ({"n": 1}, {}),
    "an empty object changes nothing": ({}, {}),
}


@pytest.mark.parametrize("extra_body, expected", APPLIED.values(), ids=APPLIED.keys())
def test_keys_azure_has_go_upstream(extra_body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert chat(extra_body) == expected


REFUSED = {
    "a vLLM-only key": ({"top_k": 20}, "metadata.extra_body.top_k"),
    "include_stop_str_in_output true": (
        {"stop": ["x"], "include_stop_str_in_output": True},
        "metadata.extra_body.include_stop_str_in_output",
    ),
    "min_p": ({"min_p": 0.1}, "metadata.extra_body.min_p"),
    "repetition_penalty": ({"repetition_penalty": 1.1}, "metadata.extra_body.repetition_penalty"),
    "n above one": ({"n": 2}, "metadata.extra_body.n"),
}


@pytest.mark.parametrize("extra_body, param", REFUSED.values(), ids=REFUSED.keys())
def test_keys_azure_cannot_honour_are_refused_by_name(extra_body: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedField) as info:
        chat(extra_body)
    assert (info.value.status, info.value.param) == (400, param) and param in info.value.message


def test_keys_the_config_lists_as_ignorable_are_left_out() -> None:
    body = chat({"seed": 1, "top_k": 20, "include_stop_str_in_output": True}, ("top_k", "include_stop_str_in_output"))
    assert body == {"seed": 1}


INVALID = {
    "not JSON": ("{seed: 1", "metadata.extra_body"),
    "not an object": ("[1, 2]", "metadata.extra_body"),
    "a seed that is not an integer": ({"seed": "one"}, "metadata.extra_body.seed"),
    "more than four stop sequences": ({"stop": ["a", "b", "c", "d", "e"]}, "metadata.extra_body.stop"),
    "a penalty out of range": ({"presence_penalty": 3}, "metadata.extra_body.presence_penalty"),
}


@pytest.mark.parametrize("extra_body, param", INVALID.values(), ids=INVALID.keys())
def test_malformed_extra_body_is_a_400_naming_it(extra_body: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        chat(extra_body)
    assert (info.value.status, info.value.param, info.value.code) == (400, param, "invalid_value")


@pytest.mark.parametrize(
    "extra_body, fields, param",
    [
        ({"temperature": 0.1}, {"temperature": 0.7}, "metadata.extra_body.temperature"),
        ({"max_completion_tokens": 9}, {"max_output_tokens": 64}, "metadata.extra_body.max_completion_tokens"),
        ({"top_p": 0.5}, {"top_p": 0.9}, "metadata.extra_body.top_p"),
    ],
)
def test_a_key_the_request_also_sets_is_a_400_naming_it(
    extra_body: dict[str, Any], fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        chat(extra_body, **fields)
    assert info.value.param == param


def test_a_key_set_only_in_extra_body_is_applied_when_the_request_leaves_it_null() -> None:
    assert chat({"temperature": 0.1}, temperature=None) == {"temperature": 0.1}


def test_metadata_is_echoed_as_sent() -> None:
    metadata = {"extra_body": '{"seed": 5}', "run": "7"}
    req = parse(ResponsesRequest, {"input": "hi", "metadata": metadata})
    completion = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}]}
    response = to_response(completion, req, model="dep", response_id="resp_1", created_at=1, completed_at=2)
    assert response["metadata"] == metadata

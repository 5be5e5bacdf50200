"""Hypothesis strategies for request bodies of every shape: valid, half-valid, wrong and not JSON at all."""

from __future__ import annotations

import json

from hypothesis import strategies as st

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=15), inner, max_size=5),
    max_leaves=25,
)
known_keys = st.sampled_from(
    [
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "text",
        "reasoning",
        "max_output_tokens",
        "temperature",
        "top_p",
        "top_logprobs",
        "include",
        "stream",
        "metadata",
        "messages",
        "model",
        "n",
        "stream_options",
        "parallel_tool_calls",
        "previous_response_id",
        "truncation",
        "client_metadata",
        "max_tool_calls",
        "prompt_cache_retention",
    ]
)
item_shapes = st.fixed_dictionaries(
    {
        "type": st.text(max_size=20)
        | st.sampled_from(
            [
                "message",
                "function_call",
                "function_call_output",
                "reasoning",
                "item_reference",
                "web_search_call",
                "custom_tool_call",
                "custom_tool_call_output",
                "tool_search_call",
                "tool_search_output",
            ]
        )
    },
    optional={
        "role": json_values,
        "content": json_values,
        "call_id": json_values,
        "output": json_values,
        "arguments": json_values,
        "name": json_values,
        "input": json_values,
        "namespace": json_values,
        "execution": st.sampled_from(["client", "server"]) | json_values,
        "tools": json_values,
    },
)
names = st.sampled_from(["lookup", "apply_patch", "ns__f", "tool_search", "multi_agent_v1__spawn_agent"])
inner_tools = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "custom"]), "name": names}, optional={"description": st.text(max_size=10)}
)
# Mostly well-formed tools of every kind, so that translation gets past validation and the answer has calls.
tool_shapes = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("function"), "name": names},
        optional={"parameters": st.just({"type": "object", "properties": {}}), "defer_loading": st.booleans()},
    ),
    st.fixed_dictionaries(
        {"type": st.just("custom"), "name": names},
        optional={
            "description": st.text(max_size=10),
            "format": st.sampled_from([{"type": "text"}, {"type": "grammar", "syntax": "lark", "definition": "s"}]),
        },
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("namespace"),
            "name": st.sampled_from(["multi_agent_v1", "ns"]),
            "description": st.text(max_size=10),
            "tools": st.lists(inner_tools, min_size=1, max_size=3),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool_search"), "execution": st.sampled_from(["client", "server"])},
        optional={"parameters": st.just({"type": "object", "properties": {"q": {"type": "string"}}})},
    ),
    st.just({"type": "web_search"}),
    st.dictionaries(st.sampled_from(["type", "name", "tools", "format"]), json_values, max_size=3),
)
extra_bodies = (
    st.dictionaries(
        st.sampled_from(["seed", "stop", "top_k", "temperature", "n", "include_stop_str_in_output"]),
        st.none() | st.integers(0, 3) | st.lists(st.text(max_size=3), max_size=2) | st.booleans(),
        max_size=3,
    ).map(lambda keys: {"extra_body": json.dumps(keys)})
    | st.just({"extra_body": "{not json"})
    | st.just({})
)
bodies = (
    json_values
    | st.dictionaries(known_keys, json_values, max_size=6)
    | st.builds(
        lambda items, extra: {"input": items, **extra},
        st.lists(item_shapes, max_size=4),
        st.dictionaries(known_keys, json_values, max_size=3),
    )
    | st.builds(
        lambda tools, metadata, extra: {"input": "hi", "tools": tools, "metadata": metadata, **extra},
        st.lists(tool_shapes, max_size=4),
        extra_bodies,
        st.dictionaries(st.sampled_from(["tool_choice", "parallel_tool_calls", "stream"]), json_values, max_size=1),
    )
)
raw_bytes = st.binary(max_size=200) | st.sampled_from(
    [
        b"",
        b"{",
        b'{"input": "\xff"}',
        b"[" * 5000 + b"]" * 5000,
        b'{"input": "x", "temperature": NaN}',
        b'{"messages": [], "n": Infinity}',
        b'{"input": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    ]
)

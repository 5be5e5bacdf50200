"""Hypothesis strategies for request bodies of every shape: valid, half-valid, wrong and not JSON at all."""

from __future__ import annotations

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
    ]
)
item_shapes = st.fixed_dictionaries(
    {
        "type": st.text(max_size=20)
        | st.sampled_from(
            ["message", "function_call", "function_call_output", "reasoning", "item_reference", "web_search_call"]
        )
    },
    optional={
        "role": json_values,
        "content": json_values,
        "call_id": json_values,
        "output": json_values,
        "arguments": json_values,
        "name": json_values,
    },
)
bodies = (
    json_values
    | st.dictionaries(known_keys, json_values, max_size=6)
    | st.builds(
        lambda items, extra: {"input": items, **extra},
        st.lists(item_shapes, max_size=4),
        st.dictionaries(known_keys, json_values, max_size=3),
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

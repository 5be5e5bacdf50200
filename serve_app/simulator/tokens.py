"""A deterministic stand-in tokenizer used for usage, truncation, streaming deltas and rate limits.

A token is a run of up to 16 word characters or one other symbol, carrying the whitespace before it, so
joining the tokens of a text gives the text back and each token is a natural streaming delta.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*\w{1,16}|\s*[^\w\s]|\s+")

_LOREM_WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
]


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def lorem(n: int) -> str:
    """A text of exactly `n` tokens."""
    words = (_LOREM_WORDS[i % len(_LOREM_WORDS)] for i in range(n))
    return " ".join(words)

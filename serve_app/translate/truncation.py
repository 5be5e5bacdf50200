"""`truncation: "auto"`: which messages to drop when Azure answers `context_length_exceeded`. Pure.

OpenAI drops items from the start of the conversation until it fits. Here the unit dropped is a
whole turn: a user message, or an assistant message together with the tool messages that answer
its calls (a later system message goes with the turn before it). So the instructions and the
leading system messages are never dropped, nor a tool call without its output, nor the last turn.
How much to drop is estimated from Azure's message ("maximum context length is N tokens ...
resulted in M tokens"), by size, with a margin; when the message gives no figures, one turn.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_RETRIES = 3
_MARGIN = 0.9
_FIGURES = re.compile(r"maximum context length is (\d+) tokens.*?(?:resulted in|requested) (\d+) tokens", re.S)


def is_context_overflow(code: str | None, status: int) -> bool:
    return status == 400 and code == "context_length_exceeded"


def drop_oldest_turns(messages: list[dict[str, Any]], error_message: str) -> list[dict[str, Any]] | None:
    """`messages` without enough of their oldest turns to fit, or None when nothing more can be dropped."""
    lead = 0
    while lead < len(messages) and messages[lead].get("role") in ("system", "developer"):
        lead += 1
    turns = _turns(messages[lead:])
    if len(turns) < 2:
        return None
    sizes = [sum(_size(m) for m in turn) for turn in turns]
    total = sum(_size(m) for m in messages)
    target = total * _fraction(error_message)
    drop = 0
    # Drop the oldest turns until the estimate fits, at least one, never the last.
    while drop < len(turns) - 1 and (drop == 0 or total > target):
        total -= sizes[drop]
        drop += 1
    return messages[:lead] + [m for turn in turns[drop:] for m in turn]


def _turns(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    turns: list[list[dict[str, Any]]] = []
    for message in messages:
        if message.get("role") in ("user", "assistant") or not turns:
            turns.append([message])
        else:  # tool messages answer the assistant turn before them; a later system message stays with it
            turns[-1].append(message)
    return turns


def _fraction(error_message: str) -> float:
    found = _FIGURES.search(error_message)
    if found is None or int(found.group(2)) == 0:
        return 1.0  # one turn, the least that can be dropped
    return min(1.0, int(found.group(1)) / int(found.group(2))) * _MARGIN


def _size(message: dict[str, Any]) -> int:
    return len(json.dumps(message, ensure_ascii=False))

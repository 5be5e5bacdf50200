"""Trigger phrases: text in the last user message that makes the simulator misbehave on purpose.

The phrase stays part of the message, so the echoed answer contains it too.

| phrase                        | effect                                                                       |
|-------------------------------|------------------------------------------------------------------------------|
| `[sim:content_filter_prompt]` | 400 `content_filter` error on the prompt (plain JSON even when streaming)    |
| `[sim:content_filter_output]` | 200, half the answer, `finish_reason: "content_filter"`, filtered flags set  |
| `[sim:refusal]`               | `message.content` null, `message.refusal` set (streamed as refusal deltas)   |
| `[sim:parallel_tools]`        | call every given tool, in order (unless `parallel_tool_calls` is false)      |
| `[sim:status=NNN]`            | answer with error status NNN (4xx, 5xx), Azure's body (429: retry-after 1 s) |
| `[sim:status=NNN:K]`          | status NNN for the first K identical conversations only, then normal         |
| `[sim:reset_mid_body]`        | status line and headers, half the body, then the connection is cut           |
| `[sim:hang]`                  | never answer; the request ends when the client goes away                     |
| `[sim:sleep=S]`               | S more seconds before the first byte                                         |
| `[sim:tokens=N]`              | the answer text is N lorem tokens instead of the echo                        |
| `[sim:error_mid_stream]`      | streams only: some deltas, an in-band `data: {"error": ...}`, clean end      |
| `[sim:drop_mid_stream]`       | streams only: some deltas, then the connection is cut without `[DONE]`       |

Any other `[sim:...]` phrase is a 400, so a typo in a test fails loudly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONTENT_FILTER_PROMPT = "[sim:content_filter_prompt]"
CONTENT_FILTER_OUTPUT = "[sim:content_filter_output]"
REFUSAL = "[sim:refusal]"
PARALLEL_TOOLS = "[sim:parallel_tools]"
RESET_MID_BODY = "[sim:reset_mid_body]"
HANG = "[sim:hang]"
ERROR_MID_STREAM = "[sim:error_mid_stream]"
DROP_MID_STREAM = "[sim:drop_mid_stream]"


def status_trigger(status: int, times: int | None = None) -> str:
    return f"[sim:status={status}]" if times is None else f"[sim:status={status}:{times}]"


def sleep_trigger(seconds: float) -> str:
    return f"[sim:sleep={seconds}]"


def tokens_trigger(n: int) -> str:
    return f"[sim:tokens={n}]"


@dataclass(frozen=True)
class StatusFault:
    status: int
    # None: every time; else only for the first `times` identical conversations.
    times: int | None


@dataclass(frozen=True)
class Triggers:
    content_filter_prompt: bool = False
    content_filter_output: bool = False
    refusal: bool = False
    parallel_tools: bool = False
    reset_mid_body: bool = False
    hang: bool = False
    error_mid_stream: bool = False
    drop_mid_stream: bool = False
    status: StatusFault | None = None
    sleep_s: float = 0.0
    tokens: int | None = None


NO_TRIGGERS = Triggers()


class UnknownTrigger(ValueError):
    pass


_FLAGS = {
    "content_filter_prompt",
    "content_filter_output",
    "refusal",
    "parallel_tools",
    "reset_mid_body",
    "hang",
    "error_mid_stream",
    "drop_mid_stream",
}
_PHRASE = re.compile(r"\[sim:([^\]=]*)(?:=([^\]]*))?\]")
_STATUS = re.compile(r"([45][0-9]{2})(?::([0-9]+))?")
_INTEGER = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_triggers(text: str) -> Triggers:
    if "[sim:" not in text:
        return NO_TRIGGERS
    found: dict[str, object] = {}
    for match in _PHRASE.finditer(text):
        name, argument = match.group(1), match.group(2)
        if argument is None and name in _FLAGS:
            found[name] = True
        elif name == "status" and argument is not None and (status := _STATUS.fullmatch(argument)):
            times = status.group(2)
            found["status"] = StatusFault(int(status.group(1)), int(times) if times else None)
        elif name == "sleep" and argument is not None and _NUMBER.fullmatch(argument):
            found["sleep_s"] = float(argument)
        elif name == "tokens" and argument is not None and _INTEGER.fullmatch(argument):
            found["tokens"] = int(argument)
        else:
            raise UnknownTrigger(f"Unknown simulator trigger phrase: {match.group(0)}")
    return Triggers(**found)  # type: ignore[arg-type]

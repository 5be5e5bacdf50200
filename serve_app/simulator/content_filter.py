"""Azure content-filter annotations, as they appear on prompts, choices and blocked-prompt errors."""

from __future__ import annotations

from typing import Any

_SAFE = {"filtered": False, "severity": "safe"}
_NOT_DETECTED = {"filtered": False, "detected": False}

CHOICE_RESULTS: dict[str, Any] = {
    "hate": _SAFE,
    "protected_material_code": _NOT_DETECTED,
    "protected_material_text": _NOT_DETECTED,
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
FILTERED_CHOICE_RESULTS: dict[str, Any] = {**CHOICE_RESULTS, "violence": {"filtered": True, "severity": "medium"}}

PROMPT_RESULTS: dict[str, Any] = {
    "hate": _SAFE,
    "jailbreak": _NOT_DETECTED,
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
BLOCKED_PROMPT_RESULTS: dict[str, Any] = {**PROMPT_RESULTS, "hate": {"filtered": True, "severity": "high"}}

PROMPT_FILTER_RESULTS: list[dict[str, Any]] = [{"prompt_index": 0, "content_filter_results": PROMPT_RESULTS}]

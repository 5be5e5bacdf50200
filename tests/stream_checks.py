"""What every Responses event stream must satisfy, checked the same way in unit and end-to-end tests."""

from __future__ import annotations

from typing import Any

TERMINAL = {"response.completed", "response.incomplete", "response.failed"}
VOLATILE = {"id", "created_at", "completed_at"}


def check_event_sequence(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Assert the stream's grammar; return the Response of its terminal event."""
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds[:3]
    assert kinds[-1] in TERMINAL and sum(k in TERMINAL for k in kinds) == 1, kinds[-3:]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []

    added: dict[int, dict[str, Any]] = {}
    parts: dict[int, list[str]] = {}
    done_items: set[int] = set()
    for event in events[2:-1]:
        kind, index = event["type"], event.get("output_index")
        if kind == "response.output_item.added":
            assert index == len(added), f"output_index {index} is not the next one ({len(added)})"
            # As OpenAI streams: each output item is closed before the next one opens.
            assert done_items == set(added), f"output item {index} opened before item {len(done_items)} closed"
            added[index] = event["item"]
            parts[index] = []
            continue
        assert index in added, f"{kind} for output_index {index} before its output_item.added"
        assert index not in done_items, f"{kind} after output_item.done of {index}"
        if "item_id" in event:
            assert event["item_id"] == added[index]["id"]
        if kind == "response.content_part.added":
            assert event["content_index"] == len(parts[index]), "content_index is not dense"
            parts[index].append(event["part"]["type"])
        elif "content_index" in event:
            assert event["content_index"] < len(parts[index]), f"{kind} before its content_part.added"
        if kind == "response.output_item.done":
            assert event["item"]["id"] == added[index]["id"]
            done_items.add(index)
    assert done_items == set(added), "an output item was never closed"

    response = events[-1]["response"]
    if response["status"] != "failed":
        assert [item["id"] for item in response["output"]] == [added[i]["id"] for i in range(len(added))]
    return response


def without_volatile(response: dict[str, Any]) -> dict[str, Any]:
    """A Response with ids and timestamps blanked, for comparing a stream's result with a plain call's."""
    clean = {k: v for k, v in response.items() if k not in VOLATILE}
    clean["output"] = [{k: v for k, v in item.items() if k != "id"} for item in response["output"]]
    return clean

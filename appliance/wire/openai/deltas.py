"""A chat reply as deltas, in OpenAI's stream shape, and the message they fold into.

Backends that build chat replies themselves (the scripted backend, llama.cpp's tool
calls) describe a reply as a list of deltas: ``{"role": "assistant"}``,
``{"content": ...}``, a tool call's first delta (:func:`call_start`: ``index``, ``id``,
``type``, ``function.name``, empty ``arguments``), then its arguments in pieces
(:func:`call_arguments`). Streamed, each delta is a chunk; plain, :func:`message` folds
them into the reply's message, so both shapes always agree.
"""

from __future__ import annotations

import secrets
from typing import Any

Delta = dict[str, Any]


def new_call_id() -> str:
    """An OpenAI-style tool call id."""
    return f"call_{secrets.token_hex(12)}"


def call_start(index: int, name: str) -> Delta:
    """A call's first delta: its index, id, type and name, no arguments yet."""
    call = {
        "index": index,
        "id": new_call_id(),
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    return {"tool_calls": [call]}


def call_arguments(index: int, piece: str) -> Delta:
    """A piece of a call's arguments."""
    return {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}


def message(deltas: list[Delta]) -> dict[str, Any]:
    """The assistant message the deltas make: content ``None`` when only calls were made."""
    content = "".join(d.get("content") or "" for d in deltas)
    calls: list[dict[str, Any]] = []
    for delta in deltas:
        for call in delta.get("tool_calls") or []:
            if "id" in call:
                function = dict(call["function"])
                calls.append({"id": call["id"], "type": "function", "function": function})
            else:
                calls[call["index"]]["function"]["arguments"] += call["function"]["arguments"]
    out: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        out["content"] = content or None
        out["tool_calls"] = calls
    return out

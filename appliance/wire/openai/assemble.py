"""A relayed stream folded back into the reply it stands for (for the request log).

:func:`reply` takes the stream's chunks as parsed (chat or completions chunks, or the
events of an upstream's own Responses stream) and gives one JSON object in the shape of
the plain reply: ``choices`` with each choice's whole message (content, reasoning, tool
calls with their arguments joined) or text, and its finish reason. Upstreams send what
they like: anything that is not in the expected shape is skipped, never an error.
"""

from __future__ import annotations

from typing import Any


def reply(chunks: list[Any]) -> dict[str, Any]:
    """The reply that ``chunks`` make (see the module docstring)."""
    native = _native(chunks)
    if native is not None:
        return native
    head: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        for name in ("id", "model", "created"):
            if name in chunk and name not in head:
                head[name] = chunk[name]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                index = choice.get("index", 0)
                _fold(choices.setdefault(index if isinstance(index, int) else 0, {}), choice)
    text = any("text" in c for c in choices.values())
    out: dict[str, Any] = {
        **head,
        "object": "text_completion" if text else "chat.completion",
        "choices": [_finished(index, c) for index, c in sorted(choices.items())],
    }
    return out


def _fold(into: dict[str, Any], choice: dict[str, Any]) -> None:
    if choice.get("finish_reason"):
        into["finish_reason"] = choice["finish_reason"]
    if isinstance(choice.get("text"), str):
        into["text"] = into.get("text", "") + choice["text"]
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return
    message = into.setdefault("message", {"role": "assistant"})
    for name in ("content", "reasoning_content", "refusal"):
        piece = delta.get(name)
        if isinstance(piece, str):
            message[name] = (message.get(name) or "") + piece
    calls: dict[int, dict[str, Any]] = into.setdefault("calls", {})
    for call in delta.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        index = call.get("index", len(calls))
        whole = calls.setdefault(
            index if isinstance(index, int) else len(calls),
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if isinstance(call.get("id"), str):
            whole["id"] = call["id"]
        function = call.get("function")
        if isinstance(function, dict):
            for name in ("name", "arguments"):
                if isinstance(function.get(name), str):
                    whole["function"][name] += function[name]


def _finished(index: int, folded: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index}
    if "text" in folded:
        out["text"] = folded["text"]
    if "message" in folded or folded.get("calls"):
        message = folded.get("message", {"role": "assistant"})
        message.setdefault("content", None)
        if folded.get("calls"):
            message["tool_calls"] = [c for _, c in sorted(folded["calls"].items())]
        out["message"] = message
    out["finish_reason"] = folded.get("finish_reason")
    return out


def _native(chunks: list[Any]) -> dict[str, Any] | None:
    """An upstream Responses stream: its final response, else its text deltas joined."""
    events = [c for c in chunks if isinstance(c, dict) and isinstance(c.get("type"), str)]
    if not events or any("choices" in c for c in chunks if isinstance(c, dict)):
        return None
    for event in reversed(events):
        if isinstance(event.get("response"), dict) and event["type"].endswith(
            ("completed", "incomplete", "failed")
        ):
            final: dict[str, Any] = event["response"]
            return final
    text = "".join(
        e["delta"]
        for e in events
        if e["type"].endswith(".delta") and isinstance(e.get("delta"), str)
    )
    return {"object": "response", "output_text": text}

"""A relayed stream folded back into the reply it stands for (for the request log).

A :class:`Fold` takes the stream's chunks as they are relayed, already parsed (chat or
completions chunks, or the events of an upstream's own Responses stream), and keeps only
the pieces of text (never the chunks themselves, so a long stream costs about its text).
:meth:`Fold.reply` then gives one JSON object in the shape of the plain reply:
``choices`` with each choice's whole message (content, reasoning, tool calls with their
arguments joined) or text, and its finish reason; for a Responses stream, its final
response. Upstreams send what they like: what is not in the expected shape is skipped,
never an error.
"""

from __future__ import annotations

from typing import Any

_TEXTS = ("content", "reasoning_content", "refusal")


class _Choice:
    __slots__ = ("calls", "finish", "message", "pieces", "text")

    def __init__(self) -> None:
        self.pieces: dict[str, list[str]] = {}
        self.text: list[str] | None = None
        self.message = False
        self.finish: Any = None
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, choice: dict[str, Any]) -> None:
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]
        text = choice.get("text")
        if isinstance(text, str):
            (self.text if self.text is not None else self._start_text()).append(text)
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        self.message = True
        for name in _TEXTS:
            piece = delta.get(name)
            if isinstance(piece, str):
                self.pieces.setdefault(name, []).append(piece)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._call(call)

    def _start_text(self) -> list[str]:
        self.text = []
        return self.text

    def _call(self, call: dict[str, Any]) -> None:
        index = call.get("index")
        whole = self.calls.setdefault(
            index if isinstance(index, int) else len(self.calls),
            {"id": None, "type": "function", "name": [], "arguments": []},
        )
        if isinstance(call.get("id"), str):
            whole["id"] = call["id"]
        function = call.get("function")
        if isinstance(function, dict):
            for name in ("name", "arguments"):
                if isinstance(function.get(name), str):
                    whole[name].append(function[name])

    def result(self, index: int) -> dict[str, Any]:
        out: dict[str, Any] = {"index": index}
        if self.text is not None:
            out["text"] = "".join(self.text)
        if self.message or self.calls:
            message: dict[str, Any] = {"role": "assistant", "content": None}
            message.update({name: "".join(parts) for name, parts in self.pieces.items()})
            if self.calls:
                message["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": c["type"],
                        "function": {
                            "name": "".join(c["name"]),
                            "arguments": "".join(c["arguments"]),
                        },
                    }
                    for _, c in sorted(self.calls.items())
                ]
            out["message"] = message
        out["finish_reason"] = self.finish
        return out


class Fold:
    """The pieces of one stream's reply, added chunk by chunk (see the module docstring)."""

    __slots__ = ("choices", "deltas", "final", "head")

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, _Choice] = {}
        self.deltas: list[str] = []  # a Responses stream's text
        self.final: dict[str, Any] | None = None  # a Responses stream's final response

    def add(self, chunk: Any) -> None:
        """Fold in one parsed chunk."""
        if not isinstance(chunk, dict):
            return
        if "choices" not in chunk and isinstance(chunk.get("type"), str):
            self._event(chunk)
            return
        for name in ("id", "model", "created"):
            if name in chunk and name not in self.head:
                self.head[name] = chunk[name]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                index = choice.get("index", 0)
                key = index if isinstance(index, int) else 0
                self.choices.setdefault(key, _Choice()).add(choice)

    def _event(self, event: dict[str, Any]) -> None:
        kind: str = event["type"]
        if kind.endswith(".delta") and isinstance(event.get("delta"), str):
            self.deltas.append(event["delta"])
        elif isinstance(event.get("response"), dict) and kind.endswith(
            ("completed", "incomplete", "failed")
        ):
            self.final = event["response"]

    def reply(self) -> dict[str, Any]:
        """The reply the chunks make."""
        if self.final is not None:
            return self.final
        if self.deltas and not self.choices:
            return {"object": "response", "output_text": "".join(self.deltas)}
        text = any(c.text is not None for c in self.choices.values())
        return {
            **self.head,
            "object": "text_completion" if text else "chat.completion",
            "choices": [c.result(i) for i, c in sorted(self.choices.items())],
        }


def reply(chunks: list[Any]) -> dict[str, Any]:
    """The reply that ``chunks`` make, folded at once."""
    fold = Fold()
    for chunk in chunks:
        fold.add(chunk)
    return fold.reply()

"""How much text a request or a reply holds, for usage estimates: about four characters a
token, as OpenAI's own rule of thumb (see :func:`appliance.wire.usage.estimate`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

CHARS_PER_TOKEN = 4


def tokens_in(text_length: int) -> int:
    """Estimated tokens of a text of ``text_length`` characters (at least one if any)."""
    if text_length <= 0:
        return 0
    return max(1, round(text_length / CHARS_PER_TOKEN))


def generated_text_length(obj: Any) -> int:
    """Characters of generated text in a reply or chunk: content, text, tool calls."""
    if type(obj) is not dict:
        return 0
    choices = obj.get("choices")
    if type(choices) is not list:
        return 0
    length = 0
    for choice in choices:
        if type(choice) is dict:
            length += choice_text_length(choice)
    return length


def choice_text_length(choice: dict[str, Any]) -> int:
    """Characters of generated text in one choice of a reply or chunk."""
    length = 0
    part = choice.get("delta") or choice.get("message")
    if type(part) is dict:
        content = part.get("content")
        if type(content) is str and len(part) <= 2:  # the usual {"content"[, "role"]}
            length += len(content)
        else:
            length += _message_length(part)
    text = choice.get("text")
    if type(text) is str:
        length += len(text)
    return length


def _message_length(message: dict[str, Any]) -> int:
    length = 0
    for field in ("content", "reasoning_content", "refusal"):
        value = message.get(field)
        if isinstance(value, str):
            length += len(value)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                for field in ("name", "arguments"):
                    value = function.get(field)
                    if isinstance(value, str):
                        length += len(value)
    return length


def prompt_text_length(body: dict[str, Any]) -> int:
    """Characters of text a request asks the model to read (for estimates)."""
    length = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                length += _message_length(message) + _parts_length(message.get("content"))
    for field in ("prompt", "input", "query", "documents"):
        length += _texts_length(body.get(field))
    return length


def _parts_length(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    return sum(
        len(part["text"])
        for part in content
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )


def _texts_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        # Token arrays: each number is a token, about CHARS_PER_TOKEN characters.
        return sum(
            len(v) if isinstance(v, str) else CHARS_PER_TOKEN if isinstance(v, int) else 0
            for v in _flatten(value)
        )
    return 0


def _flatten(values: Iterable[Any]) -> Iterable[Any]:
    for value in values:
        if isinstance(value, list):
            yield from value
        else:
            yield value

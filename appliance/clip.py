"""Callers' text, cut to a size fit to log or to echo back.

A caller chooses the length of a model name, a path or a header; logging or echoing it in
full lets one request inflate the logs by as much as the server accepts. Whatever a caller
wrote is clipped to :data:`ECHO_CHARS` characters, with a note of its full length, so the
line still says what was sent and how much of it there was.
"""

from __future__ import annotations

from typing import Any

ECHO_CHARS = 256


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` if it is at most ``limit`` characters, else its start and its full length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def clip_value(value: Any, limit: int = ECHO_CHARS) -> Any:
    """:func:`clip` for a string; anything else as it is."""
    return clip(value, limit) if isinstance(value, str) else value

"""What a model's chat template shows of a conversation, found by rendering probes through it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A value that a template shows verbatim if it renders that part of a conversation.
PROBE = "appliance_probe_name"
PROBE_RESULT = "appliance_probe_result"


@dataclass(frozen=True)
class Template:
    """What a model's chat template shows the model (probed once, at load)."""

    tool_calls: bool = False
    tool_role: bool = False
    tools: bool = False


def probe_tool_calls() -> list[dict[str, Any]]:
    """A conversation whose rendering shows :data:`PROBE` if tool calls are rendered."""
    return [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": PROBE, "arguments": {}},
                }
            ],
        },
    ]


def probe_tool_role() -> list[dict[str, Any]]:
    """A conversation whose rendering shows :data:`PROBE_RESULT` if tool results are."""
    return [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hi"},
        {"role": "tool", "tool_call_id": "call_0", "name": "f", "content": PROBE_RESULT},
    ]


def probe_tools() -> list[dict[str, Any]]:
    """Tools whose rendering shows :data:`PROBE` if the template shows offered tools."""
    return [{"type": "function", "function": {"name": PROBE, "parameters": {"type": "object"}}}]

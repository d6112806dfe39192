"""Chat replies in Anthropic's shape: a ``message``, its stream of events, its errors.

A plain chat completion becomes one ``message``; a stream of chat chunks becomes
Anthropic's sequence: ``message_start``, then per content block ``content_block_start``,
``content_block_delta`` (``text_delta`` or ``input_json_delta``) and
``content_block_stop``, then ``message_delta`` (``stop_reason``, usage) and
``message_stop``; a failure is an ``error`` event. Text and each tool call are blocks of
their own, in the order the model produced them.

``stop_reason``: ``length`` is ``max_tokens``, ``tool_calls`` is ``tool_use``; ``stop`` is
``stop_sequence`` when the backend says which stop string ended the text (vLLM's
``stop_reason`` field), else ``end_turn``.

Nothing here imports Falcon or the workers.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from appliance.errors import APIError, UpstreamError
from appliance.wire.usage import Usage

Event = tuple[str, dict[str, Any]]  # an SSE event's name and its JSON data


def message_id() -> str:
    """An Anthropic-style message id."""
    return f"msg_{secrets.token_hex(12)}"


def _tool_id() -> str:
    return f"toolu_{secrets.token_hex(12)}"


def usage(use: Usage) -> dict[str, int]:
    """Anthropic's usage object."""
    return {"input_tokens": use.prompt, "output_tokens": use.completion}


def stop_reason(finish: Any, matched: Any, stop_sequences: list[str] | None) -> tuple[str, Any]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for a chat ``finish_reason``."""
    if finish == "length":
        return "max_tokens", None
    if finish in ("tool_calls", "function_call"):
        return "tool_use", None
    if finish == "content_filter":
        return "refusal", None
    if isinstance(matched, str) and stop_sequences and matched in stop_sequences:
        return "stop_sequence", matched
    return "end_turn", None


def message(reply: Any, use: Usage, model: str, stop_sequences: list[str] | None) -> dict[str, Any]:
    """The ``message`` for a plain chat completion (already charged as ``use``)."""
    choice = _first_choice(reply)
    said = choice.get("message")
    said = said if isinstance(said, dict) else {}
    content: list[dict[str, Any]] = []
    text = said.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in _calls(said):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad_reply("a tool call without a function name")
        call_id = call.get("id")
        content.append(
            {
                "type": "tool_use",
                "id": call_id if isinstance(call_id, str) and call_id else _tool_id(),
                "name": function["name"],
                "input": _input(function.get("arguments")),
            }
        )
    reason, sequence = stop_reason(
        choice.get("finish_reason"), choice.get("stop_reason"), stop_sequences
    )
    replied = reply.get("model") if isinstance(reply, dict) else None
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": replied if isinstance(replied, str) else model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(use),
    }


def _first_choice(reply: Any) -> dict[str, Any]:
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _bad_reply("a chat reply without choices")
    return choices[0]


def _calls(said: dict[str, Any]) -> list[Any]:
    calls = said.get("tool_calls")
    if isinstance(calls, list):
        return calls
    legacy = said.get("function_call")
    return [{"function": legacy}] if isinstance(legacy, dict) else []


def _input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as the ``input`` object Anthropic's clients expect."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise _bad_reply("tool call arguments that are not a JSON object")
    return parsed


def _bad_reply(what: str) -> UpstreamError:
    # The same request would get the same reply: not worth a client's retry.
    return UpstreamError(
        f"The model answered with {what}, which has no Anthropic form.",
        headers={"x-should-retry": "false"},
    )


# ---- errors -------------------------------------------------------------------------

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error envelope for an error of HTTP ``status``."""
    default = "invalid_request_error" if status < 500 else "api_error"
    kind = _ERROR_TYPES.get(status, default)
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_event(error: APIError) -> Event:
    """A failure after the stream began, as Anthropic's ``error`` event."""
    return "error", error_body(error.status, error.message)


# ---- streams ------------------------------------------------------------------------


class StreamTranslator:
    """Chat chunks in, Anthropic stream events out, for one stream.

    Args:
        model: The model as the client named it (until a chunk names it).
        stop_sequences: The request's, to tell a stop sequence from the end of a turn.
    """

    def __init__(self, model: str, stop_sequences: list[str] | None) -> None:
        self.model = model
        self.stop_sequences = stop_sequences
        self.started = False
        self._index = -1  # of the open content block
        self._open: str | None = None  # "text", or the chat index of the open tool call
        self._finish: Any = None
        self._matched: Any = None
        self._streamed: set[Any] = set()  # chat indexes of calls sent as blocks
        self._held: dict[Any, dict[str, Any]] = {}  # calls interleaved with the open one

    def chunk(self, obj: Any) -> list[Event]:
        """The events for one parsed chat chunk."""
        events: list[Event] = []
        if not self.started:
            events.append(self._start(obj))
        if not isinstance(obj, dict):
            return events
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                events.extend(self._text(delta.get("content")))
                calls = delta.get("tool_calls")
                for call in calls if isinstance(calls, list) else []:
                    events.extend(self._tool(call))
            if choice.get("finish_reason") is not None:
                self._finish = choice["finish_reason"]
                self._matched = choice.get("stop_reason")
        return events

    def finish(self, use: Usage) -> list[Event]:
        """The events that end a stream that ran to its end, charged as ``use``."""
        events = [] if self.started else [self._start(None)]
        events.extend(self._close_block())
        for held in self._held.values():
            events.extend(self._open_block(held["block"], "held"))
            if held["arguments"]:
                partial = "".join(held["arguments"])
                events.append(self._delta({"type": "input_json_delta", "partial_json": partial}))
            events.extend(self._close_block())
        reason, sequence = stop_reason(self._finish, self._matched, self.stop_sequences)
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        events.append(
            ("message_delta", {"type": "message_delta", "delta": delta, "usage": usage(use)})
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def _start(self, obj: Any) -> Event:
        self.started = True
        named = obj.get("model") if isinstance(obj, dict) else None
        body: dict[str, Any] = {
            "id": message_id(),
            "type": "message",
            "role": "assistant",
            "model": named if isinstance(named, str) else self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},  # known at the end
        }
        return "message_start", {"type": "message_start", "message": body}

    def _text(self, text: Any) -> list[Event]:
        if not isinstance(text, str) or not text:
            return []
        events: list[Event] = []
        if self._open != "text":
            events.extend(self._open_block({"type": "text", "text": ""}, "text"))
        delta = {"type": "text_delta", "text": text}
        events.append(self._delta(delta))
        return events

    def _tool(self, call: Any) -> list[Event]:
        if not isinstance(call, dict):
            return []
        index = call.get("index", 0)
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        arguments = function.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        if index in self._held:
            self._held[index]["arguments"].append(arguments)
            return []
        events: list[Event] = []
        if self._open != f"tool:{index}":
            if index in self._streamed:
                raise _bad_reply("a streamed tool call went on after its block was closed")
            name = function.get("name")
            if not isinstance(name, str):
                raise _bad_reply("a streamed tool call without a function name first")
            call_id = call.get("id")
            block = {
                "type": "tool_use",
                "id": call_id if isinstance(call_id, str) and call_id else _tool_id(),
                "name": name,
                "input": {},
            }
            if self._open is not None and self._open.startswith("tool:"):
                # Parallel calls may interleave (vLLM, OpenAI); Anthropic's blocks cannot:
                # this one is sent whole once the open one is over, at the stream's end.
                self._held[index] = {"block": block, "arguments": [arguments]}
                return []
            self._streamed.add(index)
            events.extend(self._open_block(block, f"tool:{index}"))
        if arguments:
            events.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return events

    def _open_block(self, block: dict[str, Any], kind: str) -> list[Event]:
        events = self._close_block()
        self._index += 1
        self._open = kind
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        events.append(("content_block_start", start))
        if self._index == 0:
            events.append(("ping", {"type": "ping"}))  # where Anthropic's API sends its ping
        return events

    def _delta(self, delta: dict[str, Any]) -> Event:
        body = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return "content_block_delta", body

    def _close_block(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self._index})]

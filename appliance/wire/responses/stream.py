"""A stream of chat-completion chunks as the Responses API's typed events.

:class:`EventStream` reads the chat chunks one at a time and says which events they make:
``response.created`` and ``response.in_progress`` with the first chunk; for text,
``response.output_item.added`` (a message), ``response.content_part.added``, then one
``response.output_text.delta`` per piece; for each tool call,
``response.output_item.added`` (a ``function_call``) and its
``response.function_call_arguments.delta`` pieces. An item ends
(``response.output_text.done``, ``response.content_part.done``,
``response.function_call_arguments.done``, ``response.output_item.done``) when the next
one begins or the choice finishes; the stream ends with ``response.completed`` (or
``response.incomplete`` when the output was cut at ``max_output_tokens``) holding the
whole response and its usage. A failure ends it with ``error`` and ``response.failed``.
Every event carries its ``sequence_number``.

:func:`frame` writes events as SSE, each with its ``event:`` line, as OpenAI does.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from appliance.wire.openai.reply import now
from appliance.wire.responses.protocol import ResponsesRequest
from appliance.wire.responses.reply import (
    call_item,
    message_item,
    outcome,
    response,
    text_part,
    usage_of,
)
from appliance.wire.usage import Usage

Event = dict[str, Any]


# The codes a Response's ``error`` may carry (OpenAI's ResponseErrorCode); others are
# given as ``server_error`` there (the ``error`` event before it keeps the code as it came).
RESPONSE_ERROR_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "data_residency_mismatch",
        "bio_policy",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)


def response_error(code: str | None, message: str) -> dict[str, str]:
    """A failed Response's ``error``: the code if OpenAI's schema has it, else
    ``server_error``."""
    return {"code": code if code in RESPONSE_ERROR_CODES else "server_error", "message": message}


def frame(events: list[Event]) -> bytes:
    """Events as SSE bytes: ``event: <type>`` and ``data: <json>`` each."""
    return b"".join(
        b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
        for event in events
    )


class EventStream:
    """The Responses events of one chat stream (see the module docstring)."""

    def __init__(self, request: ResponsesRequest, rid: str, created: int) -> None:
        self.request = request
        self.rid = rid
        self.created = created
        self.model = request.model
        self.output: list[dict[str, Any]] = []
        self._seq = 0
        self._started = False
        self._text: dict[str, Any] | None = None  # the message item being written
        self._calls: dict[Any, dict[str, Any]] = {}  # chat tool-call index -> item
        self._open_call: dict[str, Any] | None = None
        self._finish: Any = None
        self._usage: Any = None

    def chunk(self, obj: Any) -> list[Event]:
        """The events one parsed chat chunk makes (none for a usage-only chunk)."""
        if not isinstance(obj, dict):
            return []
        events = self._start(obj)
        if isinstance(obj.get("usage"), dict):
            self._usage = obj["usage"]
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str) and content:
                    events += self._text_delta(content)
                calls = delta.get("tool_calls")
                for call in calls if isinstance(calls, list) else []:
                    if isinstance(call, dict):
                        events += self._call_delta(call)
            if choice.get("finish_reason") is not None:
                self._finish = choice["finish_reason"]
        return events

    def end(self, used: Usage) -> list[Event]:
        """The events that end a stream that finished: items closed, then the response."""
        events = self._start({})
        status, why = outcome(self._finish)
        if not self.output:
            events += self._text_delta("")
        events += self._close(status)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        final = self._response(
            status,
            usage=usage_of(used, self._usage),
            incomplete=why,
            completed_at=now() if status == "completed" else None,
        )
        return [*events, self._event(kind, response=final)]

    def fail(self, code: str | None, message: str, param: str | None) -> list[Event]:
        """The events that end a stream that failed: ``error``, then ``response.failed``."""
        events = self._start({})
        events.append(self._event("error", code=code, message=message, param=param))
        failed = self._response("failed", error=response_error(code, message))
        return [*events, self._event("response.failed", response=failed)]

    # ---- items ----------------------------------------------------------------------

    def _start(self, obj: dict[str, Any]) -> list[Event]:
        if self._started:
            return []
        self._started = True
        if isinstance(obj.get("model"), str):
            self.model = obj["model"]
        snapshot = self._response("in_progress")
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def _text_delta(self, piece: str) -> list[Event]:
        events: list[Event] = []
        if self._text is None:
            events += self._close_call("completed")
            item = message_item("", "in_progress")
            item["content"] = []
            events += self._add(item)
            self._text = item
            events.append(
                self._event(
                    "response.content_part.added",
                    **self._where(item),
                    content_index=0,
                    part=text_part(""),
                )
            )
            item["content"].append(text_part(""))
        part = self._text["content"][0]
        part["text"] += piece
        if piece:
            events.append(
                self._event(
                    "response.output_text.delta",
                    **self._where(self._text),
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
            )
        return events

    def _call_delta(self, call: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        index = call.get("index", 0)
        raw = call.get("function")
        function: dict[str, Any] = raw if isinstance(raw, dict) else {}
        item = self._calls.get(index)
        if item is None:
            events += self._close_text("completed") + self._close_call("completed")
            call_id = call.get("id") if isinstance(call.get("id"), str) else None
            name = function.get("name")
            item = call_item(call_id, name if isinstance(name, str) else "", "", "in_progress")
            events += self._add(item)
            self._calls[index] = self._open_call = item
        pieces = function.get("arguments")
        if isinstance(pieces, str) and pieces:
            item["arguments"] += pieces
            events.append(
                self._event(
                    "response.function_call_arguments.delta", **self._where(item), delta=pieces
                )
            )
        return events

    def _close(self, status: str) -> list[Event]:
        item_status = "completed" if status == "completed" else "incomplete"
        return self._close_text(item_status) + self._close_call(item_status)

    def _close_text(self, status: str) -> list[Event]:
        item, self._text = self._text, None
        if item is None:
            return []
        where, part = self._where(item), item["content"][0]
        item["status"] = status
        return [
            self._event(
                "response.output_text.done",
                **where,
                content_index=0,
                text=part["text"],
                logprobs=[],
            ),
            self._event("response.content_part.done", **where, content_index=0, part=part),
            self._event("response.output_item.done", output_index=where["output_index"], item=item),
        ]

    def _close_call(self, status: str) -> list[Event]:
        item, self._open_call = self._open_call, None
        if item is None:
            return []
        where = self._where(item)
        item["status"] = status
        return [
            self._event(
                "response.function_call_arguments.done",
                **where,
                name=item["name"],
                arguments=item["arguments"],
            ),
            self._event("response.output_item.done", output_index=where["output_index"], item=item),
        ]

    def _add(self, item: dict[str, Any]) -> list[Event]:
        self.output.append(item)
        # The item grows after this event; the event shows it as it was added.
        return [
            self._event(
                "response.output_item.added",
                output_index=len(self.output) - 1,
                item=copy.deepcopy(item),
            )
        ]

    def _where(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": self.output.index(item)}

    def _response(self, status: str, **fields: Any) -> dict[str, Any]:
        return response(
            self.request,
            rid=self.rid,
            created=self.created,
            model=self.model,
            status=status,
            output=orjson.loads(orjson.dumps(self.output)),
            **fields,
        )

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        return event

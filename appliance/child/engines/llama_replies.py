"""llama-cpp-python's chat and completion output, as OpenAI's replies and chunks.

llama streams one token per chunk; these rewrite the chunks (and plain choices) into
OpenAI's shape, with the text read for tool calls by :mod:`.llama_tools`, and count
the tokens the stream carried for its usage.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from typing import Any

from appliance.child.engines import llama_tools
from appliance.child.engines.llama_request import ChatCall
from appliance.errors import InvalidRequestError


class Deltas:
    """Rewrites a llama stream's chunks (a generator); counts the tokens it carried."""

    tokens = 0

    def __call__(self, chunks: Iterator[dict[str, Any]]) -> Generator[dict[str, Any], None, None]:
        raise NotImplementedError


class ChatDeltas(Deltas):
    """Chat chunks in OpenAI's shape, with the text read for tool calls (see llama_tools).

    llama streams one token per chunk; a reader may hold text back (the start of a
    ``<tool_call>``, the end of a forced call's object), so a chunk may give none or
    several. ``stop`` is checked while text is held back.
    """

    def __init__(self, call: ChatCall, stop: threading.Event) -> None:
        self.call = call
        self.stop = stop
        self.reader = reader_for(call)

    def __call__(self, chunks: Iterator[dict[str, Any]]) -> Generator[dict[str, Any], None, None]:
        for chunk in chunks:
            if self.stop.is_set():
                return
            choice = chunk["choices"][0]  # a stream has one choice
            delta = choice.get("delta") or {}
            text, finish = delta.get("content"), choice.get("finish_reason")
            self.tokens += bool(text)
            deltas = self.reader.feed(text) if text else []
            if delta.get("role"):
                deltas = [{"role": "assistant", **(deltas[0] if deltas else {})}, *deltas[1:]]
            if finish is not None:
                deltas = [*deltas, *self.reader.end(), {}]  # the last carries the reason
            for k, out in enumerate(deltas):
                last = finish is not None and k == len(deltas) - 1
                reason = (
                    finish_reason(finish, self.reader.called, self.call.legacy) if last else None
                )
                if self.call.legacy:
                    out = llama_tools.legacy(out)
                yield {**chunk, "choices": [{"index": 0, "delta": out, "finish_reason": reason}]}


class TextDeltas(Deltas):
    """Completion chunks as they are; an echoed prompt before the first."""

    def __init__(self, echo: str | None) -> None:
        self.echo = echo

    def __call__(self, chunks: Iterator[dict[str, Any]]) -> Generator[dict[str, Any], None, None]:
        for chunk in chunks:
            for choice in chunk["choices"]:
                self.tokens += bool(choice.get("text"))
                if self.echo is not None:
                    choice["text"] = self.echo + (choice.get("text") or "")
                    self.echo = None
            yield chunk


def reader_for(call: ChatCall) -> llama_tools.Reader:
    if call.forced is not None:
        return llama_tools.Forced()
    if call.tools:
        return llama_tools.Tagged(call.tools, single=not call.parallel)
    return llama_tools.Plain()


def finish_reason(reason: str, called: bool, legacy: bool) -> str:
    """``tool_calls`` (legacy: ``function_call``) for a call that ended on its own."""
    if called and reason != "length":
        return "function_call" if legacy else "tool_calls"
    return reason


def chat_choice(index: int, choice: dict[str, Any], call: ChatCall) -> dict[str, Any]:
    """A plain reply's choice, its text read for tool calls."""
    reader = reader_for(call)
    message = llama_tools.message(choice["message"].get("content") or "", reader)
    if call.legacy and "tool_calls" in message:
        message["function_call"] = message.pop("tool_calls")[0]["function"]
    finish = finish_reason(choice["finish_reason"], reader.called, call.legacy)
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}


def single(body: dict[str, Any]) -> None:
    if (body.get("n") or 1) > 1:
        raise InvalidRequestError(
            "n > 1 cannot be streamed from a llama.cpp model; stream n=1 or do not stream.",
            param="n",
            code="invalid_value",
        )


def reply_of(
    reply: dict[str, Any],
    kind: str,
    name: str,
    choices: list[dict[str, Any]],
    prompt: int,
    completion: int,
) -> dict[str, Any]:
    return {
        "id": reply["id"],
        "object": kind,
        "created": reply["created"],
        "model": name,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }

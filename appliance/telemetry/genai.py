"""A model call in the words of OpenTelemetry's GenAI semantic conventions.

Pure functions of the request the model got (the chat form of a Responses or Messages
request) and of its reply: the span's name and attributes. Prompt and reply content only
go in when the config opts in (``telemetry.capture_content``), with the ``capture.redact``
patterns applied to every string of it (``scrub``) before it is put on a span.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeGuard

import orjson

from appliance.clip import clip
from appliance.wire.usage import UNPARSED, Usage

# By route template; what the conventions name no operation for keeps the route's word.
OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "chat",
    "/v1/messages": "chat",
    "/v1/messages/count_tokens": "chat",
    "/v1/rerank": "rerank",
    "/v1/beta/relevance": "rerank",
}
CONTENT_CHARS = 16384  # captured content, each of prompt and reply, at most

_LIMITS = ("max_completion_tokens", "max_tokens", "max_output_tokens")  # the first one set
_SAMPLING = (("temperature", "gen_ai.request.temperature"), ("top_p", "gen_ai.request.top_p"))
_FINISH = re.compile(rb'"finish_reason"\s*:\s*"([A-Za-z_]{1,40})"')
_MODEL_KEY = b'"model"'
PARSED_UP_TO = 262144  # bytes of a plain reply parsed to find its model (traced calls only)
_MODEL_VALUE = re.compile(rb'\s*:\s*"([^"\\]{1,256})"')  # after the key: a plain string


def operation(route: str | None) -> str:
    """``gen_ai.operation.name`` for a request on ``route``."""
    return OPERATIONS.get(route or "", "chat")


def request_attributes(model: str, request: dict[str, Any], op: str) -> dict[str, Any]:
    """The attributes known when the call begins."""
    out: dict[str, Any] = {"gen_ai.operation.name": op, "gen_ai.request.model": clip(model)}
    for name in _LIMITS:
        value = request.get(name)
        if _is_number(value):
            out["gen_ai.request.max_tokens"] = int(value)
            break
    for name, attribute in _SAMPLING:
        value = request.get(name)
        if _is_number(value):
            out[attribute] = float(value)
    if request.get("stream"):
        out["appliance.stream"] = True
    return out


def response_attributes(
    response_model: str | None, usage: Usage | None, finish_reasons: list[str]
) -> dict[str, Any]:
    """The attributes known when the call is over."""
    out: dict[str, Any] = {}
    if response_model is not None:
        out["gen_ai.response.model"] = response_model
    if usage is not None:
        out["gen_ai.usage.input_tokens"] = usage.prompt
        out["gen_ai.usage.output_tokens"] = usage.completion
        if usage.estimated:
            out["appliance.usage.estimated"] = True
    if finish_reasons:
        out["gen_ai.response.finish_reasons"] = list(finish_reasons)
    return out


def finish_reasons(reply: bytes | None) -> list[str]:
    """The finish reasons a plain chat or completion reply states, in order."""
    if not reply:
        return []
    return [match.decode() for match in _FINISH.findall(reply)]


def reply_model(reply: bytes, parsed: Any = UNPARSED) -> str | None:
    """The model a plain reply names (its top-level ``model``), None if it names none.

    ``parsed`` is the reply as the usage read parsed it
    (:func:`~appliance.wire.usage.read_reply`), if it did: the model is read from it and
    the bytes are not parsed again. Else a reply of up to :data:`PARSED_UP_TO` bytes is
    parsed (a nested ``model``, such as a Responses reply's ``metadata`` echoing the
    caller's, is not the reply's). A larger one (an embeddings reply, megabytes of
    vectors) is searched from its end for the key, where OpenAI's layouts put it, rather
    than parsed: in valid JSON a quoted ``"model"`` followed by a colon is a key (a
    string's own quotes are escaped); a value with escapes is not read.
    """
    if parsed is not UNPARSED:
        return chunk_model(parsed)
    if len(reply) <= PARSED_UP_TO:
        try:
            return chunk_model(orjson.loads(reply))
        except orjson.JSONDecodeError:
            return None
    end = len(reply)
    while (at := reply.rfind(_MODEL_KEY, 0, end)) >= 0:
        found = _MODEL_VALUE.match(reply, at + len(_MODEL_KEY))
        if found is not None:
            return clip(found.group(1).decode(errors="replace"))
        end = at
    return None


def chunk_model(chunk: Any) -> str | None:
    """The model a parsed stream chunk names: a chat chunk's ``model``, or the response's
    in an upstream's Responses event (``response.created``); None if it names none."""
    if not isinstance(chunk, dict):
        return None
    named = chunk.get("model")
    if named is None and isinstance(response := chunk.get("response"), dict):
        named = response.get("model")
    return clip(named) if isinstance(named, str) and named else None


def input_messages(request: dict[str, Any], scrub: Callable[[Any], Any]) -> str | None:
    """``gen_ai.input.messages``: what the model was given, scrubbed, as JSON (clipped)."""
    for name in ("messages", "prompt", "input"):
        if name in request:
            return _json(scrub(request[name]))
    return None


def output_messages(
    reply: bytes | None, scrub: Callable[[Any], Any], parsed: Any = UNPARSED
) -> str | None:
    """``gen_ai.output.messages``: a plain reply's choices, scrubbed, as JSON (clipped);
    read from ``parsed``, the reply as it was already parsed, if it was."""
    if not reply:
        return None
    if parsed is UNPARSED:
        try:
            parsed = orjson.loads(reply)
        except orjson.JSONDecodeError:
            return None
    choices = parsed.get("choices") if isinstance(parsed, dict) else None
    return None if choices is None else _json(scrub(choices))


def _json(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= CONTENT_CHARS else text[:CONTENT_CHARS] + "…"


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)

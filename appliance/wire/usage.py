"""Token usage: read from replies and stream chunks, estimated where an upstream sends none.

Upstreams write JSON in every layout (compact, Python's ``"usage": {``, OpenAI's
pretty-printed replies), so usage is read by parsing the JSON, never by matching bytes.
Streams are always asked for usage (see :meth:`appliance.serving.workers.Worker.open_stream`);
:class:`StreamTally` reads it from whichever chunk carries it and, when the client did not
ask for it, takes it out again so the client's stream is what it asked for.

An upstream that sends no usage at all (an old server, one that refuses
``stream_options``, a stream the client left before its end) is charged an estimate from
the text that was relayed: about four characters a token, as OpenAI's own rule of thumb.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import orjson
import structlog

from appliance.errors import UpstreamError
from appliance.wire.textlength import (
    choice_text_length,
    generated_text_length,
    prompt_text_length,
    tokens_in,
)

MAX_COUNT = 10**8  # tokens in one request, past any model's context: a larger figure is broken

log = structlog.get_logger("appliance.usage")


class Usage(NamedTuple):
    """Token counts of one request.

    Attributes:
        prompt: Tokens read (prompt, inputs, query and documents).
        completion: Tokens generated.
        total: As the reply states it, else ``prompt + completion``.
        estimated: True when counted from text, not stated by the backend.
        complete: False for a stream that ended before its backend finished (the client
            left, or it failed): its usage chunk never came, which says nothing about
            whether the backend sends one.
    """

    prompt: int
    completion: int
    total: int
    estimated: bool = False
    complete: bool = True

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.prompt + other.prompt,
            self.completion + other.completion,
            self.total + other.total,
            self.estimated or other.estimated,
            self.complete and other.complete,
        )


def usage_of(obj: Any) -> Usage | None:
    """The ``usage`` of a parsed reply or chunk; None if it has none (or ``null``).

    Accepts OpenAI's shape and the rerank shape (``total_tokens`` only); counts that are
    missing, negative or not integers count as zero.
    """
    if not isinstance(obj, dict):
        return None
    raw = obj.get("usage")
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens")
    completion = raw.get("completion_tokens")
    total = raw.get("total_tokens")
    if (  # as every OpenAI-compatible server writes it: three counts in range
        type(prompt) is int
        and type(completion) is int
        and type(total) is int
        and 0 <= prompt <= MAX_COUNT
        and 0 <= completion <= MAX_COUNT
        and 0 <= total <= MAX_COUNT
    ):
        return Usage(prompt, completion, total)
    figures = (
        raw.get("prompt_tokens", raw.get("input_tokens")),
        raw.get("completion_tokens", raw.get("output_tokens")),
        raw.get("total_tokens"),
    )
    if any(_absurd(value) for value in figures):
        log.warning("usage_figures_refused", usage=str(raw)[:200], max=MAX_COUNT)
        return None  # figures no model made: as if the backend had stated none
    prompt, completion, total = (_count(value) for value in figures)
    if prompt is None and completion is None and total is None:
        return None
    if prompt is None and completion is None:
        prompt = total  # rerank and embeddings state only a total: all of it was read
    prompt, completion = prompt or 0, completion or 0
    return Usage(prompt, completion, total if total is not None else prompt + completion)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(int(value), 0)


def _absurd(value: Any) -> bool:
    """A count past :data:`MAX_COUNT`, or not finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not math.isfinite(value) or value > MAX_COUNT


def parse(body: bytes) -> Any:
    """A reply's JSON, or None if it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


_KEY = b'"usage"'
_WHITESPACE = b" \t\r\n"
_TAIL_SCAN_FROM = 4096  # smaller replies are parsed whole: it costs microseconds


def _tail_usage(body: bytes) -> Usage | None:
    """The usage of a large reply, parsing only the object under its last ``"usage"`` key.

    Large replies are embeddings (megabytes of floats) whose usage every known server
    writes after the data. The key is found from the end; it must be a real key (its
    opening quote not escaped, a colon after it), and only the object after it is parsed
    (bounded by matching braces, strings skipped). Anything unexpected: None, and the
    caller parses the whole reply.
    """
    end = len(body)
    while True:
        at = body.rfind(_KEY, 0, end)
        if at < 0:
            return None
        end = at
        slashes = 0
        while at - slashes - 1 >= 0 and body[at - slashes - 1] == 0x5C:  # backslash
            slashes += 1
        if slashes % 2:
            continue  # an escaped quote: inside a string
        colon = at + len(_KEY)
        while colon < len(body) and body[colon] in _WHITESPACE:
            colon += 1
        if colon >= len(body) or body[colon] != 0x3A:  # ':'
            continue
        start = colon + 1
        while start < len(body) and body[start] in _WHITESPACE:
            start += 1
        stop = _object_end(body, start)
        if stop is None:
            return None
        try:
            return usage_of({"usage": orjson.loads(body[start:stop])})
        except orjson.JSONDecodeError:
            return None


def _object_end(body: bytes, start: int) -> int | None:
    """The index after the JSON object starting at ``start`` (it must be small)."""
    if start >= len(body) or body[start] != 0x7B:  # '{'
        return None
    depth, index, limit = 0, start, min(len(body), start + 4096)
    in_string = False
    while index < limit:
        char = body[index]
        if in_string:
            if char == 0x5C:
                index += 1
            elif char == 0x22:
                in_string = False
        elif char == 0x22:
            in_string = True
        elif char == 0x7B:
            depth += 1
        elif char == 0x7D:
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return None


def estimate(body: dict[str, Any], generated_chars: int) -> Usage:
    """Usage estimated from the request and the text generated for it."""
    prompt = tokens_in(prompt_text_length(body))
    completion = tokens_in(generated_chars)
    return Usage(prompt, completion, prompt + completion, estimated=True)


class StreamTally:
    """Usage of one stream, read chunk by chunk; shows the client what it asked for.

    Args:
        client_asked: The client sent ``stream_options.include_usage: true``; otherwise
            the usage the appliance asked for on its behalf is taken out of its chunks.
    """

    __slots__ = (
        "chars",
        "client_asked",
        "complete",
        "finish_reasons",
        "keep_chars",
        "kept",
        "usage",
    )

    def __init__(self, client_asked: bool) -> None:
        self.client_asked = client_asked
        self.usage: Usage | None = None
        self.chars = 0
        self.complete = False
        self.kept: Any = None  # folds the parsed chunks for the request log (.add), up to
        self.keep_chars = 0  # this much generated text
        self.finish_reasons: list[str] = []  # as the choices' last chunks state them

    def keep(self, into: Any, max_chars: int) -> None:
        """Hand each parsed chunk to ``into.add`` until ``max_chars`` of text were relayed."""
        self.kept, self.keep_chars = into, max_chars

    def finished(self) -> None:
        """The backend's stream came to its end (it was not cut short)."""
        self.complete = True

    def chunk(self, payload: bytes) -> bytes | None:
        """Read one chunk; returns what the client sees (None: nothing)."""
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            raise not_json()
        choices = obj.get("choices")
        if type(choices) is list:  # its text and finish reasons, in one pass
            for choice in choices:
                if type(choice) is dict:
                    self.chars += choice_text_length(choice)
                    reason = choice.get("finish_reason")
                    if type(reason) is str:
                        self.finish_reasons.append(reason)
        if self.kept is not None and self.chars <= self.keep_chars:
            self.kept.add(obj)
        if "usage" not in obj:
            return payload
        found = usage_of(obj)
        if found is not None:
            self.usage = found  # servers that report usage on every chunk: the last counts
        if self.client_asked:
            if "choices" not in obj:  # as OpenAI writes it: SDKs iterate over choices
                obj["choices"] = []
                return orjson.dumps(obj)
            return payload
        del obj["usage"]
        if not obj.get("choices"):
            return None  # the usage chunk the client did not ask for (even a malformed one)
        return orjson.dumps(obj)

    def result(self, request: dict[str, Any]) -> Usage:
        """The stream's usage: as reported, else estimated from what was relayed."""
        if self.usage is not None:
            return self.usage
        return estimate(request, self.chars)._replace(complete=self.complete)


def not_json() -> UpstreamError:
    """The error for a stream chunk that is not a JSON object (corrupt, or not meant as
    one): the stream ends with it rather than hand the client what no SDK can parse."""
    return UpstreamError("The upstream sent a stream chunk that is not valid JSON.")


def of_reply(body: bytes, request: dict[str, Any]) -> Usage:
    """The usage of a plain reply: as it states, else estimated from its text."""
    return read_reply(body, request)[0]


UNPARSED: Any = object()  # what :func:`read_reply` gives for a reply it did not parse


def read_reply(body: bytes, request: dict[str, Any]) -> tuple[Usage, Any]:
    """:func:`of_reply`, and the reply as it was parsed to read it (None if it is not
    JSON), for a caller that reads more of it: :data:`UNPARSED` when its usage was read
    from its end (a reply of :data:`_TAIL_SCAN_FROM` bytes or more).
    """
    if len(body) >= _TAIL_SCAN_FROM:
        found = _tail_usage(body)
        if found is not None:
            return found, UNPARSED
    obj = parse(body)
    found = usage_of(obj)
    if found is not None:
        return found, obj
    return estimate(request, generated_text_length(obj)), obj

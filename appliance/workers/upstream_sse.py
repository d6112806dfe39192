"""An upstream's server-sent events, read as the JSON payloads they carry.

Upstreams differ in how they write SSE: LF, CRLF or (rarely, but legal) CR line ends;
``data:`` with or without a space; payloads over several ``data:`` lines; comments,
``event:`` and ``id:`` lines; events split anywhere across network reads. All of it is
read here, per read rather than per line (one await per read).

What a payload may be is checked here too, so that every API the appliance speaks (chat,
Responses, Messages) sees the same stream:

- An empty payload (``data:`` alone) is no event (as the SSE standard says); one that is
  not a JSON object (``data: keep-alive``) is skipped and logged once per stream.
- An error the upstream reports inside its stream (OpenAI's ``{"error": {...}}``, TGI's
  ``{"error": "...", "error_type": ...}``, vLLM's ``{"object": "error", ...}``) raises
  :class:`UpstreamStreamError` with its message, type and code.
- The stream ends at ``[DONE]``. A body that ends without it counts as finished only if
  one of its last two payloads finishes the reply (a choice's ``finish_reason``, the usage
  chunk, a Responses ``response.completed``-like event): a server that omits ``[DONE]``
  is served; a stream cut short without a word raises :class:`UpstreamConnectionError`
  instead of passing for a whole reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import structlog

from appliance.errors import UpstreamConnectionError, UpstreamStreamError

log = structlog.get_logger("appliance.upstream")

MAX_LINE = 2 * 1024 * 1024  # one SSE line (one chunk) may be this long

# The last event of a Responses stream, however it ended.
_RESPONSE_ENDS = frozenset(
    {"response.completed", "response.incomplete", "response.failed", "error"}
)


async def payloads(read: Callable[[], Awaitable[bytes]]) -> AsyncIterator[bytes]:
    """The JSON payloads of the SSE body that ``read`` returns piece by piece (``b""`` at
    its end), until ``[DONE]``; raises as the module says."""
    data: list[bytes] = []  # the data lines of the event being read
    held: list[bytes] = []  # a line not yet ended, in pieces (joined once, when it ends)
    size = 0
    cr = b""  # a CR that ended the last read: the first half of a CRLF, maybe
    last: list[bytes] = [b"", b""]  # the last two payloads
    skipped = False
    while True:
        chunk = await read()
        end = not chunk
        if cr or b"\r" in chunk:
            chunk, cr = cr + chunk, b""
            if not end and chunk.endswith(b"\r"):
                chunk, cr = chunk[:-1], b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines: list[bytes] = []
        if not end and b"\n" not in chunk:
            held.append(chunk)
            size += len(chunk)
        else:
            lines = (b"".join(held) + chunk if held else chunk).split(b"\n")
            rest = b"" if end else lines.pop()
            held, size = ([rest], len(rest)) if rest else ([], 0)
        if size > MAX_LINE:
            raise UpstreamConnectionError("The upstream sent an oversized chunk")
        if end:
            lines.append(b"")  # the body's end ends its last event too
        for line in lines:
            if line.startswith(b"data:"):
                payload = line[6:] if line[5:6] == b" " else line[5:]  # one space, no more
                if len(payload) < 16 and payload.strip() == b"[DONE]":
                    return
                data.append(payload)
            elif not line and data:
                payload = data[0] if len(data) == 1 else b"\n".join(data)
                data = []
                if not payload.strip():
                    continue
                if payload.lstrip()[:1] != b"{":
                    if not skipped:
                        skipped = True
                        start = payload[:64].decode(errors="replace")
                        log.warning("upstream_sent_non_json", start=start, size=len(payload))
                    continue
                if b'"error"' in payload:
                    _raise_if_error(payload)
                last[0], last[1] = last[1], payload
                yield payload
        if end:
            if not any(_finishes(payload) for payload in last):
                raise UpstreamConnectionError(
                    "The upstream ended the stream before the reply was finished"
                )
            return


def _raise_if_error(payload: bytes) -> None:
    """Raise the error ``payload`` reports, if it is an error event (not a chunk that
    merely mentions one)."""
    obj = _parse(payload)
    if not isinstance(obj, dict) or "choices" in obj:
        return
    error = obj.get("error")
    if isinstance(error, dict):
        found = error
    elif isinstance(error, str):  # TGI: {"error": "...", "error_type": "..."}
        found = {"message": error, "type": obj.get("error_type")}
    elif obj.get("object") == "error":  # vLLM's older servers: the error's fields at the top
        found = obj
    else:
        return
    message = found.get("message")
    raise UpstreamStreamError(
        message if isinstance(message, str) and message else "The upstream's stream failed.",
        upstream_type=_text(found.get("type")),
        param=_text(found.get("param")),
        code=_text(found.get("code")),
    )


def _finishes(payload: bytes) -> bool:
    """Whether ``payload`` is one an upstream sends only at the end of a reply."""
    if not payload:
        return False
    obj = _parse(payload)
    if not isinstance(obj, dict):
        return False
    if obj.get("type") in _RESPONSE_ENDS:
        return True
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return False
    if not choices:
        return bool(obj.get("usage"))  # the usage chunk, after the last choice's finish
    return any(isinstance(c, dict) and c.get("finish_reason") is not None for c in choices)


def _parse(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None

"""OpenAI's Responses API (``POST /responses``) as a chat-completions request, and back.

:func:`to_chat` turns a validated :class:`ResponsesRequest` into the internal chat
request: ``instructions`` becomes the first system message, ``input`` (a string, or items:
messages with text/image/file/audio parts, ``function_call`` and ``function_call_output``)
the messages, ``max_output_tokens`` ``max_tokens``, function ``tools`` and ``tool_choice``
their chat shapes, ``text.format`` ``response_format``. :func:`response` turns the chat
reply back into a Response object; :mod:`appliance.protocols.responses_stream` does the
same for a stream.

The appliance is stateless: it stores no responses, so ``store`` must be false or absent
and ``previous_response_id`` and ``conversation`` are refused; the caller sends the whole
conversation in ``input``. What cannot be honoured is a 400 naming the field
(:data:`REFUSED`); fields outside OpenAI's Responses API travel on to the chat request,
as on ``/chat/completions``.
"""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import Field, StrictBool

from appliance.errors import InvalidRequestError
from appliance.protocol import MAX_TOKENS, OpenObject, now
from appliance.protocols.responses_items import input_messages, tool_choice, tools
from appliance.usage import Usage

MAX_TOOLS = 128  # as OpenAI's chat API

STATELESS = (
    "The appliance is stateless: it keeps no responses. Send the whole conversation in "
    "`input` (earlier outputs included) with `store` false or absent."
)

# Fields that cannot be honoured, with the values that mean "not asked for".
REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "previous_response_id": ((None,), STATELESS),
    "conversation": ((None,), STATELESS),
    "store": ((None, False), STATELESS),
    "background": ((None, False), "Background responses need a stored response to poll."),
    "prompt": ((None,), "Stored prompt templates are not available; send the text."),
    "include": ((None, []), "No extra output data is available here."),
    "truncation": (
        (None, "disabled"),
        "Input is never truncated; a prompt over the context of the model is a 400.",
    ),
    "top_logprobs": ((None, 0), "Log probabilities are not returned on /responses."),
    "context_management": ((None,), "Context compaction is not available here."),
    "moderation": ((None,), "The appliance runs no moderation."),
    # Chat fields that have a Responses name, or that would break the one output.
    "messages": ((None,), "Use `input`."),
    "max_tokens": ((None,), "Use `max_output_tokens`."),
    "max_completion_tokens": ((None,), "Use `max_output_tokens`."),
    "response_format": ((None,), "Use `text.format`."),
    "functions": ((None,), "Use `tools`."),
    "function_call": ((None,), "Use `tool_choice`."),
    "n": ((None, 1), "A response has one output."),
    "logprobs": ((None, False), "Log probabilities are not returned on /responses."),
}

# Translated here, or read by the resource: never passed on as they are.
_OWN = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "tools",
        "tool_choice",
        "text",
        "parallel_tool_calls",
        "stream",
        "stream_options",
        "metadata",
        "reasoning",
        "max_tool_calls",
        *REFUSED,
    }
)


class ResponsesRequest(OpenObject):
    """A ``POST /responses`` body: known fields checked, unknown ones kept."""

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    stream: StrictBool | None = False
    stream_options: dict[str, Any] | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)
    reasoning: dict[str, Any] | None = None
    max_tool_calls: int | None = Field(None, ge=0)
    user: str | None = None


def to_chat(request: ResponsesRequest, body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions request that answers ``body`` (validated as ``request``).

    Raises:
        InvalidRequestError: a field that cannot be honoured, or an item it cannot read.
    """
    _refuse(body)
    messages = input_messages(request.input)
    if request.instructions is not None:
        messages.insert(0, {"role": "system", "content": request.instructions})
    if not messages:
        raise InvalidRequestError(
            "Invalid 'input': give at least one input item or `instructions`.",
            param="input",
            code="empty_array",
        )
    chat: dict[str, Any] = {k: v for k, v in body.items() if k not in _OWN}
    chat["model"] = request.model
    chat["messages"] = messages
    if request.stream:
        chat["stream"] = True
    if request.max_output_tokens is not None:
        chat["max_tokens"] = request.max_output_tokens
    offered = tools(request.tools)
    if offered:
        chat["tools"] = offered
        if request.parallel_tool_calls is not None:
            chat["parallel_tool_calls"] = request.parallel_tool_calls
    choice = tool_choice(request.tool_choice, offered)
    if choice is not None:
        chat["tool_choice"] = choice
    chat.update(_text(request.text))
    effort = _reasoning(request.reasoning)
    if effort is not None:
        chat["reasoning_effort"] = effort
    _stream_options(request.stream_options)
    return chat


def _refuse(body: dict[str, Any]) -> None:
    for name, (off, reason) in REFUSED.items():
        value = body.get(name)
        if not any(value == o and type(value) is type(o) for o in off):
            raise InvalidRequestError(
                f"Unsupported parameter: '{name}' is not supported on /responses here. {reason}",
                param=name,
                code="unsupported_parameter",
            )


def _text(text: dict[str, Any] | None) -> dict[str, Any]:
    """``text.format`` as ``response_format``, ``text.verbosity`` as ``verbosity``."""
    if not text:
        return {}
    out: dict[str, Any] = {}
    for key in text:
        if key not in ("format", "verbosity"):
            raise _bad(f"text.{key}", "is not a text option (format, verbosity)")
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    spec = text.get("format")
    if spec is None:
        return out
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "text":
        return out
    if kind == "json_object":
        out["response_format"] = {"type": "json_object"}
        return out
    if kind != "json_schema":
        raise _bad("text.format.type", "must be 'text', 'json_object' or 'json_schema'")
    assert isinstance(spec, dict)
    name, schema = spec.get("name"), spec.get("schema")
    if not isinstance(name, str) or not name:
        raise _bad("text.format.name", "a json_schema format needs a name")
    if not isinstance(schema, dict):
        raise _bad("text.format.schema", "must be a JSON schema object")
    json_schema: dict[str, Any] = {"name": name, "schema": schema}
    for key in ("description", "strict"):
        if spec.get(key) is not None:
            json_schema[key] = spec[key]
    out["response_format"] = {"type": "json_schema", "json_schema": json_schema}
    return out


def _reasoning(reasoning: dict[str, Any] | None) -> Any:
    """``reasoning.effort`` (as chat's ``reasoning_effort``); nothing else is available."""
    if not reasoning:
        return None
    for key, value in reasoning.items():
        if key != "effort" and value is not None:
            raise InvalidRequestError(
                f"Unsupported parameter: 'reasoning.{key}' is not supported on /responses "
                "here; only reasoning.effort is passed to the model.",
                param=f"reasoning.{key}",
                code="unsupported_parameter",
            )
    return reasoning.get("effort")


def _stream_options(options: dict[str, Any] | None) -> None:
    for key, value in (options or {}).items():
        if key != "include_obfuscation" or not isinstance(value, bool | None):
            raise _bad(f"stream_options.{key}", "is not a stream option (include_obfuscation)")


# ---- replies ----------------------------------------------------------------------------


def ident(prefix: str) -> str:
    """An id as OpenAI writes them in this API: ``resp_...``, ``msg_...``, ``fc_...``."""
    return f"{prefix}_{secrets.token_hex(16)}"


def response(
    request: ResponsesRequest,
    *,
    rid: str,
    created: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    incomplete: str | None = None,
    error: dict[str, str] | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """A Response object, echoing what the request asked for."""
    out: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "completed_at": completed_at,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "model": model,
        "output": output,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": None,
        "reasoning": {"effort": request.reasoning.get("effort"), "summary": None}
        if request.reasoning
        else None,
        "store": False,
        "temperature": request.temperature,
        "text": {"format": (request.text or {}).get("format") or {"type": "text"}},
        "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
        "tools": [_echo_tool(t) for t in request.tools or []],
        "top_p": request.top_p,
        "truncation": "disabled",
        "metadata": request.metadata or {},
    }
    if request.user is not None:
        out["user"] = request.user
    if usage is not None:
        out["usage"] = usage
    return out


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict"),
    }


def usage_of(used: Usage, raw: Any = None) -> dict[str, Any]:
    """A Responses usage object from the tokens charged (and the chat usage's details)."""
    details = raw if isinstance(raw, dict) else {}
    prompt = details.get("prompt_tokens_details")
    completion = details.get("completion_tokens_details")
    cached = prompt.get("cached_tokens") if isinstance(prompt, dict) else None
    reasoning = completion.get("reasoning_tokens") if isinstance(completion, dict) else None
    return {
        "input_tokens": used.prompt,
        "input_tokens_details": {
            "cached_tokens": cached if isinstance(cached, int) else 0,
            "cache_write_tokens": 0,
        },
        "output_tokens": used.completion,
        "output_tokens_details": {
            "reasoning_tokens": reasoning if isinstance(reasoning, int) else 0
        },
        "total_tokens": used.total,
    }


def outcome(finish_reason: Any) -> tuple[str, str | None]:
    """The response status for a chat ``finish_reason``, and why it is incomplete."""
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def message_item(text: str, status: str, refusal: str | None = None) -> dict[str, Any]:
    """An assistant message output item."""
    content: list[dict[str, Any]] = [text_part(text)]
    if refusal:
        content = [{"type": "refusal", "refusal": refusal}]
    return {
        "id": ident("msg"),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def text_part(text: str) -> dict[str, Any]:
    """An ``output_text`` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(call_id: str | None, name: str, arguments: str, status: str) -> dict[str, Any]:
    """A ``function_call`` output item."""
    return {
        "id": ident("fc"),
        "type": "function_call",
        "call_id": call_id or ident("call"),
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def from_chat(
    request: ResponsesRequest, reply: Any, used: Usage, *, rid: str, created: int
) -> dict[str, Any]:
    """The Response for a plain chat-completion ``reply`` (parsed JSON)."""
    choices = reply.get("choices") if isinstance(reply, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    status, why = outcome(choice.get("finish_reason") if isinstance(choice, dict) else None)
    item_status = "completed" if status == "completed" else "incomplete"
    output: list[dict[str, Any]] = []
    content, refusal = message.get("content"), message.get("refusal")
    listed = message.get("tool_calls")
    calls: list[Any] = listed if isinstance(listed, list) else []
    if (isinstance(content, str) and content) or refusal or not calls:
        text = content if isinstance(content, str) else ""
        output.append(
            message_item(text, item_status, refusal if isinstance(refusal, str) else None)
        )
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        arguments = function.get("arguments")
        output.append(
            call_item(
                call.get("id") if isinstance(call.get("id"), str) else None,
                str(function.get("name", "")),
                arguments if isinstance(arguments, str) else "",
                item_status,
            )
        )
    model = reply.get("model") if isinstance(reply, dict) else None
    return response(
        request,
        rid=rid,
        created=created,
        model=model if isinstance(model, str) else request.model,
        status=status,
        output=output,
        usage=usage_of(used, reply.get("usage") if isinstance(reply, dict) else None),
        incomplete=why,
        completed_at=now() if status == "completed" else None,
    )


def _bad(param: str, what: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{param}': {what}.", param=param, code="invalid_value")

"""OpenAI's Responses API (``POST /responses``) as a chat-completions request, and back.

:func:`to_chat` turns a validated :class:`ResponsesRequest` into the internal chat
request: ``instructions`` becomes the first system message, ``input`` (a string, or items:
messages with text/image/file/audio parts, ``function_call`` and ``function_call_output``)
the messages, ``max_output_tokens`` ``max_tokens``, function ``tools`` and ``tool_choice``
their chat shapes, ``text.format`` ``response_format``.
:mod:`appliance.wire.responses.reply` turns the chat reply back into a Response
object, and :mod:`appliance.wire.responses.stream` a chat stream into its events.

The appliance is stateless: it stores no responses, so ``store`` must be false or absent
and ``previous_response_id`` and ``conversation`` are refused; the caller sends the whole
conversation in ``input``. What cannot be honoured is a 400 naming the field
(:data:`REFUSED`); fields outside OpenAI's Responses API travel on to the chat request,
as on ``/chat/completions``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool

from appliance.errors import InvalidRequestError
from appliance.wire.openai.protocol import MAX_TOKENS, ChatCompletionRequest, OpenObject, validate
from appliance.wire.responses.items import input_messages, tool_choice, tools

MAX_TOOLS = 128  # as OpenAI's chat API

# OpenAI's ``ServiceTierResponses``.
ServiceTier = Literal["auto", "default", "flex", "scale", "priority", "fast", "ultrafast"]

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
    # Passed on as they are, once they are what OpenAI's schema says they may be.
    service_tier: ServiceTier | None = None
    prompt_cache_key: str | None = None


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
    # Held to the same checks as a client's own chat request, so every backend gets
    # what /chat/completions would give it.
    validate(ChatCompletionRequest, chat)
    return chat


# A backend's errors name chat fields; the caller knows them by these names.
_PARAMS = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
    "verbosity": "text.verbosity",
}


def param_name(chat_param: str | None) -> str | None:
    """The Responses name of a chat request's field, as a backend's error names it.

    A message's place is not kept: items and messages are not one to one (instructions
    come first, function calls join an assistant message), so ``messages[3].content`` is
    ``input``. Tool and tool-choice names are the same in both APIs.
    """
    if chat_param is None:
        return None
    head = chat_param.split("[", 1)[0].split(".", 1)[0]
    if head not in _PARAMS:
        return chat_param
    if head == "response_format" and chat_param != head:
        return "text.format"
    return _PARAMS[head]


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
    effort = reasoning.get("effort")
    if effort is not None and not isinstance(effort, str):
        raise _bad("reasoning.effort", "must be a string such as 'low', 'medium' or 'high'")
    return effort


def _stream_options(options: dict[str, Any] | None) -> None:
    for key, value in (options or {}).items():
        if key != "include_obfuscation" or not isinstance(value, bool | None):
            raise _bad(f"stream_options.{key}", "is not a stream option (include_obfuscation)")


def _bad(param: str, what: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{param}': {what}.", param=param, code="invalid_value")

"""Responses API replies: a Response object and its output items, from a chat reply.

The Response echoes what the request asked for (instructions, limits, tools, tool
choice, text format, metadata; ``store`` is always false: nothing is kept). Its usage
is what the request was charged: the backend's own figures, or the appliance's estimate
where the backend sent none.
"""

from __future__ import annotations

import secrets
from typing import Any

from appliance.wire.openai.reply import now
from appliance.wire.responses.protocol import ResponsesRequest
from appliance.wire.usage import Usage


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

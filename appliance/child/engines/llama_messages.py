"""Chat messages as a model's template takes them: text, with tool calls and results kept."""

from __future__ import annotations

import json
from typing import Any

from appliance.child.engines.llama_template import Template
from appliance.errors import InvalidRequestError


def messages(raw: list[dict[str, Any]], template: Template) -> list[dict[str, Any]]:
    """The conversation as the chat template can take it, meaning kept (see module doc)."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for tool results
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        role = message["role"]
        text = _text(message.get("content"), f"{where}.content")
        if role == "assistant":
            calls = _calls(message, where)
            names.update((call_id, name) for call_id, name, _ in calls)
            if calls and template.tool_calls:
                out.append(
                    {"role": "assistant", "content": text or "", "tool_calls": _native(calls)}
                )
            else:
                rendered = [_render_call(name, arguments) for _, name, arguments in calls]
                content = "\n".join(part for part in [text or "", *rendered] if part)
                out.append({"role": "assistant", "content": content})
            continue
        if text is None:
            raise InvalidRequestError(
                f"Missing content in {where} (role {role}).",
                param=f"{where}.content",
                code="missing_required_parameter",
            )
        if role in ("tool", "function"):
            call_id = message.get("tool_call_id")
            name = names.get(call_id) if isinstance(call_id, str) else None
            name = name or (message.get("name") if isinstance(message.get("name"), str) else None)
            if template.tool_role:
                result: dict[str, Any] = {"role": "tool", "content": text}
                if isinstance(call_id, str):
                    result["tool_call_id"] = call_id
                if name:
                    result["name"] = name
                out.append(result)
            else:
                out.append(
                    {"role": "user", "content": f"<tool_response>\n{text}\n</tool_response>"}
                )
        elif role == "developer":  # what OpenAI's non-reasoning models take it for
            out.append({"role": "system", "content": text})
        else:
            out.append({"role": role, "content": text})
    return out


_TEXT_PARTS = {"text": "text", "refusal": "refusal"}


def _text(content: Any, where: str) -> str | None:
    """A message's content as text; its parts must be text."""
    if content is None or isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        key = _TEXT_PARTS.get(kind) if isinstance(kind, str) else None
        if key is None:
            raise InvalidRequestError(
                f"Invalid content part {where}[{j}]: this model takes text only, not "
                f"{kind!r} parts.",
                param=f"{where}[{j}]",
                code="invalid_value",
            )
        value = part.get(key)
        if not isinstance(value, str):
            raise InvalidRequestError(
                f"Invalid content part {where}[{j}]: '{key}' must be a string.",
                param=f"{where}[{j}].{key}",
                code="invalid_type",
            )
        texts.append(value)
    return "\n".join(texts)


def _calls(message: dict[str, Any], where: str) -> list[tuple[str, str, str]]:
    """An assistant message's tool calls (and legacy ``function_call``) as (id, name, args)."""
    raw = message.get("tool_calls") or []
    legacy = message.get("function_call")
    if not isinstance(raw, list):
        raise invalid_value(f"{where}.tool_calls", "must be a list of tool calls")
    calls: list[tuple[str, str, str]] = []
    items = [(f"{where}.tool_calls[{k}]", call) for k, call in enumerate(raw)]
    if legacy is not None:
        items.append((f"{where}.function_call", {"id": "", "function": legacy}))
    for path, call in items:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid_value(path, "must be a function call with a name")
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        call_id = call.get("id")
        calls.append((call_id if isinstance(call_id, str) else "", function["name"], arguments))
    return calls


def _arguments(arguments: str) -> Any:
    """Arguments as JSON if they are JSON (what templates expect), else the text."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _native(calls: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    return [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": _arguments(a)}}
        for call_id, name, a in calls
    ]


def _render_call(name: str, arguments: str) -> str:
    """A tool call as text, in the ``<tool_call>`` form ChatML models are trained on."""
    call = json.dumps({"name": name, "arguments": _arguments(arguments)}, ensure_ascii=False)
    return f"<tool_call>\n{call}\n</tool_call>"


def with_tool_list(
    msgs: list[dict[str, Any]], tools: list[dict[str, Any]], callable_: bool
) -> list[dict[str, Any]]:
    """The tools offered, as text in the system message, for a template that ignores them.

    Where they may be called, the note says how: in the ``<tool_call>`` form that the
    model's earlier calls are shown in, and that ``auto`` reads calls from.
    """
    listed = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in tools)
    if callable_:
        note = (
            "You can call these tools; the caller runs them:\n"
            f"<tools>\n{listed}\n</tools>\nTo call one, answer with only "
            '<tool_call>{"name": <function name>, "arguments": <arguments object>}</tool_call>'
        )
    else:
        note = (
            f"These tools were offered earlier; do not call them now:\n<tools>\n{listed}\n</tools>"
        )
    if msgs and msgs[0]["role"] == "system":
        return [{"role": "system", "content": f"{msgs[0]['content']}\n\n{note}"}, *msgs[1:]]
    return [{"role": "system", "content": note}, *msgs]


def invalid_value(param: str, what: str) -> InvalidRequestError:
    """The 400 for a field whose value cannot be taken as it is."""
    return InvalidRequestError(f"Invalid '{param}': {what}.", param=param, code="invalid_value")

"""Responses input items, tools and tool choice in their chat-completions shapes.

- A message item (``{"role", "content"}``, with or without ``"type": "message"``)
  becomes a chat message; ``developer`` becomes ``system`` (what every chat template
  knows). Its parts: ``input_text``/``output_text`` -> text, ``refusal`` -> refusal,
  ``input_image`` -> ``image_url``, ``input_file`` -> ``file``, ``input_audio`` -> itself.
  The backend decides whether it can read images, files and audio.
- A ``function_call`` item becomes a tool call of an assistant message (consecutive ones,
  and one following an assistant message, join that message), and a
  ``function_call_output`` a ``tool`` message; one whose ``call_id`` answers no earlier
  ``function_call`` is a 400, as on OpenAI (the appliance keeps no state, so the call
  must be in the same input).
- Any other item type (reasoning, hosted tool calls, item references) is a 400 naming it.
"""

from __future__ import annotations

from typing import Any

from appliance.errors import InvalidRequestError

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT = ("input_text", "output_text")
_TOOL_KEYS = frozenset({"type", "name", "description", "parameters", "strict"})


def input_messages(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages of a Responses ``input``."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages: list[dict[str, Any]] = []
    calls: set[str] = set()
    for i, item in enumerate(value):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call_id = _string(item, "call_id", where)
            calls.add(call_id)
            call = {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": _string(item, "name", where),
                    "arguments": _string(item, "arguments", where, empty=True),
                },
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = _string(item, "call_id", where)
            if call_id not in calls:
                raise InvalidRequestError(
                    f"No tool call found for function call output with call_id "
                    f"{call_id[:64]!r} ({where}): send the function_call item it answers "
                    "earlier in the same input.",
                    param=f"{where}.call_id",
                    code="invalid_value",
                )
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "content": _tool_output(item.get("output"), f"{where}.output"),
                }
            )
        else:
            raise InvalidRequestError(
                f"Unsupported input item {where}: items of type {str(kind)[:64]!r} are not "
                "supported here (messages, function_call and function_call_output are).",
                param=f"{where}.type",
                code="unsupported_value",
            )
    return messages


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise _bad(f"{where}.role", "must be 'user', 'assistant', 'system' or 'developer'")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": _ROLES[role], "content": content}
    if not isinstance(content, list):
        raise _bad(f"{where}.content", "must be a string or a list of content parts")
    parts = [_part(part, role, f"{where}.content[{j}]") for j, part in enumerate(content)]
    return {"role": _ROLES[role], "content": parts}


def _part(part: Any, role: str, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in _TEXT:
        return {"type": "text", "text": _string(part, "text", where, empty=True)}
    if kind == "refusal" and role == "assistant":
        return {"type": "refusal", "refusal": _string(part, "refusal", where, empty=True)}
    if kind == "input_image" and role != "assistant":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise _bad(f"{where}.image_url", "an image is given by URL or data URL here")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and role != "assistant":
        if part.get("file_url") is not None:
            raise _bad(f"{where}.file_url", "give the file as file_data or file_id")
        file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k) is not None}
        return {"type": "file", "file": file}
    if kind == "input_audio" and role != "assistant":
        return {"type": "input_audio", "input_audio": part.get("input_audio")}
    raise InvalidRequestError(
        f"Invalid content part {where}: {str(kind)[:64]!r} parts are not accepted in "
        f"{role} messages.",
        param=f"{where}.type",
        code="invalid_value",
    )


def _tool_output(output: Any, where: str) -> Any:
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        raise _bad(where, "must be a string or a list of content parts")
    parts = []
    for j, part in enumerate(output):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "input_text":
            raise _bad(f"{where}[{j}].type", "a function call's output is text here")
        parts.append({"type": "text", "text": _string(part, "text", f"{where}[{j}]", empty=True)})
    return parts


def tools(offered: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Function tools in chat's shape; any other tool type is a 400 naming it."""
    out = []
    for k, tool in enumerate(offered or []):
        where = f"tools[{k}]"
        if tool.get("type") != "function":
            raise InvalidRequestError(
                f"Unsupported tool {where}: tools of type {str(tool.get('type'))[:64]!r} are "
                "not available here; only function tools are.",
                param=f"{where}.type",
                code="unsupported_value",
            )
        for key, value in tool.items():
            if key not in _TOOL_KEYS and value is not None:
                raise _bad(f"{where}.{key}", "is not supported on function tools here")
        function: dict[str, Any] = {"name": _string(tool, "name", where)}
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _bad(f"{where}.parameters", "must be a JSON schema object")
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def tool_choice(choice: Any, offered: list[dict[str, Any]]) -> Any:
    """``tool_choice`` in chat's shape (None: not given)."""
    if choice is None or choice in ("none", "auto", "required"):
        return choice
    names = [tool["function"]["name"] for tool in offered]
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function":
        name = choice.get("name")
        if name not in names:
            raise _bad(
                "tool_choice.name", f"names a function that is not among the tools: {name!r}"
            )
        return {"type": "function", "function": {"name": name}}
    if kind == "allowed_tools":
        allowed = choice.get("tools")
        if choice.get("mode") not in ("auto", "required") or not isinstance(allowed, list):
            raise _bad("tool_choice", "allowed_tools needs a mode (auto, required) and tools")
        functions = []
        for k, tool in enumerate(allowed):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise _bad(f"tool_choice.tools[{k}]", "only function tools are available")
            functions.append({"type": "function", "function": {"name": tool.get("name")}})
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": choice["mode"], "tools": functions},
        }
    if isinstance(choice, str):
        raise _bad("tool_choice", "must be 'none', 'auto', 'required' or name a function")
    raise _bad("tool_choice.type", "only function tools can be chosen here")


def _string(item: dict[str, Any], key: str, where: str, *, empty: bool = False) -> str:
    value = item.get(key)
    if not isinstance(value, str) or (not value and not empty):
        if value is None:
            raise InvalidRequestError(
                f"Missing required parameter: '{where}.{key}'.",
                param=f"{where}.{key}",
                code="missing_required_parameter",
            )
        raise _bad(
            f"{where}.{key}", "must be a non-empty string" if not empty else "must be a string"
        )
    return value


def _bad(param: str, what: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{param}': {what}.", param=param, code="invalid_value")

"""What a scripted model answers a chat request: tool calls, JSON, or its text.

- **Tool calls** (option ``tool_call``, one or a list): made when the request offers a
  function of that name and ``tool_choice`` allows it. Forced (``required``, or a named
  function): the scripted calls among the offered functions, or else the forced function
  (``required``: the first offered) with arguments ``{}``. ``auto`` (the default with
  tools): the scripted calls, unless the last message is a tool result, which the model
  then answers in text, so that an agent's loop ends. ``none``: no call.
  ``parallel_tool_calls: false`` keeps the first call.
- **JSON** (``response_format`` ``json_object`` or ``json_schema``): the option ``json``
  as JSON text; without it ``{}``, or for a schema the smallest value it describes
  (:func:`example`), so that a client's parser gets what it asked for.
- Otherwise the text (``reply``, or the last user message echoed).

What the backend cannot do is a 400 naming the field: a forced tool that is not a
function (a custom tool, or ``required`` with only custom tools offered), another
``response_format`` type, the legacy ``functions``.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.config.backends import ScriptedOptions, ScriptedToolCall
from appliance.errors import InvalidRequestError

MAX_DEPTH = 32  # of a schema example; deeper (recursive) schemas end in null


def calls(options: ScriptedOptions, body: dict[str, Any]) -> list[tuple[str, str]]:
    """The calls to make, as (function name, arguments JSON text); none: answer in text."""
    if body.get("functions"):
        raise InvalidRequestError(
            "The scripted backend takes 'tools', not the legacy 'functions'.",
            param="functions",
            code="unsupported_parameter",
        )
    parameters = {
        t["function"]["name"]: t["function"].get("parameters")
        for t in body.get("tools") or []
        if t.get("type") == "function" and isinstance(t.get("function"), dict)
    }
    names = list(parameters)
    choice = body.get("tool_choice") or "auto"
    _refuse_forced_custom(body.get("tools") or [], names, choice)
    if not names or choice == "none":
        return []
    scripted = _scripted(options)
    offered = [c for c in scripted if c.name in names]
    if isinstance(choice, dict):
        function = choice.get("function")
        if choice.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequestError(
                "The scripted backend can be made to call a function tool only.",
                param="tool_choice",
                code="invalid_value",
            )
        name = function.get("name")
        made = [c for c in offered if c.name == name] or [_unscripted(name, parameters)]
    elif choice == "required":
        made = offered or [_unscripted(names[0], parameters)]
    elif choice == "auto":
        last = body["messages"][-1]
        made = [] if last.get("role") == "tool" else offered
    else:
        raise InvalidRequestError(
            "Invalid 'tool_choice': must be 'none', 'auto', 'required' or name a function.",
            param="tool_choice",
            code="invalid_value",
        )
    if body.get("parallel_tool_calls") is False:
        made = made[:1]
    return [(c.name, _text(c.arguments)) for c in made]


def _refuse_forced_custom(offered: list[Any], names: list[str], choice: Any) -> None:
    """A call forced where only a custom tool could answer: OpenAI's model would call it
    (a custom tool call, free text in); the scripted backend calls functions only."""
    if isinstance(choice, dict) and choice.get("type") == "custom":
        raise InvalidRequestError(
            "The scripted backend cannot call custom tools; force a function tool instead.",
            param="tool_choice",
            code="unsupported_value",
        )
    custom = any(isinstance(t, dict) and t.get("type") == "custom" for t in offered)
    if choice == "required" and custom and not names:
        raise InvalidRequestError(
            "Invalid 'tools': 'tool_choice' is 'required' and only custom tools are offered; "
            "the scripted backend calls function tools only. Offer a function tool.",
            param="tools",
            code="unsupported_value",
        )


def json_reply(options: ScriptedOptions, body: dict[str, Any]) -> str | None:
    """The JSON text to answer with, if ``response_format`` asks for JSON."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return None
    if kind not in ("json_object", "json_schema"):
        raise InvalidRequestError(
            f"Invalid 'response_format.type': {kind!r} is not supported by the scripted "
            "backend; use 'text', 'json_object' or 'json_schema'.",
            param="response_format.type",
            code="invalid_value",
        )
    if options.json_reply is not None:
        return json.dumps(options.json_reply, ensure_ascii=False)
    schema = (fmt.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
    value = example(schema, schema) if isinstance(schema, dict) else {}
    return json.dumps(value, ensure_ascii=False)


def example(schema: Any, root: Any, depth: int = 0) -> Any:
    """The smallest value a JSON schema describes: every property, empty lists, zeros.

    Follows local references (``#/$defs/...``), takes the first of ``anyOf``/``oneOf``,
    a ``const``, the first ``enum`` value or a ``default``.
    """
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return example(target, root, depth + 1)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example(schema[key][0], root, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else None)
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: example(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        item = example(schema.get("items"), root, depth + 1)
        return [item] * int(schema.get("minItems") or 0)
    if kind == "string":
        return "a" * int(schema.get("minLength") or 0)
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        value = 0 if low is None else low + (1 if "exclusiveMinimum" in schema else 0)
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    return None


def _unscripted(name: Any, parameters: dict[str, Any]) -> ScriptedToolCall:
    """A call of a forced function that has no call scripted: the smallest arguments."""
    schema = parameters.get(name)
    value = example(schema, schema) if isinstance(schema, dict) else {}
    return ScriptedToolCall(name=name, arguments=value if isinstance(value, dict) else {})


def _scripted(options: ScriptedOptions) -> list[ScriptedToolCall]:
    value = options.tool_call
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _text(arguments: dict[str, Any] | str) -> str:
    """Arguments as JSON text: a string is that text already."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)

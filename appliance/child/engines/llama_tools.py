"""Tool calls out of a llama.cpp model's text, in OpenAI's shapes.

The model writes text; this turns it into ``tool_calls``, plain or as stream deltas:

- **Forced** (``tool_choice`` naming a function, or ``required``): a grammar built from
  :func:`call_schema` makes the model write ``{"name": ..., "arguments": {...}}`` for one
  of the allowed functions, the arguments following that function's parameter schema
  (with ``required`` and several tools the model picks the function). :class:`Forced`
  reads it as one call.
- **Auto**: the model may answer in text or call tools the way chat templates with tool
  support teach it to, ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``;
  :class:`Tagged` turns each such block naming an offered function into a call (the
  first only, with ``parallel_tool_calls: false``) and relays the rest as text.
- **None**: :class:`Plain` relays the text.

Each reader takes the text piece by piece (:meth:`feed`) and says at the end what was
left (:meth:`end`); both return deltas in OpenAI's stream shape
(:mod:`appliance.wire.openai.deltas`). :func:`message` folds them into a plain reply's message.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from appliance.wire.openai import deltas as chat_deltas
from appliance.wire.openai.deltas import Delta, call_arguments, call_start

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_FORCED_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_TAIL = re.compile(r"[\s}]*\Z")  # what may be the end of the call object, held back
_BLOCK = re.compile(re.escape(_OPEN) + r"(.*?)(?:" + re.escape(_CLOSE) + r"|\Z)", re.DOTALL)


def call_schema(tools: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """The JSON schema of a call to one of the functions ``names``, for a grammar.

    Each function's ``$defs`` move to the root under a prefix of their own, with the
    references to them, so that functions sharing a definition name do not collide.
    """
    defs: dict[str, Any] = {}
    options = []
    for k, tool in enumerate(t for t in tools if t["function"]["name"] in names):
        function = tool["function"]
        parameters = copy.deepcopy(function.get("parameters") or {"type": "object"})
        options.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": function["name"]},
                    "arguments": _hoist(parameters, f"f{k}_", defs),
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "$defs": defs} if defs else schema


def _hoist(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    for key in ("$defs", "definitions"):
        for name, value in (schema.pop(key, None) or {}).items():
            defs[prefix + name] = value

    def rename(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                for old in ("#/$defs/", "#/definitions/"):
                    if ref.startswith(old):
                        node["$ref"] = "#/$defs/" + prefix + ref[len(old) :]
            for value in node.values():
                rename(value)
        elif isinstance(node, list):
            for value in node:
                rename(value)

    rename(schema)
    rename(defs)
    return schema


class Plain:
    """Text stays text."""

    called = False

    def feed(self, text: str) -> list[Delta]:
        return [{"content": text}] if text else []

    def end(self) -> list[Delta]:
        return []


class Forced:
    """Reads the one call a grammar made the model write (see :func:`call_schema`)."""

    def __init__(self) -> None:
        self.called = False
        self.sent = False  # some of the arguments went out
        self.buffer = ""

    def feed(self, text: str) -> list[Delta]:
        self.buffer += text
        out: list[Delta] = []
        if not self.called:
            head = _FORCED_HEAD.match(self.buffer)
            if head is None:
                return out
            self.called = True
            out.append(call_start(0, json.loads(f'"{head.group(1)}"')))
            self.buffer = self.buffer[head.end() :]
        if not self.buffer.strip():
            return out  # the grammar's spaces before the arguments: not theirs
        if not self.sent:
            self.buffer, self.sent = self.buffer.lstrip(), True
        tail = _TAIL.search(self.buffer)
        cut = tail.start() if tail else len(self.buffer)
        if cut:
            out.append(call_arguments(0, self.buffer[:cut]))
            self.buffer = self.buffer[cut:]
        return out

    def end(self) -> list[Delta]:
        if not self.called:
            return []
        rest = self.buffer.rstrip() if self.sent else self.buffer.strip()
        rest = rest[:-1].rstrip() if rest.endswith("}") else rest  # the call object's end
        return [call_arguments(0, rest)] if rest else []


class Tagged:
    """Text, with ``<tool_call>`` blocks naming an offered function made into calls."""

    def __init__(self, names: list[str], *, single: bool = False) -> None:
        self.names = set(names)
        self.single = single  # parallel_tool_calls: false: the first call only
        self.called = False
        self.held = ""  # text that may be the start of a block
        self.blocks: str | None = None  # everything from the first block on

    def feed(self, text: str) -> list[Delta]:
        if self.blocks is not None:
            self.blocks += text
            return []
        self.held += text
        at = self.held.find(_OPEN)
        if at >= 0:
            self.blocks = self.held[at:]
            return Plain().feed(self.held[:at])
        keep = next(
            (
                n
                for n in range(min(len(_OPEN) - 1, len(self.held)), 0, -1)
                if _OPEN.startswith(self.held[-n:])
            ),
            0,
        )
        out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return Plain().feed(out)

    def end(self) -> list[Delta]:
        if self.blocks is None:
            return Plain().feed(self.held)
        out: list[Delta] = []
        text, last, index = "", 0, 0
        for block in _BLOCK.finditer(self.blocks):
            call = self._call(block.group(1))
            if call is None:
                continue
            text += self.blocks[last : block.start()]
            last = block.end()
            if self.single and index:
                continue
            out += [call_start(index, call[0]), call_arguments(index, call[1])]
            index += 1
        text += self.blocks[last:]
        self.called = index > 0
        return [*Plain().feed(text.strip() if self.called else text), *out]

    def _call(self, raw: str) -> tuple[str, str] | None:
        try:
            call = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(call, dict) or call.get("name") not in self.names:
            return None
        args = call.get("arguments", call.get("parameters", {}))
        return call["name"], args if isinstance(args, str) else json.dumps(args)


Reader = Plain | Forced | Tagged


def message(text: str, reader: Reader) -> dict[str, Any]:
    """A plain reply's message: the deltas of the whole text, folded."""
    return chat_deltas.message([*reader.feed(text), *reader.end()])


def legacy(delta: Delta) -> Delta:
    """A call delta in the legacy ``function_call`` shape (one function)."""
    calls = delta.pop("tool_calls", None)
    if calls:
        function = calls[0]["function"]
        delta["function_call"] = (
            function if "id" in calls[0] else {"arguments": function["arguments"]}
        )
    return delta

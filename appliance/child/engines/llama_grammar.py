"""Checking that a JSON schema makes a grammar llama.cpp can use, before it is used.

llama-cpp-python turns a schema into a GBNF grammar in Python, and llama.cpp parses that
grammar only when sampling starts. A schema that admits no value (an empty ``enum``,
``type`` or ``anyOf``) becomes a rule with no body: llama.cpp then fails to parse it
and crashes the worker process on the next token. Converting the schema here, and
refusing one whose grammar has an empty rule or cannot be built, turns that into a 400
that names the parameter.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.errors import InvalidRequestError


def check_schema(schema: dict[str, Any], param: str) -> None:
    """Raise a 400 naming ``param`` unless ``schema`` converts to a usable grammar."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter's own asserts and lookups: any of them
        raise InvalidRequestError(
            f"Invalid '{param}': this model cannot follow the schema "
            f"({type(exc).__name__}: {str(exc)[:200]}).",
            param=param,
            code="invalid_value",
        ) from None
    empty = [rule for rule, body in _rules(grammar) if not body]
    if empty:
        raise InvalidRequestError(
            f"Invalid '{param}': part of the schema admits no value (an empty enum, type "
            f"or anyOf: grammar rule {empty[0]!r}); llama.cpp cannot build a grammar for it.",
            param=param,
            code="invalid_value",
        )


def _rules(grammar: str) -> list[tuple[str, str]]:
    """``(name, body)`` of each rule; a body may continue on the lines after its name."""
    rules: list[tuple[str, str]] = []
    for line in grammar.splitlines():
        name, sep, body = line.partition("::=")
        if sep:
            rules.append((name.strip(), body.strip()))
        elif rules and line.strip():
            last, text = rules[-1]
            rules[-1] = (last, f"{text} {line.strip()}".strip())
    return rules

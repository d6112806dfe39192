"""Validate our responses against OpenAI's own JSON schemas.

OpenAI's description is OpenAPI 3.1 (JSON Schema 2020-12) with a few OpenAPI 3.0
``nullable: true`` left in; those are honoured by allowing null where they appear.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_FILE = Path(__file__).with_name("openai_schemas.json")


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@cache
def _document() -> dict[str, Any]:
    return _nullable(json.loads(_FILE.read_text()))


def schema(name: str) -> Any:
    """OpenAI's schema ``name`` as its document has it."""
    return _document()["components"]["schemas"][name]


@cache
def _validator(name: str) -> Draft202012Validator:
    document = _document()
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:openai", resource)
    if name not in document["components"]["schemas"]:
        raise KeyError(name)
    return Draft202012Validator(
        {"$ref": f"urn:openai#/components/schemas/{name}"}, registry=registry
    )


def errors(name: str, instance: Any) -> list[str]:
    """Every way ``instance`` fails schema ``name`` (empty if it conforms)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in _validator(name).iter_errors(instance)
    ]


def assert_valid(name: str, instance: Any) -> None:
    """Fail the test unless ``instance`` conforms to OpenAI's schema ``name``."""
    problems = errors(name, instance)
    assert not problems, f"{name} violations:\n" + "\n".join(problems)

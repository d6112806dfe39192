"""Regenerate ``openai_schemas.json`` from OpenAI's published OpenAPI description.

Usage: ``python tests/support/extract_openapi.py ../shared/reference/openai-openapi.json``

It keeps the component schemas our routes answer with, and everything they reference,
so the tests validate against OpenAI's own definitions without the 3 MB file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOTS = [
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ListModelsResponse",
    "Model",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "ErrorResponse",
    "Response",
    "ResponseStreamEvent",
]


def refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def main(source: str) -> None:
    schemas = json.loads(Path(source).read_text())["components"]["schemas"]
    keep: dict[str, Any] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = schemas[name]
        todo.extend(refs(schemas[name]) - keep.keys())
    out = {
        "source": "openai/openai-openapi (MIT licence, see openai-openapi.LICENSE)",
        "components": {"schemas": dict(sorted(keep.items()))},
    }
    target = Path(__file__).with_name("openai_schemas.json")
    target.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
    print(f"wrote {len(keep)} schemas to {target}")


if __name__ == "__main__":
    main(sys.argv[1])

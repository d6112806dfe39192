"""Regenerate ``openai_requests.json`` from OpenAI's published OpenAPI description.

Usage: ``python -m tests.http.extract_openai_requests ../shared/reference/openai-openapi.json``

It keeps, as a small OpenAPI document, the request bodies of the OpenAI routes the
appliance serves and every schema they reference, so the fuzz tests generate requests
from OpenAI's own definitions without the 3 MB file (MIT licence, see
``tests/support/openai-openapi.LICENSE``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.support.extract_openapi import refs

ROUTES = {
    "/chat/completions": "CreateChatCompletionRequest",
    "/completions": "CreateCompletionRequest",
    "/embeddings": "CreateEmbeddingRequest",
    "/responses": "CreateResponse",
}


def main(source: str) -> None:
    spec = json.loads(Path(source).read_text())
    schemas = spec["components"]["schemas"]
    keep: dict[str, Any] = {}
    todo = list(ROUTES.values())
    while todo:
        name = todo.pop()
        if name not in keep:
            keep[name] = schemas[name]
            todo.extend(refs(schemas[name]) - keep.keys())
    paths = {
        route: {
            "post": {
                "operationId": root,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{root}"}}
                    },
                },
                "responses": {"200": {"description": "OK"}},
            }
        }
        for route, root in ROUTES.items()
    }
    out = {
        "openapi": spec["openapi"],
        "info": {
            "title": "OpenAI API: request bodies of the routes the appliance serves",
            "version": spec["info"]["version"],
            "description": "openai/openai-openapi (MIT licence, see openai-openapi.LICENSE)",
        },
        "paths": paths,
        "components": {"schemas": dict(sorted(keep.items()))},
    }
    target = Path(__file__).with_name("openai_requests.json")
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {len(ROUTES)} routes, {len(keep)} schemas to {target}")


if __name__ == "__main__":
    main(sys.argv[1])

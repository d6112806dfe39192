"""OpenAI reply builders: completions, chunks, embeddings, rerank results and model cards."""

from __future__ import annotations

import secrets
import time
from typing import Any


def new_id(prefix: str) -> str:
    """An OpenAI-style object id, e.g. ``chatcmpl-...``."""
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    """Unix seconds, as every OpenAI object's ``created``."""
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """A usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def model_card(model_id: str, created: int) -> dict[str, Any]:
    """One entry of ``GET /models``."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": "appliance"}


def chat_choice(index: int, text: str, finish_reason: str) -> dict[str, Any]:
    """A choice of a non-streamed chat completion."""
    return {
        "index": index,
        "message": {"role": "assistant", "content": text, "refusal": None},
        "logprobs": None,
        "finish_reason": finish_reason,
    }


def chat_completion(
    cid: str, model: str, created: int, choices: list[dict[str, Any]], use: dict[str, int]
) -> dict[str, Any]:
    """A non-streamed chat completion."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": use,
    }


def chat_chunk(
    cid: str,
    model: str,
    created: int,
    choices: list[dict[str, Any]],
    use: dict[str, int] | None = None,
    with_usage: bool = False,
) -> dict[str, Any]:
    """A streamed chat completion chunk; ``usage`` only when the client asked for it."""
    chunk = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if with_usage:
        chunk["usage"] = use
    return chunk


def chunk_choice(index: int, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    """A choice of a streamed chat chunk."""
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def text_choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    """A choice of a legacy completion (plain or streamed)."""
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def text_completion(
    cid: str,
    model: str,
    created: int,
    choices: list[dict[str, Any]],
    use: dict[str, int] | None,
) -> dict[str, Any]:
    """A legacy completion or one of its stream chunks."""
    out: dict[str, Any] = {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if use is not None:
        out["usage"] = use
    return out


def embedding_list(model: str, vectors: list[Any], prompt_tokens: int) -> dict[str, Any]:
    """An embeddings reply; each vector is a float list or a base64 string."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def rerank_result(
    model: str,
    scores: list[float],
    documents: list[str],
    top_n: int | None,
    with_docs: bool,
    tokens: int,
) -> dict[str, Any]:
    """A rerank reply (the Cohere/Jina shape that OpenAI-compatible servers use)."""
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    if top_n is not None:
        order = order[:top_n]
    results = []
    for i in order:
        item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if with_docs:
            item["document"] = {"text": documents[i]}
        results.append(item)
    return {
        "id": new_id("rerank"),
        "object": "list",
        "model": model,
        "results": results,
        "usage": {"total_tokens": tokens},
    }

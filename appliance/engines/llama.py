"""GGUF models on llama.cpp (llama-cpp-python): chat, completions, embeddings.

Replies are OpenAI-shaped already; this fixes what llama-cpp-python leaves out (the
public model name, ``refusal``, usage on streams) and passes the sampling parameters
OpenAI clients send.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

from appliance.config.backends import LlamaCppModel
from appliance.engines.base import Engine, resolve
from appliance.errors import InvalidRequestError

_SAMPLING = {
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


class LlamaEngine(Engine):
    """One llama.cpp context."""

    def __init__(self, config: LlamaCppModel) -> None:
        super().__init__(config.name)
        from llama_cpp import Llama

        opts = config.options
        self.embedding = config.type == "embedding"
        self.llm: Any = Llama(
            model_path=str(resolve(opts.model)),
            n_ctx=opts.n_ctx,
            n_threads=opts.n_threads or os.cpu_count() or 1,
            n_batch=opts.n_batch,
            chat_format=opts.chat_format,
            seed=opts.seed,
            embedding=self.embedding,
            verbose=False,
        )
        self._lock = threading.Lock()  # one llama.cpp context: one request at a time

    # ---- generation -------------------------------------------------------------------

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        self._generating()
        choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0}
        with self._lock:
            for index in range(body.get("n") or 1):
                reply = self.llm.create_chat_completion(
                    messages=body["messages"], **_sampling(body)
                )
                choice = reply["choices"][0]
                choices.append(
                    {
                        "index": index,
                        "message": {
                            "role": "assistant",
                            "content": choice["message"].get("content") or "",
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": choice["finish_reason"],
                    }
                )
                usage["prompt_tokens"] = reply["usage"]["prompt_tokens"]
                usage["completion_tokens"] += reply["usage"]["completion_tokens"]
        return _reply(reply, "chat.completion", self.name, choices, usage)

    def chat_stream(self, body: dict[str, Any], stop: threading.Event) -> Iterator[dict[str, Any]]:
        self._generating()
        _single(body)
        with self._lock:
            chunks = self.llm.create_chat_completion(
                messages=body["messages"], stream=True, **_sampling(body)
            )
            yield from self._relay(chunks, body, stop)

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        self._generating()
        prompt = _prompt(body)
        choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0}
        with self._lock:
            for index in range(body.get("n") or 1):
                reply = self.llm.create_completion(prompt=prompt, **_sampling(body, 16))
                choice = reply["choices"][0]
                choices.append(
                    {
                        "index": index,
                        "text": choice["text"],
                        "logprobs": None,
                        "finish_reason": choice["finish_reason"],
                    }
                )
                usage["prompt_tokens"] = reply["usage"]["prompt_tokens"]
                usage["completion_tokens"] += reply["usage"]["completion_tokens"]
        return _reply(reply, "text_completion", self.name, choices, usage)

    def completion_stream(
        self, body: dict[str, Any], stop: threading.Event
    ) -> Iterator[dict[str, Any]]:
        self._generating()
        _single(body)
        with self._lock:
            chunks = self.llm.create_completion(
                prompt=_prompt(body), stream=True, **_sampling(body, 16)
            )
            yield from self._relay(chunks, body, stop)

    def _relay(
        self, chunks: Iterator[dict[str, Any]], body: dict[str, Any], stop: threading.Event
    ) -> Iterator[dict[str, Any]]:
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        generated = 0
        last: dict[str, Any] | None = None
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                chunk["model"] = self.name
                for choice in chunk["choices"]:
                    choice.setdefault("logprobs", None)
                    delta = choice.get("delta")
                    if (delta and delta.get("content")) or choice.get("text"):
                        generated += 1
                if with_usage:
                    chunk["usage"] = None
                last = chunk
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # stops llama.cpp generating for a client that left
        if with_usage and last is not None:
            prompt = max(self.llm.n_tokens - generated, 0)
            yield {
                **{k: last[k] for k in ("id", "object", "created", "model")},
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": generated,
                    "total_tokens": prompt + generated,
                },
            }

    def _generating(self) -> None:
        if self.embedding:
            raise InvalidRequestError(
                f"The model `{self.name}` is an embedding model.", code="model_not_supported"
            )

    # ---- embeddings -------------------------------------------------------------------

    def embed(self, texts: list[str]) -> tuple[Any, int]:
        if not self.embedding:
            return super().embed(texts)
        with self._lock:
            reply = self.llm.create_embedding(texts)
        vectors = [item["embedding"] for item in reply["data"]]
        return vectors, int(reply["usage"]["prompt_tokens"])


def _sampling(body: dict[str, Any], default_max: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"max_tokens": default_max}
    for key, name in _SAMPLING.items():
        value = body.get(key)
        if value is not None:
            out[name] = value
    return out


def _single(body: dict[str, Any]) -> None:
    if (body.get("n") or 1) > 1:
        raise InvalidRequestError(
            "n > 1 cannot be streamed from a llama.cpp model; stream n=1 or do not stream.",
            param="n",
            code="invalid_value",
        )


def _prompt(body: dict[str, Any]) -> str:
    prompt = body["prompt"]
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and isinstance(prompt[0], str):
        return str(prompt[0])
    raise InvalidRequestError(
        "This model takes one text prompt per request.", param="prompt", code="invalid_value"
    )


def _reply(
    reply: dict[str, Any],
    kind: str,
    name: str,
    choices: list[dict[str, Any]],
    usage: dict[str, int],
) -> dict[str, Any]:
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {
        "id": reply["id"],
        "object": kind,
        "created": reply["created"],
        "model": name,
        "choices": choices,
        "usage": usage,
    }

"""The scripted backend: deterministic answers for tests and demos.

Chat and completions stream the configured ``reply`` chunk by chunk (one chunk counts as
one token), or echo the last user message word by word. ``max_tokens`` and ``stop`` are
honoured. A chat request may be answered with scripted tool calls or JSON instead
(:mod:`appliance.backends.scripted_chat`), plain or streamed in OpenAI's shapes.
Embeddings are hashed bags of words, normalised, so texts that share words are close;
rerank scores are the cosine between query and document embeddings.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
import struct
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from appliance.backends import scripted_chat
from appliance.backends.base import ReplyStream, Worker
from appliance.config import ScriptedModel
from appliance.errors import InvalidRequestError
from appliance.wire.openai import deltas as chat_deltas
from appliance.wire.openai import protocol, reply
from appliance.wire.openai.deltas import Delta
from appliance.wire.openai.fields import (
    LLAMA_SAMPLING,
    OPENAI_CHAT,
    OPENAI_COMPLETIONS,
    OPENAI_EMBEDDINGS,
    RERANK,
    Fields,
)
from appliance.wire.openai.protocol import Endpoint

# OpenAI's fields, and the samplers local models take: a scripted model stands in for
# either, and its answers are the same at any sampling setting or effort. What would add
# to an answer (log probabilities, audio, a search, an echoed prompt) is refused.
SCRIPTED = Fields(
    {
        Endpoint.CHAT: OPENAI_CHAT | LLAMA_SAMPLING,
        Endpoint.COMPLETIONS: OPENAI_COMPLETIONS | LLAMA_SAMPLING,
        Endpoint.EMBEDDINGS: OPENAI_EMBEDDINGS,
        Endpoint.RERANK: RERANK,
    },
    off_only={
        Endpoint.CHAT: {
            "logprobs": (False,),
            "top_logprobs": (0,),
            "audio": (),
            "modalities": (["text"],),
            "web_search_options": (),
        },
        Endpoint.COMPLETIONS: {"logprobs": (), "echo": (False,), "suffix": ()},
    },
)

_WORDS = re.compile(r"\S+\s*|\s+")
_TOKENS = re.compile(r"\w+")


class ScriptedWorker(Worker):
    """A worker whose answers are fixed by its options."""

    config: ScriptedModel
    fields = SCRIPTED

    def __init__(self, worker_id: str, config: ScriptedModel) -> None:
        super().__init__(worker_id, config)
        self.options = config.options

    async def call(self, endpoint: Endpoint, body: dict[str, Any]) -> bytes:
        if endpoint is Endpoint.EMBEDDINGS:
            return orjson.dumps(self._embeddings(body))
        if endpoint is Endpoint.RERANK:
            return orjson.dumps(self._rerank(body))
        prompts = _prompts(endpoint, body)
        if endpoint is Endpoint.CHAT:
            return orjson.dumps(await self._chat(body, prompts[0]))
        scripts = [self._script(p, body) for p in prompts]
        n = body.get("n") or 1
        delay = self.options.delay_ms * max(len(pieces) for pieces, _ in scripts)
        if delay:
            await asyncio.sleep(delay / 1000)
        created, cid = reply.now(), reply.new_id(_ID_PREFIX[endpoint])
        completion_tokens = n * sum(len(pieces) for pieces, _ in scripts)
        use = reply.usage(sum(_count(p) for p in prompts), completion_tokens)
        choices = [
            reply.text_choice(i, "".join(pieces), finish)
            for i, (pieces, finish) in enumerate(_per_prompt(scripts, n))
        ]
        return orjson.dumps(reply.text_completion(cid, self.model, created, choices, use))

    async def _chat(self, body: dict[str, Any], prompt: str) -> dict[str, Any]:
        """A plain chat reply: the deltas of each choice folded into its message."""
        scripts = [self._chat_script(prompt, body) for _ in range(body.get("n") or 1)]
        longest = max(len(deltas) for deltas, _ in scripts)
        if self.options.delay_ms * longest:
            await asyncio.sleep(self.options.delay_ms * longest / 1000)
        choices = []
        for index, (deltas, finish) in enumerate(scripts):
            choice = reply.chat_choice(index, "", finish)
            choice["message"] = chat_deltas.message(deltas)
            choices.append(choice)
        use = reply.usage(_count(prompt), sum(len(deltas) for deltas, _ in scripts))
        created, cid = reply.now(), reply.new_id("chatcmpl")
        return reply.chat_completion(cid, self.model, created, choices, use)

    def _chat_script(self, prompt: str, body: dict[str, Any]) -> tuple[list[Delta], str]:
        """A chat reply as deltas (one a token) and its finish reason (see scripted_chat)."""
        calls = scripted_chat.calls(self.options, body)
        if not calls:
            text = scripted_chat.json_reply(self.options, body)
            pieces, finish = self._script(
                prompt, body, None if text is None else _WORDS.findall(text) or [text]
            )
            return [{"content": piece} for piece in pieces], finish
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        deltas: list[Delta] = []
        for index, (name, arguments) in enumerate(calls):
            parts = [chat_deltas.call_arguments(index, p) for p in _WORDS.findall(arguments)]
            for delta in [chat_deltas.call_start(index, name), *parts]:
                if limit is not None and len(deltas) >= limit:
                    return deltas, "length"
                deltas.append(delta)
        return deltas, "tool_calls"

    async def open_stream(
        self, endpoint: Endpoint, body: dict[str, Any], *, usage: bool = False
    ) -> ReplyStream:
        if endpoint not in (Endpoint.CHAT, Endpoint.COMPLETIONS):
            raise InvalidRequestError(f"{endpoint.value} cannot stream", param="stream")
        if endpoint is Endpoint.CHAT:
            # What it cannot do is a 400 before the stream begins, as OpenAI answers it.
            scripted_chat.calls(self.options, body)
            scripted_chat.json_reply(self.options, body)
        asked = bool((body.get("stream_options") or {}).get("include_usage"))
        return self._stream(endpoint, body, usage or asked)

    async def _stream(
        self, endpoint: Endpoint, body: dict[str, Any], with_usage: bool
    ) -> AsyncGenerator[bytes, None]:
        prompts = _prompts(endpoint, body)
        n = body.get("n") or 1
        created, cid = reply.now(), reply.new_id(_ID_PREFIX[endpoint])
        if endpoint is Endpoint.CHAT:
            # Every choice streams its own deltas (a call's id is its own), step by step.
            scripts = [self._chat_script(prompts[0], body) for _ in range(n)]
            # OpenAI's first chunk: content "" for a text reply, null for a tool call.
            steps = [[reply.chunk_choice(i, _role_delta(scripts[i][0]), None)] for i in range(n)]
        else:
            texts = _per_prompt([self._script(p, body) for p in prompts], n)
            scripts = [([{"text": piece} for piece in pieces], finish) for pieces, finish in texts]
            steps = []
        longest = max(len(deltas) for deltas, _ in scripts)
        for step in range(longest):
            steps.append(
                [
                    self._choice(endpoint, index, deltas[step], None)
                    for index, (deltas, _) in enumerate(scripts)
                    if step < len(deltas)
                ]
            )
        steps.append(
            [self._choice(endpoint, i, {}, finish) for i, (_, finish) in enumerate(scripts)]
        )
        first = 1 if endpoint is Endpoint.CHAT else 0  # the role chunks go out at once
        for k, choices in enumerate(steps):
            if self.options.delay_ms and first <= k < len(steps) - 1:
                await asyncio.sleep(self.options.delay_ms / 1000)
            for choice in choices:
                yield self._chunk(endpoint, cid, created, [choice], None, with_usage)
        if with_usage:
            tokens = sum(len(deltas) for deltas, _ in scripts)
            use = reply.usage(sum(_count(p) for p in prompts), tokens)
            yield self._chunk(endpoint, cid, created, [], use, True)

    def _choice(
        self, endpoint: Endpoint, index: int, delta: Delta, finish: str | None
    ) -> dict[str, Any]:
        if endpoint is Endpoint.CHAT:
            return reply.chunk_choice(index, delta, finish)
        return reply.text_choice(index, delta.get("text", ""), finish)

    def _chunk(
        self,
        endpoint: Endpoint,
        cid: str,
        created: int,
        choices: list[dict[str, Any]],
        use: dict[str, int] | None,
        with_usage: bool,
    ) -> bytes:
        if endpoint is Endpoint.CHAT:
            return orjson.dumps(
                reply.chat_chunk(cid, self.model, created, choices, use, with_usage)
            )
        return orjson.dumps(reply.text_completion(cid, self.model, created, choices, use))

    def _script(
        self, prompt: str, body: dict[str, Any], given: list[str] | None = None
    ) -> tuple[list[str], str]:
        """The pieces to send for one prompt (``given``, else the reply or the prompt's
        words) as ``max_tokens`` and ``stop`` cut them, and the finish reason."""
        pieces = given or self.options.reply or _WORDS.findall(prompt)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if s]
        out: list[str] = []
        text = ""
        for piece in pieces:
            if limit is not None and len(out) >= limit:
                return out, "length"
            candidate = text + piece
            cuts = [candidate.find(s) for s in stops if s in candidate]
            if cuts:
                rest = candidate[len(text) : min(cuts)]
                if rest:
                    out.append(rest)
                return out, "stop"
            out.append(piece)
            text = candidate
        return out, "stop"

    def _vector(self, text: str, dimensions: int) -> list[float]:
        vec = [0.0] * dimensions
        for token in _TOKENS.findall(text.lower()) or [text]:
            digest = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest())
            vec[digest % dimensions] += 1.0 if (digest >> 32) & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec))
        if norm == 0:
            vec[0], norm = 1.0, 1.0
        return [v / norm for v in vec]

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        req: protocol.EmbeddingRequest = protocol.validate(protocol.EmbeddingRequest, body)
        texts = _texts(req.input)
        dims = req.dimensions or self.options.dimensions
        if dims > self.options.dimensions:
            raise InvalidRequestError(
                f"Invalid 'dimensions': this model's embeddings have "
                f"{self.options.dimensions} dimensions; ask for at most "
                f"{self.options.dimensions}.",
                param="dimensions",
                code="invalid_value",
            )
        vectors: list[Any] = [self._vector(t, dims) for t in texts]
        if req.encoding_format == "base64":
            vectors = [base64.b64encode(struct.pack(f"<{dims}f", *v)).decode() for v in vectors]
        return reply.embedding_list(self.model, vectors, sum(_count(t) for t in texts))

    def _rerank(self, body: dict[str, Any]) -> dict[str, Any]:
        dims = self.options.dimensions
        query = self._vector(body["query"], dims)
        docs = body["documents"]
        scores = [
            round(sum(a * b for a, b in zip(query, self._vector(d, dims), strict=True)), 6)
            for d in docs
        ]
        tokens = _count(body["query"]) + sum(_count(d) for d in docs)
        return reply.rerank_result(
            self.model, scores, docs, body.get("top_n"), bool(body.get("return_documents")), tokens
        )


_ID_PREFIX = {Endpoint.CHAT: "chatcmpl", Endpoint.COMPLETIONS: "cmpl"}


def _per_prompt(scripts: list[tuple[list[str], str]], n: int) -> list[tuple[list[str], str]]:
    """OpenAI's choice order: all n choices of prompt 0, then of prompt 1, ..."""
    return [script for script in scripts for _ in range(n)]


def _prompts(endpoint: Endpoint, body: dict[str, Any]) -> list[str]:
    if endpoint is Endpoint.CHAT:
        return [_last_user_text(body["messages"])]
    prompt = body["prompt"]
    if isinstance(prompt, str):
        return [prompt]
    if prompt and isinstance(prompt[0], int):
        return [" ".join(map(str, prompt))]
    return [p if isinstance(p, str) else " ".join(map(str, p)) for p in prompt]


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return content or ""
    return ""


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if value and isinstance(value[0], int):
        return [" ".join(map(str, value))]
    return [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]


def _count(text: str) -> int:
    """Tokens as the scripted backend counts them: words."""
    return len(text.split())


def _role_delta(deltas: list[Delta]) -> Delta:
    calls = any("tool_calls" in delta for delta in deltas)
    return {"role": "assistant", "content": None if calls else ""}

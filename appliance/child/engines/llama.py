"""GGUF models on llama.cpp (llama-cpp-python): chat, completions, embeddings.

Requests are translated by :mod:`appliance.child.engines.llama_request`: what llama-cpp-python
can do is passed on, the rest is refused with a 400 naming the field. Before generating,
the prompt is formatted and tokenized exactly as llama-cpp-python will (a dry run of its
chat handler with the model's own template), so a prompt or ``max_tokens`` beyond the
context is OpenAI's 400 ``context_length_exceeded``, never a failure of the model.

Replies are OpenAI-shaped already; this fixes what llama-cpp-python leaves out: the
public model name, ``refusal`` and usage on streams, and reads tool calls out of the
text (:mod:`appliance.child.engines.llama_tools`): forced ones by a grammar of its own, since
llama-cpp-python's forces only a named function, and ``auto`` ones not at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import jinja2

from appliance.child.engines.base import Engine, resolve, shorten
from appliance.child.engines.llama_cpu import load_cpu_backend
from appliance.child.engines.llama_replies import (
    ChatDeltas,
    Deltas,
    TextDeltas,
    chat_choice,
    reply_of,
    single,
)
from appliance.child.engines.llama_request import (
    ChatCall,
    chat_call,
    completion_arguments,
    context_error,
)
from appliance.child.engines.llama_template import (
    PROBE,
    PROBE_RESULT,
    Template,
    probe_tool_calls,
    probe_tool_role,
    probe_tools,
)
from appliance.config.backends import LlamaCppModel
from appliance.errors import InvalidRequestError


class _Formatted(Exception):  # a signal, not an error
    """A dry run reached generation; carries the prompt's tokens."""

    def __init__(self, tokens: list[int]) -> None:
        super().__init__("dry run")
        self.tokens = tokens


def _llama_class() -> type[Any]:
    from llama_cpp import Llama, StoppingCriteriaList

    class DryRunLlama(Llama):
        """llama.cpp whose chat handler can run without generating.

        A chat handler formats the messages with the chat template, tokenizes them and
        calls ``create_completion``; in a dry run that call hands the tokens back instead.
        """

        dry_run = False
        halt: threading.Event | None = None  # the generation's stop flag, while it runs

        def create_completion(self, prompt: Any, *args: Any, **kwargs: Any) -> Any:
            if self.dry_run:
                if isinstance(prompt, str):  # as llama-cpp-python tokenizes a text prompt
                    prompt = self.tokenize(prompt.encode(), add_bos=True, special=True)
                raise _Formatted(list(prompt))
            halt = self.halt
            if halt is not None:  # checked after every token (chat handlers pass theirs)
                criteria = [*(kwargs.get("stopping_criteria") or ()), lambda *_: halt.is_set()]
                kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
            return super().create_completion(prompt, *args, **kwargs)

    return DryRunLlama


class LlamaEngine(Engine):
    """One llama.cpp context."""

    def __init__(self, config: LlamaCppModel) -> None:
        super().__init__(config.name)
        opts = config.options
        self.embedding = config.type == "embedding"
        self.cpu = load_cpu_backend().describe()
        self.llm: Any = _llama_class()(
            model_path=str(resolve(opts.model)),
            n_ctx=opts.n_ctx,
            n_threads=opts.n_threads or os.cpu_count() or 1,
            n_batch=opts.n_batch,
            chat_format=opts.chat_format,
            seed=opts.seed,
            embedding=self.embedding,
            verbose=False,
        )
        self.n_ctx = int(self.llm.n_ctx())
        self.n_vocab = int(self.llm.n_vocab())
        if self.embedding:
            self.dimensions = int(self.llm.n_embd())
        self._lock = threading.Lock()  # one llama.cpp context: one request at a time
        self.template = Template() if self.embedding else self._probe()

    def warm_up(self) -> None:
        """One token (or one embedding) from a one-word prompt."""
        with self._lock:
            if self.embedding:
                self.llm.create_embedding(["warm up"])
            else:
                self.llm.create_completion(prompt=self.llm.tokenize(b"Hi"), max_tokens=1)

    @contextlib.contextmanager
    def _running(self, stop: threading.Event | None) -> Iterator[None]:
        """The context, held until the generation ended; ``stop`` ends it between tokens."""
        with self._lock:
            self.llm.halt = stop
            try:
                yield
            finally:
                self.llm.halt = None

    # ---- chat -------------------------------------------------------------------------

    def chat(self, body: dict[str, Any], stop: threading.Event | None = None) -> dict[str, Any]:
        self._generating()
        call = chat_call(body, self.template, self.n_vocab)
        choices, completion = [], 0
        with self._running(stop):
            prompt = self._prompt(call)
            kwargs = self._generation(call)
            for index in range(call.n):
                reply = self.llm.create_chat_completion(**kwargs)
                choices.append(chat_choice(index, reply["choices"][0], call))
                completion += reply["usage"]["completion_tokens"]
                if stop is not None and stop.is_set():
                    break
        return reply_of(reply, "chat.completion", self.name, choices, prompt, completion)

    def chat_stream(self, body: dict[str, Any], stop: threading.Event) -> Iterator[dict[str, Any]]:
        self._generating()
        single(body)
        call = chat_call(body, self.template, self.n_vocab)
        with self._running(stop):
            prompt = self._prompt(call)
            chunks = self.llm.create_chat_completion(stream=True, **self._generation(call))
            yield from self._relay(chunks, body, stop, prompt, ChatDeltas(call, stop))

    def _generation(self, call: ChatCall) -> dict[str, Any]:
        """The arguments that generate: with a grammar if a tool call is forced."""
        if call.forced is None:
            return call.kwargs
        from llama_cpp.llama_grammar import LlamaGrammar

        schema = json.dumps(call.forced)
        return {**call.kwargs, "grammar": LlamaGrammar.from_json_schema(schema, verbose=False)}

    def _prompt(self, call: ChatCall) -> int:
        """Tokens of the formatted prompt; a 400 if the request does not fit the context."""
        try:
            tokens = self._format(call.kwargs)
        except (ValueError, jinja2.TemplateError) as exc:  # the template refused them
            raise InvalidRequestError(
                f"The model's chat template cannot format these messages: {exc}",
                param="messages",
                code="invalid_value",
            ) from None
        context_error(self.n_ctx, len(tokens), call.max_tokens, "messages")
        return len(tokens)

    def _format(self, kwargs: dict[str, Any]) -> list[int]:
        """The prompt tokens llama-cpp-python makes of these chat arguments."""
        self.llm.dry_run = True
        try:
            self.llm.create_chat_completion(**kwargs)
        except _Formatted as done:
            return done.tokens
        finally:
            self.llm.dry_run = False
        raise RuntimeError("the chat handler generated without calling create_completion")

    def _probe(self) -> Template:
        """What the chat template shows of tool calls, tool results and offered tools."""

        def shows(marker: str, messages: list[dict[str, Any]], **extra: Any) -> bool:
            try:
                tokens = self._format({"messages": messages, **extra})
            except (ValueError, TypeError, LookupError, jinja2.TemplateError):
                return False  # a template that cannot take it does not show it
            return marker in self.llm.detokenize(tokens, special=True).decode(errors="replace")

        hello = [{"role": "user", "content": "Hi"}]
        return Template(
            tool_calls=shows(PROBE, probe_tool_calls()),
            tool_role=shows(PROBE_RESULT, probe_tool_role()),
            tools=shows(PROBE, hello, tools=probe_tools()),
        )

    # ---- completions ------------------------------------------------------------------

    def completion(
        self, body: dict[str, Any], stop: threading.Event | None = None
    ) -> dict[str, Any]:
        self._generating()
        kwargs = completion_arguments(body, self.n_vocab)
        tokens, echo = self._completion_prompt(body)
        choices, completion = [], 0
        with self._running(stop):
            for index in range(body.get("n") or 1):
                reply = self.llm.create_completion(prompt=tokens, **kwargs)
                choice = reply["choices"][0]
                choices.append(
                    {
                        "index": index,
                        "text": (echo or "") + choice["text"],
                        "logprobs": None,
                        "finish_reason": choice["finish_reason"],
                    }
                )
                completion += reply["usage"]["completion_tokens"]
                if stop is not None and stop.is_set():
                    break
        return reply_of(reply, "text_completion", self.name, choices, len(tokens), completion)

    def completion_stream(
        self, body: dict[str, Any], stop: threading.Event
    ) -> Iterator[dict[str, Any]]:
        self._generating()
        single(body)
        kwargs = completion_arguments(body, self.n_vocab)
        tokens, echo = self._completion_prompt(body)
        with self._running(stop):
            chunks = self.llm.create_completion(prompt=tokens, stream=True, **kwargs)
            yield from self._relay(chunks, body, stop, len(tokens), TextDeltas(echo))

    def _completion_prompt(self, body: dict[str, Any]) -> tuple[list[int], str | None]:
        """The prompt's tokens (checked against the context) and its text if echoed."""
        prompt = body["prompt"]
        if isinstance(prompt, list) and len(prompt) == 1 and not isinstance(prompt[0], int):
            prompt = prompt[0]
        if isinstance(prompt, str):
            # As llama-cpp-python tokenizes a text prompt: BOS, special tokens parsed.
            tokens = self.llm.tokenize(prompt.encode(), add_bos=True, special=True)
            if not tokens:
                tokens = [self.llm.token_bos()]
        elif prompt and all(isinstance(t, int) for t in prompt):
            tokens = list(prompt)
            if not all(0 <= t < self.n_vocab for t in tokens):
                raise InvalidRequestError(
                    f"Invalid 'prompt': token ids must be from 0 to {self.n_vocab - 1}.",
                    param="prompt",
                    code="invalid_value",
                )
            if body.get("echo"):
                prompt = self.llm.detokenize(tokens).decode(errors="replace")
        else:
            raise InvalidRequestError(
                "This model takes one prompt per request.", param="prompt", code="invalid_value"
            )
        context_error(self.n_ctx, len(tokens), body.get("max_tokens"), "prompt")
        return tokens, (prompt if body.get("echo") else None)

    # ---- streams ----------------------------------------------------------------------

    def _relay(
        self,
        chunks: Iterator[dict[str, Any]],
        body: dict[str, Any],
        stop: threading.Event,
        prompt: int,
        rewrite: Deltas,
    ) -> Iterator[dict[str, Any]]:
        """Relay llama's chunks as ``rewrite`` makes them; usage from the tokens it saw."""
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        last: dict[str, Any] | None = None
        out = rewrite(chunks)
        try:
            for chunk in out:
                if stop.is_set():
                    return
                chunk["model"] = self.name
                for choice in chunk["choices"]:
                    choice["logprobs"] = None
                if with_usage:
                    chunk["usage"] = None
                last = chunk
                yield chunk
        finally:
            out.close()
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # stops llama.cpp generating for a client that left
        if with_usage and last is not None:
            generated = rewrite.tokens
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

    def embed(self, texts: list[str], dimensions: int | None = None) -> tuple[Any, int]:
        if not self.embedding:
            return super().embed(texts, dimensions)
        with self._lock:
            reply = self.llm.create_embedding(texts)
        vectors = [item["embedding"] for item in reply["data"]]
        return shorten(vectors, dimensions), int(reply["usage"]["prompt_tokens"])

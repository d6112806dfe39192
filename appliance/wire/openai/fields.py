"""Which request fields a backend takes: the rest is a 400 naming the field.

An upstream (``openai`` backend) gets every field as sent: it decides what it takes.
A backend that answers in the appliance (the scripted one, a local model's child) says
per operation which top-level fields it knows (:class:`Fields`), and the gateway refuses
any other before the request waits for a worker, so that nothing is dropped silently.
A field it knows is either honoured, refused by value where the backend cannot honour
that value (``logprobs: true`` on a local model), or one that is harmless to ignore by
definition (:data:`IGNORABLE`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.clip import clip
from appliance.errors import InvalidRequestError
from appliance.wire.openai.protocol import Endpoint

# Fields that do not change the answer, by their definition: who the caller is (``user``,
# ``safety_identifier``), tags the caller keeps (``metadata``), a processing tier
# (``service_tier``), a cache routing hint (``prompt_cache_key``, ``prompt_cache_options``,
# ``prompt_cache_retention``) and Predicted Outputs (``prediction``, a latency hint whose
# answer is the model's own either way). ``store`` is here too: a backend that keeps no
# completions refuses ``store: true`` by value.
IGNORABLE = frozenset(
    {
        "user",
        "safety_identifier",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "prediction",
        "store",
    }
)

# The fields of OpenAI's own request schemas, per operation (``moderation`` on chat is
# left out: the appliance runs no moderation).
OPENAI_CHAT = IGNORABLE | {
    "model",
    "messages",
    "stream",
    "stream_options",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "seed",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "response_format",
    "reasoning_effort",
    "verbosity",
    "audio",
    "modalities",
    "web_search_options",
}
OPENAI_COMPLETIONS = frozenset(
    {
        "user",
        "model",
        "prompt",
        "stream",
        "stream_options",
        "n",
        "best_of",
        "max_tokens",
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "stop",
        "seed",
        "logit_bias",
        "logprobs",
        "echo",
        "suffix",
    }
)
OPENAI_EMBEDDINGS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
RERANK = frozenset({"model", "query", "documents", "top_n", "return_documents", "user"})

# llama.cpp's samplers, by llama-cpp-python's names (``top_k`` also comes from Anthropic's
# Messages API, translated), with the type, the range and what a 400 says of another value
# (the child checks them: appliance.child.engines.llama_request). ``tfs_z`` is not here:
# llama.cpp no longer has tail-free sampling, and llama-cpp-python takes the argument only
# to ignore it.
LLAMA_SAMPLERS: dict[str, tuple[type | tuple[type, ...], float, float, str]] = {
    "top_k": (int, 0, 2**31 - 1, "must be an integer of at least 0 (0: no limit)"),
    "min_p": ((int, float), 0, 1, "must be a number from 0 to 1 (0: off)"),
    "typical_p": ((int, float), 0, 1, "must be a number from 0 to 1 (1: off)"),
    "repeat_penalty": ((int, float), 0.01, 100, "must be a number from 0.01 to 100 (1: off)"),
    "mirostat_mode": (int, 0, 2, "must be 0 (off), 1 (Mirostat) or 2 (Mirostat 2.0)"),
    "mirostat_tau": ((int, float), 0, 100, "must be a number from 0 to 100"),
    "mirostat_eta": ((int, float), 0, 1, "must be a number from 0 to 1"),
}
LLAMA_SAMPLING = frozenset(LLAMA_SAMPLERS)


@dataclass(frozen=True)
class Fields:
    """The top-level request fields a backend knows, per operation it serves.

    An operation not listed is not checked here: the backend answers it (a model that
    does not serve it says so).

    Attributes:
        takes: The fields known, per operation.
        off_only: Known fields the backend cannot honour, per operation, with the values
            that mean "off" (absent counts as off); another value is refused.
    """

    takes: Mapping[Endpoint, frozenset[str]]
    off_only: Mapping[Endpoint, Mapping[str, tuple[Any, ...]]] = field(default_factory=dict)

    def refusal(
        self, endpoint: Endpoint, body: dict[str, Any], backend: str
    ) -> InvalidRequestError | None:
        """The 400 naming the first field of ``body`` that ``backend`` does not take."""
        known = self.takes.get(endpoint)
        if known is None:
            return None
        off_only = self.off_only.get(endpoint, {})
        for name, value in body.items():
            off = off_only.get(name)
            if name not in known or (off is not None and not _is_off(value, off)):
                shown = clip(name)
                return InvalidRequestError(
                    f"Unsupported parameter: '{shown}' is not supported with this model: "
                    f"its backend ({backend}) does not support it on /{endpoint.value}.",
                    param=shown,
                    code="unsupported_parameter",
                )
        return None


def _is_off(value: Any, off: tuple[Any, ...]) -> bool:
    """Whether ``value`` is one of ``off`` (``True`` is not ``1``)."""
    return value is None or any(value == o and type(value) is type(o) for o in off)


# A local model's child: llama.cpp generates, llama.cpp or ONNX Runtime embeds and ranks.
LOCAL = Fields(
    {
        Endpoint.CHAT: OPENAI_CHAT | LLAMA_SAMPLING,
        Endpoint.COMPLETIONS: OPENAI_COMPLETIONS | LLAMA_SAMPLING,
        Endpoint.EMBEDDINGS: OPENAI_EMBEDDINGS,
        Endpoint.RERANK: RERANK,
    }
)

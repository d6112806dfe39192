"""OpenAI wire types: what requests must hold, and the shapes of replies.

Requests are validated with pydantic models that accept unknown fields, so whatever
OpenAI adds next passes through to upstreams untouched; a chat request's tools, tool
choice, response format and messages are checked as OpenAI checks them
(:mod:`appliance.wire.openai.chat_request`).
Every size a caller chooses is bounded here (list lengths, ``n``, ``top_n``,
``dimensions``, ``max_tokens``). The request's own JSON object is what travels on, with
its top-level scalars replaced by their validated values (see :mod:`appliance.http.body`).
Replies are built as plain dicts by :mod:`.reply`.

Nothing here imports Falcon or the workers.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from appliance.errors import InvalidRequestError
from appliance.wire.openai.chat_request import (
    MAX_TOOLS,
    ContentPart,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
    check_messages,
    check_response_format,
    check_tools,
)

MAX_N = 128
MAX_TOKENS = 1_000_000  # beyond any model's output window; larger is a client bug
MAX_INPUTS = 2048  # embeddings inputs and completions prompts per request, as OpenAI's
MAX_DOCUMENTS = 1000  # rerank documents per request
MAX_DIMENSIONS = 65_536  # beyond any embedding model; each model bounds it by its own size
MAX_TOP_LOGPROBS = 20  # OpenAI's chat limit
INT64 = 2**63  # a seed must fit a signed 64-bit integer


class Endpoint(enum.Enum):
    """The OpenAI operations a worker may serve; the value is the upstream path."""

    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RERANK = "rerank"
    RESPONSES = "responses"  # only to upstreams that serve it (``responses: passthrough``)


class OpenObject(BaseModel):
    """A request object: known fields checked, unknown fields kept."""

    model_config = ConfigDict(extra="allow")


class StreamOptions(OpenObject):
    include_usage: StrictBool | None = None


class ChatMessage(OpenObject):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


Stop = str | Annotated[list[str], Field(max_length=4)] | None


class SamplingRequest(OpenObject):
    model: str = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(1, ge=1, le=MAX_N)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stop: Stop = None
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    user: str | None = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: ResponseFormat | None = None
    # OpenAI's values, or another a backend takes (Groq's "default"): the backend decides.
    reasoning_effort: str | None = None

    @model_validator(mode="after")
    def _agent_fields(self) -> ChatCompletionRequest:
        """Messages, tools and response format as OpenAI requires them (see chat_request)."""
        check_messages(self.messages)
        check_tools(self.tools, self.tool_choice)
        check_response_format(self.response_format)
        return self

    def token_limit(self) -> int | None:
        """The effective completion-token limit."""
        return self.max_completion_tokens or self.max_tokens


Token = Annotated[int, Field(ge=0, lt=2**31)]  # a token id, as every tokenizer stores it
Inputs = (
    str
    | Annotated[list[str], Field(max_length=MAX_INPUTS)]
    | Annotated[list[Token], Field(max_length=MAX_INPUTS)]
    | Annotated[list[list[Token]], Field(max_length=MAX_INPUTS)]
)


class CompletionRequest(SamplingRequest):
    prompt: Inputs
    echo: StrictBool | None = None

    @field_validator("prompt")
    @classmethod
    def _not_empty_list(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        return value

    def token_limit(self) -> int:
        """Legacy completions default to 16 tokens, as OpenAI's do."""
        return self.max_tokens or 16


class EmbeddingRequest(OpenObject):
    model: str = Field(min_length=1)
    input: Inputs
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(None, ge=1, le=MAX_DIMENSIONS)

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be an empty list")
        return value


class RerankRequest(OpenObject):
    model: str = Field(min_length=1)
    query: str
    documents: list[str] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: int | None = Field(None, ge=1, le=MAX_DOCUMENTS)
    return_documents: StrictBool | None = False


def validate(model: type[OpenObject], body: dict[str, Any]) -> Any:
    """Validate ``body`` as ``model`` or raise a 400 naming the parameter."""
    try:
        return model.model_validate(body, strict=True)  # true is not 1, "100" not 100
    except ValidationError as exc:
        raise _invalid(exc) from None


_CODES = {
    "missing": "missing_required_parameter",
    "greater_than_equal": "invalid_value",
    "less_than_equal": "invalid_value",
    "greater_than": "invalid_value",
    "less_than": "invalid_value",
    "too_long": "array_above_max_length",
    "too_short": "empty_array",
    "string_too_short": "empty_string",
    "literal_error": "invalid_value",
}


def _invalid(exc: ValidationError) -> InvalidRequestError:
    # A union reports one error per member; the one that is not a plain type mismatch
    # (e.g. "too many stop sequences" rather than "not a string") says what is wrong.
    err = min(exc.errors(include_url=False), key=lambda e: e["type"].endswith("_type"))
    param = _param(err["loc"])
    if err["type"] == "missing":
        message = f"Missing required parameter: '{param}'."
    else:
        message = f"Invalid '{param}': {err['msg'][0].lower()}{err['msg'][1:]}."
    return InvalidRequestError(message, param=param, code=_CODES.get(err["type"], "invalid_type"))


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "dict"})


def _tag(part: int | str) -> bool:
    """Whether a path part is the name of a union member, which pydantic puts in paths."""
    return isinstance(part, str) and ("[" in part or part in _TYPE_TAGS or part[:1].isupper())


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for k, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif _tag(part):
            # Past a union member, the path goes on only to a field of an object in it
            # (``messages[0].content[1].type``), not to an item of a list of scalars.
            if not any(isinstance(p, str) and not _tag(p) for p in loc[k + 1 :]):
                break
        else:
            out += f".{part}" if out else part
    return out

"""Anthropic's Messages API: its wire types, and the one translator to and from chat.

A Messages request is validated here and becomes an ordinary OpenAI chat-completions
request (a dict), which the gateway serves on every backend; the chat reply, plain or as
a stream of chunks, becomes Anthropic's ``message`` or its event sequence again
(:mod:`.reply`); :mod:`.to_chat` translates requests.

What a chat request can carry is translated: ``system`` becomes the first system
message; ``tool_use`` blocks become an assistant's ``tool_calls``; ``tool_result`` blocks
become ``tool`` messages; images become ``image_url`` parts (a text-only model refuses
them with its own 400); ``tools``, ``tool_choice``, ``stop_sequences``, ``temperature``,
``top_p``, ``top_k``, ``metadata.user_id`` and ``output_config.format`` map to their chat
counterparts. What means nothing to the output is accepted: ``cache_control`` (anywhere),
``service_tier``, ``thinking: {"type": "disabled"}``. Anything else is a 400 that names the
field, in Anthropic's style (``thinking: ...``, ``messages.0.content.1.type: ...``).

Nothing here imports Falcon or the workers.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from appliance.errors import InvalidRequestError
from appliance.wire.openai.protocol import MAX_TOKENS

MAX_TOOLS = 128
MAX_STOP_SEQUENCES = 4  # what OpenAI-compatible backends take as ``stop``
TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"

CacheControl = dict[str, Any] | None  # a caching hint: accepted, no effect on the output


class _Strict(BaseModel):
    """Known fields checked; an unknown field is a 400 that names it."""

    model_config = ConfigDict(extra="forbid")


class TextBlock(_Strict):
    type: Literal["text"]
    text: StrictStr
    cache_control: CacheControl = None
    citations: Annotated[list[Any], Field(max_length=0)] | None = None


class Base64Source(_Strict):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: StrictStr


class URLSource(_Strict):
    type: Literal["url"]
    url: StrictStr


class ImageBlock(_Strict):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]
    cache_control: CacheControl = None


class ToolUseBlock(_Strict):
    type: Literal["tool_use"]
    id: StrictStr
    name: StrictStr
    input: dict[str, Any]
    cache_control: CacheControl = None


class ToolResultBlock(_Strict):
    type: Literal["tool_result"]
    tool_use_id: StrictStr
    content: StrictStr | list[TextBlock] | None = None
    is_error: StrictBool | None = None
    cache_control: CacheControl = None


Block = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")
]


class Message(_Strict):
    role: Literal["user", "assistant"]
    content: StrictStr | list[Block]


class InputSchema(BaseModel):
    """A tool's JSON schema: any schema keywords, but an object at the top."""

    model_config = ConfigDict(extra="allow")
    type: Literal["object"]


class Tool(_Strict):
    name: Annotated[str, Field(pattern=TOOL_NAME)]
    input_schema: InputSchema
    description: StrictStr | None = None
    type: Literal["custom"] | None = None
    strict: StrictBool | None = None
    cache_control: CacheControl = None


class ToolChoice(_Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: StrictStr | None = None
    disable_parallel_tool_use: StrictBool | None = None


class Metadata(_Strict):
    user_id: StrictStr | None = None


class Thinking(_Strict):
    type: Literal["disabled"]


class OutputFormat(_Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Strict):
    format: OutputFormat | None = None
    effort: None = None


class MessagesRequest(_Strict):
    """``POST /v1/messages``."""

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1, le=MAX_TOKENS)
    messages: list[Message] = Field(min_length=1)
    system: StrictStr | list[TextBlock] | None = None
    stop_sequences: Annotated[list[StrictStr], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    stream: StrictBool | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    cache_control: CacheControl = None


class CountTokensRequest(_Strict):
    """``POST /v1/messages/count_tokens``: a Messages request without the output settings."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    system: StrictStr | list[TextBlock] | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    cache_control: CacheControl = None


def parse(model: type[_Strict], body: dict[str, Any]) -> Any:
    """Validate ``body`` as ``model`` or raise a 400 in Anthropic's wording, naming the field."""
    try:
        return model.model_validate(body, strict=True)  # true is not 1, "100" not 100
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> InvalidRequestError:
    # A union reports one error per member: a value that is valid but unsupported says the
    # most, then anything but a plain type mismatch.
    errors = [(_path(e["loc"]), e) for e in exc.errors(include_url=False)]
    path, err = min(
        errors,
        key=lambda pe: (_UNSUPPORTED.match(pe[0]) is None, pe[1]["type"].endswith("_type")),
    )
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        message = f"{path}: Unsupported parameter; the appliance does not implement it."
        code = "unsupported_parameter"
    elif kind == "union_tag_invalid":
        path = f"{path}.type"
        message = (
            f"{path}: {ctx.get('tag')!r} is not supported here; expected one of "
            f"{ctx.get('expected_tags')}."
        )
        code = "invalid_value"
    elif kind == "literal_error" and _UNSUPPORTED.match(path):
        message = f"{path}: {_WHY_UNSUPPORTED[path.split('.', 1)[0]]}"
        code = "unsupported_value"
    else:
        message = f"{path}: {err['msg']}"
        code = "missing_required_parameter" if kind == "missing" else "invalid_value"
    return InvalidRequestError(message, param=path, code=code)


_UNSUPPORTED = re.compile(r"^(thinking\.type|output_config\.effort|tools\.\d+\.type)$")
_WHY_UNSUPPORTED = {
    "thinking": "Extended thinking is not supported by these models; omit 'thinking' or "
    "send {'type': 'disabled'}.",
    "output_config": "Effort levels are not supported by these models; omit 'effort'.",
    "tools": "Only custom (client) tools are supported here, not Anthropic's server tools.",
}
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "none", "dict"})


def _path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as Anthropic writes it (``messages.0.content.1.text``).

    pydantic adds the names of union members: a type (``str``, ``list[...]``), and the tag
    of a tagged member (a block's ``type`` after its index, an image source's after
    ``source``); they are not fields, and are left out.
    """
    out: list[str] = []
    tagged = tag_next = False
    for part in loc:
        if isinstance(part, int):
            out.append(str(part))
            tag_next, tagged = tagged, False
        elif tag_next:
            tag_next = False
        elif "[" in part or part in _TYPE_NAMES:
            tagged = "tagged-union" in part
        else:
            out.append(part)
            tag_next = part == "source"
    return ".".join(out)

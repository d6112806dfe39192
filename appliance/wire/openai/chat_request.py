"""The chat request's agent fields: messages, tools, tool choice, structured output.

Checked at the boundary, for every backend, as OpenAI checks them: a malformed tool,
tool choice, schema or message is a 400 naming the parameter (``tools[0].function.name``,
``response_format.json_schema``, ``messages[2].tool_call_id``). What is well formed but
not OpenAI's own (a ``custom`` tool, another ``response_format`` type) passes on: an
upstream may serve it, and a backend that cannot refuses it with a 400 of its own.

The request's JSON travels on as sent; these models only check it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from appliance.errors import InvalidRequestError

MAX_TOOLS = 128  # OpenAI's limit on tools per request
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"  # function and schema names, as OpenAI's
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(_Open):
    """One part of a message's content; a ``text`` part must carry its text."""

    type: StrictStr
    text: StrictStr | None = None


class CalledFunction(_Open):
    name: StrictStr
    arguments: StrictStr  # a JSON string, as OpenAI's schema has it


class ToolCall(_Open):
    """A tool call in an assistant message of the conversation so far."""

    id: StrictStr
    type: StrictStr = "function"
    function: CalledFunction | None = None


class FunctionDefinition(_Open):
    name: Name
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(_Open):
    """A tool offered to the model; a ``function`` tool needs its definition."""

    type: StrictStr
    function: FunctionDefinition | None = None


class ChosenFunction(_Open):
    name: StrictStr


class NamedToolChoice(_Open):
    type: StrictStr
    function: ChosenFunction | None = None


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaFormat(_Open):
    """``schema`` (a name pydantic keeps for itself) is checked by check_response_format."""

    name: Name
    description: StrictStr | None = None
    strict: StrictBool | None = None


class ResponseFormat(_Open):
    type: StrictStr
    json_schema: JsonSchemaFormat | None = None


def check_messages(messages: list[Any]) -> None:
    """What a message of each role must hold (raises a 400 naming the place).

    ``messages`` are validated :class:`appliance.wire.openai.protocol.ChatMessage` objects.
    """
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if part.type == "text" and part.text is None:
                    raise _missing(f"{where}.content[{j}].text")
        if message.role == "assistant":
            if (
                message.content is None
                and not message.tool_calls
                and not _has(message, "function_call")
            ):
                raise _missing(f"{where}.content", "an assistant message without tool_calls")
            for k, call in enumerate(message.tool_calls or []):
                if call.type == "function" and call.function is None:
                    raise _missing(f"{where}.tool_calls[{k}].function")
            continue
        if message.tool_calls:
            raise _invalid(f"{where}.tool_calls", "only assistant messages carry tool calls")
        if message.content is None:
            raise _missing(f"{where}.content")
        if message.role == "tool" and message.tool_call_id is None:
            raise _missing(f"{where}.tool_call_id", "a tool message")


def check_tools(tools: list[Tool] | None, choice: ToolChoice | None) -> None:
    """Function tools carry a definition; a forced choice names an offered function."""
    names = []
    for k, tool in enumerate(tools or []):
        if tool.type == "function":
            if tool.function is None:
                raise _missing(f"tools[{k}].function")
            names.append(tool.function.name)
    if choice is None or choice in ("none", "auto"):
        return
    if not tools:
        raise _invalid("tool_choice", "'tool_choice' is only allowed when 'tools' are specified")
    if isinstance(choice, NamedToolChoice) and choice.type == "function":
        if choice.function is None:
            raise _missing("tool_choice.function")
        if choice.function.name not in names:
            raise _invalid(
                "tool_choice",
                f"no function named {choice.function.name!r} is among the tools",
            )


def check_response_format(value: ResponseFormat | None) -> None:
    """A ``json_schema`` format carries its ``json_schema``, whose schema is an object."""
    if value is None or value.type != "json_schema":
        return
    if value.json_schema is None:
        raise _missing("response_format.json_schema")
    schema = (value.json_schema.model_extra or {}).get("schema")
    if schema is not None and not isinstance(schema, dict):
        raise _invalid("response_format.json_schema.schema", "must be a JSON schema object")


def _has(model: BaseModel, name: str) -> bool:
    return (model.model_extra or {}).get(name) is not None


def _missing(param: str, what: str = "") -> InvalidRequestError:
    suffix = f" in {what}" if what else ""
    return InvalidRequestError(
        f"Missing required parameter: '{param}'{suffix}.",
        param=param,
        code="missing_required_parameter",
    )


def _invalid(param: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{param}': {why}.", param=param, code="invalid_value")

"""A Messages request as an OpenAI chat-completions request (a dict) that every backend serves."""

from __future__ import annotations

import json
from typing import Any

from appliance.errors import InvalidRequestError
from appliance.wire.anthropic.protocol import (
    Base64Source,
    CountTokensRequest,
    ImageBlock,
    Message,
    MessagesRequest,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
)


def _check_turns(turns: list[Message]) -> None:
    """As Anthropic's API: no turn is empty, and every ``tool_result`` answers a
    ``tool_use`` of the message just before it."""
    for i, turn in enumerate(turns):
        if not turn.content:
            raise InvalidRequestError(
                f"messages.{i}.content: all messages must have non-empty content.",
                param=f"messages.{i}.content",
                code="invalid_value",
            )
        if isinstance(turn.content, str):
            continue
        before = turns[i - 1].content if i else []
        asked = {b.id for b in before if isinstance(b, ToolUseBlock)} if before else set()
        for j, block in enumerate(turn.content):
            if isinstance(block, ToolResultBlock) and block.tool_use_id not in asked:
                raise InvalidRequestError(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {block.tool_use_id}. Each `tool_result` block "
                    "must have a corresponding `tool_use` block in the previous message.",
                    param=f"messages.{i}.content.{j}",
                    code="invalid_value",
                )


def to_chat(request: MessagesRequest | CountTokensRequest) -> dict[str, Any]:
    """The chat-completions request that asks the same of the model."""
    messages = _system(request.system)
    for i, message in enumerate(request.messages):
        where = f"messages.{i}"
        if message.role == "assistant":
            messages.append(_assistant(message.content, where))
        else:
            messages.extend(_user(message.content, where))
    _check_turns(request.messages)
    if request.messages[-1].role == "assistant":
        raise InvalidRequestError(
            f"messages.{len(request.messages) - 1}: The last message must be from the user; "
            "continuing an assistant turn (prefill) is not supported here.",
            param=f"messages.{len(request.messages) - 1}",
            code="invalid_value",
        )
    chat: dict[str, Any] = {"model": request.model, "messages": messages}
    if isinstance(request, MessagesRequest):
        chat["max_tokens"] = request.max_tokens
        _sampling(request, chat)
    _tools(request, chat)
    fmt = request.output_config.format if request.output_config else None
    if fmt is not None:
        schema = {"name": "output", "schema": fmt.schema_, "strict": True}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    return chat


def _sampling(request: MessagesRequest, chat: dict[str, Any]) -> None:
    if request.stream:
        chat["stream"] = True
    if request.stop_sequences:
        chat["stop"] = list(request.stop_sequences)
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(request, name)
        if value is not None:
            chat[name] = value
    user = request.metadata.user_id if request.metadata else None
    if user is not None:
        chat["user"] = user


def _system(system: str | list[TextBlock] | None) -> list[dict[str, Any]]:
    if system is None:
        return []
    text = system if isinstance(system, str) else "\n".join(block.text for block in system)
    return [{"role": "system", "content": text}]


def _assistant(content: str | list[Any], where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts, calls = [], []
    for j, block in enumerate(content):
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input, ensure_ascii=False)
            function = {"name": block.name, "arguments": arguments}
            calls.append({"id": block.id, "type": "function", "function": function})
        else:
            raise _not_here(f"{where}.content.{j}", block.type, "assistant")
    out: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) if texts else None}
    if calls:
        out["tool_calls"] = calls
    elif out["content"] is None:
        out["content"] = ""
    return out


def _user(content: str | list[Any], where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        if isinstance(block, ToolResultBlock):
            results.append(_tool_result(block))
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block)}})
        else:
            raise _not_here(f"{where}.content.{j}", block.type, "user")
    if not parts:
        return results
    if all(part["type"] == "text" for part in parts):
        return [*results, {"role": "user", "content": "\n".join(p["text"] for p in parts)}]
    return [*results, {"role": "user", "content": parts}]


def _tool_result(block: ToolResultBlock) -> dict[str, Any]:
    content = block.content
    text = content if isinstance(content, str) else "\n".join(b.text for b in content or [])
    if block.is_error:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _image_url(block: ImageBlock) -> str:
    source = block.source
    if isinstance(source, Base64Source):
        return f"data:{source.media_type};base64,{source.data}"
    return source.url


def _not_here(path: str, kind: str, role: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{path}: {kind} blocks are not allowed in {role} messages.",
        param=path,
        code="invalid_value",
    )


def _tools(request: MessagesRequest | CountTokensRequest, chat: dict[str, Any]) -> None:
    tools = request.tools or []
    if tools:
        chat["tools"] = [_tool(tool) for tool in tools]
    choice = request.tool_choice
    if choice is None:
        return
    if choice.type == "tool":
        names = {tool.name for tool in tools}
        if choice.name not in names:
            raise InvalidRequestError(
                f"tool_choice.name: {choice.name!r} is not among the tools offered.",
                param="tool_choice.name",
                code="invalid_value",
            )
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice.name is not None:
        raise InvalidRequestError(
            f"tool_choice.name: only a tool_choice of type 'tool' names a tool, not "
            f"{choice.type!r}.",
            param="tool_choice.name",
            code="invalid_value",
        )
    elif choice.type == "any":
        if not tools:
            raise InvalidRequestError(
                "tool_choice: 'any' needs at least one tool in 'tools'.",
                param="tool_choice",
                code="invalid_value",
            )
        chat["tool_choice"] = "required"
    else:
        chat["tool_choice"] = choice.type  # auto, none
    if choice.disable_parallel_tool_use and tools:
        chat["parallel_tool_calls"] = False


def _tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {
        "name": tool.name,
        "parameters": tool.input_schema.model_dump(exclude_unset=False),
    }
    if tool.description is not None:
        function["description"] = tool.description
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}

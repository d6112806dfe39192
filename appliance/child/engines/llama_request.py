"""OpenAI chat and completion requests, as llama-cpp-python takes them.

What llama-cpp-python can do with a field is passed on to it: sampling parameters
(OpenAI's, and llama.cpp's own ``top_k``, ``min_p``, ``typical_p``, ``repeat_penalty``,
``mirostat_mode``, ``mirostat_tau``, ``mirostat_eta``), ``logit_bias`` (token ids as
ints), ``response_format`` (``json_object``, and ``json_schema`` as llama's
``{"type": "json_object", "schema": ...}``). ``tools`` go to the chat template;
``tool_choice`` (and the legacy ``functions``/``function_call``) decides how the reply is
read: a forced call (``required`` or a named function) is made by a grammar, ``auto``
lets the model write calls or text (:mod:`.llama_tools`). What it cannot do is refused
with a 400 that names the field: nothing that would change the output is dropped
silently. Fields that do not change the answer (``user``, ``metadata``,
``service_tier``, ``prediction``, ... : :data:`~appliance.wire.openai.fields.IGNORABLE`)
are accepted; ``parallel_tool_calls: false`` keeps the first call made. Any other
field is refused before it gets here (:data:`appliance.wire.openai.fields.LOCAL`).

Messages are normalised before the chat template sees them, keeping their meaning:
content given as a list of parts becomes its text; an assistant's ``tool_calls``, a
``tool`` message and the ``tools`` offered stay visible to the model, rendered as text
where the model's template ignores them (:class:`Template` says what it shows); other
parts (images, audio, files) are a 400, since these models take text only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.child.engines.llama_grammar import check_schema
from appliance.child.engines.llama_messages import invalid_value, messages, with_tool_list
from appliance.child.engines.llama_template import Template
from appliance.child.engines.llama_tools import call_schema
from appliance.errors import InvalidRequestError
from appliance.wire.openai.fields import LLAMA_SAMPLERS


@dataclass
class ChatCall:
    """A chat request as keyword arguments of ``Llama.create_chat_completion``.

    Attributes:
        kwargs: Everything but ``stream``.
        legacy: The caller used ``functions``: answer with ``function_call``.
        n: Choices to generate.
        max_tokens: The caller's completion limit, if any.
        forced: A call must be made: the schema of the calls allowed, for a grammar
            (see :mod:`appliance.child.engines.llama_tools`).
        tools: The model may call these functions, or answer in text (``auto``).
        parallel: More than one call may be made (``parallel_tool_calls`` is not false).
    """

    kwargs: dict[str, Any]
    legacy: bool = False
    n: int = 1
    max_tokens: int | None = None
    forced: dict[str, Any] | None = None
    tools: list[str] = field(default_factory=list)
    parallel: bool = True


_SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}

# Fields this engine cannot honour, with the values that mean "off". Any other value is
# refused, with the reason.
_LOGPROBS = (
    "Log probabilities are not available from this local model: llama.cpp would have to "
    "keep the logits of every position (context x vocabulary floats)."
)
_CHAT_REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "logprobs": ((None, False), _LOGPROBS),
    "top_logprobs": ((None, 0), _LOGPROBS),
    "audio": ((None,), "This model answers in text only."),
    "modalities": ((None, ["text"]), "This model answers in text only."),
    "reasoning_effort": ((None,), "This model is not a reasoning model."),
    "verbosity": ((None,), "This model does not support verbosity settings."),
    "web_search_options": ((None,), "This model cannot search the web."),
    "store": ((None, False), "This model keeps no completions to retrieve later."),
}
_COMPLETION_REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "logprobs": ((None,), _LOGPROBS),
    "suffix": ((None,), "This model does not do fill-in-the-middle."),
    "response_format": ((None, {"type": "text"}), "Use /chat/completions for this."),
    "tools": ((None, []), "Use /chat/completions for this."),
    "tool_choice": ((None, "none", "auto"), "Use /chat/completions for this."),
    "functions": ((None, []), "Use /chat/completions for this."),
    "function_call": ((None, "none", "auto"), "Use /chat/completions for this."),
}


def chat_call(body: dict[str, Any], template: Template, n_vocab: int) -> ChatCall:
    """Translate a validated chat request, or raise a 400 naming what cannot be done."""
    _refuse(body, _CHAT_REFUSED)
    kwargs = sampling(body, n_vocab)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    kwargs["max_tokens"] = max_tokens  # None: up to the end of the context
    tools, choice, legacy = _tools(body)
    msgs = messages(body["messages"], template)
    if tools and not template.tools:
        msgs = with_tool_list(msgs, tools, choice != "none")
    if tools:
        kwargs["tools"] = tools  # for a template that shows them; never llama's tool_choice
    call = ChatCall(kwargs=kwargs, legacy=legacy, n=body.get("n") or 1, max_tokens=max_tokens)
    call.parallel = body.get("parallel_tool_calls") is not False
    response_format = _response_format(body.get("response_format"))
    if isinstance(choice, list):
        call.forced = call_schema(tools, choice)  # a call has no content to format
        check_schema(call.forced, "tools")
    else:
        call.tools = [t["function"]["name"] for t in tools] if choice == "auto" else []
        if response_format is not None:
            kwargs["response_format"] = response_format
    kwargs["messages"] = msgs
    return call


def completion_arguments(body: dict[str, Any], n_vocab: int) -> dict[str, Any]:
    """``Llama.create_completion`` arguments of a validated completion request (no prompt)."""
    _refuse(body, _COMPLETION_REFUSED)
    best_of, n = body.get("best_of"), body.get("n") or 1
    if best_of is not None and best_of != n and best_of != 1:
        raise InvalidRequestError(
            "best_of other than n is not supported: ranking completions needs log probabilities.",
            param="best_of",
            code="invalid_value",
        )
    kwargs = sampling(body, n_vocab)
    kwargs["max_tokens"] = body.get("max_tokens") or 16  # OpenAI's default for completions
    return kwargs


def sampling(body: dict[str, Any], n_vocab: int) -> dict[str, Any]:
    """The sampling parameters both endpoints share, with ``logit_bias`` checked."""
    out = {name: body[key] for key, name in _SAMPLING.items() if body.get(key) is not None}
    for key, (kind, low, high, why) in LLAMA_SAMPLERS.items():
        value = body.get(key)  # not OpenAI's: llama.cpp's (top_k is also vLLM's, Anthropic's)
        if value is None:
            continue
        number: Any = value
        if isinstance(number, bool) or not isinstance(value, kind) or not low <= number <= high:
            raise invalid_value(key, why)
        out[key] = value
    bias = body.get("logit_bias")
    if bias:
        out["logit_bias"] = _logit_bias(bias, n_vocab)
    return out


def context_error(n_ctx: int, prompt: int, completion: int | None, where: str) -> None:
    """Raise OpenAI's 400 ``context_length_exceeded`` if the request does not fit.

    Args:
        n_ctx: The context size.
        prompt: Tokens of the formatted prompt.
        completion: The completion tokens the caller asked for; ``None``: whatever fits.
        where: ``messages`` or ``prompt``.
    """
    if prompt >= n_ctx:
        message = (
            f"This model's maximum context length is {n_ctx} tokens. However, your {where} "
            f"resulted in {prompt} tokens, which leaves no room for a completion. Please "
            f"reduce the length of the {where}."
        )
    elif completion is not None and prompt + completion > n_ctx:
        message = (
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{prompt + completion} tokens ({prompt} in the {where}, {completion} in the "
            f"completion). Please reduce the length of the {where} or completion."
        )
    else:
        return
    raise InvalidRequestError(message, param=where, code="context_length_exceeded")


# ---- tools, response formats, logit bias -----------------------------------------------


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str | list[str], bool]:
    """The tools offered, the choice (``none``, ``auto`` or the functions one of which
    must be called) and whether the caller used the legacy ``functions``."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    legacy = body.get("functions") is not None or body.get("function_call") is not None
    if legacy:
        if tools is not None or choice is not None:
            raise invalid_value("functions", "cannot be combined with tools; use tools")
        functions = body.get("functions") or []
        if not isinstance(functions, list):
            raise invalid_value("functions", "must be a list of functions")
        tools = [{"type": "function", "function": f} for f in functions]
        choice = body.get("function_call")
        if isinstance(choice, dict):
            choice = {"type": "function", "function": {"name": choice.get("name")}}
        param = "functions"
    else:
        tools = tools or []
        param = "tools"
    if not isinstance(tools, list):
        raise invalid_value(param, "must be a list of tools")
    names = []
    for k, tool in enumerate(tools):
        where = f"{param}[{k}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise invalid_value(f"{where}.type", "only function tools are supported by this model")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid_value(f"{where}.function.name", "a function tool needs a name")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise invalid_value(f"{where}.function.parameters", "must be a JSON schema object")
        names.append(function["name"])
    choice_param = "function_call" if legacy else "tool_choice"
    if choice is None:
        return tools, ("auto" if tools else "none"), legacy
    if choice in ("none", "auto"):
        return tools, choice, legacy
    if choice == "required":
        if not names:
            raise invalid_value(choice_param, f"'required' needs {param} to choose from")
        return tools, names, legacy
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or name not in names:
            raise invalid_value(
                choice_param, f"names a function that is not among the {param}: {name!r}"
            )
        return tools, [name], legacy
    raise invalid_value(choice_param, "must be 'none', 'auto', 'required' or name a function")


def _response_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise invalid_value("response_format.json_schema", "must be an object with a schema")
        schema = spec.get("schema")
        if schema is None:
            return {"type": "json_object"}
        if not isinstance(schema, dict):
            raise invalid_value(
                "response_format.json_schema.schema", "must be a JSON schema object"
            )
        check_schema(schema, "response_format.json_schema.schema")
        return {"type": "json_object", "schema": schema}
    raise invalid_value("response_format.type", "must be 'text', 'json_object' or 'json_schema'")


def _logit_bias(bias: Any, n_vocab: int) -> dict[int, float]:
    if not isinstance(bias, dict):
        raise invalid_value("logit_bias", "must map token ids to biases")
    out: dict[int, float] = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            token = -1
        if not 0 <= token < n_vocab:
            raise invalid_value(
                "logit_bias", f"{key!r} is not a token id of this model (0-{n_vocab - 1})"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or abs(value) > 100:
            raise invalid_value(
                "logit_bias", f"the bias of token {key} must be a number from -100 to 100"
            )
        out[token] = float(value)
    return out


def _refuse(body: dict[str, Any], refused: dict[str, tuple[tuple[Any, ...], str]]) -> None:
    for name, (off, reason) in refused.items():
        value = body.get(name)
        if not any(value == o and type(value) is type(o) for o in off):
            raise InvalidRequestError(
                f"Unsupported parameter: '{name}' is not supported with this model. {reason}",
                param=name,
                code="unsupported_parameter",
            )

"""Chat and completion requests as llama-cpp-python takes them (no model needed)."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.child.engines.llama_messages import messages
from appliance.child.engines.llama_request import chat_call, completion_arguments, context_error
from appliance.child.engines.llama_template import Template
from appliance.errors import InvalidRequestError

PLAIN = Template()  # a template that shows neither tool calls, tool results nor tools
NATIVE = Template(tool_calls=True, tool_role=True, tools=True)
VOCAB = 1000
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def chat(**fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], **fields}


def refusal(call: Any, *args: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        call(*args)
    assert caught.value.status == 400
    return caught.value


def test_text_parts_are_joined() -> None:
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    assert messages([{"role": "user", "content": parts}], PLAIN) == [
        {"role": "user", "content": "one\ntwo"}
    ]


@pytest.mark.parametrize("kind", ["image_url", "input_audio", "file", "video"])
def test_a_non_text_part_is_refused_by_its_place(kind: str) -> None:
    parts = [{"type": "text", "text": "look"}, {"type": kind, kind: {}}]
    error = refusal(
        messages, [{"role": "user", "content": "a"}, {"role": "user", "content": parts}], PLAIN
    )
    assert error.param == "messages[1].content[1]"


def test_tool_calls_are_rendered_as_text_where_the_template_ignores_them() -> None:
    out = messages(
        [
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
        PLAIN,
    )
    assert out == [
        {
            "role": "assistant",
            "content": '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>',
        },
        {"role": "user", "content": "<tool_response>\n42\n</tool_response>"},
    ]


def test_tool_calls_go_to_a_template_that_renders_them_with_parsed_arguments() -> None:
    out = messages(
        [
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
        NATIVE,
    )
    assert out[0]["tool_calls"][0]["function"] == {"name": "f", "arguments": {"x": 1}}
    assert out[0]["content"] == ""
    assert out[1] == {"role": "tool", "content": "42", "tool_call_id": "call_1", "name": "f"}


def test_a_developer_message_is_a_system_message() -> None:
    assert messages([{"role": "developer", "content": "Be brief."}], PLAIN) == [
        {"role": "system", "content": "Be brief."}
    ]


def test_a_user_message_without_content_is_refused() -> None:
    assert refusal(messages, [{"role": "user", "content": None}], PLAIN).param == (
        "messages[0].content"
    )


def test_tools_a_template_ignores_are_listed_in_the_system_message() -> None:
    call = chat_call(chat(tools=[TOOL]), PLAIN, VOCAB)
    system = call.kwargs["messages"][0]
    assert system["role"] == "system" and '"name": "f"' in system["content"]
    assert call.kwargs["tools"] == [TOOL]


G_TOOL = {"type": "function", "function": {"name": "g"}}


@pytest.mark.parametrize(
    ("tools", "choice", "forced", "readable"),
    [
        ([TOOL, G_TOOL], {"type": "function", "function": {"name": "g"}}, ["g"], []),
        ([TOOL], "required", ["f"], []),
        ([TOOL, G_TOOL], "required", ["f", "g"], []),  # the model picks one
        ([TOOL, G_TOOL], "auto", None, ["f", "g"]),
        ([TOOL, G_TOOL], None, None, ["f", "g"]),  # with tools, auto is the default
        ([TOOL], "none", None, []),
    ],
)
def test_tool_choice_decides_how_the_reply_is_read(
    tools: list[Any], choice: Any, forced: list[str] | None, readable: list[str]
) -> None:
    call = chat_call(chat(tools=tools, tool_choice=choice), PLAIN, VOCAB)
    assert "tool_choice" not in call.kwargs  # llama's own forcing is never used
    assert call.kwargs["tools"] == tools  # for a template that shows them
    if forced is None:
        assert call.forced is None
    else:
        names = [o["properties"]["name"]["const"] for o in call.forced.get("anyOf", [call.forced])]
        assert names == forced
    assert call.tools == readable


def test_tools_that_may_be_called_are_listed_with_how_to_call_them() -> None:
    system = chat_call(chat(tools=[TOOL]), PLAIN, VOCAB).kwargs["messages"][0]["content"]
    assert "<tool_call>" in system
    system = chat_call(chat(tools=[TOOL], tool_choice="none"), PLAIN, VOCAB).kwargs["messages"]
    assert "<tool_call>" not in system[0]["content"] and '"name": "f"' in system[0]["content"]


def test_a_forced_call_takes_no_response_format() -> None:
    fmt = {"type": "json_object"}
    call = chat_call(chat(tools=[TOOL], tool_choice="required", response_format=fmt), PLAIN, 9)
    assert call.forced is not None and "response_format" not in call.kwargs
    assert chat_call(chat(tools=[TOOL], response_format=fmt), PLAIN, 9).kwargs["response_format"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
            "tool_choice",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "g"}}]}, "tools[0].type"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"logit_bias": {"1000": 1}}, "logit_bias"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"1": 101}}, "logit_bias"),
    ],
)
def test_what_the_model_cannot_do_is_a_400_naming_the_field(
    fields: dict[str, Any], param: str
) -> None:
    assert refusal(chat_call, chat(**fields), PLAIN, VOCAB).param == param


def test_metadata_fields_are_accepted() -> None:
    call = chat_call(
        chat(user="u", metadata={"a": "b"}, store=False, service_tier="auto", logprobs=False),
        PLAIN,
        VOCAB,
    )
    assert call.kwargs["messages"] == [{"role": "user", "content": "hi"}]


def test_a_json_schema_is_llamas_json_object_with_that_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    call = chat_call(chat(response_format=fmt), PLAIN, VOCAB)
    assert call.kwargs["response_format"] == {"type": "json_object", "schema": schema}


def test_logit_bias_keys_become_token_ids() -> None:
    call = chat_call(chat(logit_bias={"7": -100, "9": 5}), PLAIN, VOCAB)
    assert call.kwargs["logit_bias"] == {7: -100.0, 9: 5.0}


def test_legacy_functions_are_tools_and_answer_as_function_call() -> None:
    call = chat_call(chat(functions=[TOOL["function"]], function_call={"name": "f"}), PLAIN, VOCAB)
    assert call.legacy
    assert call.forced is not None and call.forced["properties"]["name"] == {"const": "f"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"logprobs": 0}, "logprobs"), ({"suffix": "x"}, "suffix"), ({"best_of": 3}, "best_of")],
)
def test_completion_fields_the_model_cannot_honour_are_refused(
    fields: dict[str, Any], param: str
) -> None:
    body = {"prompt": "x", **fields}
    assert refusal(completion_arguments, body, VOCAB).param == param


@pytest.mark.parametrize(
    ("prompt", "completion", "fits"),
    [
        (100, None, True),
        (2047, None, True),
        (2048, None, False),
        (48, 2000, True),
        (49, 2000, False),
    ],
)
def test_the_context_bounds_prompt_and_completion(
    prompt: int, completion: int | None, fits: bool
) -> None:
    if fits:
        context_error(2048, prompt, completion, "messages")
    else:
        error = refusal(context_error, 2048, prompt, completion, "messages")
        assert (error.code, error.param) == ("context_length_exceeded", "messages")


def test_top_k_reaches_the_sampler_and_a_bad_one_is_refused() -> None:
    from appliance.child.engines.llama_request import sampling
    from appliance.errors import InvalidRequestError

    assert sampling({"top_k": 5}, 100)["top_k"] == 5
    for bad in (-1, 2.5, True, "5"):
        with pytest.raises(InvalidRequestError) as caught:
            sampling({"top_k": bad}, 100)
        assert caught.value.param == "top_k"


def test_llamas_own_samplers_reach_create_chat_completion_and_create_completion() -> None:
    """llama-cpp-python's names, as its create_chat_completion and create_completion take
    them (llama.cpp would otherwise sample with its defaults: min_p 0.05, no penalty)."""
    import inspect

    from llama_cpp import Llama

    own = {
        "top_k": 5,
        "min_p": 0.2,
        "typical_p": 0.9,
        "repeat_penalty": 1.3,
        "mirostat_mode": 2,
        "mirostat_tau": 4.0,
        "mirostat_eta": 0.2,
    }
    chat_kwargs = chat_call(chat(**own), PLAIN, VOCAB).kwargs
    completion_kwargs = completion_arguments({"prompt": "x", **own}, VOCAB)
    for kwargs, method in (
        (chat_kwargs, Llama.create_chat_completion),
        (completion_kwargs, Llama.create_completion),
    ):
        assert {k: kwargs[k] for k in own} == own
        assert set(own) <= set(inspect.signature(method).parameters)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("min_p", 1.01),
        ("min_p", -0.1),
        ("min_p", "0.5"),
        ("typical_p", True),
        ("repeat_penalty", 0),
        ("repeat_penalty", 101),
        ("mirostat_mode", 3),
        ("mirostat_mode", 1.0),
        ("mirostat_tau", -1),
        ("mirostat_eta", 2),
    ],
)
def test_a_llama_sampler_out_of_its_range_is_refused(field: str, bad: Any) -> None:
    error = refusal(chat_call, chat(**{field: bad}), PLAIN, VOCAB)
    assert (error.param, error.code) == (field, "invalid_value")


def test_store_true_is_refused_no_completion_is_kept() -> None:
    assert refusal(chat_call, chat(store=True), PLAIN, VOCAB).param == "store"

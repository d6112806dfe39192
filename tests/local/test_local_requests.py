"""What callers send the local models, through the real appliance and the openai client.

The agent's second turn, content as parts, prompts beyond the context, parts and fields
the model cannot take (a 400 that names them, never a 5xx), tool calls and JSON output,
and embeddings ``dimensions`` bounded by the model's own size.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.local.models import refused
from tests.support.poll import until
from tests.support.server import RunningServer

DEFAULT_CONFIG = Path(__file__).parents[2] / "configs" / "cluster.yaml"
N_CTX = 2048  # smollm2's context in the default config
PARIS: list[Any] = [
    {"role": "user", "content": "What is the capital of France? Answer in one sentence."}
]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(DEFAULT_CONFIG)


@pytest.fixture(scope="module")
def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


# ---- messages -------------------------------------------------------------------------


def test_agent_second_turn_answers_with_text(api: openai.OpenAI) -> None:
    reply = api.chat.completions.create(
        model="smollm2",
        temperature=0,
        max_tokens=40,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": '{"celsius": 21, "sky": "sunny"}',
            },
        ],
    )
    text = reply.choices[0].message.content or ""
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert any(word in text.lower() for word in ("21", "sunny", "paris"))  # it read the result


def test_content_as_a_list_of_text_parts_answers(api: openai.OpenAI) -> None:
    parts: Any = [{"type": "text", "text": PARIS[0]["content"]}]
    reply = api.chat.completions.create(
        model="smollm2",
        temperature=0,
        max_tokens=24,
        messages=[{"role": "user", "content": parts}],
    )
    assert "Paris" in (reply.choices[0].message.content or "")


def test_an_image_part_is_a_400_naming_the_part(api: openai.OpenAI) -> None:
    parts: Any = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    error = refused(
        lambda: api.chat.completions.create(
            model="smollm2",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": parts},
            ],
        )
    )
    assert error["param"] == "messages[1].content[1]"
    assert "text only" in error["message"]


# ---- the context ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_beyond_the_context_is_context_length_exceeded(
    api: openai.OpenAI, stream: bool
) -> None:
    long: Any = [{"role": "user", "content": "word " * (N_CTX + 100)}]
    error = refused(
        lambda: api.chat.completions.create(model="smollm2", messages=long, stream=stream)
    )
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "messages"
    assert f"maximum context length is {N_CTX} tokens" in error["message"]


def test_a_completions_prompt_beyond_the_context_names_the_prompt(api: openai.OpenAI) -> None:
    error = refused(lambda: api.completions.create(model="smollm2", prompt="word " * (N_CTX + 100)))
    assert (error["code"], error["param"]) == ("context_length_exceeded", "prompt")


def test_max_tokens_beyond_the_context_is_a_400_with_the_figures(api: openai.OpenAI) -> None:
    error = refused(
        lambda: api.chat.completions.create(model="smollm2", messages=PARIS, max_tokens=N_CTX)
    )
    assert error["code"] == "context_length_exceeded"
    found = re.search(
        r"you requested (\d+) tokens \((\d+) in the messages, (\d+) in the completion\)",
        error["message"],
    )
    assert found is not None
    total, prompt, completion = map(int, found.groups())
    assert (completion, total) == (N_CTX, prompt + N_CTX) and 0 < prompt < 100


# ---- fields the model cannot honour, and those it can --------------------------------


def test_logprobs_are_a_400_naming_the_field(api: openai.OpenAI) -> None:
    error = refused(
        lambda: api.chat.completions.create(model="smollm2", messages=PARIS, logprobs=True)
    )
    assert error["param"] == "logprobs"


def test_a_forced_tool_call_comes_back_as_tool_calls(api: openai.OpenAI) -> None:
    reply = api.chat.completions.create(
        model="smollm2",
        temperature=0,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
    assert "city" in json.loads(calls[0].function.arguments)  # type: ignore[union-attr]


def test_a_streamed_tool_call_names_its_function_once(api: openai.OpenAI) -> None:
    stream = api.chat.completions.create(
        model="smollm2",
        temperature=0,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        stream=True,
    )
    deltas = [d for c in stream for d in c.choices[0].delta.tool_calls or [] if c.choices]
    assert [d.function.name for d in deltas if d.function and d.function.name] == ["get_weather"]
    assert len({d.id for d in deltas if d.id}) == 1
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert "city" in json.loads(arguments)


def test_a_json_schema_response_format_gives_that_json(api: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    reply = api.chat.completions.create(
        model="smollm2",
        temperature=0,
        max_tokens=40,
        messages=[{"role": "user", "content": "Give a person's name and age as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema},
        },
    )
    person = json.loads(reply.choices[0].message.content or "")
    assert isinstance(person["name"], str) and isinstance(person["age"], int)


# ---- embeddings dimensions ------------------------------------------------------------


def test_dimensions_above_the_models_size_are_a_400(api: openai.OpenAI) -> None:
    error = refused(lambda: api.embeddings.create(model="minilm", input="hi", dimensions=385))
    assert error["param"] == "dimensions"
    assert "384" in error["message"]


def test_a_huge_float_dimensions_is_a_400_not_a_500(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/embeddings",
        json={"model": "minilm", "input": "hi", "dimensions": 16826166.0},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "dimensions"


def test_fewer_dimensions_are_cut_and_normalised(api: openai.OpenAI) -> None:
    reply = api.embeddings.create(model="minilm", input=["red apple", "blue sky"], dimensions=128)
    for item in reply.data:
        assert len(item.embedding) == 128
        assert math.sqrt(sum(v * v for v in item.embedding)) == pytest.approx(1.0, abs=1e-5)


# ---- the worker server on its own -----------------------------------------------------


@pytest.fixture(scope="module")
def minilm_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``appliance worker`` serving minilm on a port it picked; its base URL."""
    port_file = tmp_path_factory.mktemp("worker") / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "worker",
            "-c",
            str(DEFAULT_CONFIG),
            "--model",
            "minilm",
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        env={**os.environ},
    )
    try:
        until(
            lambda: port_file.exists() or process.poll() is not None,
            timeout=60,
            what="the worker writing its port file",
        )
        assert process.poll() is None, "the worker exited before it wrote its port"
        yield f"http://127.0.0.1:{int(port_file.read_text())}/v1"
    finally:
        process.terminate()
        process.wait(15)


@pytest.mark.parametrize("dimensions", [385, 16826166.0])
def test_the_worker_refuses_dimensions_above_the_models_size(
    minilm_worker: str, dimensions: float
) -> None:
    response = httpx.post(
        f"{minilm_worker}/embeddings",
        json={"model": "minilm", "input": ["hi"], "dimensions": dimensions},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "dimensions"


def test_the_worker_cuts_base64_vectors_to_the_dimensions_asked(minilm_worker: str) -> None:
    client = openai.OpenAI(base_url=minilm_worker, api_key="none", max_retries=0)
    reply = client.embeddings.create(model="minilm", input="red apple", dimensions=16)
    vector = reply.data[0].embedding
    assert len(vector) == 16
    assert math.sqrt(sum(v * v for v in vector)) == pytest.approx(1.0, abs=1e-5)


def test_the_worker_refuses_a_field_it_does_not_take(minilm_worker: str) -> None:
    """Reached directly, as another appliance's upstream, the child checks what it takes."""
    response = httpx.post(
        f"{minilm_worker}/embeddings",
        json={"model": "minilm", "input": ["hi"], "foo_bar": 1},
        timeout=30,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("foo_bar", "unsupported_parameter")

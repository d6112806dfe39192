"""Traces of local models (SmolLM2 on llama.cpp, MiniLM on ONNX): a cold start shows the
model's load, and with ``capture_content`` the prompt and reply ride on the model span."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from tests.conftest import cluster_config
from tests.local.models import ASK, minilm, smollm2
from tests.support.otlp_receiver import OTLPReceiver, caller, trace
from tests.support.server import RunningServer


@pytest.fixture(scope="module")
def api(start_server: Callable[..., RunningServer], receiver: OTLPReceiver) -> openai.OpenAI:
    server = start_server(
        cluster_config(
            smollm2("lazy", load="on_demand", queue_timeout_s=120),
            minilm("emb"),
            telemetry={"otlp_endpoint": receiver.endpoint, "capture_content": True},
        )
    )
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


def test_a_cold_start_shows_the_load_and_the_content_when_opted_in(
    api: openai.OpenAI, receiver: OTLPReceiver
) -> None:
    trace_id, headers = caller()
    reply = api.chat.completions.create(
        model="lazy", messages=ASK, max_tokens=12, temperature=0, extra_headers=headers
    )
    spans = trace(receiver, trace_id)
    (chat,) = spans["chat"]
    (load,) = spans["load"]  # the request waited for the model to load
    assert load.name == "load lazy" and load.parent_id == chat.span_id
    assert load.attributes["appliance.wait"] == "load"
    assert load.end_ns - load.start_ns > 100_000_000  # a model's load takes a while
    assert chat.attributes["gen_ai.provider.name"] == "llama_cpp"
    assert reply.usage is not None
    assert chat.attributes["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert chat.attributes["gen_ai.response.finish_reasons"] == [reply.choices[0].finish_reason]
    assert "What color is the sky?" in chat.attributes["gen_ai.input.messages"]
    assert str(reply.choices[0].message.content) in chat.attributes["gen_ai.output.messages"]

    # Loaded now: the next request waits for nothing.
    trace_id, headers = caller()
    api.chat.completions.create(model="lazy", messages=ASK, max_tokens=4, extra_headers=headers)
    assert set(trace(receiver, trace_id)) == {"server", "chat"}


def test_local_embeddings_have_an_embeddings_span(
    api: openai.OpenAI, receiver: OTLPReceiver
) -> None:
    trace_id, headers = caller()
    api.embeddings.create(model="emb", input="the sky is blue", extra_headers=headers)
    (call,) = trace(receiver, trace_id)["embeddings"]
    assert call.name == "embeddings emb"
    assert call.attributes["gen_ai.provider.name"] == "onnx"
    assert call.attributes["gen_ai.usage.input_tokens"] > 0

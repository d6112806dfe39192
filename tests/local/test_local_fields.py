"""Request fields a model's backend does not take are a 400 naming them, never dropped.

Through the real appliance and the openai client: a field outside what a local model
(llama.cpp, ONNX) or the scripted backend takes is refused before dispatch, with OpenAI's
envelope (``param`` names it); an upstream gets it as sent; a route passes a target that
refuses to the next one. llama.cpp's own samplers (``min_p``, ``repeat_penalty``) reach it:
they change what it writes, where nothing else does (a fixed seed, or greedy decoding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import cluster_config
from tests.local.models import ASK, minilm, refused, smollm2
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import RunningServer

ADMIN = "admin-secret-for-fields"
FOO = {"foo_bar": 1}


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer], upstream: FakeUpstream) -> RunningServer:
    up = {"backend": "openai", "health": {"interval_s": 0}, "retries": 0}
    config = cluster_config(
        smollm2("smollm2"),
        minilm("minilm"),
        minilm("minilm-rerank", type="rerank"),
        {"name": "scripted", "backend": "scripted", "options": {"reply": ["Hi", "."]}},
        {"name": "scripted-embed", "type": "embedding", "backend": "scripted"},
        {"name": "up", **up, "options": {"base_url": upstream.base_url, "model": "ok"}},
        routes=[
            {"alias": "scripted-then-up", "targets": ["scripted", "up"]},
            {"alias": "scripted-only", "targets": ["scripted"]},
        ],
        server={"admin_key": ADMIN},
    )
    return start_server(config)


@pytest.fixture(scope="module")
def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


def chat(api: openai.OpenAI, model: str, **fields: Any) -> Any:
    return api.chat.completions.create(
        model=model, messages=ASK, max_tokens=8, extra_body=fields or None
    )


# ---- refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "backend"),
    [("smollm2", "llama_cpp"), ("scripted", "scripted"), ("scripted-only", "scripted")],
)
def test_an_unknown_chat_field_is_a_400_naming_it(
    api: openai.OpenAI, model: str, backend: str
) -> None:
    error = refused(lambda: chat(api, model, **FOO))
    assert error["param"] == "foo_bar"
    assert error["code"] == "unsupported_parameter"
    assert error["type"] == "invalid_request_error"
    assert f"its backend ({backend}) does not support it" in error["message"]


def test_an_unknown_streamed_chat_field_is_a_400_before_the_stream(api: openai.OpenAI) -> None:
    error = refused(
        lambda: api.chat.completions.create(
            model="smollm2", messages=ASK, max_tokens=8, stream=True, extra_body=FOO
        )
    )
    assert error["param"] == "foo_bar"


@pytest.mark.parametrize("model", ["smollm2", "scripted"])
def test_an_unknown_completions_field_is_a_400_naming_it(api: openai.OpenAI, model: str) -> None:
    error = refused(
        lambda: api.completions.create(model=model, prompt="Hi", max_tokens=4, extra_body=FOO)
    )
    assert error["param"] == "foo_bar"


@pytest.mark.parametrize("model", ["minilm", "scripted-embed"])
@pytest.mark.parametrize("fields", [FOO, {"stream": True}], ids=["foo_bar", "stream"])
def test_an_embeddings_field_the_model_does_not_take_is_a_400(
    api: openai.OpenAI, model: str, fields: dict[str, Any]
) -> None:
    error = refused(lambda: api.embeddings.create(model=model, input="hi", extra_body=fields))
    assert error["param"] == next(iter(fields))


def test_an_unknown_rerank_field_is_a_400_naming_it(server: RunningServer) -> None:
    body = {"model": "minilm-rerank", "query": "sky", "documents": ["blue"], **FOO}
    response = httpx.post(f"{server.base_url}/v1/rerank", json=body, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "foo_bar"


@pytest.mark.parametrize(("field", "value"), [("logprobs", True), ("top_logprobs", 2)])
def test_log_probabilities_are_refused_by_a_scripted_model(
    api: openai.OpenAI, field: str, value: Any
) -> None:
    assert refused(lambda: chat(api, "scripted", **{field: value}))["param"] == field


def test_store_true_is_refused_by_a_local_model(api: openai.OpenAI) -> None:
    assert refused(lambda: chat(api, "smollm2", store=True))["param"] == "store"


def test_an_unknown_responses_field_on_a_scripted_model_is_a_400(api: openai.OpenAI) -> None:
    error = refused(lambda: api.responses.create(model="scripted", input="Hi", extra_body=FOO))
    assert error["param"] == "foo_bar"


@pytest.mark.parametrize("action", ["load", "unload"])
def test_an_admin_action_refuses_a_field_besides_model(server: RunningServer, action: str) -> None:
    response = httpx.post(
        f"{server.base_url}/admin/{action}",
        json={"model": "smollm2", "wait": True},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=60,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "wait"


# ---- taken -----------------------------------------------------------------------------


def test_fields_harmless_to_ignore_are_taken(api: openai.OpenAI) -> None:
    ignorable = {
        "user": "u",
        "metadata": {"team": "a"},
        "store": False,
        "service_tier": "auto",
        "prompt_cache_key": "k",
        "safety_identifier": "s",
    }
    for model in ("smollm2", "scripted"):
        assert chat(api, model, **ignorable).choices[0].message.content


def test_the_translated_apis_still_reach_local_and_scripted_models(
    server: RunningServer, api: openai.OpenAI
) -> None:
    """Responses and Messages build chat requests whose every field the models take."""
    for model in ("smollm2", "scripted"):
        reply = api.responses.create(
            model=model, input="Hi", max_output_tokens=8, temperature=0.5, user="u"
        )
        assert reply.output_text
        messages = httpx.post(
            f"{server.base_url}/v1/messages",
            json={
                "model": model,
                "max_tokens": 8,
                "top_k": 5,
                "temperature": 0.5,
                "stop_sequences": ["zzz"],
                "metadata": {"user_id": "u"},
                "messages": [{"role": "user", "content": "Hi"}],
            },
            headers={"x-api-key": "none", "anthropic-version": "2023-06-01"},
            timeout=120,
        )
        assert messages.status_code == 200, messages.text


def test_an_upstream_gets_an_unknown_field_as_sent(
    api: openai.OpenAI, upstream: FakeUpstream
) -> None:
    chat(api, "up", foo_bar={"nested": [1, 2]})
    assert upstream.seen(model="ok")[-1].body["foo_bar"] == {"nested": [1, 2]}


def test_a_route_passes_a_target_that_refuses_to_the_next(
    api: openai.OpenAI, upstream: FakeUpstream
) -> None:
    before = len(upstream.seen(model="ok"))
    assert chat(api, "scripted-then-up", foo_bar=7).choices[0].message.content
    seen = upstream.seen(model="ok")
    assert len(seen) == before + 1
    assert seen[-1].body["foo_bar"] == 7


# ---- llama.cpp's samplers --------------------------------------------------------------


COUNT = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]


def sample(api: openai.OpenAI, messages: Any, temperature: float, **fields: Any) -> str:
    """A seeded sample: the same every time unless a sampler changes it."""
    reply = api.chat.completions.create(
        model="smollm2",
        messages=messages,
        max_tokens=30,
        temperature=temperature,
        seed=7,
        extra_body=fields or None,
    )
    return reply.choices[0].message.content or ""


@pytest.mark.parametrize(
    ("fields", "messages", "temperature"),
    [
        # Hot sampling, cut to the likeliest tokens.
        ({"min_p": 0.99}, ASK, 1.8),
        # Greedy counting repeats itself ("1. 1\n2. 2\n..."); penalised repeats it does not.
        ({"repeat_penalty": 1.9}, COUNT, 0.0),
    ],
    ids=["min_p", "repeat_penalty"],
)
def test_llama_samplers_reach_llama_cpp(
    api: openai.OpenAI, fields: dict[str, Any], messages: Any, temperature: float
) -> None:
    plain = sample(api, messages, temperature)
    assert sample(api, messages, temperature) == plain  # what changes below is the sampler's
    assert sample(api, messages, temperature, **fields) != plain


@pytest.mark.parametrize(
    ("field", "value"),
    [("min_p", 1.5), ("repeat_penalty", 0), ("mirostat_mode", 3), ("typical_p", True)],
)
def test_a_llama_sampler_out_of_range_is_a_400_naming_it(
    api: openai.OpenAI, field: str, value: Any
) -> None:
    error = refused(lambda: chat(api, "smollm2", **{field: value}))
    assert error["param"] == field
    assert error["code"] == "invalid_value"


def test_tail_free_sampling_is_refused(api: openai.OpenAI) -> None:
    """llama.cpp dropped it: llama-cpp-python takes ``tfs_z`` only to ignore it."""
    assert refused(lambda: chat(api, "smollm2", tfs_z=0.5))["param"] == "tfs_z"

"""An upstream's credentials never reach a client or a log line, through the real server.

Real servers quote what they were sent in their errors (``Incorrect API key provided:
sk-...``). The fake upstream here does (``echo-auth``: it quotes the ``Authorization``,
``api-key`` and ``x-api-key`` headers it got) in error statuses and inside streams; the
real openai and anthropic clients must get the upstream's words without the key, on
every route. The server's log must hold neither the key, nor a header's key, nor the
password of a base URL (``http://bob:password@host``, also in its Basic form).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from appliance.runtime.redaction import REDACTED
from tests.conftest import cluster_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import RunningServer, free_port

KEY = "sk-UPSTREAM-SECRET-0123456789abcdef"  # options.api_key
AZURE = "azure-HEADER-SECRET-9876543210"  # headers: {api-key: ...}, as Azure takes it
X_KEY = "xkey-HEADER-SECRET-5555"  # headers: {x-api-key: ...}
PASSWORD = "hunter2-Passw0rd"  # base_url: http://bob:PASSWORD@host/v1
BASIC = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()  # what the upstream is sent
SECRETS = (KEY, AZURE, X_KEY, PASSWORD, BASIC)
CHAT: Any = [{"role": "user", "content": "Hi"}]


def with_userinfo(url: str) -> str:
    return url.replace("http://", f"http://bob:{PASSWORD}@", 1)


@pytest.fixture(scope="module")
def native() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream(native_responses=True).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer], native: FakeUpstream) -> RunningServer:
    def model(name: str, served: str, base_url: str = native.base_url, **options: Any) -> Any:
        return {
            "name": name,
            "backend": "openai",
            "options": {"base_url": base_url, "model": served, **options},
            "health": {"interval_s": 0},
            "retries": 0,
        }

    headers = {"api-key": AZURE, "x-api-key": X_KEY}
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    return start_server(
        cluster_config(
            model("keyed-401", "fail-401+echo-auth", api_key=KEY),
            model("keyed-400", "fail-400+echo-auth", api_key=KEY),
            model("keyed-breaks", "error-mid-stream+echo-auth", api_key=KEY),
            model("header-400", "fail-400+echo-auth", headers=headers),
            model("header-breaks", "error-mid-stream+echo-auth+vllm", headers=headers),
            model("basic-400", "fail-400+echo-auth", with_userinfo(native.base_url)),
            model("native-400", "fail-400+echo-auth", api_key=KEY, responses="passthrough"),
            model(
                "native-breaks", "error-mid-stream+echo-auth", api_key=KEY, responses="passthrough"
            ),
            model("locked-dead", "ok", with_userinfo(dead)),
        )
    )


@pytest.fixture(scope="module")
def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="client", max_retries=0)


@pytest.fixture(scope="module")
def claude(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="client", max_retries=0)


def assert_scrubbed(seen: str, *words: str) -> None:
    """``seen`` (what a client got) holds none of the secrets, and still the upstream's
    ``words`` and the mark where the secret was."""
    for secret in SECRETS:
        assert secret not in seen
    for word in (*words, REDACTED):
        assert word in seen


def test_a_401_quoting_the_key_is_relayed_without_it(api: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        api.chat.completions.create(model="keyed-401", messages=CHAT)
    assert caught.value.status_code == 502
    message = caught.value.body["message"]  # type: ignore[index]
    assert_scrubbed(str(caught.value), "fake says 401", "Incorrect API key provided")
    assert message.startswith("The upstream rejected the request (401): fake says 401")


@pytest.mark.parametrize("model", ["keyed-400", "header-400", "basic-400"])
def test_a_400_on_chat_completions_is_relayed_without_the_credentials(
    api: openai.OpenAI, model: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model=model, messages=CHAT)
    assert caught.value.body["param"] == "messages"  # type: ignore[index]
    assert_scrubbed(str(caught.value), "fake says 400. Incorrect API key provided")


@pytest.mark.parametrize("model", ["keyed-400", "native-400"])  # translated, passed through
def test_a_400_on_responses_is_relayed_without_the_key(api: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        api.responses.create(model=model, input="Hi")
    assert_scrubbed(str(caught.value), "fake says 400. Incorrect API key provided")


def test_a_400_on_messages_is_relayed_without_the_key(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(
            model="keyed-400", max_tokens=16, messages=[{"role": "user", "content": "Hi"}]
        )
    assert_scrubbed(str(caught.value), "fake says 400. Incorrect API key provided")


@pytest.mark.parametrize("model", ["keyed-breaks", "header-breaks"])
def test_a_stream_error_event_is_relayed_without_the_credentials(
    api: openai.OpenAI, model: str
) -> None:
    stream = api.chat.completions.create(model=model, messages=CHAT, stream=True)
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    assert_scrubbed(str(caught.value), "Incorrect API key provided")


def test_a_responses_stream_error_is_relayed_without_the_key(api: openai.OpenAI) -> None:
    events = list(api.responses.create(model="keyed-breaks", input="Hi", stream=True))
    error, failed = events[-2:]
    assert error.type == "error" and failed.type == "response.failed"
    assert_scrubbed(error.message, "The model is overloaded. Incorrect API key")
    assert_scrubbed(failed.response.error.message, "The model is overloaded")  # type: ignore[union-attr]


def test_a_relayed_responses_failure_event_is_scrubbed(
    server: RunningServer, native: FakeUpstream
) -> None:
    # A passthrough stream relays the upstream's own error events as they came.
    raw = httpx.post(
        f"{server.base_url}/v1/responses",
        json={"model": "native-breaks", "input": "Hi", "stream": True},
        timeout=10,
    )
    assert '"type":"error"' in raw.text.replace(" ", "")
    assert_scrubbed(raw.text, "native failure. Incorrect API key provided")


def test_a_failed_response_relayed_as_it_came_is_scrubbed(
    server: RunningServer, native: FakeUpstream
) -> None:
    # A plain passthrough request whose Response failed: a 200 reply, relayed as it came,
    # whose error quotes the key.
    body = {"model": "native-breaks", "input": "Hi"}
    raw = httpx.post(f"{server.base_url}/v1/responses", json=body, timeout=10)
    assert raw.status_code == 200 and raw.json()["status"] == "failed", raw.text
    assert_scrubbed(raw.text, "native failure. Incorrect API key provided")


def test_a_messages_stream_error_is_relayed_without_the_key(claude: anthropic.Anthropic) -> None:
    messages: Any = [{"role": "user", "content": "Hi"}]
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        claude.messages.stream(model="keyed-breaks", max_tokens=16, messages=messages) as stream,
    ):
        for _ in stream:
            pass
    assert_scrubbed(str(caught.value), "The model is overloaded. Incorrect API key")


def test_no_upstream_credential_reaches_the_log(api: openai.OpenAI, server: RunningServer) -> None:
    with pytest.raises(openai.APIStatusError):  # nothing listens: upstream_unreachable
        api.chat.completions.create(model="locked-dead", messages=CHAT)
    stream = api.chat.completions.create(model="header-breaks", messages=CHAT, stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    (unreachable,) = server.events("upstream_unreachable", worker="locked-dead/0")
    assert str(unreachable["url"]).startswith("http://127.0.0.1:")  # no user, no password
    failed = [e for e in server.events("stream_failed") if "KV cache" in str(e["message"])]
    assert failed and REDACTED in str(failed[-1]["message"])
    log = server.log()
    for secret in SECRETS:
        assert secret not in log

"""README audit of the request edge, through the real server: each a 4xx as documented.

- On ``/v1/messages`` a key sent both as ``Authorization`` and ``x-api-key`` must be one
  valid key in both (a wrong ``x-api-key`` beside a valid bearer token is a 401, in
  Anthropic's envelope there).
- ``/admin/usage`` with a ``from`` or ``to`` that is no moment (``NaN``, ``inf``,
  ``1e400``) is a 400 naming the parameter.
- A too-long request target (414) or too-large headers (431) on ``/v1/messages`` are
  answered in Anthropic's envelope, as every other error there.
- ``/v1/responses`` checks ``service_tier`` and ``prompt_cache_key`` as OpenAI's schema
  says before passing them on.
- A scripted model forced to call a tool when only ``custom`` tools are offered (or a
  custom tool by name) answers a 400 naming the field, plain or streamed: it cannot make
  a custom tool call, and OpenAI would never answer such a request with text.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.http.access import MAX_HEADER_BYTES, MAX_TARGET_BYTES
from tests.conftest import cluster_config, scripted
from tests.support.server import RunningServer

ADMIN = "admin-secret"
KEYS = [{"name": "alice", "key": "k-alice"}, {"name": "bob", "key": "k-bob"}]
MESSAGE = {
    "model": "s",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Hi"}],
}
CHAT = {"model": "s", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., RunningServer], tmp_path_factory: pytest.TempPathFactory
) -> RunningServer:
    usage = Path(tmp_path_factory.mktemp("ledger")) / "usage.sqlite"
    config = cluster_config(
        scripted("s", ["hello"]),
        auth={"api_keys": KEYS},
        server={"admin_key": ADMIN},
        state={"usage_path": str(usage)},
    )
    return start_server(config)


def post(server: RunningServer, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, headers=headers, timeout=30)


def anthropic_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error", body
    assert set(body["error"]) >= {"type", "message"}, body
    error: dict[str, Any] = body["error"]
    return error


# --- one key, however it is sent -------------------------------------------------------


@pytest.mark.parametrize(
    ("bearer", "api_key"),
    [("k-alice", "wrong"), ("k-alice", "k-bob"), ("k-alice", ""), ("wrong", "k-alice")],
    ids=["wrong-x-api-key", "other-key", "empty-x-api-key", "wrong-bearer"],
)
def test_messages_refuses_two_headers_that_do_not_name_one_valid_key(
    server: RunningServer, bearer: str, api_key: str
) -> None:
    response = post(
        server,
        "/v1/messages",
        MESSAGE,
        **{"Authorization": f"Bearer {bearer}", "x-api-key": api_key},
    )
    assert response.status_code == 401, response.text
    assert anthropic_error(response)["type"] == "authentication_error"


def test_chat_refuses_a_wrong_x_api_key_beside_a_valid_bearer(server: RunningServer) -> None:
    response = post(
        server, "/v1/chat/completions", CHAT, Authorization="Bearer k-alice", **{"x-api-key": "x"}
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer k-alice", "x-api-key": "k-alice"},
        {"x-api-key": "k-alice"},
        {"Authorization": "Bearer k-alice"},
    ],
    ids=["both-agree", "x-api-key-only", "bearer-only"],
)
def test_messages_accepts_one_key_sent_either_way_or_both(
    server: RunningServer, headers: dict[str, str]
) -> None:
    response = post(server, "/v1/messages", MESSAGE, **headers)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"


# --- /admin/usage filters ---------------------------------------------------------------


@pytest.mark.parametrize("param", ["from", "to"])
@pytest.mark.parametrize("value", ["NaN", "nan", "inf", "-Infinity", "1e400"])
def test_usage_refuses_a_moment_that_is_not_finite(
    server: RunningServer, param: str, value: str
) -> None:
    response = httpx.get(
        f"{server.base_url}/admin/usage",
        params={param: value},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert f"'{param}'" in error["message"]


def test_usage_still_reads_unix_seconds(server: RunningServer) -> None:
    response = httpx.get(
        f"{server.base_url}/admin/usage",
        params={"from": "0", "to": "1e12"},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "usage"


# --- the edge's own answers on Anthropic's routes --------------------------------------


def test_messages_target_too_long_is_a_414_in_anthropics_envelope(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/messages",
        params={"pad": "a" * (MAX_TARGET_BYTES + 100)},
        json=MESSAGE,
        headers={"x-api-key": "k-alice"},
        timeout=30,
    )
    assert response.status_code == 414, response.text
    assert anthropic_error(response)["type"] == "invalid_request_error"


def test_messages_headers_too_large_is_a_431_in_anthropics_envelope(
    server: RunningServer,
) -> None:
    response = post(
        server, "/v1/messages", MESSAGE, **{"x-api-key": "k-alice", "x-pad": "a" * MAX_HEADER_BYTES}
    )
    assert response.status_code == 431, response.text
    assert anthropic_error(response)["type"] == "invalid_request_error"


def test_edge_answers_do_come_back_with_their_statuses(server: RunningServer) -> None:
    """The statuses of the edge's own answers, whatever their envelope."""
    long_target = httpx.post(
        f"{server.base_url}/v1/messages",
        params={"pad": "a" * (MAX_TARGET_BYTES + 100)},
        json=MESSAGE,
        timeout=30,
    )
    assert long_target.status_code == 414
    big_headers = post(server, "/v1/messages", MESSAGE, **{"x-pad": "a" * MAX_HEADER_BYTES})
    assert big_headers.status_code == 431


# --- /v1/responses fields passed on -----------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("service_tier", 5, "invalid_value"),
        ("service_tier", "turbo", "invalid_value"),
        ("service_tier", ["auto"], "invalid_value"),
        ("prompt_cache_key", 7, "invalid_type"),
        ("prompt_cache_key", ["k"], "invalid_type"),
        ("prompt_cache_key", {"k": 1}, "invalid_type"),
    ],
)
def test_responses_checks_service_tier_and_prompt_cache_key(
    server: RunningServer, field: str, value: object, code: str
) -> None:
    body = {"model": "s", "input": "Hi", field: value}
    response = post(server, "/v1/responses", body, Authorization="Bearer k-alice")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field
    assert error["code"] == code
    assert f"'{field}'" in error["message"]


@pytest.mark.parametrize(
    "fields",
    [
        {"service_tier": "flex", "prompt_cache_key": "prompt-cache-key-1234"},
        {"service_tier": "auto"},
        {"service_tier": None, "prompt_cache_key": None},
    ],
)
def test_responses_accepts_what_openai_accepts(
    server: RunningServer, fields: dict[str, Any]
) -> None:
    body = {"model": "s", "input": "Hi", **fields}
    response = post(server, "/v1/responses", body, Authorization="Bearer k-alice")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"


# --- a scripted model and custom tools --------------------------------------------------

CUSTOM = {"type": "custom", "custom": {"name": "shell", "description": "Runs a command."}}
FUNCTION = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("tools", "choice", "param"),
    [
        ([CUSTOM], "required", "tools"),
        ([CUSTOM], {"type": "custom", "custom": {"name": "shell"}}, "tool_choice"),
        ([CUSTOM, FUNCTION], {"type": "custom", "custom": {"name": "shell"}}, "tool_choice"),
    ],
    ids=["required-custom-only", "named-custom", "named-custom-beside-function"],
)
def test_scripted_model_forced_to_call_a_custom_tool_is_a_400(
    server: RunningServer, tools: list[Any], choice: Any, param: str, stream: bool
) -> None:
    body = {**CHAT, "tools": tools, "tool_choice": choice, "stream": stream}
    response = post(server, "/v1/chat/completions", body, Authorization="Bearer k-alice")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert "custom" in error["message"]


def test_scripted_model_with_custom_tools_offered_may_still_answer(server: RunningServer) -> None:
    """Offered, not forced (``auto``): a text answer is what a model may give."""
    body = {**CHAT, "tools": [CUSTOM], "tool_choice": "auto"}
    response = post(server, "/v1/chat/completions", body, Authorization="Bearer k-alice")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "hello"


def test_scripted_model_forced_with_a_function_beside_custom_tools_calls_it(
    server: RunningServer,
) -> None:
    body = {**CHAT, "tools": [CUSTOM, FUNCTION], "tool_choice": "required"}
    response = post(server, "/v1/chat/completions", body, Authorization="Bearer k-alice")
    assert response.status_code == 200, response.text
    (call,) = response.json()["choices"][0]["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"

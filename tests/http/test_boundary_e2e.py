"""Hostile clients against the real server: slow, silent, oversized; logged and counted.

The server runs under Granian with short timeouts (1 s), so a client that connects and
says nothing, trickles its headers or stalls halfway through its body is shown the door
quickly, while other clients are served meanwhile.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

import httpx
import orjson
import pytest

from appliance.http.access import MAX_HEADER_BYTES, MAX_TARGET_BYTES
from tests.conftest import cluster_config, scripted
from tests.support.poll import in_background, settled, until
from tests.support.schemas import assert_valid
from tests.support.server import RunningServer

TIMEOUT_S = 1.0
# A connection the server's 1 s timeouts cut is closed well before this; one they miss
# (Granian's own defaults are far longer) is not. Room for a busy machine either way.
CUT_BY_S = TIMEOUT_S + 5
KEYS = {"team-alpha": "sk-alpha-secret-0001", "team-beta": "sk-beta-secret-0002"}
ADMIN = "admin-secret-0003"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(
        cluster_config(
            scripted("m", ["Hello", " world."]),
            scripted("slow", [f"{i} " for i in range(6)], options={"delay_ms": 300}),
            server={
                "header_timeout_s": TIMEOUT_S,
                "body_timeout_s": TIMEOUT_S,
                "admin_key": ADMIN,
            },
            auth={"api_keys": [{"name": name, "key": key} for name, key in KEYS.items()]},
        )
    )


def headers(name: str = "team-alpha") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def connect(server: RunningServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_until_closed(sock: socket.socket, limit_s: float = 10) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the connection was still open after {limit_s}s")
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def served_meanwhile(server: RunningServer, seconds: float) -> int:
    """Requests answered 200 by a well-behaved client during ``seconds``."""
    answered = 0
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=server.base_url, headers=headers(), timeout=5) as client:
        while time.monotonic() < deadline:
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
            answered += 1
    return answered


def requests_total(server: RunningServer, route: str, status: int) -> float:
    return server.metric("appliance_requests_total", ADMIN, route=route, status=str(status))


# ---- slow and silent clients --------------------------------------------------------


def test_a_silent_connection_is_closed_within_the_timeout_while_others_are_served(
    server: RunningServer,
) -> None:
    with connect(server) as silent:
        others = in_background(lambda: served_meanwhile(server, TIMEOUT_S))
        data, took = read_until_closed(silent)
        assert others() > 0
    assert data == b""
    assert TIMEOUT_S * 0.8 < took < CUT_BY_S


def test_trickled_headers_are_closed_within_the_timeout(server: RunningServer) -> None:
    with connect(server) as slow:
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        while time.monotonic() - started < CUT_BY_S:
            try:
                slow.sendall(b"X-Slow: 1\r\n")  # one header line every 100 ms: never done
            except OSError:
                break
            time.sleep(0.1)  # the trickle itself: a client this slow is what is tested
        else:
            pytest.fail("a client trickling its headers was never cut off")


def test_a_half_sent_body_gets_a_408_envelope_in_time(server: RunningServer) -> None:
    """The 408 comes at ``body_timeout_s``, while other clients are served.

    It says ``connection: close``; Granian 2.8 (hyper) may still keep the socket open
    waiting for the declared rest of the body, so whether the connection then closes is
    not asserted here (README: known limitation).
    """
    body = orjson.dumps(CHAT)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + KEYS["team-alpha"].encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    others = in_background(lambda: served_meanwhile(server, TIMEOUT_S))
    with connect(server) as stalled:
        stalled.sendall(head + body[:10])
        started = time.monotonic()
        stalled.settimeout(TIMEOUT_S + 5)
        data = b""
        while not (b"\r\n\r\n" in data and data.endswith(b"}")):
            chunk = stalled.recv(65536)
            if not chunk:
                break
            data += chunk
        took = time.monotonic() - started
    assert others() > 0
    assert TIMEOUT_S * 0.8 < took < CUT_BY_S
    status_line, _, rest = data.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), data
    assert b"\r\nconnection: close\r\n" in data.lower()
    error = orjson.loads(rest.partition(b"\r\n\r\n")[2])
    assert_valid("ErrorResponse", error)
    assert error["error"]["code"] == "request_timeout"
    # The access line is written once the response is sent: moments after the client has it.
    until(lambda: server.events("request", status=408), what="an access line for the 408")


def test_an_idle_kept_alive_connection_is_closed_within_the_timeout(
    server: RunningServer,
) -> None:
    with connect(server) as idle:
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data, took = read_until_closed(idle)
    assert data.startswith(b"HTTP/1.1 200")
    assert took < CUT_BY_S


def test_replies_slower_than_the_timeouts_are_not_cut(server: RunningServer) -> None:
    body = {**CHAT, "model": "slow"}
    with httpx.Client(base_url=server.base_url, headers=headers(), timeout=10) as client:
        started = time.monotonic()
        plain = client.post("/v1/chat/completions", json=body)
        assert plain.status_code == 200
        assert plain.json()["choices"][0]["message"]["content"] == "0 1 2 3 4 5 "
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as reply:
            assert reply.status_code == 200
            text = "".join(reply.iter_text())
        assert text.endswith("data: [DONE]\n\n")
        assert time.monotonic() - started > 3 * TIMEOUT_S


def test_a_flood_of_silent_connections_is_cleared_and_the_server_keeps_serving(
    server: RunningServer,
) -> None:
    flood = [connect(server) for _ in range(200)]
    try:
        assert served_meanwhile(server, 0.2) > 0
        for sock in flood:  # each recv waits for the server to close (or fails at CUT_BY_S)
            sock.settimeout(CUT_BY_S)
            with contextlib.suppress(ConnectionResetError):  # closed, with data unread
                assert sock.recv(1) == b"", "closed by the server"
    finally:
        for sock in flood:
            sock.close()
    assert served_meanwhile(server, 0.2) > 0


# ---- oversized heads: answered by the app, so logged and counted --------------------


def test_a_long_request_target_is_a_414_envelope_logged_and_counted(
    server: RunningServer,
) -> None:
    before = requests_total(server, "unmatched", 414)
    path = "/v1/" + "u" * MAX_TARGET_BYTES
    response = httpx.get(server.base_url + path, headers=headers())
    assert response.status_code == 414
    assert_valid("ErrorResponse", response.json())
    assert response.json()["error"]["code"] == "uri_too_long"
    assert "x-request-id" in response.headers
    assert requests_total(server, "unmatched", 414) == before + 1
    line = until(lambda: server.events("request", status=414), what="the 414's access line")[0]
    assert line["path"].endswith(f"({len(path)} characters)")
    assert len(line["path"]) < 400


def test_oversized_headers_are_a_431_envelope_logged_and_counted(server: RunningServer) -> None:
    before = requests_total(server, "unmatched", 431)
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json=CHAT,
        headers={**headers(), "x-padding": "p" * MAX_HEADER_BYTES},
    )
    assert response.status_code == 431
    assert_valid("ErrorResponse", response.json())
    assert response.json()["error"]["code"] == "headers_too_large"
    assert requests_total(server, "unmatched", 431) == before + 1
    until(lambda: server.events("request", status=431), what="the 431's access line")


def test_a_100kb_model_name_is_logged_and_echoed_clipped(server: RunningServer) -> None:
    long_name = "x" * 100_000
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={**CHAT, "model": long_name},
        headers=headers(),
    )
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "100000 characters" in message and len(message) < 1000
    line = until(
        lambda: next(
            (e for e in server.events("request") if "100000 characters" in str(e.get("model"))),
            None,
        ),
        what="the access line with the clipped model name",
    )
    assert len(orjson.dumps(line)) < 1500
    assert max(len(text) for text in server.log().splitlines()) < 5000


# ---- keys: named in the log, never their values --------------------------------------


def test_the_access_log_names_the_key_and_no_secret_appears_in_any_line(
    server: RunningServer,
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        for name in KEYS:
            assert client.post("/v1/chat/completions", json=CHAT, headers=headers(name)).is_success
        secret = KEYS["team-beta"]
        for attempt in (
            {"json": {**CHAT, "model": secret}, "headers": headers()},  # a key as a model name
            {"json": CHAT, "headers": {"Authorization": f"Bearer {secret}x"}},  # a wrong key
            {"json": {**CHAT, "user": secret}, "headers": headers()},
        ):
            client.post("/v1/chat/completions", **attempt)
        for _ in range(2):  # a string seen twice is remembered: redacted both times
            client.get(f"/v1/models/{secret}", headers=headers())
            caller_id = {**headers(), "x-request-id": f"req-{secret}"}  # not adopted: ours
            sent = client.post("/v1/chat/completions", json=CHAT, headers=caller_id)
            assert sent.is_success and sent.headers["x-request-id"].startswith("req_")
        client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    settled(lambda: server.event_count("request"))  # every access line written
    named = {line.get("key_name") for line in server.events("request")}
    assert {"team-alpha", "team-beta"} <= named
    paths = [line.get("path") for line in server.events("request")]
    assert paths.count("/v1/models/[REDACTED]") == 2
    log = server.log()  # raw text on purpose: a secret must appear in no line at all
    for secret in (*KEYS.values(), ADMIN):
        assert secret not in log
    assert '"key_name":"[REDACTED]"' not in log


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_checks_by_head_get_the_status_and_no_body(server: RunningServer, path: str) -> None:
    """Load balancers that check with HEAD (HAProxy, some cloud ones) get GET's status."""
    got = httpx.get(f"{server.base_url}{path}", timeout=10)
    head = httpx.head(f"{server.base_url}{path}", timeout=10)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"].startswith("application/json")

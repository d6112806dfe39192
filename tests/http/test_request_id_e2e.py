"""A caller's ``x-request-id`` that holds a secret is not adopted, on the real server.

The request's id goes everywhere: the response's ``x-request-id``, the access line, the
usage ledger's row, the request log (and ``/admin/requests/{id}``). A careless client that
sends an API key as its id would have the log redact it, but the rest keep it: such an id
is not the request's at all, which gets an id of ours (as an invalid one does), the same
in every one of them. Any secret of the config counts: a client key, the admin key, an
upstream's ``api_key``, a short key where it stands alone. An ordinary id is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import cluster_config, scripted
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import settled, until
from tests.support.server import RunningServer, ledger_rows

CLIENT_KEY = "sk-client-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-0123456789abcdef"
SHORT_KEY = "k-short"  # under 12 characters: a secret where it stands alone
SECRETS = (CLIENT_KEY, ADMIN_KEY, UPSTREAM_KEY, SHORT_KEY)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the usage ledger and the request log's files."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., RunningServer], upstream: FakeUpstream, state: Path
) -> RunningServer:
    proxied = {
        "name": "up",
        "backend": "openai",
        "options": {"base_url": upstream.base_url, "model": "ok", "api_key": UPSTREAM_KEY},
        "health": {"interval_s": 0},
    }
    keys = [{"name": "team", "key": CLIENT_KEY}, {"name": "short", "key": SHORT_KEY}]
    return start_server(
        cluster_config(
            scripted("kept", ["hello"]),
            proxied,
            auth={"api_keys": keys},
            server={"admin_key": ADMIN_KEY},
            state={"usage_path": str(state / "usage.sqlite")},
            capture={"enabled": True, "path": str(state / "requests")},
        )
    )


def chat(server: RunningServer, model: str, request_id: str) -> httpx.Response:
    """A chat request through the openai client with ``request_id``; the raw response."""
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=CLIENT_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "say hello"}],
        extra_headers={"x-request-id": request_id},
    )
    raw.parse()  # a whole reply
    return raw.http_response


def ledger_ids(state: Path) -> list[str]:
    return [
        row[0] for row in ledger_rows(state / "usage.sqlite", "SELECT request_id FROM requests")
    ]


def logged_request(server: RunningServer, request_id: str) -> dict[str, Any]:
    """The request log's entry of ``request_id`` (``/admin/requests/{id}``), once written."""
    response = until(
        lambda: httpx.get(
            f"{server.base_url}/admin/requests/{request_id}",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=10,
        ),
        accept=lambda r: r.status_code == 200,
        what=f"request {request_id} in the request log",
    )
    entry: dict[str, Any] = response.json()
    return entry


def recorded_everywhere(server: RunningServer, state: Path, request_id: str) -> None:
    """``request_id`` is the id of one access line, one ledger row and one logged request."""
    until(lambda: server.events("request", request_id=request_id), what="the access line")
    assert len(settled(lambda: server.events("request", request_id=request_id))) == 1
    until(lambda: request_id in ledger_ids(state), what="the ledger row")
    assert logged_request(server, request_id)["id"] == request_id


@pytest.mark.parametrize(
    ("model", "sent", "secret"),
    [
        ("kept", f"trace-{CLIENT_KEY}", CLIENT_KEY),
        ("kept", ADMIN_KEY, ADMIN_KEY),
        ("up", f"trace:{UPSTREAM_KEY}:1", UPSTREAM_KEY),
        ("kept", f"trace.{SHORT_KEY}.1", SHORT_KEY),
    ],
    ids=["client-key", "admin-key", "upstream-api-key", "short-key-standing-alone"],
)
def test_an_id_holding_a_secret_is_replaced_by_ours_everywhere(
    server: RunningServer, state: Path, model: str, sent: str, secret: str
) -> None:
    response = chat(server, model, sent)
    ours = response.headers["x-request-id"]
    assert secret not in ours and ours.startswith("req_")
    recorded_everywhere(server, state, ours)  # the same id in each of them
    assert not [rid for rid in ledger_ids(state) if secret in rid]
    assert secret not in str(logged_request(server, ours))


def test_an_ordinary_id_is_kept_unchanged(server: RunningServer, state: Path) -> None:
    sent = "trace-0f3c1b7e.span:42"
    assert chat(server, "kept", sent).headers["x-request-id"] == sent
    recorded_everywhere(server, state, sent)


def test_no_secret_is_in_any_file_the_server_wrote(server: RunningServer, state: Path) -> None:
    """After the requests above (whatever order they ran in): the raw bytes of the log, the
    ledger and the request log's files (their journals too) hold no secret."""
    for secret in SECRETS[:3]:  # long ones: absent however they stand
        ours = chat(server, "kept", f"last-{secret}").headers["x-request-id"]
        until(lambda ours=ours: ours in ledger_ids(state), what="the ledger row")
        logged_request(server, ours)  # written to the request log's file
    files = [server.log_path, *(path for path in state.rglob("*") if path.is_file())]
    assert any("requests" in path.parts for path in files), "the request log has files"
    for path in files:
        data = path.read_bytes()
        for secret in SECRETS[:3]:
            assert secret.encode() not in data, f"{secret} in {path}"

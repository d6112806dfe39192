"""RequestScope.finish and report: every sink runs, once, whatever one of them does.

The sinks are plain callables that write what they saw into a list (no mocks): a sink
that raises is logged and the ones after it still run; a second ``finish`` does nothing;
the status every sink reads is the one the scope settled.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import structlog

from appliance.config import ApplianceConfig
from appliance.errors.upstream import UpstreamStreamError
from appliance.http.app import create_app
from appliance.http.scope import CLIENT_CLOSED, RequestScope, Sink
from appliance.serving.cluster import Cluster

# A cluster never started: finish never looks at it, open_charge reads its config.
CLUSTER = Cluster.from_config(
    ApplianceConfig.model_validate({"models": [{"name": "m", "backend": "scripted"}]})
)


def scope_with(sinks: list[Sink]) -> RequestScope:
    return RequestScope("req-unit", "POST", "/v1/chat/completions", CLUSTER, sinks)


async def test_one_sink_that_raises_does_not_stop_the_others() -> None:
    seen: list[tuple[str, int]] = []

    def first(scope: RequestScope) -> None:
        seen.append(("first", scope.status))

    def broken(scope: RequestScope) -> None:
        seen.append(("broken", scope.status))
        raise RuntimeError("this sink is broken")

    async def broken_async(scope: RequestScope) -> None:
        seen.append(("broken_async", scope.status))
        raise ValueError("so is this one")

    async def last(scope: RequestScope) -> None:
        seen.append(("last", scope.status))

    scope = scope_with([first, broken, broken_async, last])
    with structlog.testing.capture_logs() as logs:
        await scope.finish(200, completed=True)

    assert seen == [("first", 200), ("broken", 200), ("broken_async", 200), ("last", 200)]
    failed = [e for e in logs if e["event"] == "sink_failed"]
    assert [e["sink"] for e in failed] == ["broken", "broken_async"]


async def test_finish_feeds_the_sinks_once() -> None:
    seen: list[int] = []
    scope = scope_with([lambda s: seen.append(s.status)])
    await scope.finish(200, completed=True)
    await scope.finish(500, completed=False)  # a later end (the edge's) changes nothing
    assert seen == [200]
    assert scope.status == 200


@pytest.mark.parametrize(
    ("sent", "completed", "gone", "expected"),
    [
        (200, True, False, 200),  # answered whole
        (200, False, True, CLIENT_CLOSED),  # the client left mid-response
        (0, False, True, CLIENT_CLOSED),  # the client left before any response
        (0, False, False, 500),  # nothing was sent and nobody left: a failure
        (404, True, False, 404),  # an error answered whole keeps its status
        (200, True, True, 200),  # the client left after it had everything
    ],
)
async def test_one_status_for_every_sink(
    sent: int, completed: bool, gone: bool, expected: int
) -> None:
    seen: list[int] = []
    scope = scope_with([lambda s: seen.append(s.status), lambda s: seen.append(s.status)])
    scope.client_gone = gone
    await scope.finish(sent, completed=completed)
    assert seen == [expected, expected]


async def test_a_stream_that_failed_after_its_200_has_the_failures_status() -> None:
    seen: list[int] = []
    scope = scope_with([lambda s: seen.append(s.status)])
    charge = scope.open_charge("m", {"messages": []})
    failure = UpstreamStreamError("the upstream's stream broke")
    await charge.settle(failure)
    await scope.finish(200, completed=True)
    assert seen == [failure.status]
    assert failure.status >= 500


async def test_reports_run_once_after_the_settling_sinks() -> None:
    seen: list[tuple[str, int]] = []

    def broken(scope: RequestScope) -> None:
        seen.append(("broken", scope.status))
        raise RuntimeError("this report is broken")

    scope = RequestScope(
        "req-unit",
        "POST",
        "/v1/chat/completions",
        CLUSTER,
        [lambda s: seen.append(("charge", s.status))],
        [broken, lambda s: seen.append(("access", s.status))],
    )
    scope.report()  # before the request is settled: nothing to report yet
    assert seen == []
    await scope.finish(200, completed=True)
    assert seen == [("charge", 200)]  # what settles it runs before the last bytes go
    with structlog.testing.capture_logs() as logs:
        scope.report()
    scope.report()  # the edge's second word changes nothing
    assert seen == [("charge", 200), ("broken", 200), ("access", 200)]
    assert [e["sink"] for e in logs if e["event"] == "sink_failed"] == ["broken"]


@pytest.mark.parametrize("stream", [False, True])
async def test_the_charge_goes_before_the_last_bytes_and_the_reports_after(stream: bool) -> None:
    """Through the whole app: a client that spends again the moment it has its reply
    finds this one charged, and the reports (metrics, access line) are not on the way."""
    config = ApplianceConfig.model_validate(
        {"models": [{"name": "m", "backend": "scripted", "options": {"reply": ["a b c"]}}]}
    )
    cluster = Cluster.from_config(config)
    await cluster.start()
    app = create_app(config, cluster=cluster)
    order: list[str] = []
    app.sinks.append(lambda scope: order.append(f"settled {scope.status}"))
    app.reports.append(lambda scope: order.append(f"reported {scope.status}"))
    body = orjson.dumps(
        {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    )
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            order.append("last bytes sent")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    try:
        await app(scope, receive, send)
    finally:
        await cluster.close()
    assert order == ["settled 200", "last bytes sent", "reported 200"]


async def test_what_the_reports_read_is_what_the_charge_saw() -> None:
    """A client that leaves after the request is settled (its last bytes on their way)
    changes nothing the reports read: the charge, the access line and the request log
    give one account, with one duration."""
    seen: list[tuple[str, bool, float]] = []
    scope = RequestScope(
        "req-unit",
        "POST",
        "/v1/chat/completions",
        CLUSTER,
        [lambda s: seen.append(("charge", s.client_gone, s.elapsed_s))],
        [lambda s: seen.append(("report", s.client_gone, s.elapsed_s))],
    )
    await scope.finish(200, completed=True)
    scope.left()  # the disconnect comes in after the last bytes went
    await asyncio.sleep(0.01)
    scope.report()
    (_, gone_then, took), (_, gone_later, reported) = seen
    assert gone_then is gone_later is False
    assert took == reported == scope.elapsed_s
    assert scope.status == 200


async def test_a_client_that_leaves_before_the_end_is_noted() -> None:
    scope = scope_with([])
    scope.left()
    await scope.finish(200, completed=False)
    assert scope.client_gone
    assert scope.status == CLIENT_CLOSED

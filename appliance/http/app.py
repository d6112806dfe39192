"""The app factory: a validated config in, an ASGI app out."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import falcon.asgi

from appliance.accounting.budgets import SpendBook
from appliance.accounting.ledger import Ledger
from appliance.accounting.limits import Limiter, LocalLimiter
from appliance.accounting.requestlog import RequestLog
from appliance.config import ApplianceConfig, Settings, load_from_environment
from appliance.http import errors
from appliance.http.access import AccessLayer
from appliance.http.admin_relay import AdminRelay
from appliance.http.capturing import Capturing
from appliance.http.lifespan import (
    ClusterLifetime,
    Component,
    Drain,
    Hooks,
    Lifespan,
    ProcessRegistration,
    ServingHeap,
    StateGauges,
)
from appliance.http.metering import Charging
from appliance.http.middleware import API_PREFIXES, ApiPrefix, Authentication, Overhead
from appliance.http.routes.admin import LoadResource, UnloadResource
from appliance.http.routes.embeddings import EmbeddingsResource
from appliance.http.routes.generation import GenerationResource
from appliance.http.routes.health import HealthResource, ReadyResource
from appliance.http.routes.messages import CountTokensResource, MessagesResource
from appliance.http.routes.models import ModelResource, ModelsResource
from appliance.http.routes.operators import MetricsResource, StatusPage, StatusResource
from appliance.http.routes.requests import RequestResource, RequestsResource
from appliance.http.routes.rerank import RelevanceResource, RerankResource
from appliance.http.routes.responses import ResponsesResource
from appliance.http.routes.usage import UsageResource
from appliance.http.scope import Report, Request, Sink
from appliance.http.sinks import AccessLog, Counting
from appliance.http.sse import LiveStreams
from appliance.http.tracing import Spans
from appliance.runtime import heap
from appliance.runtime.certificate import export_expiry
from appliance.runtime.logging import configure_logging
from appliance.runtime.metrics import Metrics, Recent
from appliance.runtime.redaction import Secrets
from appliance.runtime.signals import ignore_until_handled
from appliance.serving import CHECKS
from appliance.serving.cluster import Cluster, ClusterRef
from appliance.serving.reload import Reloader
from appliance.telemetry import settings as telemetry
from appliance.wire.openai import protocol
from appliance.wire.openai.protocol import Endpoint

if TYPE_CHECKING:
    from appliance.telemetry.tracer import Tracing

__all__ = ["API_PREFIXES", "app_from_environment", "app_from_settings", "create_app"]


def create_app(
    config: ApplianceConfig,
    *,
    cluster: Cluster | None = None,
    reloader: Callable[[ClusterRef], Reloader] | None = None,
    source: str | None = None,
    tune_heap: bool = False,
    secrets: Secrets | None = None,
) -> AccessLayer:
    """Build the appliance for ``config``.

    Args:
        config: A validated configuration.
        cluster: A prebuilt cluster (tests inject one); built from ``config`` if absent.
        reloader: Builds the hot reloader for the app's cluster reference; none: no reload.
        source: Where the config came from, for the status page.
        tune_heap: Set the garbage collector for serving once started (a serving
            process; see :mod:`appliance.runtime.heap`).
        secrets: Every secret a config of this process named, kept by the reloader;
            ``config``'s if absent. A caller's request id that holds one is not adopted.

    Returns:
        The ASGI application. Workers (and the reloader) start with the ASGI lifespan.
    """
    ref = ClusterRef(cluster or Cluster.from_config(config))
    live, metrics, recent = LiveStreams(), Metrics(), Recent()
    export_expiry(metrics, config.server.tls)  # the certificate Granian serves
    ref.current.residency.observe(metrics)  # local model loads and unloads, across reloads
    hot = reloader(ref) if reloader else None
    book = SpendBook()
    limiter = _limiter(config, metrics, book)
    ledger = _ledger(config, book)
    requests = _request_log(config, metrics)
    tracing = _tracing(config, metrics)
    if hot is not None:
        hot.observers.append(
            lambda outcome: metrics.reloads.labels("ok" if outcome.ok else "failed").inc()
        )
    # Started in this order, stopped in reverse: the ledger outlives the requests, the
    # cluster the reloader, and the process registers once its signals are handled.
    components: list[Component] = [
        *([Hooks(tracing.start, tracing.close)] if tracing is not None else []),
        Hooks(stop=limiter.close),
        *([Hooks(ledger.start, ledger.close)] if ledger is not None else []),
        *([Hooks(requests.start, requests.close)] if requests is not None else []),
        ClusterLifetime(ref),
        *([Hooks(hot.start, hot.stop)] if hot is not None else []),
        StateGauges(ref, metrics),
        Drain(ref, live),
        AdminRelay(ref),
        ProcessRegistration(),
        *([ServingHeap()] if tune_heap else []),
    ]
    middleware: list[Any] = [
        Lifespan(components),
        ApiPrefix(),
        Authentication(limiter, metrics),
        Overhead(metrics),
    ]
    app = falcon.asgi.App(middleware=middleware, request_type=Request)
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)

    chat = GenerationResource(Endpoint.CHAT, protocol.ChatCompletionRequest, live, metrics)
    completions = GenerationResource(
        Endpoint.COMPLETIONS, protocol.CompletionRequest, live, metrics
    )
    embeddings, rerank = EmbeddingsResource(), RerankResource()
    responses = ResponsesResource(live, metrics)
    messages = MessagesResource(live, metrics)
    count_tokens = CountTokensResource()
    relevance = RelevanceResource()
    # Registered once, under /v1: ApiPrefix serves /api/v1 (DB-GPT's clients) from them.
    app.add_route("/v1/models", ModelsResource())
    app.add_route("/v1/models/{model_id:path}", ModelResource())
    app.add_route("/v1/chat/completions", chat)
    app.add_route("/v1/completions", completions)
    app.add_route("/v1/embeddings", embeddings)
    app.add_route("/v1/rerank", rerank)
    app.add_route("/v1/responses", responses)
    app.add_route("/v1/messages", messages)
    app.add_route("/v1/messages/count_tokens", count_tokens)
    app.add_route("/v1/beta/relevance", relevance)  # DB-GPT's relevance API
    app.add_route("/admin/load", LoadResource())
    app.add_route("/admin/unload", UnloadResource())
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource())
    app.add_route("/metrics", MetricsResource(metrics))
    app.add_route("/status.json", StatusResource(recent, hot, source, limiter))
    app.add_route("/admin/usage", UsageResource(ledger))
    app.add_route("/admin/requests", RequestsResource(requests))
    app.add_route("/admin/requests/{request_id}", RequestResource(requests))
    app.add_route("/", StatusPage())
    # What every finished request feeds, in this order (see appliance.http.scope): what
    # settles it before its last bytes go, what reports it once they are out.
    sinks: list[Sink] = [Charging(metrics, limiter, ledger)]
    reports: list[Report] = [
        Counting(metrics, recent),
        AccessLog(ref),
        *([Capturing(requests)] if requests is not None else []),
        Spans(),
    ]
    secrets = secrets if secrets is not None else Secrets(config.secrets())
    return AccessLayer(app, ref, live, sinks, reports, tracing, secrets)


def _limiter(config: ApplianceConfig, metrics: Metrics, book: SpendBook) -> Limiter:
    """Per-key limits: in Redis when the config shares state, else in this process."""
    state = config.state
    if state.redis_url is None:
        return LocalLimiter(config.auth.window_s, book)
    from appliance.accounting.redis_limits import RedisLimiter

    return RedisLimiter(
        state.redis_url.get_secret_value(),
        window_s=config.auth.window_s,
        on_error=state.on_error,
        timeout_s=state.timeout_s,
        on_failure=metrics.limiter_errors.inc,
        cluster=state.redis_cluster,
    )


def _tracing(config: ApplianceConfig, metrics: Metrics) -> Tracing | None:
    """The tracer when the config (or an ``OTEL_*`` variable) names a collector; the
    SDK is imported only then. A change of ``telemetry:`` takes a restart."""
    exporting = telemetry.resolve(config.telemetry, os.environ)
    if exporting is None:
        return None
    from appliance.telemetry.tracer import start

    return start(exporting, metrics.spans_dropped.inc)


def _ledger(config: ApplianceConfig, book: SpendBook) -> Ledger | None:
    """The usage ledger, if the config names its file.

    Without Redis, budgets read their totals from it (``book``); with Redis, from Redis.
    """
    state = config.state
    if state.usage_path is None:
        return None
    return Ledger(state.usage_path, book if state.redis_url is None else None)


def _request_log(config: ApplianceConfig, metrics: Metrics) -> RequestLog | None:
    """The request log, if the config captures requests (see ``capture:``)."""
    capture = config.capture
    folder = capture.folder(config.state.usage_path)
    if not capture.enabled or folder is None:
        return None
    return RequestLog(
        folder,
        capture.retention_days,
        capture.queue,
        lambda reason, n: metrics.request_log_dropped.labels(reason).inc(n),
    )


def app_from_environment() -> AccessLayer:
    """Granian's factory in each worker process of a multi-process server: load the config
    named by ``APPLIANCE_CONFIG`` and build the app (:func:`app_from_settings`)."""
    ignore_until_handled()
    settings, config = load_from_environment(CHECKS)
    return app_from_settings(settings, config)


def app_from_settings(settings: Settings, config: ApplianceConfig) -> AccessLayer:
    """The served app, reloading itself when the file changes or on SIGHUP.

    A reload loads the file again with the same environment overrides; logging follows the
    new config's ``logging:`` section.
    """
    # Every secret a config of this process named stays redacted (and out of request ids):
    # a key a reload removed may still come in (as a request id, a path) after it.
    secrets = Secrets(config.secrets())
    configure_logging(config.logging, secrets)

    def apply_logging(new: ApplianceConfig) -> None:
        secrets.add(new.secrets())
        configure_logging(new.logging, secrets)

    def reloader(ref: ClusterRef) -> Reloader:
        # Watching and drain time follow the serving config's server section.
        return Reloader(
            ref,
            lambda: load_from_environment(CHECKS)[1],
            watch=settings.config,
            apply_logging=apply_logging,
            settle=heap.settle,
        )

    return create_app(
        config,
        reloader=reloader,
        source=str(settings.config),
        tune_heap=True,
        secrets=secrets,
    )

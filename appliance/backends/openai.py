"""The ``openai`` backend: a proxy to one OpenAI-compatible upstream server.

vLLM, llama.cpp's server, Ollama, TGI and OpenAI itself speak the same protocol. One worker
talks to one base URL over a pooled keep-alive aiohttp session (aiohttp costs a fraction
of httpx's CPU per request here; see FINDINGS). The client's JSON object is forwarded with
only ``model`` replaced (and, for streams the appliance charges, ``include_usage`` asked
for); replies and stream payloads are relayed as bytes.
aiohttp's exceptions are translated into :mod:`appliance.errors` here and in
:mod:`.upstream_body` (its :func:`~.upstream_body.guard`), nowhere else.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import structlog

from appliance import telemetry
from appliance.backends.base import ReplyStream, Worker
from appliance.backends.deadlines import Deadlines
from appliance.backends.scrub import Scrubber, without_userinfo
from appliance.backends.tls import client_context
from appliance.backends.upstream_body import UpstreamStream, guard, idle_from_here
from appliance.backends.upstream_errors import parse, reported, retry_after_of
from appliance.config import ModelConfig, OpenAIModel
from appliance.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from appliance.wire.openai.protocol import Endpoint

log = structlog.get_logger("appliance.upstream")

_MAX_ERROR_BODY = 64 * 1024
_READ_BUFFER = 1024 * 1024  # aiohttp's read buffer
# A 200 whose body is an error object, not a reply: it names "error" in its first bytes and
# has none of the keys a reply of any endpoint has.
_ERROR_HEAD = 256
_REPLY_KEYS = frozenset({"choices", "data", "output", "results", "usage"})


@dataclass(frozen=True)
class Upstream:
    """Where and how to reach one OpenAI-compatible server."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 300.0
    idle_timeout_s: float = 60.0
    # What it is sent that is secret (see .scrub): never shown, never echoed to clients.
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, config: OpenAIModel, base_url: str) -> Upstream:
        """The upstream an ``openai`` model declaration describes."""
        opts = config.options
        return cls(
            base_url=base_url,
            model=config.upstream_model(),
            api_key=opts.api_key.get_secret_value() if opts.api_key else None,
            headers=dict(opts.headers),
            connect_timeout_s=opts.connect_timeout_s,
            first_byte_timeout_s=opts.first_byte_timeout_s,
            idle_timeout_s=opts.idle_timeout_s,
            secrets=tuple(opts.secrets()),
        )


class OpenAIWorker(Worker):
    """A worker that forwards requests to an upstream's ``base_url``."""

    def __init__(self, worker_id: str, config: ModelConfig, upstream: Upstream) -> None:
        super().__init__(worker_id, config)
        self.base_url = upstream.base_url
        self.upstream_model = upstream.model
        self._headers = {"content-type": "application/json", **upstream.headers}
        if upstream.api_key is not None:
            self._headers["authorization"] = f"Bearer {upstream.api_key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=upstream.connect_timeout_s, sock_read=upstream.idle_timeout_s
        )
        # A request's wait for the response to begin is first_byte_timeout_s's alone (a
        # plain reply's headers come when it is fully generated): no sock_read until then.
        self._post_timeout = aiohttp.ClientTimeout(
            total=None, connect=upstream.connect_timeout_s, sock_read=None
        )
        self._first_byte = Deadlines(upstream.first_byte_timeout_s)
        self._idle_s = upstream.idle_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._refuses_stream_options = False
        self._scrub = Scrubber(upstream.secrets)

    @property
    def base_url(self) -> str:
        """The upstream's base URL (a local model's worker learns its port late)."""
        return self._base_url

    @base_url.setter
    def base_url(self, url: str) -> None:
        self._base_url = url
        self.display_url = without_userinfo(url)  # for the logs: never a password
        self._urls = {endpoint: f"{url}/{endpoint.value}" for endpoint in Endpoint}

    async def start(self) -> None:
        # An https upstream's context is the appliance's own (see .tls), never aiohttp's.
        tls = client_context() if self.base_url.startswith("https:") else True
        connector = aiohttp.TCPConnector(
            limit=0, keepalive_timeout=30, enable_cleanup_closed=True, ssl=tls
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            read_bufsize=_READ_BUFFER,
            json_serialize=lambda o: orjson.dumps(o).decode(),
            skip_auto_headers=("User-Agent",),
            auto_decompress=True,
            # One pool serves every caller: a cookie set on one reply (a load balancer's
            # stickiness, a session) must not ride on everyone's next requests.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        await super().start()

    async def close(self) -> None:
        await super().close()
        self._first_byte.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, endpoint: Endpoint, body: dict[str, Any]) -> bytes:
        response = await self._post(endpoint, body)
        idle_from_here(response, self._idle_s)
        try:
            raw = await guard(response.read())
        finally:
            response.release()
        if not _looks_like_object(raw):
            # A proxy's error page or a misrouted URL answering 200: never relayed as a reply.
            kind = response.headers.get("content-type") or "no content type"
            raise UpstreamError(
                f"The upstream answered 200 with something that is not a JSON object ({kind})"
            )
        if b'"error"' not in raw[:_ERROR_HEAD]:
            return raw  # a reply (an error object names "error" in its first bytes)
        failed = _error_reply(raw, self._scrub)
        if failed is not None:  # never relayed as a reply: a client SDK finds no choices
            raise failed
        # A reply may report its own failure in the upstream's words (a failed Response).
        return self._scrub.payload(raw)

    async def open_stream(
        self, endpoint: Endpoint, body: dict[str, Any], *, usage: bool = False
    ) -> ReplyStream:
        options = body.get("stream_options") or {}
        if usage and not options.get("include_usage") and not self._refuses_stream_options:
            response = await self._post_asking_usage(endpoint, body, options)
        else:
            response = await self._post(endpoint, body)
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            response.close()
            # It was reached and answered: no sign of a broken worker; another may stream.
            raise UpstreamError(
                f"The upstream answered a stream request with {content_type or 'no type'}"
            )
        n = body.get("n")
        choices = n if isinstance(n, int) and n > 1 else 1
        return UpstreamStream(response, choices, self._idle_s, self._scrub)

    async def _post_asking_usage(
        self, endpoint: Endpoint, body: dict[str, Any], options: dict[str, Any]
    ) -> aiohttp.ClientResponse:
        """Open a stream with ``include_usage`` added; without it if the upstream refuses.

        Some servers reject ``stream_options``: a 400 or 422 whose body names the field
        (OpenAI-style servers as the error's ``param``; vLLM and TGI only in the message
        text). Then the client's own request is sent as it came, and if that is accepted
        this upstream is not asked again (``stream_usage: false`` in its description); its
        streams are charged an estimate.
        """
        asking = {**body, "stream_options": {**options, "include_usage": True}}
        try:
            return await self._post(endpoint, asking, refused_field=STREAM_OPTIONS)
        except _FieldRefused as refused:
            exc = refused.error
            response = await self._post(endpoint, body)
            self._refuses_stream_options = True
            log.warning(
                "upstream_refuses_stream_options",
                worker=self.worker_id,
                status=exc.upstream_status,
                effect="streams are charged an estimate of their tokens",
            )
            return response

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["stream_usage"] = not self._refuses_stream_options
        return out

    async def probe(self) -> None:
        """``GET {base_url}/models``: cheap on every OpenAI-compatible server, never billed."""
        if self._session is None:
            raise UpstreamConnectionError(f"worker {self.worker_id} is not started")
        response = await guard(self._session.get(f"{self.base_url}/models", headers=self._headers))
        try:
            if response.status >= 400:
                raw = await guard(response.content.read(1024))
                raise _status_error(response, raw, self._scrub)
        finally:
            response.release()

    def _call_headers(self) -> dict[str, str]:
        """The headers of one request to the upstream: with the request's ``traceparent``
        when it is traced (its model call's span; on a failover, the attempt's)."""
        parent = telemetry.traceparent()
        return self._headers if parent is None else {**self._headers, "traceparent": parent}

    async def _post(
        self, endpoint: Endpoint, body: dict[str, Any], *, refused_field: bytes = b""
    ) -> aiohttp.ClientResponse:
        """Send ``body``; an error status raises its :class:`UpstreamError`, or
        :class:`_FieldRefused` when it is a 400/422 whose body names ``refused_field``."""
        if self._session is None:
            raise UpstreamConnectionError(f"worker {self.worker_id} is not started")
        payload = orjson.dumps({**body, "model": self.upstream_model})
        url = self._urls[endpoint]
        first_byte = self._first_byte
        task = first_byte.start()
        try:
            response = await guard(
                self._session.post(
                    url,
                    data=payload,
                    headers=self._call_headers(),
                    allow_redirects=False,
                    timeout=self._post_timeout,
                )
            )
        except asyncio.CancelledError:
            if first_byte.expired(task):
                raise UpstreamTimeoutError(
                    f"The upstream did not begin to answer within {first_byte.seconds:g}s"
                ) from None
            raise
        except UpstreamConnectionError as exc:
            log.warning(
                "upstream_unreachable",
                worker=self.worker_id,
                url=f"{self.display_url}/{endpoint.value}",
                error=exc.message,
                detail=str(exc.__cause__ or exc),
            )
            raise
        finally:
            first_byte.stop(task)
        if response.status >= 400:
            idle_from_here(response, self._idle_s)
            try:
                raw = await guard(response.content.read(_MAX_ERROR_BODY))
            finally:
                response.close()
            error = _status_error(response, raw, self._scrub)
            if refused_field and response.status in (400, 422) and refused_field in raw:
                raise _FieldRefused(error)
            raise error
        return response


STREAM_OPTIONS = b"stream_options"


class _FieldRefused(Exception):
    """The upstream refused a field the appliance added (its error body names it)."""

    def __init__(self, error: UpstreamStatusError) -> None:
        super().__init__(error.message)
        self.error = error


def _looks_like_object(raw: bytes) -> bool:
    """Whether ``raw`` is shaped like a JSON object: the whole body is not parsed here
    (replies can be large); whatever reads it next parses it."""
    body = raw.strip()
    return body[:1] == b"{" and body[-1:] == b"}"


def _error_reply(raw: bytes, scrub: Scrubber) -> UpstreamStatusError | None:
    """The error a 200 reports when its body is an error object and no reply (OpenAI's
    ``{"error": {...}}``, vLLM's ``{"object": "error", ...}``, TGI's ``{"error": "..."}``),
    as the status its code names (a number from 400 to 599) or 502; None for a reply.
    Asked only of a body that names ``error`` in its first bytes (see ``call``).
    """
    obj = parse(raw)
    if not isinstance(obj, dict) or not _REPLY_KEYS.isdisjoint(obj):
        return None
    found = reported(obj)
    if found is None:
        return None
    code = found.get("code")
    status = code if type(code) is int and 400 <= code <= 599 else 502
    return _upstream_error(status, obj, None, scrub)


def _status_error(
    response: aiohttp.ClientResponse, raw: bytes, scrub: Scrubber
) -> UpstreamStatusError:
    """The error for an upstream's error status and body, with its own words (scrubbed of
    what it was sent that is secret: servers quote the key they were sent)."""
    retry_after = retry_after_of(response.headers.get("retry-after"))
    return _upstream_error(response.status, parse(raw), retry_after, scrub)


def _upstream_error(
    status: int, parsed: Any, retry_after: float | None, scrub: Scrubber
) -> UpstreamStatusError:
    """The error of an upstream's answer of ``status`` whose body parsed as ``parsed``."""
    message, kind, param, code = f"HTTP {status}", None, None, None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if error is None and isinstance(parsed, dict) and parsed.get("object") == "error":
        error = {"message": parsed.get("message")}  # vLLM's envelope: the error at the top
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        kind, param, code = error.get("type"), error.get("param"), error.get("code")
    elif isinstance(error, str):
        message = error
    error = UpstreamStatusError.of(
        status,
        message,
        upstream_type=kind if isinstance(kind, str) else None,
        param=param if isinstance(param, str) else None,
        code=code if isinstance(code, str) else None,
        retry_after=retry_after,
    )
    return scrub.error(error)

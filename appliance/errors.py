"""The appliance's exception tree.

Every failure the appliance reports is one of these. API errors carry everything the
single Falcon error handler needs to render the OpenAI envelope
``{"error": {"message", "type", "param", "code"}}`` with the right status and headers::

    ApplianceError
    ├── ConfigError                      cluster.yaml is unusable (start-up, reload)
    └── APIError                         rendered to the client as the OpenAI envelope
        ├── InvalidRequestError          400  malformed JSON, invalid parameters
        ├── AuthenticationError          401  missing or wrong API key
        ├── PermissionDeniedError        403  key not allowed for that model
        ├── NotFoundError                404  unknown route
        │   └── ModelNotFoundError       404  unknown model or alias
        ├── RequestTimeoutError          408  body not received within server.body_timeout_s
        ├── PayloadTooLargeError         413  body over server.max_body_bytes
        ├── URITooLongError              414  request target over the limit
        ├── UnsupportedMediaTypeError    415  body is not JSON
        ├── RateLimitError               429  queue full, per-key limits (Retry-After)
        │   └── QuotaExceededError       429  the key's budget for this period is spent
        ├── HeadersTooLargeError         431  request headers over the limit
        ├── ServiceUnavailableError      503  no healthy worker, queue wait timed out
        └── UpstreamError                     a worker failed; retryable ones fail over
            ├── UpstreamStatusError      4xx relayed, 5xx -> 502
            ├── UpstreamConnectionError  502  connect refused, reset, bad reply
            ├── UpstreamTimeoutError     504  no answer in time
            ├── UpstreamStreamError      502  the upstream reported an error inside its stream
            └── ModelCrashedError        502  a local model process crashed on this request

Workers translate their backend's exceptions into this tree at their boundary; nothing
above them classifies errors by message text.
"""

from __future__ import annotations

from typing import Any


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""


class ConfigError(ApplianceError):
    """The cluster configuration cannot be used.

    Attributes:
        problems: One line per problem, each naming the YAML path and line.
    """

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(problems))


class APIError(ApplianceError):
    """An error the client sees as an OpenAI error envelope."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after
        self.extra_headers = headers or {}

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed on another worker."""
        return False

    @property
    def worker_fault(self) -> bool:
        """Whether this says the worker is unwell (counts towards ejecting it)."""
        return False

    def envelope(self) -> dict[str, Any]:
        """The OpenAI error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        """Response headers that go with this error."""
        out = dict(self.extra_headers)
        if self.retry_after is not None:
            seconds = max(self.retry_after, 0.0)
            out["retry-after"] = str(max(1, round(seconds)))
            out["retry-after-ms"] = str(int(seconds * 1000))
        return out


class InvalidRequestError(APIError):
    """The request is malformed or a parameter is invalid (400)."""

    status = 400
    type = "invalid_request_error"


class AuthenticationError(APIError):
    """Missing or wrong API key (401)."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(APIError):
    """The key may not use this model (403)."""

    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFoundError(APIError):
    """No such route (404)."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    """No model or alias of that name (404)."""

    code = "model_not_found"


class RequestTimeoutError(APIError):
    """The client did not send its whole body in time (408; clients may retry).

    The answer closes the connection: the rest of that body may still be on its way, and
    the server must not wait for it nor read it as the next request.
    """

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"connection": "close"})


class PayloadTooLargeError(APIError):
    """The body is larger than the configured limit (413)."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class URITooLongError(APIError):
    """The request target (path and query) is longer than the limit (414)."""

    status = 414
    type = "invalid_request_error"
    code = "uri_too_long"


class UnsupportedMediaTypeError(APIError):
    """The body is not JSON (415)."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RateLimitError(APIError):
    """Too many requests for the model or the key right now (429)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    @property
    def retryable(self) -> bool:
        return True


class QuotaExceededError(RateLimitError):
    """The key spent its budget for the period (429 ``insufficient_quota``).

    Retrying before the period resets cannot help, so clients are told not to
    (``x-should-retry: false``, which the openai SDK obeys).
    """

    type = "insufficient_quota"
    code = "insufficient_quota"

    @property
    def retryable(self) -> bool:
        return False


class HeadersTooLargeError(APIError):
    """The request headers are larger than the limit (431)."""

    status = 431
    type = "invalid_request_error"
    code = "headers_too_large"


class ServiceUnavailableError(APIError):
    """No worker can take the request now (503)."""

    status = 503
    type = "server_error"
    code = "service_unavailable"

    @property
    def retryable(self) -> bool:
        return True


class UpstreamError(APIError):
    """A worker's backend failed."""

    status = 502
    type = "server_error"
    code = "upstream_error"

    @property
    def retryable(self) -> bool:
        return True


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status.

    A 4xx that is the client's fault (bad parameter, context too long) is relayed with the
    upstream's own status and message. A 5xx becomes 502 and may fail over. A 401/403/404
    from the upstream is the operator's fault (wrong upstream key or model name), so the
    client gets a 502 that says so, marked not worth retrying.
    """

    def __init__(
        self,
        upstream_status: int,
        message: str,
        *,
        upstream_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.upstream_status = upstream_status
        headers: dict[str, str] = {}
        if upstream_status in (401, 403, 404):
            self.status = 502
            message = f"The upstream rejected the request ({upstream_status}): {message}"
            code = "upstream_misconfigured"
            headers["x-should-retry"] = "false"
        elif upstream_status == 429:
            self.status = 429
            self.type = upstream_type or "rate_limit_error"
        elif 400 <= upstream_status < 500:
            self.status = upstream_status
            self.type = upstream_type or "invalid_request_error"
        else:
            self.status = 502
            message = f"The upstream failed ({upstream_status}): {message}"
            code, param = "upstream_error", None
        super().__init__(message, param=param, code=code, retry_after=retry_after, headers=headers)

    @property
    def retryable(self) -> bool:
        return self.upstream_status >= 500 or self.upstream_status == 429

    @property
    def worker_fault(self) -> bool:
        return self.upstream_status >= 500


class UpstreamConnectionError(UpstreamError):
    """The upstream could not be reached or broke the connection (502)."""

    code = "upstream_unreachable"

    @property
    def worker_fault(self) -> bool:
        return True


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer in time (504)."""

    status = 504
    code = "upstream_timeout"

    @property
    def worker_fault(self) -> bool:
        return True


class ModelCrashedError(UpstreamError):
    """A local model's process crashed (a fatal signal) while serving this request (502).

    Not retried on another worker: the same request would most likely crash that one too,
    taking the whole model down. The client is told not to retry either.
    """

    code = "model_crashed"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"x-should-retry": "false"})

    @property
    def retryable(self) -> bool:
        return False

    @property
    def worker_fault(self) -> bool:
        return True


class UpstreamStreamError(UpstreamError):
    """The upstream reported an error inside a stream it had begun (502).

    The client sees the upstream's own message, type, code and param (as an error event:
    the stream's status was sent long before); the appliance logs and records it as a
    failed stream. Not a sign that the worker is unwell (the upstream answered).
    """

    def __init__(
        self,
        message: str,
        *,
        upstream_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        if upstream_type is not None:
            self.type = upstream_type
        super().__init__(message, param=param, code=code)

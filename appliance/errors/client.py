"""Errors of the request itself, or of the appliance's own limits (4xx, 503)."""

from __future__ import annotations

from appliance.errors.base import APIError


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

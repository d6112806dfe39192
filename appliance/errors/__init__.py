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
            ├── UpstreamStatusError           the upstream answered an error status (.of picks)
            │   ├── UpstreamClientError  4xx  relayed as the upstream said it
            │   ├── UpstreamRateLimitError 429 relayed; may fail over
            │   ├── UpstreamRejectedError 502 its 401/403/404: the operator's setup
            │   └── UpstreamServerError  502  its 5xx; may fail over
            ├── UpstreamConnectionError  502  connect refused, reset, bad reply
            ├── UpstreamTimeoutError     504  no answer in time
            ├── UpstreamStreamError      502  the upstream reported an error inside its stream
            └── ModelCrashedError        502  a local model process crashed on this request

Workers translate their backend's exceptions into this tree at their boundary; nothing
above them classifies errors by message text.
"""

from __future__ import annotations

from appliance.errors.base import APIError, ApplianceError, ConfigError
from appliance.errors.client import (
    AuthenticationError,
    HeadersTooLargeError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
    URITooLongError,
)
from appliance.errors.upstream import (
    ModelCrashedError,
    UpstreamClientError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamRejectedError,
    UpstreamServerError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)

__all__ = [
    "APIError",
    "ApplianceError",
    "AuthenticationError",
    "ConfigError",
    "HeadersTooLargeError",
    "InvalidRequestError",
    "ModelCrashedError",
    "ModelNotFoundError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RequestTimeoutError",
    "ServiceUnavailableError",
    "URITooLongError",
    "UnsupportedMediaTypeError",
    "UpstreamClientError",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamRateLimitError",
    "UpstreamRejectedError",
    "UpstreamServerError",
    "UpstreamStatusError",
    "UpstreamStreamError",
    "UpstreamTimeoutError",
]

"""A worker's backend failed: translated into these at the worker's boundary."""

from __future__ import annotations

from typing import Any

from appliance.errors.base import APIError


class UpstreamError(APIError):
    """A worker's backend failed."""

    status = 502
    type = "server_error"
    code = "upstream_error"

    @property
    def retryable(self) -> bool:
        return True


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status; :meth:`of` picks the class for it.

    Attributes:
        upstream_status: The status the upstream answered.
    """

    def __init__(
        self,
        upstream_status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.upstream_status = upstream_status
        super().__init__(message, param=param, code=code, retry_after=retry_after, headers=headers)

    @property
    def retryable(self) -> bool:
        return False

    @staticmethod
    def of(
        upstream_status: int,
        message: str,
        *,
        upstream_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> UpstreamStatusError:
        """The error for an upstream's answer of ``upstream_status`` with its own fields."""
        if upstream_status in (401, 403, 404):
            return UpstreamRejectedError(upstream_status, message)
        if upstream_status == 429:
            return UpstreamRateLimitError(
                upstream_status, message, upstream_type, param=param, code=code,
                retry_after=retry_after,
            )  # fmt: skip
        if 400 <= upstream_status < 500:
            return UpstreamClientError(
                upstream_status, message, upstream_type, param=param, code=code,
                retry_after=retry_after,
            )  # fmt: skip
        return UpstreamServerError(upstream_status, message, retry_after=retry_after)


class _Relayed(UpstreamStatusError):
    """An upstream error whose type, param and code the client sees as the upstream said."""

    default_type = "invalid_request_error"

    def __init__(
        self,
        upstream_status: int,
        message: str,
        upstream_type: str | None,
        **fields: Any,
    ) -> None:
        super().__init__(upstream_status, message, **fields)
        self.upstream_type = upstream_type

    @property
    def type(self) -> str:  # type: ignore[override]
        return self.upstream_type or self.default_type


class UpstreamClientError(_Relayed):
    """A 4xx that is the client's fault (bad parameter, context too long): relayed with the
    upstream's own status, type and message; not retried."""

    @property
    def status(self) -> int:  # type: ignore[override]
        return self.upstream_status


class UpstreamRateLimitError(_Relayed):
    """The upstream's 429: relayed as 429; another worker may have room."""

    status = 429
    default_type = "rate_limit_error"

    @property
    def retryable(self) -> bool:
        return True


class UpstreamRejectedError(UpstreamStatusError):
    """The upstream's 401, 403 or 404: the operator's fault (wrong upstream key or model
    name), so the client gets a 502 that says so, marked not worth retrying."""

    status = 502
    code = "upstream_misconfigured"

    def __init__(self, upstream_status: int, message: str) -> None:
        super().__init__(
            upstream_status,
            f"The upstream rejected the request ({upstream_status}): {message}",
            headers={"x-should-retry": "false"},
        )


class UpstreamServerError(UpstreamStatusError):
    """The upstream's 5xx: 502 to the client; another worker may serve it, and it counts
    against this one's health."""

    status = 502
    code = "upstream_error"

    def __init__(self, upstream_status: int, message: str, **fields: Any) -> None:
        super().__init__(
            upstream_status, f"The upstream failed ({upstream_status}): {message}", **fields
        )

    @property
    def retryable(self) -> bool:
        return True

    @property
    def worker_fault(self) -> bool:
        return True


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
        super().__init__(message, param=param, code=code)
        self.upstream_type = upstream_type

    @property
    def type(self) -> str:  # type: ignore[override]
        return self.upstream_type or "server_error"

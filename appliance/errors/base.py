"""The roots of the tree: every error the appliance raises on purpose, and those a client sees."""

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

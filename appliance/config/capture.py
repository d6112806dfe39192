"""The ``capture:`` section: which requests the request log keeps, where, and for how long.

Off by default. On, it keeps the prompt and reply of the requests of the chosen models and
keys in SQLite files per UTC day (see :mod:`appliance.accounting.requestlog`); what
matches a ``redact`` pattern is replaced before anything is written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from appliance.config.model import LocatedValueError, Strict

ALL: Literal["all"] = "all"
REDACTED = "[redacted]"
FOLDER_BESIDE_LEDGER = "requests"
_PROBES = ("", "a", "0", " ", "a0 .")  # texts on which an empty match (\d*, \b, ^) shows


class CaptureConfig(Strict):
    """The request log: prompts and replies kept for operators (``GET /admin/requests``)."""

    enabled: bool = Field(
        False, description="Keep requests and replies in the request log. Off by default."
    )
    models: list[str] | Literal["all"] = Field(
        ALL,
        description="Models and aliases whose requests are kept (a request naming an alias "
        "of a listed model counts), or `all`.",
    )
    keys: list[str] | Literal["all"] = Field(
        ALL,
        description="API key names whose requests are kept, or `all` (a server without keys "
        "has only `all`).",
    )
    path: Path | None = Field(
        None,
        description="Folder of the log's files (requests-YYYY-MM-DD.sqlite, one per UTC day). "
        "Absent: the folder `requests` beside state.usage_path; without a usage ledger it "
        "must be given when capture is enabled.",
    )
    retention_days: int = Field(
        7,
        ge=1,
        le=3650,
        description="Days of files kept: older day files are deleted at start and daily.",
    )
    redact: list[str] = Field(
        default_factory=list,
        description="Regular expressions (Python syntax) whose matches in the string values "
        "of a prompt or reply (never field names) are replaced by `[redacted]` before "
        "anything is written (in the request log, and in spans with "
        "`telemetry.capture_content`, even with capture off), e.g. `sk-[A-Za-z0-9]{20,}`; "
        "one that can match the empty string (`\\d*`) is refused.",
    )
    max_body_bytes: int = Field(
        65_536,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Longest prompt or reply kept, in bytes of JSON; longer ones are cut "
        "(and marked truncated).",
    )
    queue: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Requests waiting to be written at most; past it they are dropped "
        "(`appliance_request_log_dropped_total`), never a request slowed.",
    )

    @field_validator("redact")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"redact pattern {pattern!r} is not a valid regex: {exc}"
                ) from None
            if any(m.group() == "" for probe in _PROBES for m in compiled.finditer(probe)):
                raise ValueError(
                    f"redact pattern {pattern!r} matches the empty string: it would put "
                    f"{REDACTED} between every character; make it match at least one "
                    "character (e.g. + instead of *)"
                )
        return patterns

    def folder(self, usage_path: Path | None) -> Path | None:
        """Where the log's files go: ``path``, else beside the usage ledger (None: nowhere)."""
        if self.path is not None:
            return self.path
        if usage_path is not None:
            return usage_path.parent / FOLDER_BESIDE_LEDGER
        return None

    def wants(self, key: str, model: str, targets: tuple[str, ...] | list[str] = ()) -> bool:
        """Whether a request of ``key`` naming ``model`` (with its alias's ``targets``) is kept."""
        if not self.enabled:
            return False
        if self.keys != ALL and key not in self.keys:
            return False
        if self.models == ALL:
            return True
        return model in self.models or any(t in self.models for t in targets)


@functools.lru_cache(maxsize=32)
def scrubber(patterns: tuple[str, ...]) -> Callable[[Any], Any]:
    """A function that returns a JSON value with every pattern's matches replaced by
    :data:`REDACTED` in every string value at any depth (object keys are the API's field
    names, never rewritten). An empty match is left alone (config validation refuses
    patterns that make one). The one redaction of the request log and of span content."""
    if not patterns:
        return lambda value: value
    found = re.compile("|".join(f"(?:{p})" for p in patterns))

    def replace(match: re.Match[str]) -> str:
        return REDACTED if match.group() else ""

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return found.sub(replace, value)
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(v) for v in value]
        return value

    return scrub


def capture_problems(
    capture: CaptureConfig,
    public: set[str],
    key_names: list[str],
    usage_path: Path | None,
) -> list[LocatedValueError]:
    """Names the section gives that the config does not have, and a log with no folder.

    Args:
        capture: The section.
        public: Every model and alias name.
        key_names: The API keys' names.
        usage_path: The usage ledger's file, if any (the default folder is beside it).
    """
    problems: list[LocatedValueError] = []
    if capture.models != ALL:
        unknown = [m for m in capture.models if m not in public]
        if unknown:
            problems.append(
                LocatedValueError(
                    f"unknown models {unknown}; known are {sorted(public)}",
                    ("capture", "models"),
                )
            )
    if capture.keys != ALL:
        unknown = [k for k in capture.keys if k not in key_names]
        if unknown:
            known = sorted(key_names) or "none (auth.api_keys is empty: use `all`)"
            problems.append(
                LocatedValueError(
                    f"unknown API keys {unknown}; known are {known}", ("capture", "keys")
                )
            )
    if capture.enabled and capture.folder(usage_path) is None:
        problems.append(
            LocatedValueError(
                "capture needs a folder: set capture.path (or state.usage_path, and the log "
                "goes beside it)",
                ("capture", "path"),
            )
        )
    return problems

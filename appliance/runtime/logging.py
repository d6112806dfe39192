"""structlog, configured once from the config's ``logging`` section.

The processor chain is explicit: context variables (the request id), level, timestamp,
redaction, then JSON (orjson) or a console renderer. Redaction is a processor, so no
call site has to remember it: any configured secret that appears anywhere in an event is
replaced, and values under key-like names are masked whatever they hold.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson
import structlog

from appliance.config import LoggingConfig

REDACTED = "[REDACTED]"
_SENSITIVE_KEYS = frozenset({"authorization", "api_key", "apikey", "key", "password", "token"})
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


SHORT_SECRET = 12  # characters; shorter secrets are matched as whole words only


class Redactor:
    """A processor that removes secrets from log events."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.secrets = [s for s in ordered if len(s) >= SHORT_SECRET]
        # A short secret ("adm") is also part of ordinary words ("readmitted"): it is
        # replaced where it stands alone, not inside a word (which would both mangle the
        # log and show which words hold it).
        short = [re.escape(s) for s in ordered if len(s) < SHORT_SECRET]
        self._short = (
            re.compile(rf"(?<![A-Za-z0-9_\-])(?:{'|'.join(short)})(?![A-Za-z0-9_\-])")
            if short
            else None
        )

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for name, value in event.items():
            event[name] = self._clean(name, value)
        return event

    def _clean(self, name: Any, value: Any) -> Any:
        if isinstance(name, str) and name.lower() in _SENSITIVE_KEYS and value is not None:
            return REDACTED
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            if self._short is not None:
                value = self._short.sub(REDACTED, value)
            return value
        if isinstance(value, dict):
            return {k: self._clean(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(None, v) for v in value]
        return value


class BoundOnce:
    """A logger for a hot path (the access line), bound once per logging configuration.

    ``structlog.get_logger`` returns a lazy proxy that builds a new logger on every call
    (loggers are not cached, so that a reload can reconfigure them); this one is rebuilt
    only when the configuration changed (a reload, or a test capturing logs).
    """

    def __init__(self, name: str) -> None:
        self._proxy = structlog.get_logger(name)
        self._seen: tuple[Any, Any, Any] | None = None
        self._logger: Any = None

    def get(self) -> Any:
        config = structlog.get_config()
        seen = (config["processors"], config["wrapper_class"], config["logger_factory"])
        if seen != self._seen:
            self._logger, self._seen = self._proxy.bind(), seen
        return self._logger


def processors(redactor: Redactor) -> list[Any]:
    """The shared part of the chain, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,
        redactor,
    ]


def configure_logging(config: LoggingConfig, secrets: Iterable[str]) -> None:
    """(Re)configure structlog for this process."""
    chain = processors(Redactor(secrets))
    if config.format == "json":
        chain.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        factory: Any = structlog.BytesLoggerFactory(sys.stdout.buffer)
    else:
        chain.append(structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty()))
        factory = structlog.PrintLoggerFactory(sys.stdout)
    structlog.configure(
        processors=chain,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[config.level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (Granian, aiohttp) share the level;
    # watchfiles would log every file event at info.
    logging.getLogger().setLevel(_LEVELS[config.level])
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


def stdlib_formatter(fmt: str = "json") -> logging.Formatter:
    """A formatter that renders standard-library records (Granian's) like our own."""
    renderer: Any
    chain: list[Any] = [
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(
            serializer=lambda obj, **_: orjson.dumps(obj).decode()
        )
        chain.append(structlog.processors.format_exc_info)  # a traceback as a string
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    return structlog.stdlib.ProcessorFormatter(processor=renderer, foreign_pre_chain=chain)


def granian_log_config(config: LoggingConfig) -> dict[str, Any]:
    """A ``logging.config`` dict that makes Granian's own lines match ours."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "appliance": {"()": f"{__name__}.stdlib_formatter", "fmt": config.format},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "appliance",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "_granian": {"handlers": ["console"], "propagate": False},
            "granian.access": {"handlers": ["console"], "propagate": False},
        },
        "root": {"handlers": ["console"], "level": config.level.upper()},
    }

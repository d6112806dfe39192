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
import time
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson
import structlog

from appliance.config import LoggingConfig

REDACTED = "[REDACTED]"
_SENSITIVE_KEYS = frozenset({"authorization", "api_key", "apikey", "key", "password", "token"})
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


SHORT_SECRET = 12  # characters; shorter secrets are matched as whole words only

# Field values that are never cleaned (unless under a key-like name), by exact type.
_PLAIN = frozenset({int, float, bool, type(None)})
# The redactor remembers this many names and cleaned strings, of at most _REMEMBERED_CHARS.
_REMEMBERED = 4096
_REMEMBERED_CHARS = 256


def _sensitive(name: Any) -> bool:
    """Whether values under the field ``name`` are masked whatever they hold."""
    return isinstance(name, str) and name.lower() in _SENSITIVE_KEYS


class Redactor:
    """A processor that removes secrets from log events.

    Most fields of most lines repeat (the access line's method, path, key, model, level,
    event name): what it made of a name or a short string is remembered, so that each
    is looked at once, not on every line.
    """

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
        self._names: dict[Any, bool] = {}  # name: whether its values are masked
        self._strings: dict[str, str] = {}  # string: it cleaned

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        names, strings = self._names, self._strings
        for name, value in event.items():
            masked = names.get(name)
            if masked is None:
                masked = self._masked(name)
            if masked:
                if value is not None:
                    event[name] = REDACTED
            elif type(value) is str:
                cleaned = strings.get(value)
                event[name] = self._remember(value) if cleaned is None else cleaned
            elif type(value) not in _PLAIN:
                event[name] = self._clean(name, value)
        return event

    def _masked(self, name: Any) -> bool:
        """Whether values under ``name`` are masked whatever they hold (remembered)."""
        masked = _sensitive(name)
        if len(self._names) >= _REMEMBERED:
            self._names.clear()
        self._names[name] = masked
        return masked

    def _remember(self, value: str) -> str:
        """:meth:`_scrub`, remembered for a short string."""
        cleaned = self._scrub(value)
        if len(value) <= _REMEMBERED_CHARS:
            if len(self._strings) >= _REMEMBERED:
                self._strings.clear()
            self._strings[value] = cleaned
        return cleaned

    def _scrub(self, value: str) -> str:
        """``value`` with every secret in it replaced."""
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        if self._short is not None:
            value = self._short.sub(REDACTED, value)
        return value

    def _clean(self, name: Any, value: Any) -> Any:
        if _sensitive(name) and value is not None:
            return REDACTED
        if isinstance(value, str):
            return self._scrub(value)
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

    :meth:`info` logs a line as ``get().info`` does; under the JSON configuration
    (:func:`configure_logging`) it runs the processors itself and writes their bytes,
    the same line without structlog's wrapping of each call.
    """

    def __init__(self, name: str) -> None:
        self._proxy = structlog.get_logger(name)
        self._seen: tuple[Any, Any, Any] | None = None
        self._logger: Any = None
        self._direct: tuple[list[Any], Any] | None = None  # the processors, the output

    def get(self) -> Any:
        config = structlog.get_config()
        # A tuple: structlog's capture_logs changes the processors list in place.
        seen = (tuple(config["processors"]), config["wrapper_class"], config["logger_factory"])
        if seen != self._seen:
            self._logger, self._seen = self._proxy.bind(), seen
            self._direct = _direct(config, self._logger)
        return self._logger

    def info(self, event: str, fields: dict[str, Any]) -> None:
        """``get().info(event, **fields)``; ``fields`` is the line's, not to be used again."""
        logger = self.get()
        direct = self._direct
        if direct is None:
            logger.info(event, **fields)
            return
        chain, output = direct
        line: Any = fields
        line["event"] = event
        try:
            for processor in chain:
                line = processor(output, "info", line)
        except structlog.DropEvent:
            return
        output.msg(line)


def _direct(config: dict[str, Any], logger: Any) -> tuple[list[Any], Any] | None:
    """The processors and the output of a JSON configuration that logs info lines (what
    :func:`configure_logging` makes of ``format: json``); None for any other."""
    chain, factory = config["processors"], config["logger_factory"]
    if not (
        isinstance(factory, structlog.BytesLoggerFactory)
        and chain
        and isinstance(chain[-1], structlog.processors.JSONRenderer)
        and getattr(logger, "is_enabled_for", lambda level: False)(logging.INFO)
    ):
        return None
    return list(chain), factory()


class UtcStamp:
    """A processor that adds the time as structlog's ``TimeStamper(fmt="iso", utc=True)``
    does (``2026-12-06T07:05:38.123456Z``; ``...:38Z`` on a whole second), with the date
    and the time of day formatted once a second rather than on every line."""

    def __init__(self, key: str = "ts") -> None:
        self.key = key
        self._second: tuple[int, str] = (-1, "")  # one attribute: threads may log too

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        known, text = self._second
        if known != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        event[self.key] = f"{text}.{micro:06d}Z" if micro else f"{text}Z"
        return event


def processors(redactor: Redactor) -> list[Any]:
    """The shared part of the chain, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        UtcStamp("ts"),
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

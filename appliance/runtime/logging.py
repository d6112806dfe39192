"""structlog, configured once from the config's ``logging`` section.

The processor chain is explicit: context variables (the request id), level, timestamp,
redaction (:mod:`appliance.runtime.redaction`), then JSON (orjson) or a console renderer.
Redaction is a processor, so no call site has to remember it: any configured secret that
appears anywhere in an event is replaced, and values under key-like names are masked
whatever they hold.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any

import orjson
import structlog
from structlog.contextvars import STRUCTLOG_KEY_PREFIX, merge_contextvars

try:  # structlog's own registry of the variables bind_contextvars made (private)
    from structlog.contextvars import _CONTEXT_VARS as _VARS

    _CONTEXT_VARS: dict[str, ContextVar[Any]] | None = _VARS
except ImportError:  # a structlog without it: its own merge does it all
    _CONTEXT_VARS = None

from appliance.config import LoggingConfig
from appliance.runtime.redaction import Redactor

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_PREFIX = len(STRUCTLOG_KEY_PREFIX)


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
        # The configuration seen: its processors (a copy: structlog's capture_logs
        # changes the list in place), wrapper class and logger factory.
        self._seen: tuple[list[Any], Any, Any] = ([None], None, None)
        self._logger: Any = None
        self._direct: tuple[list[Any], Any] | None = None  # the processors, the output

    def get(self) -> Any:
        config = structlog.get_config()
        chain, wrapper, factory = self._seen
        if (
            config["processors"] != chain
            or config["wrapper_class"] is not wrapper
            or config["logger_factory"] is not factory
        ):
            self._logger = self._proxy.bind()
            chain = list(config["processors"])
            self._seen = (chain, config["wrapper_class"], config["logger_factory"])
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
    and the time of day formatted once a second rather than on every line.

    :meth:`place` holds the field's place in the line (a line's fields keep the order they
    were added in), so that the time itself can be written after the redactor: a time we
    formatted holds no secret, and, new on every line, would only be scrubbed in vain.
    """

    def __init__(self, key: str = "ts") -> None:
        self.key = key
        self._second: tuple[int, str] = (-1, "")  # one attribute: threads may log too

    def place(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """A processor: the field, with no value yet (a caller's value is dropped)."""
        event[self.key] = None
        return event

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        micro = time.time_ns() // 1000
        second = micro // 1_000_000
        micro -= second * 1_000_000
        known, text = self._second
        if known != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        # str(1_000_000 + micro)[1:] is f"{micro:06d}", at half the cost.
        event[self.key] = f"{text}.{str(1_000_000 + micro)[1:]}Z" if micro else f"{text}Z"
        return event


class ContextMerge:
    """A processor that does what structlog's ``merge_contextvars`` does, cheaper.

    structlog's copies the whole context and looks at each of its variables (ours,
    OpenTelemetry's, asyncio's) on every line; this one asks only the variables that
    structlog's ``bind_contextvars`` made (structlog keeps them by name). Unbound ones
    (never set here, reset, or unbound: ``...``) are left out, and a field the line
    already has wins, as in structlog's. Where two or more are bound, their order in the
    line is the context's own: structlog's processor merges them. With a structlog that
    no longer keeps its variables by name there, structlog's processor does it all.
    """

    def __init__(self) -> None:
        self._vars: tuple[tuple[str, ContextVar[Any]], ...] = ()  # (field, variable)

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if _CONTEXT_VARS is None:
            return merge_contextvars(logger, method, event)
        known = self._vars
        if len(known) != len(_CONTEXT_VARS):  # structlog only ever adds to it
            # list(): one step under the GIL, while another thread may bind a new name.
            known = self._vars = tuple(
                (name[_PREFIX:], var) for name, var in list(_CONTEXT_VARS.items())
            )
        field: str | None = None
        found: Any = None
        for name, var in known:
            value = var.get(Ellipsis)
            if value is not Ellipsis:
                if field is not None:
                    return merge_contextvars(logger, method, event)
                field, found = name, value
        if field is not None and field not in event:
            event[field] = found
        return event


def _format_exc_info(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog's ``format_exc_info``, called only for a line that has an ``exc_info``."""
    if "exc_info" in event:
        return structlog.processors.format_exc_info(logger, method, event)
    return event


def processors(redactor: Redactor) -> list[Any]:
    """The shared part of the chain, before rendering: the time is written last, after
    the redactor, in the place it was given before it (:class:`UtcStamp`)."""
    stamp = UtcStamp("ts")
    return [
        ContextMerge(),
        structlog.processors.add_log_level,
        stamp.place,
        _format_exc_info,
        redactor,
        stamp,
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


def route_stdlib(config: LoggingConfig) -> None:
    """Send the standard library's records (aiohttp's, in a model's worker process) to
    stdout as lines like ours, instead of Python's last resort (plain text on stderr,
    tracebacks over many lines). The server's own are routed by Granian's log config."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(stdlib_formatter(config.format))
    logging.getLogger().handlers[:] = [handler]


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

"""Logging: configured once, by the CLI; every other module only gets a logger.

On a terminal the output is readable key=value lines; otherwise one JSON object
per line. Any secret registered with :func:`register_secret` is replaced by
``**********`` wherever it appears in an event, as a last line of defence: no
message is built with a secret in the first place.

Stable event names (alert and grep on these):

- ``file.delivered``, ``file.duplicate``, ``file.quarantined``, ``file.retry_later``,
  ``file.skipped``: one summary event per source file
- ``route.summary``: one per route and run
- ``remote.connected``, ``remote.rename_fallback``
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import structlog

_SECRETS: set[str] = set()
MASK = "**********"


def register_secret(value: str) -> None:
    """Never let ``value`` reach a log line."""
    if len(value) >= 4:
        _SECRETS.add(value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _SECRETS:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask registered secrets in every value."""
    if not _SECRETS:
        return event
    return {k: _scrub(v) for k, v in event.items()}


def _said(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor for the console: only what was said (a key whose value is None
    says nothing; JSON lines keep every key, for scripts)."""
    return {k: v for k, v in event.items() if v is not None}


def local_timestamps(zone: str | None = None) -> Any:
    """structlog processor: ``timestamp`` in local time (or in the IANA ``zone``), to the
    second, with its offset: what a person at a console reads."""
    tz = ZoneInfo(zone) if zone else None

    def stamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        now = datetime.now(UTC)
        event["timestamp"] = (now.astimezone(tz) if tz else now.astimezone()).isoformat(
            timespec="seconds"
        )
        return event

    return stamp


def configure_logging(
    *,
    json: bool | None = None,
    level: str = "info",
    stream: TextIO | None = None,
    timezone: str | None = None,
) -> None:
    """Configure structlog for the whole process (the CLI calls it; again when a
    command's own options change it). JSON lines carry UTC times; the console shows local
    time, or ``timezone``'s."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    stamper: Any = (
        structlog.processors.TimeStamper(fmt="iso", utc=True)
        if json
        else local_timestamps(timezone)
    )
    # Libraries log through the standard library (APScheduler's missed runs, a traceback
    # in a job): rendered by the same renderer, so a JSON log stays JSON lines; both
    # write whole lines under one lock, so two events never share a line.
    handler = logging.StreamHandler(stream)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamper,
            structlog.processors.format_exc_info,
            redact,
            *([] if json else [_said]),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *_: _LineLogger(stream, handler),
        cache_logger_on_first_use=False,
    )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact,
                renderer,
            ],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                stamper,
                structlog.processors.format_exc_info,
            ],
        )
    )
    handler.addFilter(_routine)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    # paramiko logs a failed connection's traceback a line at a time (21 error lines for
    # one refused login); xchange says it once, as a remote error with its reason.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    # The journal's pool says each failed reconnect and each dropped connection while the
    # database is away; xchange says it once, as journal-unavailable with its reason.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    logging.captureWarnings(True)


class _LineLogger:
    """structlog's output: one whole line a write, under the standard library handler's
    lock (the same stream)."""

    def __init__(self, stream: TextIO, handler: logging.Handler) -> None:
        self.stream = stream
        self.handler = handler

    def msg(self, message: str) -> None:
        self.handler.acquire()
        try:
            self.stream.write(message + "\n")
            self.stream.flush()
        finally:
            self.handler.release()

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = msg


#: What libraries say at warning that needs nobody: a look skipped because the last one
#: is still running (a big file in hand) is how a daemon works, not a problem.
_ROUTINE = ("maximum number of running instances reached",)


def _routine(record: logging.LogRecord) -> bool:
    """A logging filter: False for a library's routine message (not written)."""
    if record.name.startswith("apscheduler"):
        text = record.getMessage()
        return not any(marker in text for marker in _ROUTINE)
    return True

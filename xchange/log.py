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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamper,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library (APScheduler's missed runs, a traceback
    # in a job): rendered by the same renderer, so a JSON log stays JSON lines.
    handler = logging.StreamHandler(stream)
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
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)

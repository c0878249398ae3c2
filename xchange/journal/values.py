"""Plain values the journal's ledgers keep and give, and how a time is kept as text: what
the interface (``base.py``) and the ledgers (``ledgers.py``) both speak of."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal


def sortable_time(when: datetime) -> str:
    """A time as text that sorts as the time does (UTC, milliseconds, fixed width): how
    both backends keep times as text (SQLite's columns, the ``meta`` table's values)."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class AlertWindow:
    """What the alert ledger says about one (route, cause)."""

    send: bool  #: send this alert now
    suppressed: int  #: alerts held back since the last one sent (for the digest)


@dataclass(frozen=True, slots=True)
class Observation:
    """What a poll saw of a file not taken yet, and why it is held."""

    path: str
    size: int
    mtime_ns: int
    first_seen: datetime
    changed_at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Waiting:
    """A delivered output its partner has not collected yet."""

    output_id: int
    file_id: int
    route: str
    source: str  #: the source file it came from
    endpoint: str
    path: str
    delivered_at: datetime


@dataclass(frozen=True, slots=True)
class FileTally:
    """What one delivered file held: its documents, the repeats stopped (documents left
    out as delivered already), and the control totals its source and outputs agreed on."""

    file_id: int
    route: str
    delivered_at: datetime
    documents: int | None  #: None: not counted (a copy route's bytes)
    repeats: int = 0
    totals: dict[str, Decimal] = field(default_factory=dict)


__all__ = ["AlertWindow", "FileTally", "Observation", "Waiting", "sortable_time"]

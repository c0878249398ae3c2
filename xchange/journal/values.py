"""Plain values the journal's ledgers keep and give, and how a time is kept as text: what
the interface (``base.py``) and the ledgers (``ledgers.py``) both speak of."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


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


@dataclass(frozen=True, slots=True)
class Action:
    """What an operator did (a command), who, when and why: on one file, or on none (a
    reload of the daemon, a prune of the journal)."""

    at: datetime
    #: The OS user who ran the command (``li``; ``li (sudo as xchange)`` through sudo).
    who: str
    #: The command: ``reprocess``, ``quarantine retry``, ``trust``, ``reload``, ...
    action: str
    file_id: int | None
    route: str | None
    #: Why, in the operator's words (``--reason``), or ``no reason given``.
    reason: str
    #: What else the command said it acted on (an endpoint, ``--force``, a count).
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """For JSON: every field, the time in ISO 8601."""
        return {
            "at": self.at.isoformat(),
            "who": self.who,
            "action": self.action,
            "file_id": self.file_id,
            "route": self.route,
            "reason": self.reason,
            "detail": self.detail,
        }


__all__ = ["Action", "AlertWindow", "FileTally", "Observation", "Waiting", "sortable_time"]

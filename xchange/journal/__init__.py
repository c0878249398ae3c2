"""The processed-file journal; SQLite is the embedded default backend."""

from __future__ import annotations

from xchange.config import JournalConfig
from xchange.journal.base import (
    DONE_STATES,
    AlertWindow,
    Claim,
    FileKey,
    FileRecord,
    Journal,
    Observation,
    OutputRecord,
    State,
    Step,
    Transition,
)


def open_journal(cfg: JournalConfig) -> Journal:
    """Open (and migrate) the journal a configuration names."""
    from xchange.journal.sqlite import SQLiteJournal

    return SQLiteJournal(cfg.path)


__all__ = [
    "DONE_STATES",
    "AlertWindow",
    "Claim",
    "FileKey",
    "FileRecord",
    "Journal",
    "Observation",
    "OutputRecord",
    "State",
    "Step",
    "Transition",
    "open_journal",
]

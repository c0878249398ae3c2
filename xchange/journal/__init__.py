"""The processed-file journal; SQLite is the embedded default backend."""

from __future__ import annotations

from xchange.config import JournalConfig
from xchange.journal.base import (
    AlertWindow,
    Claim,
    FileKey,
    FileRecord,
    Journal,
    Observation,
    OutputRecord,
    Step,
    Transition,
)
from xchange.journal.states import DONE_STATES, TRANSITIONS, State, check_transition


def open_journal(cfg: JournalConfig) -> Journal:
    """Open (and migrate) the journal a configuration names."""
    from xchange.journal.sqlite import SQLiteJournal

    return SQLiteJournal(cfg.path)


__all__ = [
    "DONE_STATES",
    "TRANSITIONS",
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
    "check_transition",
    "open_journal",
]

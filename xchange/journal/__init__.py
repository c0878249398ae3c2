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
    """Open (and migrate) the journal a configuration names: PostgreSQL when it gives a
    ``url``, else the SQLite file at ``path``."""
    if cfg.url is not None:
        from xchange.journal.postgres import PostgresJournal

        password = cfg.password.get_secret_value() if cfg.password is not None else None
        return PostgresJournal(cfg.url, password=password, lease=cfg.lease)
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

"""The processed-file journal; SQLite is the embedded default backend."""

from __future__ import annotations

from pathlib import Path

from xchange.config import JournalConfig
from xchange.errors import JournalError
from xchange.journal.base import (
    Claim,
    FileKey,
    FileRecord,
    Found,
    Journal,
    OutputRecord,
    Step,
    Transition,
)
from xchange.journal.ledgers import NO_REASON
from xchange.journal.states import DONE_STATES, TRANSITIONS, State, check_transition
from xchange.journal.values import Action, AlertWindow, FileTally, Observation, Waiting


def migrate_journal(source: Path, url: str, *, password: str | None) -> dict[str, int]:
    """Copy the SQLite journal at ``source`` into the (empty) PostgreSQL database at
    ``url``: every record, output, transition, business key, alert window and the
    journal's id (so that deliveries cut short are still recognised). Returns the rows
    copied per table."""
    from xchange.journal.postgres import PostgresJournal
    from xchange.journal.sqlite import SQLiteJournal

    if not source.is_file():
        raise JournalError(f"journal {source}: no such file")
    old = SQLiteJournal(source)
    try:
        new = PostgresJournal(url, password=password)
        try:
            return new.load(old.export())
        finally:
            new.close()
    finally:
        old.close()


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
    "NO_REASON",
    "TRANSITIONS",
    "Action",
    "AlertWindow",
    "Claim",
    "FileKey",
    "FileRecord",
    "FileTally",
    "Found",
    "Journal",
    "Observation",
    "OutputRecord",
    "State",
    "Step",
    "Transition",
    "Waiting",
    "check_transition",
    "migrate_journal",
    "open_journal",
]

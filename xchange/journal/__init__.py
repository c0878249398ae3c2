"""The processed-file journal; SQLite is the embedded default backend."""

from __future__ import annotations

from xchange.config import JournalConfig
from xchange.journal.base import Claim, FileKey, FileRecord, Journal, OutputRecord, State


def open_journal(cfg: JournalConfig) -> Journal:
    """Open (and migrate) the journal a configuration names."""
    from xchange.journal.sqlite import SQLiteJournal

    return SQLiteJournal(cfg.path)


__all__ = ["Claim", "FileKey", "FileRecord", "Journal", "OutputRecord", "State", "open_journal"]

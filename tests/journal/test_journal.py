"""The SQLite journal: claims, migrations, retention, business keys, the alert ledger."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from xchange.journal import FileKey, State
from xchange.journal.sqlite import MIGRATIONS, SQLiteJournal

T0 = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)


def key(sha: str = "a" * 64, path: str = "orders_1.csv", route: str = "r") -> FileKey:
    return FileKey(route, "drop", path, 10, 123, sha)


def test_a_journal_from_an_older_version_is_migrated_in_place(tmp_path: Path) -> None:
    """A database with only the first migration gains the later ones and keeps its rows."""
    path = tmp_path / "j.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    for statement in MIGRATIONS[0][1].split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (MIGRATIONS[0][0],))
    db.execute(
        "INSERT INTO files (route, endpoint, path, size, mtime_ns, sha256, state, attempts, "
        "created_at, updated_at) VALUES ('r','e','p',1,1,'s','delivered',1,?,?)",
        (T0.isoformat(), T0.isoformat()),
    )
    db.commit()
    db.close()
    journal = SQLiteJournal(path)
    (record,) = journal.query()
    assert record.state == State.DELIVERED and record.archive_path is None
    applied = [r[0] for r in sqlite3.connect(path).execute("SELECT name FROM schema_migrations")]
    assert applied == [name for name, _ in MIGRATIONS]


def test_journal_file_is_owner_only(tmp_path: Path) -> None:
    """The database file is created with mode 0600."""
    SQLiteJournal(tmp_path / "j.sqlite")
    assert (tmp_path / "j.sqlite").stat().st_mode & 0o777 == 0o600

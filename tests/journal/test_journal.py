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


def test_find_reads_by_an_index_never_a_whole_table(tmp_path: Path) -> None:
    """Each look-up of `find` (a key, a name, a pattern with a fixed start, a checksum;
    with a route or not) is a search of an index, never a scan of files, outputs or keys:
    what SQLite plans for each statement find runs."""
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    for term, route in (
        ("EC20261121001", None),
        ("EC20261121001", "r"),
        ("orders_20261121.csv", None),
        ("orders_2026*.csv", "r"),
        ("abcdef0123", None),
        ("ABCDEF0123", "r"),
    ):
        journal.find(term, route=route)
    journal._db.set_trace_callback(None)
    plans = {
        sql: [row[3] for row in journal._db.execute(f"EXPLAIN QUERY PLAN {sql}")]
        for sql in statements
        if sql.startswith("SELECT") and "FROM actions" not in sql
    }
    assert len(plans) >= 16
    for sql, plan in plans.items():
        assert not [step for step in plan if step.startswith("SCAN")], (sql, plan)
        assert any("USING" in step and "INDEX" in step for step in plan), (sql, plan)
    journal.close()

"""The SQLite journal: claims, migrations, retention, business keys, the alert ledger."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from xchange.journal import FileKey, OutputRecord, State
from xchange.journal.sqlite import MIGRATIONS, SQLiteJournal

T0 = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)


def key(sha: str = "a" * 64, path: str = "orders_1.csv", route: str = "r") -> FileKey:
    return FileKey(route, "drop", path, 10, 123, sha)


def test_same_content_on_a_route_is_one_record_and_is_delivered_once(tmp_path: Path) -> None:
    """A second claim of delivered content says so; a changed file is a new record."""
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    first = journal.claim(key(), layout_version="l", mapping_version="m")
    assert not first.already_delivered and first.record.attempts == 1
    journal.transition(first.record.id, State.DELIVERED)
    again = journal.claim(key(path="renamed.csv"), layout_version="l", mapping_version="m")
    assert again.already_delivered and again.record.id == first.record.id
    changed = journal.claim(key(sha="b" * 64), layout_version="l", mapping_version="m")
    assert not changed.already_delivered and changed.record.id != first.record.id
    other_route = journal.claim(key(route="r2"), layout_version="l", mapping_version="m")
    assert not other_route.already_delivered


def test_every_transition_is_kept_in_order(tmp_path: Path) -> None:
    """The history lists each state change with its note."""
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    rec = journal.claim(key(), layout_version="l", mapping_version="m").record
    journal.transition(rec.id, State.DELIVERING, note="a.xml")
    journal.transition(rec.id, State.DELIVERED)
    journal.transition(rec.id, State.ARCHIVED, archive_path="archive/x.csv")
    assert [(h.from_state, h.to_state) for h in journal.history(rec.id)] == [
        (None, "processing"),
        ("processing", "delivering"),
        ("delivering", "delivered"),
        ("delivered", "archived"),
    ]
    assert journal.get(rec.id).archive_path == "archive/x.csv"  # type: ignore[union-attr]


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


def test_prune_forgets_old_delivered_records_but_keeps_quarantine(tmp_path: Path) -> None:
    """Retention removes delivered history only; quarantined files stay for an operator."""
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    done = journal.claim(key(), layout_version="l", mapping_version="m").record
    journal.record_output(done.id, OutputRecord("t", "a.xml", 1, "x", T0))
    journal.transition(done.id, State.DELIVERED)
    bad = journal.claim(key(sha="c" * 64), layout_version="l", mapping_version="m").record
    journal.transition(bad.id, State.QUARANTINED, error=("validation", "bad"))
    assert journal.prune(datetime.now(UTC) - timedelta(days=1)) == 0
    assert journal.prune(datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert [r.id for r in journal.query()] == [bad.id]


def test_business_keys_of_other_files_are_reported(tmp_path: Path) -> None:
    """Keys delivered by one file are found for another, never for the file itself."""
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    one = journal.claim(key(), layout_version="l", mapping_version="m").record.id
    two = journal.claim(key(sha="d" * 64), layout_version="l", mapping_version="m").record.id
    journal.record_keys("r", one, ["EC1", "EC2"])
    assert journal.delivered_keys("r", ["EC1", "EC3"], except_file=two) == {"EC1": one}
    assert journal.delivered_keys("r", ["EC1"], except_file=one) == {}
    assert journal.delivered_keys("other", ["EC1"], except_file=two) == {}


def test_alert_ledger_sends_once_per_window_then_a_digest(tmp_path: Path) -> None:
    """Within a window one alert per route and cause is sent; held ones go in one digest."""
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    first = journal.alert_window("r", "network", window_s=600, now=T0)
    assert first.send
    for minutes in (1, 2, 3):
        held = journal.alert_window(
            "r", "network", window_s=600, now=T0 + timedelta(minutes=minutes)
        )
        assert not held.send
    assert journal.alert_window("r", "validation", window_s=600, now=T0).send
    assert journal.due_digests(window_s=600, now=T0 + timedelta(minutes=5)) == []
    assert journal.due_digests(window_s=600, now=T0 + timedelta(minutes=10)) == [
        ("r", "network", 3)
    ]
    assert journal.due_digests(window_s=600, now=T0 + timedelta(minutes=30)) == []
    assert sorted(journal.resolve_alerts("r")) == ["network", "validation"]
    assert journal.resolve_alerts("r") == []


def test_journal_file_is_owner_only(tmp_path: Path) -> None:
    """The database file is created with mode 0600."""
    SQLiteJournal(tmp_path / "j.sqlite")
    assert (tmp_path / "j.sqlite").stat().st_mode & 0o777 == 0o600


def test_reconsider_finds_the_quarantined_files_that_may_heal(tmp_path: Path) -> None:
    """Judged by other versions, given up on a transient cause long enough ago, or cut
    short while being taken again: found (oldest first, bounded); judged by the versions
    in use, recently given up, delivered, dropped or without a kept copy: not."""
    journal = SQLiteJournal(tmp_path / "j.sqlite")

    def quarantined(sha: str, kind: str, mapping: str = "m", copy: bool = True) -> int:
        rec = journal.claim(key(sha=sha * 64), layout_version="l", mapping_version=mapping)
        journal.transition(
            rec.record.id,
            State.QUARANTINED,
            error=(kind, "why"),
            quarantine_path=f"/q/{sha}" if copy else None,
        )
        return rec.record.id

    other_version = quarantined("a", "validation", mapping="old")
    same_version = quarantined("b", "validation")
    transient = quarantined("c", "connection")
    no_copy = quarantined("d", "validation", mapping="old", copy=False)
    cut_short = quarantined("e", "validation")
    journal.transition(cut_short, State.DELIVERING)
    healed = quarantined("f", "validation", mapping="old")
    journal.transition(healed, State.DELIVERED)
    dropped = quarantined("g", "validation", mapping="old")
    journal.transition(dropped, State.DROPPED)
    assert {same_version, no_copy, healed, dropped}.isdisjoint({other_version, transient})

    def found(before: datetime, limit: int = 100) -> list[int]:
        return [
            r.id
            for r in journal.reconsider(
                "r",
                layout_version="l",
                mapping_version="m",
                transient={"connection"},
                transient_before=before,
                limit=limit,
            )
        ]

    now = datetime.now(UTC)
    assert found(now + timedelta(seconds=1)) == [other_version, transient, cut_short]
    assert found(now - timedelta(hours=1)) == [other_version, cut_short]  # given up just now
    assert found(now + timedelta(seconds=1), limit=2) == [other_version, transient]
    assert (
        journal.reconsider(
            "other-route",
            layout_version="l",
            mapping_version="m",
            transient={"connection"},
            transient_before=now,
            limit=10,
        )
        == []
    )

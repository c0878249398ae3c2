"""The embedded journal backend: one SQLite file in WAL mode, readable by its owner only."""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xchange.errors import JournalError
from xchange.journal.sql import HEALABLE, SqlJournal
from xchange.journal.values import sortable_time
from xchange.lock import pid_alive
from xchange.private import private_folder

#: Records with a kept quarantine copy that are not settled (the partial index's condition,
#: repeated word for word in the query so that SQLite uses the index).
#: Named, ordered schema migrations. Append only; never edit one that has shipped.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_files_outputs_transitions",
        """
        CREATE TABLE files (
            id INTEGER PRIMARY KEY,
            route TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            layout_version TEXT,
            mapping_version TEXT,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_retry_at TEXT,
            error_kind TEXT,
            error_message TEXT,
            quarantine_path TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE UNIQUE INDEX files_route_content ON files(route, sha256);
        CREATE INDEX files_route_path ON files(route, endpoint, path, size, mtime_ns);
        CREATE INDEX files_state ON files(state, updated_at);
        CREATE TABLE outputs (
            id INTEGER PRIMARY KEY,
            file_id INTEGER NOT NULL REFERENCES files(id),
            endpoint TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            delivered_at TEXT NOT NULL
        );
        CREATE INDEX outputs_file ON outputs(file_id);
        CREATE TABLE transitions (
            id INTEGER PRIMARY KEY,
            file_id INTEGER NOT NULL REFERENCES files(id),
            at TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            note TEXT
        );
        CREATE INDEX transitions_file ON transitions(file_id);
        """,
    ),
    (
        "0002_files_source_encoding",
        """
        ALTER TABLE files ADD COLUMN source_encoding TEXT;
        """,
    ),
    (
        "0003_archive_keys_alerts",
        """
        ALTER TABLE files ADD COLUMN archive_path TEXT;
        CREATE TABLE business_keys (
            route TEXT NOT NULL,
            key TEXT NOT NULL,
            file_id INTEGER NOT NULL REFERENCES files(id),
            recorded_at TEXT NOT NULL,
            PRIMARY KEY (route, key)
        );
        CREATE TABLE alerts (
            route TEXT NOT NULL,
            cause TEXT NOT NULL,
            sent_at TEXT NOT NULL,
            held INTEGER NOT NULL DEFAULT 0,
            open INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (route, cause)
        );
        """,
    ),
    (
        "0004_observations",
        """
        CREATE TABLE observations (
            route TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            first_seen TEXT NOT NULL,
            changed_at TEXT NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (route, path)
        );
        """,
    ),
    (
        "0005_meta_sessions",
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            opened_at TEXT NOT NULL
        );
        """,
    ),
    (
        "0006_heal_index",
        # The files a route's look may heal, found without reading its whole history.
        f"""
        CREATE INDEX files_heal ON files(route, id) WHERE {HEALABLE};
        """,
    ),
    (
        "0007_claims",
        # Shared journals' claims (owner, lease); one daemon's SQLite journal keeps them
        # empty, so that both backends have the same tables.
        """
        ALTER TABLE files ADD COLUMN owner TEXT;
        ALTER TABLE files ADD COLUMN lease_until TEXT;
        """,
    ),
    (
        "0008_slots",
        # Scheduled runs taken by a daemon of a shared journal (empty here).
        """
        CREATE TABLE slots (
            route TEXT NOT NULL,
            slot TEXT NOT NULL,
            owner TEXT NOT NULL,
            taken_at TEXT NOT NULL,
            PRIMARY KEY (route, slot)
        );
        """,
    ),
    (
        "0009_deadlines",
        """
        CREATE TABLE deadlines (
            route TEXT NOT NULL,
            day TEXT NOT NULL,
            missed_at TEXT NOT NULL,
            met_at TEXT,
            PRIMARY KEY (route, day)
        );
        """,
    ),
    (
        "0010_pickups",
        # Outputs of targets whose partner collects them: waiting, collected (when), or
        # replaced by a later delivery under the same name before anyone collected it.
        """
        ALTER TABLE outputs ADD COLUMN pickup TEXT;
        ALTER TABLE outputs ADD COLUMN picked_up_at TEXT;
        CREATE INDEX outputs_waiting ON outputs(endpoint, path) WHERE pickup = 'waiting';
        """,
    ),
    (
        "0011_tallies",
        # What each delivered file held: documents, repeats stopped, the control totals
        # agreed (JSON: name -> exact decimal as text), for the report per route and day.
        """
        CREATE TABLE tallies (
            file_id INTEGER PRIMARY KEY REFERENCES files(id),
            route TEXT NOT NULL,
            delivered_at TEXT NOT NULL,
            documents INTEGER,
            repeats INTEGER NOT NULL DEFAULT 0,
            totals TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX tallies_route_time ON tallies(route, delivered_at);
        """,
    ),
    (
        "0012_actions",
        # Who acted on which file, when and why (operator commands); and the look-ups of
        # `xchange find` by output name, by checksum and by business key alone.
        """
        CREATE TABLE actions (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            who TEXT NOT NULL,
            action TEXT NOT NULL,
            file_id INTEGER,
            route TEXT,
            reason TEXT NOT NULL,
            detail TEXT
        );
        CREATE INDEX actions_file ON actions(file_id) WHERE file_id IS NOT NULL;
        CREATE INDEX actions_at ON actions(at);
        CREATE INDEX files_path ON files(path);
        CREATE INDEX files_sha256 ON files(sha256);
        CREATE INDEX outputs_path ON outputs(path);
        CREATE INDEX outputs_sha256 ON outputs(sha256);
        CREATE INDEX business_keys_key ON business_keys(key);
        """,
    ),
    (
        "0013_key_files",
        # Every file that carried a business key, and what became of it there: delivered
        # (the first time, or again on purpose) or left out as a repeat; for `find`.
        """
        CREATE TABLE key_files (
            route TEXT NOT NULL,
            key TEXT NOT NULL,
            file_id INTEGER NOT NULL,
            what TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (route, key, file_id, what)
        );
        CREATE INDEX key_files_key ON key_files(key);
        CREATE INDEX key_files_file ON key_files(file_id);
        INSERT INTO key_files (route, key, file_id, what, at)
            SELECT route, key, file_id, 'delivered', recorded_at FROM business_keys;
        """,
    ),
    (
        "0014_held_index",
        # The shared journal's index of the files each daemon has in hand; one daemon's
        # SQLite journal holds no leases (its files have no owner): nothing to do.
        "",
    ),
]

#: Seconds between checkpoints of the write-ahead log into the main file, so that a copy
#: of the main file alone (a backup that missed the -wal file) is never far behind.
CHECKPOINT_EVERY = 30.0


def _alive(host: str, pid: int) -> bool:
    """Whether a session's process may still run (another host: assumed so)."""
    return host != socket.gethostname() or pid_alive(pid)


def _damaged(path: Path, what: str) -> str:
    return (
        f"journal {path} {what}. Starting afresh would send every file again, so xchange "
        "refuses. Restore the journal from a backup (with its -wal file), or, to accept a "
        "new empty journal on purpose, run `xchange journal init --fresh` (the damaged "
        "file is kept beside it)."
    )


_iso = sortable_time


def _now() -> str:
    return _iso(datetime.now(UTC))


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class _Database:
    """The SQLite journal as the ledgers' database (``ledgers.Database``): its write
    transaction holds the whole file, times are sortable text."""

    shared = False
    owner = None
    lock_rows = ""
    lock_free_row = ""
    distinct = "IS NOT"

    def __init__(self, journal: SQLiteJournal) -> None:
        self._journal = journal

    def write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._journal._tx()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._journal._read():
            yield self._journal._db

    @staticmethod
    def sql(text: str) -> str:
        return text

    @staticmethod
    def many(db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        db.executemany(sql, rows)

    @staticmethod
    def glob(pattern: str, column: str = "path") -> tuple[str, str]:
        # Only * and ? are wildcards (as on PostgreSQL): GLOB's [ ] sets match themselves.
        return f"{column} GLOB ?", pattern.replace("[", "[[]")

    @staticmethod
    def stamp(when: datetime) -> str:
        return _iso(when)

    @staticmethod
    def when(value: str) -> datetime:
        return datetime.fromisoformat(value)

    @staticmethod
    def serialize(db: sqlite3.Connection, name: str) -> None:
        pass  # (the write transaction holds the whole journal)


class SQLiteJournal(SqlJournal):
    """The SQLite journal. Safe to share between threads (one connection, one lock); one
    daemon per journal (a PostgreSQL journal is shared by several)."""

    @property
    def where(self) -> str:
        return str(self.path)

    def __init__(self, path: Path) -> None:
        self.path = path
        wal = Path(f"{path}-wal")
        try:
            existed = path.exists()
            wal_existed = wal.exists()
            if existed and path.stat().st_size == 0:
                raise JournalError(_damaged(path, "is an empty file (0 bytes)"))
            private_folder(path.parent)
            if not existed:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=30
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        except JournalError:
            raise
        except (OSError, sqlite3.Error) as exc:
            hint = " (is its disk full, or read-only?)" if "disk" in str(exc) else ""
            raise JournalError(f"journal {path}: cannot open: {exc}{hint}") from None
        if existed and "schema_migrations" not in tables:
            self._db.close()
            raise JournalError(
                _damaged(
                    path,
                    "holds no journal tables"
                    + ("" if wal_existed else f" and has no {wal.name} beside it"),
                )
            )
        self._lock = threading.RLock()
        #: Open ``batch()`` blocks of the thread holding the lock (no other thread can
        #: see it above zero: the lock is held for the whole block).
        self._batch_depth = 0
        self._last_checkpoint = time.monotonic()
        self._migrate()
        self.session = secrets.token_hex(8)
        self._shut = False
        super().__init__(_Database(self))
        try:
            self._open_session(wal_existed)
        except JournalError:
            self._db.close()  # (which removes the -wal file this open made: refused again)
            raise

    @contextmanager
    def batch(self) -> Iterator[None]:
        with self._tx():
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1

    @contextmanager
    def _read(self) -> Iterator[None]:
        """The connection's lock for a read; a database error is a ``JournalError``."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise JournalError(f"journal {self.path}: {exc}") from None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._batch_depth:
                # Part of the enclosing batch: committed (or rolled back) with it.
                yield self._db
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                if time.monotonic() - self._last_checkpoint >= CHECKPOINT_EVERY:
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    self._last_checkpoint = time.monotonic()
            except sqlite3.Error as exc:
                raise JournalError(f"journal {self.path}: {exc}") from None

    def _migrate(self) -> None:
        with self._tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            done = {r[0] for r in db.execute("SELECT name FROM schema_migrations")}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, _now()))

    # ------------------------------------------------------------------ interface

    def confirm(self, file_id: int) -> None:
        return None  # one daemon (the run lock says so): its files are its own

    def take(self, file_id: int) -> bool:
        return True  # one daemon per SQLite journal

    def _open_session(self, wal_existed: bool) -> None:
        """Refuse a journal whose last session ended uncleanly and whose write-ahead log is
        gone (its newest records would be lost: every file they cover would be sent
        again); then note this session, checkpointed into the main file at once."""
        with self._tx() as db:
            unclean = [
                row
                for row in db.execute("SELECT host, pid, opened_at FROM sessions")
                if not _alive(row["host"], row["pid"])
            ]
            if unclean and not wal_existed:
                row = unclean[0]
                raise JournalError(
                    _damaged(
                        self.path,
                        f"was not closed cleanly (process {row['pid']} on {row['host']}, "
                        f"opened {row['opened_at']}) and its write-ahead log "
                        f"{self.path.name}-wal is missing: its newest records may be lost",
                    )
                )
            if unclean:
                db.executemany(
                    "DELETE FROM sessions WHERE host=? AND pid=?",
                    [(r["host"], r["pid"]) for r in unclean],
                )
            db.execute(
                "INSERT INTO sessions VALUES (?,?,?,?)",
                (self.session, socket.gethostname(), os.getpid(), _now()),
            )
            if db.execute("SELECT 1 FROM meta WHERE key='journal_id'").fetchone() is None:
                db.execute("INSERT INTO meta VALUES ('journal_id', ?)", (secrets.token_hex(8),))
        self.checkpoint(force=True)

    @property
    def journal_id(self) -> str:
        """This journal's own id (temporary names of its deliveries carry it)."""
        with self._read():
            row = self._db.execute("SELECT value FROM meta WHERE key='journal_id'").fetchone()
            return str(row[0])

    def checkpoint(self, *, force: bool = False) -> None:
        """Copy the write-ahead log into the main file (every ``CHECKPOINT_EVERY`` s)."""
        if not force and time.monotonic() - self._last_checkpoint < CHECKPOINT_EVERY:
            return
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                raise JournalError(f"journal {self.path}: checkpoint: {exc}") from None
            self._last_checkpoint = time.monotonic()

    def check(self) -> list[str]:
        """What is wrong with the journal's file (empty: nothing)."""
        with self._read():
            result = [r[0] for r in self._db.execute("PRAGMA integrity_check")]
        return [] if result == ["ok"] else result

    def backup(self, dest: Path) -> None:
        """A consistent copy of the whole journal (WAL included) in ``dest``, owner-only."""
        if dest.exists():
            raise JournalError(f"{dest} exists already; name a new file")
        os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        with self._lock:
            copy = sqlite3.connect(dest)
            try:
                self._db.backup(copy)
            except sqlite3.Error as exc:
                raise JournalError(f"journal backup to {dest}: {exc}") from None
            finally:
                copy.close()

    def close(self) -> None:
        with self._lock:
            if self._shut:
                return  # (closed already: a command that fails closes it on its way out)
            self._shut = True
            try:
                self._db.execute("DELETE FROM sessions WHERE id=?", (self.session,))
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # closed uncleanly: the next open tells
            self._db.close()

    def export(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """Every table a journal's history lives in, as rows (times as datetimes), for
        ``migrate_journal``: files, outputs, transitions, business keys, alerts,
        observations, deadlines, operators' actions, what each delivered file held, and
        the journal's id (pickups are in the outputs)."""
        times = {
            "files": ("next_retry_at", "created_at", "updated_at", "lease_until"),
            "outputs": ("delivered_at", "picked_up_at"),
            "transitions": ("at",),
            "business_keys": ("recorded_at",),
            "key_files": ("at",),
            "tallies": ("delivered_at",),
            "alerts": ("sent_at",),
            "observations": ("first_seen", "changed_at"),
            "deadlines": ("missed_at", "met_at"),
            "actions": ("at",),
            "meta": (),
        }
        for table, columns in times.items():
            with self._read():
                rows = [dict(r) for r in self._db.execute(f"SELECT * FROM {table}")]  # noqa: S608
            for row in rows:
                for column in columns:
                    row[column] = _when(row[column])
            yield table, rows

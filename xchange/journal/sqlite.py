"""The embedded journal backend: one SQLite file in WAL mode, readable by its owner only."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xchange.errors import JournalError
from xchange.journal.base import (
    DONE_STATES,
    Claim,
    FileKey,
    FileRecord,
    OutputRecord,
    State,
)

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
]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class SQLiteJournal:
    """The SQLite journal. Safe to share between threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=30
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"journal {path}: cannot open: {exc}") from None
        self._lock = threading.RLock()
        self._migrate()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
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

    def seen(self, route: str, endpoint: str, path: str, size: int, mtime_ns: int) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM files WHERE route=? AND endpoint=? AND path=? AND size=? "
                "AND mtime_ns=? AND state IN (?, ?, ?) LIMIT 1",
                (route, endpoint, path, size, mtime_ns, *sorted(DONE_STATES)),
            ).fetchone()
        return row is not None

    def claim(self, key: FileKey, *, layout_version: str, mapping_version: str) -> Claim:
        now = _now()
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM files WHERE route=? AND sha256=?", (key.route, key.sha256)
            ).fetchone()
            if row is not None and State(row["state"]) in DONE_STATES:
                return Claim(self._record(db, row), already_delivered=True)
            if row is None:
                cur = db.execute(
                    "INSERT INTO files (route, endpoint, path, size, mtime_ns, sha256, "
                    "layout_version, mapping_version, state, attempts, created_at, updated_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,1,?,?)",
                    (
                        key.route,
                        key.endpoint,
                        key.path,
                        key.size,
                        key.mtime_ns,
                        key.sha256,
                        layout_version,
                        mapping_version,
                        str(State.PROCESSING),
                        now,
                        now,
                    ),
                )
                file_id = int(cur.lastrowid or 0)
                previous = None
            else:
                file_id, previous = row["id"], row["state"]
                db.execute(
                    "UPDATE files SET endpoint=?, path=?, size=?, mtime_ns=?, layout_version=?, "
                    "mapping_version=?, state=?, attempts=attempts+1, updated_at=? WHERE id=?",
                    (
                        key.endpoint,
                        key.path,
                        key.size,
                        key.mtime_ns,
                        layout_version,
                        mapping_version,
                        str(State.PROCESSING),
                        now,
                        file_id,
                    ),
                )
            db.execute(
                "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
                "VALUES (?,?,?,?,?)",
                (file_id, now, previous, str(State.PROCESSING), key.path),
            )
            new_row = db.execute("SELECT * FROM files WHERE id=?", (file_id,)).fetchone()
            return Claim(self._record(db, new_row), already_delivered=False)

    def transition(
        self,
        file_id: int,
        state: State,
        *,
        error: tuple[str, str] | None = None,
        quarantine_path: str | None = None,
        note: str | None = None,
        encoding: str | None = None,
    ) -> None:
        now = _now()
        with self._tx() as db:
            row = db.execute("SELECT state FROM files WHERE id=?", (file_id,)).fetchone()
            if row is None:
                raise JournalError(f"journal {self.path}: no file with id {file_id}")
            sets = ["state=?", "updated_at=?"]
            args: list[Any] = [str(state), now]
            if error is not None:
                sets += ["error_kind=?", "error_message=?"]
                args += list(error)
            elif state in DONE_STATES:
                sets += ["error_kind=NULL", "error_message=NULL"]
            if quarantine_path is not None:
                sets.append("quarantine_path=?")
                args.append(quarantine_path)
            if encoding is not None:
                sets.append("source_encoding=?")
                args.append(encoding)
            # Column names come from the fixed list above; every value is bound.
            db.execute(f"UPDATE files SET {', '.join(sets)} WHERE id=?", (*args, file_id))  # noqa: S608
            db.execute(
                "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
                "VALUES (?,?,?,?,?)",
                (file_id, now, row["state"], str(state), note or (error[1] if error else None)),
            )

    def record_output(self, file_id: int, output: OutputRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO outputs (file_id, endpoint, path, size, sha256, delivered_at) "
                "VALUES (?,?,?,?,?,?)",
                (
                    file_id,
                    output.endpoint,
                    output.path,
                    output.size,
                    output.sha256,
                    output.delivered_at.isoformat(timespec="milliseconds"),
                ),
            )

    def get(self, file_id: int) -> FileRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM files WHERE id=?", (file_id,)).fetchone()
            return None if row is None else self._record(self._db, row)

    def query(
        self,
        *,
        route: str | None = None,
        state: State | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[FileRecord]:
        where, args = [], []
        if route is not None:
            where.append("route=?")
            args.append(route)
        if state is not None:
            where.append("state=?")
            args.append(str(state))
        if since is not None:
            where.append("updated_at>=?")
            args.append(since.astimezone(UTC).isoformat(timespec="milliseconds"))
        # Conditions are fixed fragments with placeholders; every value is bound.
        sql = "SELECT * FROM files" + (f" WHERE {' AND '.join(where)}" if where else "")  # noqa: S608
        sql += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
            return [self._record(self._db, r) for r in rows]

    def transitions(self, file_id: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT at, from_state, to_state, note FROM transitions WHERE file_id=? "
                "ORDER BY id",
                (file_id,),
            ).fetchall()
        return [dict(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ rows

    @staticmethod
    def _record(db: sqlite3.Connection, row: sqlite3.Row) -> FileRecord:
        outputs = [
            OutputRecord(
                o["endpoint"],
                o["path"],
                o["size"],
                o["sha256"],
                datetime.fromisoformat(o["delivered_at"]),
            )
            for o in db.execute("SELECT * FROM outputs WHERE file_id=? ORDER BY id", (row["id"],))
        ]
        return FileRecord(
            id=row["id"],
            route=row["route"],
            endpoint=row["endpoint"],
            path=row["path"],
            size=row["size"],
            mtime_ns=row["mtime_ns"],
            sha256=row["sha256"],
            state=State(row["state"]),
            attempts=row["attempts"],
            error_kind=row["error_kind"],
            error_message=row["error_message"],
            quarantine_path=row["quarantine_path"],
            layout_version=row["layout_version"],
            mapping_version=row["mapping_version"],
            source_encoding=row["source_encoding"],
            created_at=datetime.fromisoformat(row["created_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]),
            outputs=outputs,
        )

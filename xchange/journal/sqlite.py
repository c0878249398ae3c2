"""The embedded journal backend: one SQLite file in WAL mode, readable by its owner only."""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xchange.errors import JournalError
from xchange.journal.base import (
    Claim,
    FileKey,
    FileRecord,
    OutputRecord,
    Step,
    Transition,
    record_from_row,
    sortable_time,
)
from xchange.journal.ledgers import Alerts, BusinessKeys, Deadlines, Observations, Slots
from xchange.journal.states import DONE_STATES, State, check_transition
from xchange.lock import pid_alive
from xchange.private import private_folder

#: Records with a kept quarantine copy that are not settled (the partial index's condition,
#: repeated word for word in the query so that SQLite uses the index).
_HEALABLE = (
    "quarantine_path IS NOT NULL AND "
    "state IN ('quarantined', 'processing', 'delivering', 'retrying')"
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
        CREATE INDEX files_heal ON files(route, id) WHERE {_HEALABLE};
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


def _output(row: sqlite3.Row) -> OutputRecord:
    return OutputRecord(
        row["endpoint"],
        row["path"],
        row["size"],
        row["sha256"],
        datetime.fromisoformat(row["delivered_at"]),
    )


def _by_content(db: sqlite3.Connection, keys: Sequence[FileKey]) -> Iterator[tuple[str, str, int]]:
    """(route, sha256, id) of the records these keys' contents have on their routes."""
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        for route in {k.route for k in chunk}:
            shas = [k.sha256 for k in chunk if k.route == route]
            marks = ",".join("?" * len(shas))
            yield from (
                (route, sha, file_id)
                for sha, file_id in db.execute(
                    # Placeholders only: every value is bound.
                    f"SELECT sha256, id FROM files WHERE route=? AND sha256 IN ({marks})",  # noqa: S608
                    (route, *shas),
                )
            )


def _new_record(
    key: FileKey, file_id: int, layout_version: str, mapping_version: str, now: str
) -> FileRecord:
    """The record a first claim of ``key`` just inserted."""
    created = datetime.fromisoformat(now)
    return FileRecord(
        id=file_id,
        route=key.route,
        endpoint=key.endpoint,
        path=key.path,
        size=key.size,
        mtime_ns=key.mtime_ns,
        sha256=key.sha256,
        state=State.PROCESSING,
        attempts=1,
        next_retry_at=None,
        error_kind=None,
        error_message=None,
        quarantine_path=None,
        archive_path=None,
        layout_version=layout_version,
        mapping_version=mapping_version,
        source_encoding=None,
        created_at=created,
        updated_at=created,
    )


class _Database:
    """The SQLite journal as the ledgers' database (``ledgers.Database``): its write
    transaction holds the whole file, times are sortable text."""

    shared = False
    owner = None
    lock_rows = ""

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
    def stamp(when: datetime) -> str:
        return _iso(when)

    @staticmethod
    def when(value: str) -> datetime:
        return datetime.fromisoformat(value)

    @staticmethod
    def serialize(db: sqlite3.Connection, name: str) -> None:
        pass  # (the write transaction holds the whole journal)


class SQLiteJournal:
    """The SQLite journal. Safe to share between threads (one connection, one lock); one
    daemon per journal (a PostgreSQL journal is shared by several)."""

    shared = False
    owner = None

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
        database = _Database(self)
        self.alerts = Alerts(database)
        self.deadlines = Deadlines(database)
        self.slots = Slots(database)
        self.observations = Observations(database)
        self.keys = BusinessKeys(database)
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

    def lookup(
        self, route: str, endpoint: str, path: str, size: int, mtime_ns: int
    ) -> FileRecord | None:
        with self._read():
            row = self._db.execute(
                "SELECT * FROM files WHERE route=? AND endpoint=? AND path=? AND size=? "
                "AND mtime_ns=? ORDER BY id DESC LIMIT 1",
                (route, endpoint, path, size, mtime_ns),
            ).fetchone()
            return None if row is None else self._record(self._db, row)

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
                db.execute(
                    "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
                    "VALUES (?,?,?,?,?)",
                    (file_id, now, None, str(State.PROCESSING), key.path),
                )
                # A new record is exactly what was written: no need to read it back.
                record = _new_record(key, file_id, layout_version, mapping_version, now)
                return Claim(record, already_delivered=False)
            file_id = row["id"]
            check_transition(file_id, row["state"], State.PROCESSING)
            # A content not delivered yet keeps the name it was first taken under: a twin
            # that takes it over (its first taker killed mid-delivery, say) delivers the
            # same outputs under the same names, recognised where they already landed. The
            # same file taken again updates its time (the look-ups find it by it).
            same_file = row["endpoint"] == key.endpoint and row["path"] == key.path
            endpoint, path, size, mtime_ns = (
                (key.endpoint, key.path, key.size, key.mtime_ns)
                if same_file
                else (row["endpoint"], row["path"], row["size"], row["mtime_ns"])
            )
            db.execute(
                "UPDATE files SET endpoint=?, path=?, size=?, mtime_ns=?, layout_version=?, "
                "mapping_version=?, state=?, attempts=attempts+1, updated_at=? WHERE id=?",
                (
                    endpoint,
                    path,
                    size,
                    mtime_ns,
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
                (file_id, now, row["state"], str(State.PROCESSING), key.path),
            )
            new_row = db.execute("SELECT * FROM files WHERE id=?", (file_id,)).fetchone()
            return Claim(self._record(db, new_row), already_delivered=False)

    def lookup_many(
        self, route: str, endpoint: str, files: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], FileRecord]:
        wanted = set(files)
        paths = sorted({path for path, _, _ in wanted})
        found: dict[tuple[str, int, int], FileRecord] = {}
        with self._read():
            for start in range(0, len(paths), 500):
                chunk = paths[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    # Placeholders only: every value is bound.
                    f"SELECT * FROM files WHERE route=? AND endpoint=? AND path IN ({marks}) "  # noqa: S608
                    "ORDER BY id",
                    (route, endpoint, *chunk),
                ).fetchall()
                newest = {}
                for row in rows:  # oldest first: the newest of a key wins
                    key = (row["path"], row["size"], row["mtime_ns"])
                    if key in wanted:
                        newest[key] = row
                # The outputs of all of them in one query, not one query a record.
                outputs: dict[int, list[OutputRecord]] = {r["id"]: [] for r in newest.values()}
                ids = list(outputs)
                for at in range(0, len(ids), 500):
                    some = ids[at : at + 500]
                    for o in self._db.execute(
                        # Placeholders only: every value is bound.
                        "SELECT * FROM outputs WHERE file_id IN "  # noqa: S608
                        f"({','.join('?' * len(some))}) ORDER BY id",
                        some,
                    ):
                        outputs[o["file_id"]].append(_output(o))
                for key, row in newest.items():
                    found[key] = record_from_row(dict(row), outputs[row["id"]])
        return found

    def claim_many(
        self, keys: Sequence[FileKey], *, layout_version: str, mapping_version: str
    ) -> list[Claim]:
        now = _now()
        with self.batch():
            db = self._db
            known = {(route, sha) for route, sha, _ in _by_content(db, keys)}
            # Content never seen on the route (the usual case): inserted together.
            new = [k for k in keys if (k.route, k.sha256) not in known]
            db.executemany(
                "INSERT INTO files (route, endpoint, path, size, mtime_ns, sha256, "
                "layout_version, mapping_version, state, attempts, created_at, updated_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,1,?,?)",
                [
                    (
                        k.route,
                        k.endpoint,
                        k.path,
                        k.size,
                        k.mtime_ns,
                        k.sha256,
                        layout_version,
                        mapping_version,
                        str(State.PROCESSING),
                        now,
                        now,
                    )
                    for k in new
                ],
            )
            ids = {(route, sha): file_id for route, sha, file_id in _by_content(db, new)}
            db.executemany(
                "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
                "VALUES (?,?,?,?,?)",
                [(ids[(k.route, k.sha256)], now, None, str(State.PROCESSING), k.path) for k in new],
            )
            claims = []
            for key in keys:
                if (key.route, key.sha256) in known:
                    claims.append(
                        self.claim(
                            key, layout_version=layout_version, mapping_version=mapping_version
                        )
                    )
                    continue
                file_id = ids[(key.route, key.sha256)]
                record = _new_record(key, file_id, layout_version, mapping_version, now)
                claims.append(Claim(record, already_delivered=False))
            return claims

    def record_steps(self, steps: Sequence[Step]) -> None:
        now = _now()
        outputs = [
            (
                s.file_id,
                s.output.endpoint,
                s.output.path,
                s.output.size,
                s.output.sha256,
                s.output.delivered_at.isoformat(timespec="milliseconds"),
            )
            for s in steps
            if s.output is not None
        ]
        with self._tx() as db:
            if outputs:
                db.executemany(
                    "INSERT INTO outputs (file_id, endpoint, path, size, sha256, delivered_at) "
                    "VALUES (?,?,?,?,?,?)",
                    outputs,
                )
            # The state each file leaves, read once; a file changing twice here leaves
            # the state its previous step entered.
            ids = sorted({step.file_id for step in steps})
            state: dict[int, str] = {}
            for at in range(0, len(ids), 500):
                some = ids[at : at + 500]
                state.update(
                    db.execute(
                        # Placeholders only: every value is bound.
                        f"SELECT id, state FROM files WHERE id IN ({','.join('?' * len(some))})",  # noqa: S608
                        some,
                    ).fetchall()
                )
            missing = [i for i in ids if i not in state]
            if missing:
                raise JournalError(f"journal {self.path}: no file with id {missing[0]}")
            transitions = []
            final: dict[int, tuple[str, str | None, bool]] = {}
            for step in steps:
                to = str(step.state)
                check_transition(step.file_id, state[step.file_id], to)
                transitions.append((step.file_id, now, state[step.file_id], to, step.note))
                state[step.file_id] = to
                _, archive, done = final.get(step.file_id, (to, None, False))
                final[step.file_id] = (
                    to,
                    step.archive_path if step.archive_path is not None else archive,
                    done or step.state in DONE_STATES,
                )
            db.executemany(
                "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
                "VALUES (?,?,?,?,?)",
                transitions,
            )
            for clear in (False, True):
                db.executemany(
                    # Fixed fragments only: every value is bound.
                    "UPDATE files SET state=?, updated_at=?, next_retry_at=NULL, "  # noqa: S608
                    "archive_path=coalesce(?, archive_path)"
                    + (", error_kind=NULL, error_message=NULL" if clear else "")
                    + " WHERE id=?",
                    [
                        (to, now, archive, file_id)
                        for file_id, (to, archive, done) in final.items()
                        if done == clear
                    ],
                )

    def transition(
        self,
        file_id: int,
        state: State,
        *,
        error: tuple[str, str] | None = None,
        quarantine_path: str | None = None,
        archive_path: str | None = None,
        note: str | None = None,
        encoding: str | None = None,
        next_retry_at: datetime | None = None,
    ) -> None:
        now = _now()
        with self._tx() as db:
            old = db.execute("SELECT state FROM files WHERE id=?", (file_id,)).fetchone()
            if old is None:
                raise JournalError(f"journal {self.path}: no file with id {file_id}")
            check_transition(file_id, old[0], state)
            db.execute(
                "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
                "VALUES (?,?,?,?,?)",
                (file_id, now, old[0], str(state), note or (error[1] if error else None)),
            )
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
            if archive_path is not None:
                sets.append("archive_path=?")
                args.append(archive_path)
            sets.append("next_retry_at=?")
            args.append(None if next_retry_at is None else _iso(next_retry_at))
            # Column names come from the fixed list above; every value is bound.
            db.execute(f"UPDATE files SET {', '.join(sets)} WHERE id=?", (*args, file_id))  # noqa: S608

    def note(self, file_id: int, note: str) -> None:
        with self._tx() as db:
            noted = db.execute(
                "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
                "SELECT id, ?, state, state, ? FROM files WHERE id=?",
                (_now(), note, file_id),
            )
            if noted.rowcount != 1:
                raise JournalError(f"journal {self.path}: no file with id {file_id}")

    def confirm(self, file_id: int) -> None:
        return None  # one daemon (the run lock says so): its files are its own

    def take(self, file_id: int) -> bool:
        return True  # one daemon per SQLite journal

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
        with self._read():
            row = self._db.execute("SELECT * FROM files WHERE id=?", (file_id,)).fetchone()
            return None if row is None else self._record(self._db, row)

    def query(
        self,
        *,
        route: str | None = None,
        state: State | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        pattern: str | None = None,
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
            args.append(_iso(since))
        if until is not None:
            where.append("updated_at<?")
            args.append(_iso(until))
        if pattern is not None:
            where.append("path GLOB ?")
            args.append(pattern)
        # Conditions are fixed fragments with placeholders; every value is bound.
        sql = "SELECT * FROM files" + (f" WHERE {' AND '.join(where)}" if where else "")  # noqa: S608
        sql += " ORDER BY id DESC LIMIT ?"
        with self._read():
            rows = self._db.execute(sql, (*args, limit)).fetchall()
            return [self._record(self._db, r) for r in rows]

    def count(
        self,
        *,
        route: str | None = None,
        states: Collection[State] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        where, args = ["1=1"], []
        if route is not None:
            where.append("route=?")
            args.append(route)
        if states is not None:
            names = sorted(str(s) for s in states)
            where.append(f"state IN ({','.join('?' * len(names))})")
            args += names
        if since is not None:
            where.append("updated_at>=?")
            args.append(_iso(since))
        if until is not None:
            where.append("updated_at<?")
            args.append(_iso(until))
        with self._read():
            # Conditions are fixed fragments with placeholders; every value is bound.
            sql = f"SELECT count(*) FROM files WHERE {' AND '.join(where)}"  # noqa: S608
            return int(self._db.execute(sql, args).fetchone()[0])

    def oldest(self, route: str, state: State) -> datetime | None:
        with self._read():
            row = self._db.execute(
                "SELECT min(created_at) FROM files WHERE route=? AND state=?", (route, str(state))
            ).fetchone()
        return _when(row[0])

    def reconsider(
        self,
        route: str,
        *,
        layout_version: str,
        mapping_version: str,
        transient: Collection[str],
        transient_before: datetime,
        limit: int,
    ) -> list[FileRecord]:
        kinds = sorted(transient)
        sql = (
            f"SELECT * FROM files WHERE route=? AND {_HEALABLE} AND ("  # noqa: S608
            "(state='quarantined' AND (layout_version IS NOT ? OR mapping_version IS NOT ? "
            f"OR (error_kind IN ({','.join('?' * len(kinds))}) AND updated_at<?))) "
            "OR state IN ('processing', 'delivering') "
            "OR (state='retrying' AND updated_at<?)) ORDER BY id LIMIT ?"
        )
        args = (
            route,
            layout_version,
            mapping_version,
            *kinds,
            _iso(transient_before),
            _iso(transient_before),
            limit,
        )
        with self._read():
            rows = self._db.execute(sql, args).fetchall()
            return [self._record(self._db, r) for r in rows]

    def find_content(self, route: str, sha256: str) -> FileRecord | None:
        with self._read():
            row = self._db.execute(
                "SELECT * FROM files WHERE route=? AND sha256=?", (route, sha256)
            ).fetchone()
            return None if row is None else self._record(self._db, row)

    def history(self, file_id: int) -> list[Transition]:
        with self._read():
            rows = self._db.execute(
                "SELECT at, from_state, to_state, note FROM transitions WHERE file_id=? "
                "ORDER BY id",
                (file_id,),
            ).fetchall()
        return [
            Transition(datetime.fromisoformat(r["at"]), r["from_state"], r["to_state"], r["note"])
            for r in rows
        ]

    def prune(self, before: datetime) -> int:
        states = sorted(str(s) for s in DONE_STATES)
        marks = ",".join("?" * len(states))
        with self._tx() as db:
            ids = [
                r[0]
                for r in db.execute(
                    f"SELECT id FROM files WHERE state IN ({marks}) AND updated_at<?",  # noqa: S608
                    (*states, _iso(before)),
                )
            ]
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                holes = ",".join("?" * len(part))
                for table, column in (
                    ("outputs", "file_id"),
                    ("transitions", "file_id"),
                    ("business_keys", "file_id"),
                    ("files", "id"),
                ):
                    db.execute(f"DELETE FROM {table} WHERE {column} IN ({holes})", part)  # noqa: S608
        return len(ids)

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
            try:
                self._db.execute("DELETE FROM sessions WHERE id=?", (self.session,))
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # closed uncleanly: the next open tells
            self._db.close()

    def export(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """Every table a journal's history lives in, as rows (times as datetimes), for
        ``migrate_journal``: files, outputs, transitions, business keys, alerts,
        observations, and the journal's id."""
        times = {
            "files": ("next_retry_at", "created_at", "updated_at", "lease_until"),
            "outputs": ("delivered_at",),
            "transitions": ("at",),
            "business_keys": ("recorded_at",),
            "alerts": ("sent_at",),
            "observations": ("first_seen", "changed_at"),
            "deadlines": ("missed_at", "met_at"),
            "meta": (),
        }
        for table, columns in times.items():
            with self._read():
                rows = [dict(r) for r in self._db.execute(f"SELECT * FROM {table}")]  # noqa: S608
            for row in rows:
                for column in columns:
                    row[column] = _when(row[column])
            yield table, rows

    # ------------------------------------------------------------------ rows

    @staticmethod
    def _record(db: sqlite3.Connection, row: sqlite3.Row) -> FileRecord:
        outputs = db.execute("SELECT * FROM outputs WHERE file_id=? ORDER BY id", (row["id"],))
        return record_from_row(dict(row), [_output(o) for o in outputs])

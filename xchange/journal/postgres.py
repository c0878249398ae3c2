"""The PostgreSQL journal: one journal shared by several daemons on several hosts.

psycopg 3 with its connection pool (the only module that imports them). The same named
migrations as the SQLite backend, in PostgreSQL's dialect. What differs from SQLite is
what sharing needs:

- **Claims with leases.** A record being taken through (``processing``, ``delivering``)
  names its owner (this journal object: host, pid, a token) and a lease. Another
  daemon's claim of the same content skips it (``Claim.held_by``) while the lease runs;
  a background thread renews this owner's leases every third of the lease; a daemon that
  dies (SIGKILL, host lost) stops renewing, and once its leases run out another daemon
  takes its files over from their last committed state, as a restart would. The claim is
  one transaction: an insert that loses the race, or a row another claim holds locked
  (``FOR UPDATE SKIP LOCKED``), is someone else's: no daemon waits on another's file.
- **Connection loss is transient** (``JournalUnavailable``): the daemon keeps its files
  and tries again; nothing is sent whose claim could not be confirmed.
- **A server that stops answering is said, never waited on.** Every wait on the server is
  bounded by ``deadline`` (a quarter of the lease, at most 30 s): connecting, each
  statement (the server's ``statement_timeout`` too), a connection from the pool. TCP
  keepalives notice a path that died. A stalled server is then ``JournalUnavailable``
  like a stopped one, and the lease renewer is never stuck behind it.
- **Leases run on the server's clock** (``now()``), never the host's: a host whose clock
  steps neither lets its leases lapse early nor takes another's files too soon. Before a
  delivery is renamed into place, a daemon whose renewals failed lately confirms that the
  file is still its own (``confirm``).

The password comes from the configuration's ``password_env``, never from the URL, and is
never in a message.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from xchange.errors import ConfigError, JournalError, JournalUnavailable, LeaseLost
from xchange.journal.sql import HEALABLE, HELD_STATES, SqlJournal
from xchange.journal.states import DONE_STATES, State

log = structlog.get_logger(__name__)

#: The files a daemon has in hand (its leases run on them), as the index ``files_held``
#: is defined: the statements that look for them say it in the same words, so that the
#: planner takes that index (a list of states bound as a value would not match it).
HELD = "state IN (" + ", ".join(f"'{s}'" for s in HELD_STATES) + ")"

#: The SQLite backend's migrations, by the same names, in PostgreSQL's dialect.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_files_outputs_transitions",
        """
        CREATE TABLE files (
            id BIGSERIAL PRIMARY KEY,
            route TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            path TEXT NOT NULL,
            size BIGINT NOT NULL,
            mtime_ns BIGINT NOT NULL,
            sha256 TEXT NOT NULL,
            layout_version TEXT,
            mapping_version TEXT,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_retry_at TIMESTAMPTZ,
            error_kind TEXT,
            error_message TEXT,
            quarantine_path TEXT,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        );
        CREATE UNIQUE INDEX files_route_content ON files(route, sha256);
        CREATE INDEX files_route_path ON files(route, endpoint, path, size, mtime_ns);
        CREATE INDEX files_state ON files(state, updated_at);
        CREATE TABLE outputs (
            id BIGSERIAL PRIMARY KEY,
            file_id BIGINT NOT NULL REFERENCES files(id),
            endpoint TEXT NOT NULL,
            path TEXT NOT NULL,
            size BIGINT NOT NULL,
            sha256 TEXT NOT NULL,
            delivered_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX outputs_file ON outputs(file_id);
        CREATE TABLE transitions (
            id BIGSERIAL PRIMARY KEY,
            file_id BIGINT NOT NULL REFERENCES files(id),
            at TIMESTAMPTZ NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            note TEXT
        );
        CREATE INDEX transitions_file ON transitions(file_id);
        """,
    ),
    ("0002_files_source_encoding", "ALTER TABLE files ADD COLUMN source_encoding TEXT"),
    (
        "0003_archive_keys_alerts",
        """
        ALTER TABLE files ADD COLUMN archive_path TEXT;
        CREATE TABLE business_keys (
            route TEXT NOT NULL,
            key TEXT NOT NULL,
            file_id BIGINT NOT NULL REFERENCES files(id),
            recorded_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (route, key)
        );
        CREATE TABLE alerts (
            route TEXT NOT NULL,
            cause TEXT NOT NULL,
            sent_at TIMESTAMPTZ NOT NULL,
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
            size BIGINT NOT NULL,
            mtime_ns BIGINT NOT NULL,
            first_seen TIMESTAMPTZ NOT NULL,
            changed_at TIMESTAMPTZ NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (route, path)
        );
        """,
    ),
    (
        "0005_meta_sessions",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            opened_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    ("0006_heal_index", f"CREATE INDEX files_heal ON files(route, id) WHERE {HEALABLE}"),
    (
        "0007_claims",
        """
        ALTER TABLE files ADD COLUMN owner TEXT;
        ALTER TABLE files ADD COLUMN lease_until TIMESTAMPTZ;
        CREATE INDEX files_owner ON files(owner) WHERE owner IS NOT NULL;
        """,
    ),
    (
        "0008_slots",
        """
        CREATE TABLE slots (
            route TEXT NOT NULL,
            slot TEXT NOT NULL,
            owner TEXT NOT NULL,
            taken_at TIMESTAMPTZ NOT NULL,
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
            missed_at TIMESTAMPTZ NOT NULL,
            met_at TIMESTAMPTZ,
            PRIMARY KEY (route, day)
        );
        """,
    ),
    (
        "0010_pickups",
        """
        ALTER TABLE outputs ADD COLUMN pickup TEXT;
        ALTER TABLE outputs ADD COLUMN picked_up_at TIMESTAMPTZ;
        CREATE INDEX outputs_waiting ON outputs(endpoint, path) WHERE pickup = 'waiting';
        """,
    ),
    (
        "0011_tallies",
        # What each delivered file held: documents, repeats stopped, the control totals
        # agreed (JSON: name -> exact decimal as text), for the report per route and day.
        """
        CREATE TABLE tallies (
            file_id BIGINT PRIMARY KEY REFERENCES files(id),
            route TEXT NOT NULL,
            delivered_at TIMESTAMPTZ NOT NULL,
            documents INTEGER,
            repeats INTEGER NOT NULL DEFAULT 0,
            totals TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX tallies_route_time ON tallies(route, delivered_at);
        """,
    ),
    (
        "0012_actions",
        # Names are looked up by equality and by a pattern with a fixed start (LIKE
        # 'orders_2026%'): text_pattern_ops serves both whatever the database's collation.
        """
        CREATE TABLE actions (
            id BIGSERIAL PRIMARY KEY,
            at TIMESTAMPTZ NOT NULL,
            who TEXT NOT NULL,
            action TEXT NOT NULL,
            file_id BIGINT,
            route TEXT,
            reason TEXT NOT NULL,
            detail TEXT
        );
        CREATE INDEX actions_file ON actions(file_id) WHERE file_id IS NOT NULL;
        CREATE INDEX actions_at ON actions(at);
        CREATE INDEX files_path ON files(path text_pattern_ops);
        CREATE INDEX files_sha256 ON files(sha256 text_pattern_ops);
        CREATE INDEX outputs_path ON outputs(path text_pattern_ops);
        CREATE INDEX outputs_sha256 ON outputs(sha256 text_pattern_ops);
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
            file_id BIGINT NOT NULL,
            what TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL,
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
        # A daemon keeps its name on the files it delivered (another daemon's ``take``
        # waits for their leases): an index of owners over every file made each renewal
        # read all the files this daemon ever delivered. The files in hand only, by owner.
        f"""
        DROP INDEX IF EXISTS files_owner;
        CREATE INDEX files_held ON files(owner) WHERE {HELD}
        """,
    ),
]


def _utc() -> datetime:
    return datetime.now(UTC)


class _BoundedConnection(psycopg.Connection[Any]):
    """A connection whose every wait on the server ends after ``deadline`` seconds: a
    server (or a network path) that stops answering ends the statement with an error and
    the connection is closed (its state is unknown), instead of holding the thread."""

    #: Seconds a statement may wait on the server (set by the pool's ``configure``).
    deadline: float = 30.0

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        started = time.monotonic()
        try:
            return super().wait(gen, interval, self.deadline if timeout is None else timeout)
        except psycopg.OperationalError:
            if time.monotonic() - started < (timeout or self.deadline):
                raise
            self.close()
            raise psycopg.OperationalError(
                f"the server did not answer within {self.deadline:g} s"
            ) from None


class _Database:
    """The PostgreSQL journal as the ledgers' database (``ledgers.Database``): rows lock,
    an advisory lock serializes writers of one name, times are ``timestamptz``."""

    shared = True
    lock_rows = " FOR UPDATE"
    lock_free_row = " FOR UPDATE SKIP LOCKED"
    distinct = "IS DISTINCT FROM"

    def __init__(self, journal: PostgresJournal) -> None:
        self._journal = journal

    @property
    def owner(self) -> str | None:
        return self._journal.owner

    def write(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self._journal._tx()

    def read(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self._journal._tx()

    @staticmethod
    def sql(text: str) -> str:
        return text.replace("?", "%s")

    @staticmethod
    def many(db: psycopg.Connection[Any], sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with db.cursor() as cur:
            cur.executemany(sql, rows)

    @staticmethod
    def glob(pattern: str, column: str = "path") -> tuple[str, str]:
        return f"{column} LIKE ?", _glob_to_like(pattern)

    @staticmethod
    def stamp(when: datetime) -> datetime:
        return when

    @staticmethod
    def when(value: datetime) -> datetime:
        return value

    @staticmethod
    def serialize(db: psycopg.Connection[Any], name: str) -> None:
        db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))


class PostgresJournal(SqlJournal):
    """A journal in a PostgreSQL database, safe to share between threads, processes and
    hosts. ``url`` names the server and database (``postgresql://user@host:port/db``)."""

    shared = True

    def __init__(
        self, url: str, *, password: str | None = None, lease: float = 120.0, pool_size: int = 8
    ) -> None:
        self.url = url
        self.lease = timedelta(seconds=lease)
        #: The longest wait on the server: well under the lease, so that a daemon whose
        #: server stalls says so (and stops renewing) long before its leases run out.
        self.deadline = min(30.0, max(1.0, lease / 4))
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        #: When this owner's leases were last renewed (monotonic clock), when a renewal
        #: last came after one was missed (its leases may have lapsed in between: another
        #: daemon may have taken any file it held then), and the files claimed or confirmed
        #: since (still its own, for sure).
        self._renewed = time.monotonic()
        self._break: float | None = None
        self._trusted: set[int] = set()
        kwargs: dict[str, Any] = {
            "row_factory": dict_row,
            "autocommit": False,
            "options": f"-c timezone=UTC -c statement_timeout={int(self.deadline * 1000)}",
            # libpq counts whole seconds, at least 2.
            "connect_timeout": max(2, int(self.deadline)),
            "keepalives": 1,
            "keepalives_idle": max(1, int(self.deadline / 2)),
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": int(self.deadline * 1000),
        }
        if password is not None:
            kwargs["password"] = password
        # One connection first, alone: a wrong database name or a refused login is said at
        # once, as a configuration problem (the pool would retry it for 30 s and then say
        # only "pool initialization incomplete").
        try:
            psycopg.connect(url, **kwargs).close()
        except psycopg.Error as exc:
            said = _said(exc)
            if _is_config(said):
                raise ConfigError([f"journal {self.where}: {said}"]) from None
            raise JournalUnavailable(f"journal {self.where}: cannot connect: {said}") from None
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs=kwargs,
            open=False,
            timeout=self.deadline,
            connection_class=_BoundedConnection,
            configure=self._configure,
        )
        self._local = threading.local()
        try:
            self._pool.open(wait=True, timeout=30)
        except (PoolTimeout, psycopg.Error) as exc:
            self._pool.close()
            raise JournalUnavailable(
                f"journal {self.where}: cannot connect: {_said(exc)}"
            ) from None
        self._migrate()
        super().__init__(_Database(self))
        self._closed = threading.Event()
        self._renewer = threading.Thread(
            target=self._renew_leases, name="xchange-journal-leases", daemon=True
        )
        self._renewer.start()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        if isinstance(conn, _BoundedConnection):
            conn.deadline = self.deadline + 1  # the server's statement_timeout first

    @property
    def where(self) -> str:
        """The server and database, for messages (never a password)."""
        return self.url.split("?", 1)[0]

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current  # part of the enclosing batch
            return
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.OperationalError as exc:
            raise JournalUnavailable(f"journal {self.where}: {_said(exc)}") from None
        except PoolTimeout as exc:
            raise JournalUnavailable(f"journal {self.where}: {_said(exc)}") from None
        except psycopg.Error as exc:
            raise JournalError(f"journal {self.where}: {_said(exc)}") from None

    @contextmanager
    def batch(self) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._tx() as conn:
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def _migrate(self) -> None:
        with self._tx() as db:
            # One migrating daemon at a time (the others wait, then find nothing to do).
            db.execute("SELECT pg_advisory_xact_lock(7261626)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
            )
            done = {r["name"] for r in db.execute("SELECT name FROM schema_migrations")}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (name, _utc()))
            db.execute(
                "INSERT INTO meta VALUES ('journal_id', %s) ON CONFLICT (key) DO NOTHING",
                (secrets.token_hex(8),),
            )

    def _renew_leases(self) -> None:
        every = max(self.lease.total_seconds() / 3, 0.05)
        failing = False
        while not self._closed.wait(every):
            try:
                self.renew_leases()
            except JournalError as exc:
                # The server is away: tried again. Said once while it lasts (files in hand
                # are confirmed before their rename: another daemon may take them over).
                if not failing:
                    log.warning(
                        "journal.lease_renewal_failed",
                        error=exc.reason,
                        leases_run_out_s=self.lease.total_seconds(),
                    )
                failing = True
                continue
            if failing:
                log.info("journal.lease_renewal_resumed")
            failing = False

    def renew_leases(self) -> int:
        """Extend this owner's leases on the files it is taking through."""
        asked = time.monotonic()
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE files SET lease_until=now()+%s WHERE owner=%s AND {HELD}",
                (self.lease, self.owner),
            )
            count = cur.rowcount
        if asked - self._renewed >= self.lease.total_seconds() / 2:
            # A renewal was missed: every file held before now must be confirmed.
            self._break = asked
            self._trusted.clear()
        self._renewed = max(self._renewed, asked)
        return count

    def _claimed(self, file_id: int) -> None:
        """A file this owner has just claimed (or confirmed): its own, whatever happened
        to its leases before."""
        if self._break is None:
            return  # no renewal was ever missed: every claim is sure
        if len(self._trusted) > 100_000:
            self._trusted.clear()  # (bounded: a file forgotten is confirmed once more)
        self._trusted.add(file_id)

    def confirm(self, file_id: int) -> None:
        """Before a delivery is renamed into place: the file is still this owner's. Free
        while the renewals go through (one every third of the lease) and none was missed
        since the file was claimed; else asked of the server (and its lease renewed): a
        renewal that came late may have come after another daemon took the file over.

        Raises:
            LeaseLost: another daemon took the file over (its lease ran out meanwhile).
            JournalUnavailable: the server cannot say.
        """
        running = time.monotonic() - self._renewed < self.lease.total_seconds() / 2
        if running and (self._break is None or file_id in self._trusted):
            return
        with self._tx() as db:
            row = db.execute(
                "UPDATE files SET lease_until=now()+%s WHERE id=%s AND owner=%s "
                "AND state = ANY(%s) RETURNING id",
                (self.lease, file_id, self.owner, list(HELD_STATES)),
            ).fetchone()
        if row is None:
            raise LeaseLost(
                f"journal {self.where}: file #{file_id} is not this daemon's any more (its "
                "lease ran out while the journal could not be reached, and another daemon "
                "took it over); nothing renamed"
            )
        self._claimed(file_id)

    # ------------------------------------------------------------------ leases

    #: A file's lease runs (on the server's clock).
    _lease_runs = "lease_until > now()"

    def _hold(self, state: State) -> tuple[str, list[Any]]:
        """How a write to ``state`` sets the owner and lease: taken through -> this
        owner, a fresh lease; delivered (its archive or delete to come) -> kept as it
        is; waiting, quarantined, dropped -> nobody's."""
        if str(state) in HELD_STATES:
            return ", owner=?, lease_until=now()+?", [self.owner, self.lease]
        if state in DONE_STATES:
            return "", []
        return ", owner=NULL, lease_until=NULL", []

    def _lease(self) -> tuple[str, list[Any]]:
        return "?, now()+?", [self.owner, self.lease]

    def _held_by(self, row: dict[str, Any]) -> str | None:
        owner = row["owner"]
        if owner not in (None, self.owner) and row["lease_runs"]:
            return str(owner) if row["state"] in HELD_STATES else None
        return None

    def _free(self) -> tuple[str, list[Any]]:
        return "(owner IS NULL OR owner=? OR lease_until<now())", [self.owner]

    def take(self, file_id: int) -> bool:
        with self._tx() as db:
            row = db.execute(
                "UPDATE files SET owner=%s, lease_until=now()+%s WHERE id=%s AND "
                "(owner IS NULL OR owner=%s OR lease_until IS NULL OR lease_until<now()) "
                "RETURNING id",
                (self.owner, self.lease, file_id, self.owner),
            ).fetchone()
        return row is not None

    def load(self, tables: Iterator[tuple[str, list[dict[str, Any]]]]) -> dict[str, int]:
        """Fill this (empty) journal with another's rows, ids and journal id kept, in one
        transaction; returns the rows copied per table.

        Raises:
            JournalError: this journal holds files already (nothing is written).
        """
        counts: dict[str, int] = {}
        with self._tx() as db:
            held = db.execute("SELECT count(*) AS n FROM files").fetchone()
            if held is not None and held["n"]:
                raise JournalError(
                    f"journal {self.where} holds {held['n']} file record(s) already: "
                    "migrate into an empty database"
                )
            db.execute("DELETE FROM alerts")
            db.execute("DELETE FROM observations")
            for table, rows in tables:
                counts[table] = len(rows)
                if table == "meta":
                    for row in rows:
                        db.execute(
                            "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) "
                            "DO UPDATE SET value=excluded.value",
                            (row["key"], row["value"]),
                        )
                    continue
                if not rows:
                    continue
                columns = list(rows[0])
                sql = (
                    f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join(['%s'] * len(columns))})"
                )
                with db.cursor() as cur:
                    cur.executemany(sql, [tuple(r[c] for c in columns) for r in rows])
            for table in ("files", "outputs", "transitions", "actions"):
                db.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                )
        return counts

    # ------------------------------------------------------------------ the rest

    @property
    def journal_id(self) -> str:
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key='journal_id'").fetchone()
        assert row is not None
        return str(row["value"])

    def checkpoint(self, *, force: bool = False) -> None:
        return None  # the server keeps its own write-ahead log

    def check(self) -> list[str]:
        with self._tx() as db:
            applied = {r["name"] for r in db.execute("SELECT name FROM schema_migrations")}
        missing = [name for name, _ in MIGRATIONS if name not in applied]
        return [f"migration {name} not applied" for name in missing]

    def backup(self, dest: Path) -> None:
        raise JournalError(
            f"journal {self.where}: back a PostgreSQL journal up with the server's own tools "
            "(pg_dump, or its base backups and WAL archive)"
        )

    def close(self) -> None:
        if self._closed.is_set():
            return  # (closed already: a command that fails closes it on its way out)
        self._closed.set()
        self._renewer.join(timeout=5)
        try:
            with self._tx() as db:
                # Files this owner still holds are free at once for another daemon.
                db.execute(
                    f"UPDATE files SET lease_until=now() WHERE owner=%s AND {HELD}",
                    (self.owner,),
                )
        except JournalError:
            pass  # the leases run out by themselves
        self._pool.close()


def _glob_to_like(pattern: str) -> str:
    """A shell pattern (``orders_*.csv``) as a LIKE pattern."""
    out = []
    for ch in pattern:
        if ch in "%_\\":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


#: What a server says when the configuration is wrong (trying again cannot help).
_CONFIG_PROBLEMS = (
    "does not exist",  # database "x" does not exist; role "y" does not exist
    "password authentication failed",
    "no password supplied",
    "no pg_hba.conf entry",
    "invalid connection option",
    "invalid dsn",
    'missing "="',
    "permission denied for database",
)


def _is_config(said: str) -> bool:
    return any(marker in said for marker in _CONFIG_PROBLEMS)


def _said(exc: BaseException) -> str:
    """What the driver said, first line only (never the connection string)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = ["MIGRATIONS", "PostgresJournal"]

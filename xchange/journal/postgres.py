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
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from xchange.errors import ConfigError, JournalError, JournalUnavailable, LeaseLost
from xchange.journal.base import (
    Claim,
    FileKey,
    FileRecord,
    OutputRecord,
    Step,
    Transition,
    record_from_row,
)
from xchange.journal.ledgers import Alerts, BusinessKeys, Deadlines, Observations, Slots
from xchange.journal.states import DONE_STATES, State, check_transition

log = structlog.get_logger(__name__)

#: States in which a record has an owner holding a lease.
HELD_STATES = ("processing", "delivering")

_HEALABLE = (
    "quarantine_path IS NOT NULL AND "
    "state IN ('quarantined', 'processing', 'delivering', 'retrying')"
)

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
    ("0006_heal_index", f"CREATE INDEX files_heal ON files(route, id) WHERE {_HEALABLE}"),
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
]

_FILE_COLUMNS = (
    "id, route, endpoint, path, size, mtime_ns, sha256, layout_version, mapping_version, "
    "state, attempts, next_retry_at, error_kind, error_message, quarantine_path, archive_path, "
    "source_encoding, created_at, updated_at, owner, lease_until"
)


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
    def stamp(when: datetime) -> datetime:
        return when

    @staticmethod
    def when(value: datetime) -> datetime:
        return value

    @staticmethod
    def serialize(db: psycopg.Connection[Any], name: str) -> None:
        db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))


class PostgresJournal:
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
        database = _Database(self)
        self.alerts = Alerts(database)
        self.deadlines = Deadlines(database)
        self.slots = Slots(database)
        self.observations = Observations(database)
        self.keys = BusinessKeys(database)
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
                "UPDATE files SET lease_until=now()+%s WHERE owner=%s AND state = ANY(%s)",
                (self.lease, self.owner, list(HELD_STATES)),
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

    def _hold(self, state: State) -> str:
        """How a write to ``state`` sets the owner and lease (SQL, binding owner, lease):
        taken through -> this owner, a fresh lease; delivered (its archive or delete to
        come) -> kept as it is; waiting, quarantined, dropped -> nobody's."""
        if str(state) in HELD_STATES:
            return "owner=%(owner)s, lease_until=now()+%(lease)s"
        if state in DONE_STATES:
            return "owner=owner"
        return "owner=NULL, lease_until=NULL"

    # ------------------------------------------------------------------ reads

    def _records(self, db: psycopg.Connection[Any], rows: list[dict[str, Any]]) -> list[FileRecord]:
        ids = [r["id"] for r in rows]
        outputs: dict[int, list[OutputRecord]] = {i: [] for i in ids}
        if ids:
            for o in db.execute(
                "SELECT * FROM outputs WHERE file_id = ANY(%s) ORDER BY id", (ids,)
            ).fetchall():
                outputs[o["file_id"]].append(
                    OutputRecord(
                        o["endpoint"], o["path"], o["size"], o["sha256"], o["delivered_at"]
                    )
                )
        return [record_from_row(r, outputs[r["id"]]) for r in rows]

    def _select(self, where: str, args: Sequence[Any], tail: str = "") -> list[FileRecord]:
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE {where} {tail}",
                args,
            ).fetchall()
            return self._records(db, rows)

    def lookup(
        self, route: str, endpoint: str, path: str, size: int, mtime_ns: int
    ) -> FileRecord | None:
        found = self._select(
            "route=%s AND endpoint=%s AND path=%s AND size=%s AND mtime_ns=%s",
            (route, endpoint, path, size, mtime_ns),
            "ORDER BY id DESC LIMIT 1",
        )
        return found[0] if found else None

    def lookup_many(
        self, route: str, endpoint: str, files: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], FileRecord]:
        wanted = set(files)
        paths = sorted({path for path, _, _ in wanted})
        found: dict[tuple[str, int, int], FileRecord] = {}
        for start in range(0, len(paths), 1000):
            records = self._select(
                "route=%s AND endpoint=%s AND path = ANY(%s)",
                (route, endpoint, paths[start : start + 1000]),
                "ORDER BY id",
            )
            for record in records:  # oldest first: the newest of a key wins
                key = (record.path, record.size, record.mtime_ns)
                if key in wanted:
                    found[key] = record
        return found

    def find_content(self, route: str, sha256: str) -> FileRecord | None:
        found = self._select("route=%s AND sha256=%s", (route, sha256))
        return found[0] if found else None

    def get(self, file_id: int) -> FileRecord | None:
        found = self._select("id=%s", (file_id,))
        return found[0] if found else None

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
        where, args = ["TRUE"], []
        for sql, value in (
            ("route=%s", route),
            ("state=%s", None if state is None else str(state)),
            ("updated_at>=%s", since),
            ("updated_at<%s", until),
        ):
            if value is not None:
                where.append(sql)
                args.append(value)
        if pattern is not None:
            where.append("path LIKE %s")
            args.append(_glob_to_like(pattern))
        return self._select(" AND ".join(where), [*args, limit], "ORDER BY id DESC LIMIT %s")

    def count(
        self,
        *,
        route: str | None = None,
        states: Collection[State] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        where, args = ["TRUE"], []
        for sql, value in (
            ("route=%s", route),
            ("state = ANY(%s)", None if states is None else sorted(str(s) for s in states)),
            ("updated_at>=%s", since),
            ("updated_at<%s", until),
        ):
            if value is not None:
                where.append(sql)
                args.append(value)
        with self._tx() as db:
            row = db.execute(
                f"SELECT count(*) AS n FROM files WHERE {' AND '.join(where)}",
                args,
            ).fetchone()
        return int(row["n"]) if row is not None else 0

    def oldest(self, route: str, state: State) -> datetime | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT min(created_at) AS at FROM files WHERE route=%s AND state=%s",
                (route, str(state)),
            ).fetchone()
        return None if row is None else row["at"]

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
        return self._select(
            f"route=%s AND {_HEALABLE} AND ("
            "(state='quarantined' AND (layout_version IS DISTINCT FROM %s OR "
            "mapping_version IS DISTINCT FROM %s OR (error_kind = ANY(%s) AND updated_at<%s))) "
            "OR (state IN ('processing', 'delivering') AND "
            "(owner IS NULL OR owner=%s OR lease_until<now())) "
            "OR (state='retrying' AND updated_at<%s))",
            (
                route,
                layout_version,
                mapping_version,
                sorted(transient),
                transient_before,
                self.owner,
                transient_before,
                limit,
            ),
            "ORDER BY id LIMIT %s",
        )

    def history(self, file_id: int) -> list[Transition]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT at, from_state, to_state, note FROM transitions WHERE file_id=%s "
                "ORDER BY id",
                (file_id,),
            ).fetchall()
        return [Transition(r["at"], r["from_state"], r["to_state"], r["note"]) for r in rows]

    # ------------------------------------------------------------------ claims

    def claim(self, key: FileKey, *, layout_version: str, mapping_version: str) -> Claim:
        now = _utc()
        owner, lease = self.owner, self.lease
        with self._tx() as db:
            inserted = db.execute(
                "INSERT INTO files (route, endpoint, path, size, mtime_ns, sha256, "
                "layout_version, mapping_version, state, attempts, created_at, updated_at, "
                "owner, lease_until) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,'processing',1,%s,%s,%s,now()+%s) "
                f"ON CONFLICT (route, sha256) DO NOTHING RETURNING {_FILE_COLUMNS}",
                (
                    key.route,
                    key.endpoint,
                    key.path,
                    key.size,
                    key.mtime_ns,
                    key.sha256,
                    layout_version,
                    mapping_version,
                    now,
                    now,
                    owner,
                    lease,
                ),
            ).fetchone()
            if inserted is not None:
                db.execute(
                    "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
                    "VALUES (%s,%s,NULL,'processing',%s)",
                    (inserted["id"], now, key.path),
                )
                self._claimed(inserted["id"])
                return Claim(record_from_row(inserted, []), already_delivered=False)
            row = db.execute(
                f"SELECT {_FILE_COLUMNS}, lease_until > now() AS lease_runs FROM files "
                "WHERE route=%s AND sha256=%s FOR UPDATE SKIP LOCKED",
                (key.route, key.sha256),
            ).fetchone()
            if row is None:
                # Another daemon's claim holds the row right now: its file, not ours.
                current = self._select("route=%s AND sha256=%s", (key.route, key.sha256))
                if not current:  # gone meanwhile (pruned): this file is looked at again
                    raise JournalUnavailable(
                        f"journal {self.where}: the record of {key.path} changed while it was "
                        "claimed; tried again"
                    )
                return Claim(current[0], already_delivered=False, held_by="another daemon")
            (record,) = self._records(db, [row])
            if record.state in DONE_STATES:
                return Claim(record, already_delivered=True)
            if (
                row["owner"] not in (None, owner)
                and row["lease_runs"]
                and str(record.state) in HELD_STATES
            ):
                return Claim(record, already_delivered=False, held_by=row["owner"])
            check_transition(record.id, record.state, State.PROCESSING)
            same_file = record.endpoint == key.endpoint and record.path == key.path
            endpoint, path, size, mtime_ns = (
                (key.endpoint, key.path, key.size, key.mtime_ns)
                if same_file
                else (record.endpoint, record.path, record.size, record.mtime_ns)
            )
            taken_over = row["owner"] not in (None, owner) and str(record.state) in HELD_STATES
            updated = db.execute(
                "UPDATE files SET endpoint=%s, path=%s, size=%s, mtime_ns=%s, "
                "layout_version=%s, mapping_version=%s, state='processing', "
                "attempts=attempts+1, updated_at=%s, owner=%s, lease_until=now()+%s "
                f"WHERE id=%s RETURNING {_FILE_COLUMNS}",
                (
                    endpoint,
                    path,
                    size,
                    mtime_ns,
                    layout_version,
                    mapping_version,
                    now,
                    owner,
                    lease,
                    record.id,
                ),
            ).fetchone()
            if updated is None:  # (the row is locked: cannot happen, but said if it does)
                raise JournalUnavailable(
                    f"journal {self.where}: the record of {key.path} vanished while it was "
                    "claimed; tried again"
                )
            note = key.path + (f" (taken over from {row['owner']})" if taken_over else "")
            db.execute(
                "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
                "VALUES (%s,%s,%s,'processing',%s)",
                (record.id, now, str(record.state), note),
            )
            self._claimed(record.id)
            return Claim(self._records(db, [updated])[0], already_delivered=False)

    def claim_many(
        self, keys: Sequence[FileKey], *, layout_version: str, mapping_version: str
    ) -> list[Claim]:
        """New contents inserted together (one statement); the others claimed one by one."""
        now = _utc()
        with self.batch(), self._tx() as db:
            rows = db.execute(
                "INSERT INTO files (route, endpoint, path, size, mtime_ns, sha256, "
                "layout_version, mapping_version, state, attempts, created_at, updated_at, "
                "owner, lease_until) "
                "SELECT route, endpoint, path, size, mtime_ns, sha256, %s, %s, 'processing', "
                "1, %s, %s, %s, now()+%s FROM unnest(%s::text[], %s::text[], %s::text[], "
                "%s::bigint[], %s::bigint[], %s::text[]) "
                "AS k(route, endpoint, path, size, mtime_ns, sha256) "
                f"ON CONFLICT (route, sha256) DO NOTHING RETURNING {_FILE_COLUMNS}",
                (
                    layout_version,
                    mapping_version,
                    now,
                    now,
                    self.owner,
                    self.lease,
                    [k.route for k in keys],
                    [k.endpoint for k in keys],
                    [k.path for k in keys],
                    [k.size for k in keys],
                    [k.mtime_ns for k in keys],
                    [k.sha256 for k in keys],
                ),
            ).fetchall()
            new = {(r["route"], r["sha256"]): record_from_row(r, []) for r in rows}
            for record in new.values():
                self._claimed(record.id)
            if new:
                with db.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
                        "VALUES (%s,%s,NULL,'processing',%s)",
                        [(r.id, now, r.path) for r in new.values()],
                    )
            return [
                Claim(new[(k.route, k.sha256)], already_delivered=False)
                if (k.route, k.sha256) in new
                else self.claim(k, layout_version=layout_version, mapping_version=mapping_version)
                for k in keys
            ]

    # ------------------------------------------------------------------ writes

    def _state_of(self, db: psycopg.Connection[Any], file_id: int) -> str:
        row = db.execute("SELECT state FROM files WHERE id=%s FOR UPDATE", (file_id,)).fetchone()
        if row is None:
            raise JournalError(f"journal {self.where}: no file with id {file_id}")
        return str(row["state"])

    def record_steps(self, steps: Sequence[Step]) -> None:
        """Checked against the table step by step, then written with a few pipelined
        statements (one lock query, then every output, transition and update at once)."""
        now = _utc()
        with self._tx() as db:
            ids = sorted({step.file_id for step in steps})
            rows = db.execute(
                "SELECT id, state FROM files WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (ids,)
            ).fetchall()
            states = {r["id"]: str(r["state"]) for r in rows}
            missing = [i for i in ids if i not in states]
            if missing:
                raise JournalError(f"journal {self.where}: no file with id {missing[0]}")
            outputs, transitions = [], []
            #: Per file: its last state, archive path (the last given) and whether a done
            #: state was entered (errors cleared), in step order.
            final: dict[int, tuple[State, str | None, bool]] = {}
            for step in steps:
                check_transition(step.file_id, states[step.file_id], step.state)
                if step.output is not None:
                    o = step.output
                    outputs.append(
                        (step.file_id, o.endpoint, o.path, o.size, o.sha256, o.delivered_at)
                    )
                transitions.append(
                    (step.file_id, now, states[step.file_id], str(step.state), step.note)
                )
                states[step.file_id] = str(step.state)
                _, archive, done = final.get(step.file_id, (step.state, None, False))
                final[step.file_id] = (
                    step.state,
                    step.archive_path if step.archive_path is not None else archive,
                    done or step.state in DONE_STATES,
                )
            with db.cursor() as cur:
                if outputs:
                    cur.executemany(
                        "INSERT INTO outputs (file_id, endpoint, path, size, sha256, "
                        "delivered_at) VALUES (%s,%s,%s,%s,%s,%s)",
                        outputs,
                    )
                cur.executemany(
                    "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
                    "VALUES (%s,%s,%s,%s,%s)",
                    transitions,
                )
                groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
                for file_id, (state, archive, done) in final.items():
                    groups.setdefault((self._hold(state), done), []).append(
                        {
                            "state": str(state),
                            "now": now,
                            "archive": archive,
                            "owner": self.owner,
                            "lease": self.lease,
                            "id": file_id,
                        }
                    )
                for (hold, done), params in groups.items():
                    cur.executemany(
                        "UPDATE files SET state=%(state)s, updated_at=%(now)s, "
                        "next_retry_at=NULL, archive_path=coalesce(%(archive)s, archive_path), "
                        + hold
                        + (", error_kind=NULL, error_message=NULL" if done else "")
                        + " WHERE id=%(id)s",
                        params,
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
        now = _utc()
        with self._tx() as db:
            old = self._state_of(db, file_id)
            check_transition(file_id, old, state)
            db.execute(
                "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
                "VALUES (%s,%s,%s,%s,%s)",
                (file_id, now, old, str(state), note or (error[1] if error else None)),
            )
            sets = [
                "state=%(state)s",
                "updated_at=%(now)s",
                "next_retry_at=%(retry)s",
                self._hold(state),
            ]
            args: dict[str, Any] = {
                "state": str(state),
                "now": now,
                "retry": next_retry_at,
                "owner": self.owner,
                "lease": self.lease,
                "id": file_id,
            }
            if error is not None:
                sets.append("error_kind=%(kind)s, error_message=%(message)s")
                args.update(kind=error[0], message=error[1])
            elif state in DONE_STATES:
                sets.append("error_kind=NULL, error_message=NULL")
            for column, value in (
                ("quarantine_path", quarantine_path),
                ("source_encoding", encoding),
                ("archive_path", archive_path),
            ):
                if value is not None:
                    sets.append(f"{column}=%({column})s")
                    args[column] = value
            db.execute(
                f"UPDATE files SET {', '.join(sets)} WHERE id=%(id)s",
                args,
            )

    def note(self, file_id: int, note: str) -> None:
        with self._tx() as db:
            state = self._state_of(db, file_id)
            db.execute(
                "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
                "VALUES (%s,%s,%s,%s,%s)",
                (file_id, _utc(), state, state, note),
            )

    def take(self, file_id: int) -> bool:
        with self._tx() as db:
            row = db.execute(
                "UPDATE files SET owner=%s, lease_until=now()+%s WHERE id=%s AND "
                "(owner IS NULL OR owner=%s OR lease_until IS NULL OR lease_until<now()) "
                "RETURNING id",
                (self.owner, self.lease, file_id, self.owner),
            ).fetchone()
        return row is not None

    def record_output(self, file_id: int, output: OutputRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO outputs (file_id, endpoint, path, size, sha256, delivered_at) "
                "VALUES (%s,%s,%s,%s,%s,%s)",
                (
                    file_id,
                    output.endpoint,
                    output.path,
                    output.size,
                    output.sha256,
                    output.delivered_at,
                ),
            )

    def prune(self, before: datetime) -> int:
        with self._tx() as db:
            ids = [
                r["id"]
                for r in db.execute(
                    "SELECT id FROM files WHERE state = ANY(%s) AND updated_at<%s",
                    (sorted(str(s) for s in DONE_STATES), before),
                ).fetchall()
            ]
            for table, column in (
                ("outputs", "file_id"),
                ("transitions", "file_id"),
                ("business_keys", "file_id"),
                ("files", "id"),
            ):
                db.execute(
                    f"DELETE FROM {table} WHERE {column} = ANY(%s)",
                    (ids,),
                )
        return len(ids)

    # ------------------------------------------------------------------ alerts, observations

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
            for table in ("files", "outputs", "transitions"):
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
        self._closed.set()
        self._renewer.join(timeout=5)
        try:
            with self._tx() as db:
                # Files this owner still holds are free at once for another daemon.
                db.execute(
                    "UPDATE files SET lease_until=now() WHERE owner=%s AND state = ANY(%s)",
                    (self.owner, list(HELD_STATES)),
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

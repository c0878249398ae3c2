"""The journal's rules over files, written once for every backend.

A file's record is found by its content on a route (the idempotency key) or by its name,
size and time; it is claimed, moved from state to state as the table in
:mod:`xchange.journal.states` allows (checked on every write), given its outputs and
history, reconsidered when it may heal, pruned when delivered long ago. This class says
all of that in SQL once, over the backend's :class:`~xchange.journal.ledgers.Database`;
a backend subclasses it and keeps only what differs: its connection, its migrations, and
leases (a journal shared by several daemons: who holds a file, until when).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence, Sized
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Self

from xchange.errors import JournalError, JournalUnavailable
from xchange.journal.base import (
    Claim,
    FileKey,
    FileRecord,
    Found,
    OutputRecord,
    Step,
    Transition,
    record_from_row,
)
from xchange.journal.ledgers import (
    Actions,
    Alerts,
    BusinessKeys,
    Database,
    Deadlines,
    Ledger,
    Observations,
    Pickups,
    Slots,
    Tallies,
)
from xchange.journal.states import DONE_STATES, State, check_transition

#: States a daemon takes a file through (a shared journal's lease holds them).
HELD_STATES = ("processing", "delivering")

#: Records that may heal: a kept copy to take again, in a state that may change.
HEALABLE = (
    "quarantine_path IS NOT NULL AND "
    "state IN ('quarantined', 'processing', 'delivering', 'retrying')"
)

_COLUMNS = (
    "id, route, endpoint, path, size, mtime_ns, sha256, layout_version, mapping_version, "
    "state, attempts, next_retry_at, error_kind, error_message, quarantine_path, archive_path, "
    "source_encoding, created_at, updated_at, owner, lease_until"
)
_INSERT = (
    "INSERT INTO files (route, endpoint, path, size, mtime_ns, sha256, layout_version, "
    "mapping_version, state, attempts, created_at, updated_at, owner, lease_until) "
)
_TRANSITION = "INSERT INTO transitions (file_id, at, from_state, to_state, note) VALUES (?,?,?,?,?)"
#: Values bound in one statement at most (SQLite's limit is 32,766; PostgreSQL's 65,535).
_CHUNK = 500


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


_OUTPUT = (
    "INSERT INTO outputs (file_id, endpoint, path, size, sha256, delivered_at, pickup) "
    "VALUES (?,?,?,?,?,?,?)"
)


def _marks(values: Sized) -> str:
    return ",".join("?" * len(values))


class SqlJournal(Ledger):
    """The files ledger (and the small ledgers) of a journal in a SQL database."""

    #: Whether several daemons share the journal (leases, see the subclass).
    shared = False
    #: This daemon as the owner of its claims (None: one daemon's journal).
    owner: str | None = None
    #: SQL of whether a file's lease runs (a column of the row claimed).
    _lease_runs = "NULL"

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.alerts = Alerts(database)
        self.deadlines = Deadlines(database)
        self.slots = Slots(database)
        self.observations = Observations(database)
        self.keys = BusinessKeys(database)
        self.pickups = Pickups(database)
        self.tallies = Tallies(database)
        self.actions = Actions(database)

    @property
    def where(self) -> str:
        """Where the journal is, for messages."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the journal (the backend's)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ leases (hooks)

    def _hold(self, state: State) -> tuple[str, list[Any]]:
        """SQL that sets who holds a file written into ``state`` (", owner=..."), and
        its values: nothing where one daemon has the journal."""
        return "", []

    def _lease(self) -> tuple[str, list[Any]]:
        """The owner and lease_until of a file claimed now (SQL values, and theirs)."""
        return "NULL, NULL", []

    def _held_by(self, row: dict[str, Any]) -> str | None:
        """Another daemon holding a file being claimed (its lease running), or None."""
        return None

    def _free(self) -> tuple[str, list[Any]]:
        """SQL true of a file no other daemon holds (for ``reconsider``), its values."""
        return "1=1", []

    def _claimed(self, file_id: int) -> None:
        """A file this daemon has just claimed (its own, whatever its lease was)."""

    # ------------------------------------------------------------------ plumbing

    def _missing(self, file_id: int) -> JournalError:
        return JournalError(f"journal {self.where}: no file with id {file_id}")

    def _records(self, db: Any, rows: Sequence[Any]) -> list[FileRecord]:
        """Records of ``files`` rows, with their outputs (one query per 500)."""
        rows = [dict(r) for r in rows]
        outputs: dict[int, list[OutputRecord]] = {r["id"]: [] for r in rows}
        ids = list(outputs)
        when = self.db.when
        for some in _chunks(ids):
            sql = f"SELECT * FROM outputs WHERE file_id IN ({_marks(some)}) ORDER BY id"
            for o in db.execute(self.db.sql(sql), some).fetchall():
                outputs[o["file_id"]].append(
                    OutputRecord(
                        o["endpoint"],
                        o["path"],
                        o["size"],
                        o["sha256"],
                        when(o["delivered_at"]),
                        o["pickup"],
                        None if o["picked_up_at"] is None else when(o["picked_up_at"]),
                    )
                )
        return [record_from_row(r, outputs[r["id"]]) for r in rows]

    def _select(self, where: str, args: Sequence[Any], tail: str = "") -> list[FileRecord]:
        with self.db.read() as db:
            # Conditions are fixed fragments with placeholders; every value is bound.
            rows = self._run(db, f"SELECT {_COLUMNS} FROM files WHERE {where} {tail}", args)
            return self._records(db, rows.fetchall())

    def _one(self, where: str, args: Sequence[Any], tail: str = "") -> FileRecord | None:
        found = self._select(where, args, tail)
        return found[0] if found else None

    def _state_of(self, db: Any, file_id: int) -> str:
        row = self._run(
            db, "SELECT state FROM files WHERE id=?" + self.db.lock_rows, (file_id,)
        ).fetchone()
        if row is None:
            raise self._missing(file_id)
        return str(row["state"])

    # ------------------------------------------------------------------ reads

    def lookup(
        self, route: str, endpoint: str, path: str, size: int, mtime_ns: int
    ) -> FileRecord | None:
        return self._one(
            "route=? AND endpoint=? AND path=? AND size=? AND mtime_ns=?",
            (route, endpoint, path, size, mtime_ns),
            "ORDER BY id DESC LIMIT 1",
        )

    def lookup_many(
        self, route: str, endpoint: str, files: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], FileRecord]:
        wanted = set(files)
        found: dict[tuple[str, int, int], FileRecord] = {}
        for paths in _chunks(sorted({path for path, _, _ in wanted})):
            records = self._select(
                f"route=? AND endpoint=? AND path IN ({_marks(paths)})",
                (route, endpoint, *paths),
                "ORDER BY id",
            )
            for record in records:  # oldest first: the newest of a key wins
                key = (record.path, record.size, record.mtime_ns)
                if key in wanted:
                    found[key] = record
        return found

    def states_many(
        self, route: str, endpoint: str, files: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], State]:
        wanted = set(files)
        found: dict[tuple[str, int, int], State] = {}
        with self.db.read() as db:
            for paths in _chunks(sorted({path for path, _, _ in wanted})):
                rows = self._run(
                    db,
                    "SELECT path, size, mtime_ns, state FROM files WHERE route=? AND "
                    f"endpoint=? AND path IN ({_marks(paths)}) ORDER BY id",
                    (route, endpoint, *paths),
                )
                for row in rows.fetchall():  # oldest first: the newest of a key wins
                    key = (row["path"], row["size"], row["mtime_ns"])
                    if key in wanted:
                        found[key] = State(row["state"])
        return found

    def find_content(self, route: str, sha256: str) -> FileRecord | None:
        return self._one("route=? AND sha256=?", (route, sha256))

    def get(self, file_id: int) -> FileRecord | None:
        return self._one("id=?", (file_id,))

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
        where, args = self._conditions(
            route=route, states=None if state is None else [state], since=since, until=until
        )
        if pattern is not None:
            sql, arg = self.db.glob(pattern)
            where.append(sql)
            args.append(arg)
        return self._select(" AND ".join(where), [*args, limit], "ORDER BY id DESC LIMIT ?")

    def count(
        self,
        *,
        route: str | None = None,
        states: Collection[State] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        where, args = self._conditions(route=route, states=states, since=since, until=until)
        with self.db.read() as db:
            # Conditions are fixed fragments with placeholders; every value is bound.
            sql = f"SELECT count(*) AS n FROM files WHERE {' AND '.join(where)}"
            return int(self._run(db, sql, args).fetchone()["n"])

    def _conditions(
        self,
        *,
        route: str | None,
        states: Collection[State] | None,
        since: datetime | None,
        until: datetime | None,
    ) -> tuple[list[str], list[Any]]:
        where, args = ["1=1"], []
        if route is not None:
            where.append("route=?")
            args.append(route)
        if states is not None:
            names = sorted(str(s) for s in states)
            where.append(f"state IN ({_marks(names)})")
            args += names
        for sql, value in (("updated_at>=?", since), ("updated_at<?", until)):
            if value is not None:
                where.append(sql)
                args.append(self.db.stamp(value))
        return where, args

    def oldest(self, route: str, state: State) -> datetime | None:
        with self.db.read() as db:
            row = self._run(
                db,
                "SELECT min(created_at) AS at FROM files WHERE route=? AND state=?",
                (route, str(state)),
            ).fetchone()
        return None if row is None or row["at"] is None else self.db.when(row["at"])

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
        free, free_args = self._free()
        other = self.db.distinct
        before = self.db.stamp(transient_before)
        return self._select(
            f"route=? AND {HEALABLE} AND ("
            f"(state='quarantined' AND (layout_version {other} ? OR mapping_version {other} ? "
            f"OR (error_kind IN ({_marks(kinds)}) AND updated_at<?))) "
            f"OR (state IN ('processing', 'delivering') AND {free}) "
            "OR (state='retrying' AND updated_at<?))",
            (route, layout_version, mapping_version, *kinds, before, *free_args, before, limit),
            "ORDER BY id LIMIT ?",
        )

    def history(self, file_id: int) -> list[Transition]:
        with self.db.read() as db:
            rows = self._run(
                db,
                "SELECT at, from_state, to_state, note FROM transitions WHERE file_id=? "
                "ORDER BY id",
                (file_id,),
            ).fetchall()
        when = self.db.when
        return [Transition(when(r["at"]), r["from_state"], r["to_state"], r["note"]) for r in rows]

    def find(self, term: str, *, route: str | None = None, limit: int = 50) -> list[Found]:
        term = term.strip()
        if not term:
            return []
        #: Per file id: how it matched, the keys and the outputs the term named.
        how: dict[int, set[str]] = {}
        keys: dict[int, set[str]] = {}
        outputs: dict[int, set[str]] = {}
        # Each look-up goes by its own index (migrations 0012 and 0013): by the name, the
        # checksum or the key, never by the route (``route||''`` keeps the planners off
        # its index: a route may hold millions of files). Every value is bound.
        route_args = [route] if route is not None else []
        on_route = "f.route||''=?" if route is not None else "1=1"
        keys_on_route = "route=?" if route is not None else "1=1"
        if any(ch in term for ch in "*?"):
            file_name, name = self.db.glob(term, "f.path")
            out_name, _ = self.db.glob(term, "o.path")
        else:
            file_name, out_name, name = "f.path=?", "o.path=?", term
        files = "SELECT f.id AS file_id, NULL AS found FROM files f WHERE"
        outs = (
            "SELECT o.file_id, o.path AS found FROM outputs o JOIN files f ON f.id=o.file_id WHERE"
        )
        looks: list[tuple[str, str, list[Any]]] = [
            (
                "business key",
                "SELECT file_id, key AS found FROM key_files WHERE key=? AND what='delivered' "
                f"AND {keys_on_route}",
                [term, *route_args],
            ),
            (
                "business key, left out as a repeat",
                "SELECT file_id, key AS found FROM key_files WHERE key=? AND what='repeat' "
                f"AND {keys_on_route}",
                [term, *route_args],
            ),
            ("source name", f"{files} {file_name} AND {on_route}", [name, *route_args]),
            ("output name", f"{outs} {out_name} AND {on_route}", [name, *route_args]),
        ]
        if len(term) >= 8 and all(ch in "0123456789abcdef" for ch in term.lower()):
            file_sum, prefix = self.db.glob(term.lower() + "*", "f.sha256")
            out_sum, _ = self.db.glob(term.lower() + "*", "o.sha256")
            looks += [
                ("source sha256", f"{files} {file_sum} AND {on_route}", [prefix, *route_args]),
                ("output sha256", f"{outs} {out_sum} AND {on_route}", [prefix, *route_args]),
            ]
        with self.db.read() as db:
            for what, sql, args in looks:
                for row in self._run(db, f"{sql} ORDER BY 1 DESC LIMIT ?", [*args, limit]):
                    file_id = row["file_id"]
                    how.setdefault(file_id, set()).add(what)
                    if row["found"] is not None:
                        (keys if what.startswith("business key") else outputs).setdefault(
                            file_id, set()
                        ).add(row["found"])
        ids = sorted(how, reverse=True)[:limit]
        records: list[FileRecord] = []
        for some in _chunks(ids):
            records += self._select(f"id IN ({_marks(some)})", some)
        actions = self.actions.of_files(ids)
        order = (
            "business key",
            "business key, left out as a repeat",
            "source name",
            "output name",
            "source sha256",
            "output sha256",
        )
        return [
            Found(
                record,
                tuple(w for w in order if w in how[record.id]),
                tuple(sorted(keys.get(record.id, ()))),
                tuple(sorted(outputs.get(record.id, ()))),
                tuple(actions.get(record.id, ())),
            )
            for record in sorted(records, key=lambda r: r.id, reverse=True)
        ]

    # ------------------------------------------------------------------ claims

    def claim(self, key: FileKey, *, layout_version: str, mapping_version: str) -> Claim:
        now = self.db.stamp(datetime.now(UTC))
        lease, lease_args = self._lease()
        with self.db.write() as db:
            inserted = self._run(
                db,
                _INSERT + f"VALUES (?,?,?,?,?,?,?,?,'processing',1,?,?,{lease}) "
                f"ON CONFLICT (route, sha256) DO NOTHING RETURNING {_COLUMNS}",
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
                    *lease_args,
                ),
            ).fetchone()
            if inserted is not None:
                self._run(db, _TRANSITION, (inserted["id"], now, None, "processing", key.path))
                self._claimed(inserted["id"])
                return Claim(record_from_row(dict(inserted), []), already_delivered=False)
            return self._claim_again(db, key, layout_version, mapping_version, now)

    def _claim_again(
        self, db: Any, key: FileKey, layout_version: str, mapping_version: str, now: Any
    ) -> Claim:
        """A content the route has seen: delivered already, another daemon's, or taken
        (again) by this one."""
        row = self._run(
            db,
            f"SELECT {_COLUMNS}, {self._lease_runs} AS lease_runs FROM files "
            "WHERE route=? AND sha256=?" + self.db.lock_free_row,
            (key.route, key.sha256),
        ).fetchone()
        if row is None:
            # Another daemon's claim holds the row right now: its file, not ours.
            current = self._one("route=? AND sha256=?", (key.route, key.sha256))
            if current is None:  # gone meanwhile (pruned): this file is looked at again
                raise JournalUnavailable(
                    f"journal {self.where}: the record of {key.path} changed while it was "
                    "claimed; tried again"
                )
            return Claim(current, already_delivered=False, held_by="another daemon")
        row = dict(row)
        (record,) = self._records(db, [row])
        if record.state in DONE_STATES:
            return Claim(record, already_delivered=True)
        holder = self._held_by(row)
        if holder is not None:
            return Claim(record, already_delivered=False, held_by=holder)
        check_transition(record.id, record.state, State.PROCESSING)
        # A content not delivered yet keeps the name it was first taken under: a twin
        # that takes it over (its first taker killed mid-delivery, say) delivers the same
        # outputs under the same names, recognised where they already landed. The same
        # file taken again updates its time (the look-ups find it by it).
        same_file = record.endpoint == key.endpoint and record.path == key.path
        endpoint, path, size, mtime_ns = (
            (key.endpoint, key.path, key.size, key.mtime_ns)
            if same_file
            else (record.endpoint, record.path, record.size, record.mtime_ns)
        )
        hold, hold_args = self._hold(State.PROCESSING)
        updated = self._run(
            db,
            "UPDATE files SET endpoint=?, path=?, size=?, mtime_ns=?, layout_version=?, "
            f"mapping_version=?, state='processing', attempts=attempts+1, updated_at=?{hold} "
            f"WHERE id=? RETURNING {_COLUMNS}",
            (
                endpoint,
                path,
                size,
                mtime_ns,
                layout_version,
                mapping_version,
                now,
                *hold_args,
                record.id,
            ),
        ).fetchall()
        previous = row.get("owner")
        taken_over = previous not in (None, self.owner) and str(record.state) in HELD_STATES
        note = key.path + (f" (taken over from {previous})" if taken_over else "")
        self._run(db, _TRANSITION, (record.id, now, str(record.state), "processing", note))
        self._claimed(record.id)
        return Claim(self._records(db, updated)[0], already_delivered=False)

    def claim_many(
        self, keys: Sequence[FileKey], *, layout_version: str, mapping_version: str
    ) -> list[Claim]:
        """New contents inserted together (what the journal had, or another daemon just
        inserted, is claimed one by one, as ``claim`` does)."""
        now = self.db.stamp(datetime.now(UTC))
        lease, lease_args = self._lease()
        row = f"(?,?,?,?,?,?,?,?,'processing',1,?,?,{lease})"
        with self.batch():
            with self.db.write() as db:
                inserted = []
                # One statement per chunk: rows that conflict return nothing.
                for some in _chunks(keys):
                    values = ",".join([row] * len(some))
                    args = [
                        value
                        for k in some
                        for value in (
                            k.route,
                            k.endpoint,
                            k.path,
                            k.size,
                            k.mtime_ns,
                            k.sha256,
                            layout_version,
                            mapping_version,
                            now,
                            now,
                            *lease_args,
                        )
                    ]
                    sql = (
                        f"{_INSERT}VALUES {values} ON CONFLICT (route, sha256) DO NOTHING "
                        f"RETURNING {_COLUMNS}"
                    )
                    inserted += db.execute(self.db.sql(sql), args).fetchall()
                new = {(r["route"], r["sha256"]): record_from_row(dict(r), []) for r in inserted}
                self.db.many(
                    db,
                    self._sql(_TRANSITION),
                    [(r.id, now, None, "processing", r.path) for r in new.values()],
                )
            for record in new.values():
                self._claimed(record.id)
            return [
                Claim(new[(k.route, k.sha256)], already_delivered=False)
                if (k.route, k.sha256) in new
                else self.claim(k, layout_version=layout_version, mapping_version=mapping_version)
                for k in keys
            ]

    # ------------------------------------------------------------------ writes

    def record_steps(self, steps: Sequence[Step]) -> None:
        now = self.db.stamp(datetime.now(UTC))
        with self.db.write() as db:
            ids = sorted({step.file_id for step in steps})
            states: dict[int, str] = {}
            for some in _chunks(ids):
                sql = f"SELECT id, state FROM files WHERE id IN ({_marks(some)}) ORDER BY id"
                rows = db.execute(self.db.sql(sql + self.db.lock_rows), some).fetchall()
                states.update({r["id"]: str(r["state"]) for r in rows})
            missing = [i for i in ids if i not in states]
            if missing:
                raise self._missing(missing[0])
            outputs, transitions = [], []
            #: Per file: its last state, archive path (the last given) and whether a done
            #: state was entered (errors cleared), in step order.
            final: dict[int, tuple[State, str | None, bool]] = {}
            for step in steps:
                check_transition(step.file_id, states[step.file_id], step.state)
                if step.output is not None:
                    o = step.output
                    delivered = self.db.stamp(o.delivered_at)
                    outputs.append(
                        (step.file_id, o.endpoint, o.path, o.size, o.sha256, delivered, o.pickup)
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
            if outputs:
                self._replaced(db, [(o[1], o[2]) for o in outputs])
                self.db.many(db, self._sql(_OUTPUT), outputs)
            self.db.many(db, self._sql(_TRANSITION), transitions)
            groups: dict[tuple[str, bool], list[tuple[Any, ...]]] = {}
            for file_id, (state, archive, done) in final.items():
                hold, hold_args = self._hold(state)
                groups.setdefault((hold, done), []).append(
                    (str(state), now, archive, *hold_args, file_id)
                )
            for (hold, done), rows_args in groups.items():
                self.db.many(
                    db,
                    self._sql(
                        "UPDATE files SET state=?, updated_at=?, next_retry_at=NULL, "
                        "archive_path=coalesce(?, archive_path)"
                        + hold
                        + (", error_kind=NULL, error_message=NULL" if done else "")
                        + " WHERE id=?"
                    ),
                    rows_args,
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
        now = self.db.stamp(datetime.now(UTC))
        with self.db.write() as db:
            old = self._state_of(db, file_id)
            check_transition(file_id, old, state)
            said = note or (error[1] if error else None)
            self._run(db, _TRANSITION, (file_id, now, old, str(state), said))
            retry = None if next_retry_at is None else self.db.stamp(next_retry_at)
            hold, hold_args = self._hold(state)
            sets = ["state=?", "updated_at=?", "next_retry_at=?"]
            args: list[Any] = [str(state), now, retry]
            if error is not None:
                sets.append("error_kind=?, error_message=?")
                args += list(error)
            elif state in DONE_STATES:
                sets.append("error_kind=NULL, error_message=NULL")
            for column, value in (
                ("quarantine_path", quarantine_path),
                ("source_encoding", encoding),
                ("archive_path", archive_path),
            ):
                if value is not None:
                    sets.append(f"{column}=?")
                    args.append(value)
            if state == State.DROPPED and quarantine_path is None:
                # A dropped file's kept copy is gone (deleted, or another record's now):
                # the record no longer points at it.
                sets.append("quarantine_path=NULL")
            # Column names come from the fixed list above; every value is bound.
            sql = f"UPDATE files SET {', '.join(sets)}{hold} WHERE id=?"
            db.execute(self.db.sql(sql), (*args, *hold_args, file_id))

    def note(self, file_id: int, note: str) -> None:
        with self.db.write() as db:
            state = self._state_of(db, file_id)
            now = self.db.stamp(datetime.now(UTC))
            self._run(db, _TRANSITION, (file_id, now, state, state, note))

    def record_output(self, file_id: int, output: OutputRecord) -> None:
        with self.db.write() as db:
            self._replaced(db, [(output.endpoint, output.path)])
            self._run(
                db,
                _OUTPUT,
                (
                    file_id,
                    output.endpoint,
                    output.path,
                    output.size,
                    output.sha256,
                    self.db.stamp(output.delivered_at),
                    output.pickup,
                ),
            )

    def _replaced(self, db: Any, places: Sequence[tuple[str, str]]) -> None:
        """Outputs still waiting for their partner under names now delivered again (by
        this file or another): replaced before anyone collected them, no longer waited for
        (the delivery found the name free says it was collected first: see Delivery)."""
        self.db.many(
            db,
            self._sql(
                "UPDATE outputs SET pickup='replaced' WHERE endpoint=? AND path=? "
                "AND pickup='waiting'"
            ),
            places,
        )

    def prune(self, before: datetime) -> int:
        states = sorted(str(s) for s in DONE_STATES)
        with self.db.write() as db:
            ids = [
                r["id"]
                for r in self._run(
                    db,
                    f"SELECT id FROM files WHERE state IN ({_marks(states)}) AND updated_at<?",
                    (*states, self.db.stamp(before)),
                ).fetchall()
            ]
            for part in _chunks(ids):
                for table, column in (
                    ("outputs", "file_id"),
                    ("transitions", "file_id"),
                    ("business_keys", "file_id"),
                    ("key_files", "file_id"),
                    ("tallies", "file_id"),
                    ("actions", "file_id"),
                    ("files", "id"),
                ):
                    sql = f"DELETE FROM {table} WHERE {column} IN ({_marks(part)})"
                    db.execute(self.db.sql(sql), part)
        return len(ids)

    def batch(self) -> AbstractContextManager[None]:
        """The writes inside the block as one transaction (the backend's)."""
        raise NotImplementedError

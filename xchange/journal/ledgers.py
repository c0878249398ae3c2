"""The journal's small ledgers, written once for every backend.

Beside its files, a journal keeps ledgers every daemon sharing it must see alike: the
alert windows (one alert per route and cause per window, digests of what was held back,
announcements once per episode), the delivery deadlines of each day, the schedule slots
taken, what a poll holds back and why (observations), the business keys delivered, and
what operators did (actions: who, when, why).
Each is one class here, its SQL written once over :class:`Database`, the seam a backend
gives: its transactions, its parameter style, how it keeps a time, how it serializes
writers. Each ledger has one calling module (alerts, deadlines, the daemon's schedule,
the scan, the transfer, the operator commands); the status page, the metrics, the
morning report and ``find`` read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from xchange.journal.values import (
    Action,
    AlertWindow,
    FileTally,
    Observation,
    Waiting,
    sortable_time,
)


class Database(Protocol):
    """What the ledgers need of a backend's database."""

    @property
    def shared(self) -> bool:
        """Whether several daemons may share it (rows then need locks; schedule slots
        are taken once among them)."""
        ...

    @property
    def owner(self) -> str | None:
        """This daemon, as the owner of what it takes."""
        ...

    @property
    def lock_rows(self) -> str:
        """Appended to a SELECT that reads rows it will update: ``" FOR UPDATE"`` where
        rows lock; "" where a write transaction holds the whole database."""
        ...

    @property
    def lock_free_row(self) -> str:
        """Appended to a SELECT of one row to update: lock it, or (another daemon has it
        locked) find no row: ``" FOR UPDATE SKIP LOCKED"``; "" where nothing locks."""
        ...

    @property
    def distinct(self) -> str:
        """The operator "differs from, NULL being a value" (``IS NOT``, ``IS DISTINCT
        FROM``)."""
        ...

    def glob(self, pattern: str, column: str = "path") -> tuple[str, Any]:
        """A condition that ``column`` matches a shell pattern (``orders_*.csv``: ``*`` and
        ``?`` are its only wildcards, every other character matches itself), and the value
        it binds (an index on the column serves a pattern with a fixed start)."""
        ...

    def write(self) -> AbstractContextManager[Any]:
        """A write transaction: its connection (``execute(sql, args)``), committed at the
        end, rolled back on an exception; a database error is a ``JournalError``."""
        ...

    def read(self) -> AbstractContextManager[Any]:
        """A connection to read from."""
        ...

    def sql(self, text: str) -> str:
        """A statement written with ``?`` placeholders, in the backend's style."""
        ...

    def many(self, db: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement (in the backend's style) for each of ``rows``."""
        ...

    def stamp(self, when: datetime) -> Any:
        """A time as the backend keeps it."""
        ...

    def when(self, value: Any) -> datetime:
        """A time the backend kept."""
        ...

    def serialize(self, db: Any, name: str) -> None:
        """Until the transaction ends, one writer at a time for ``name`` (nothing where
        a write transaction is alone already)."""
        ...


class Ledger:
    """A ledger's rules over a backend's database: statements written with ``?``
    placeholders, each put in the backend's style once."""

    def __init__(self, database: Database) -> None:
        self.db = database
        self._statements: dict[str, str] = {}

    def _sql(self, text: str) -> str:
        """A statement in the backend's style (made once)."""
        known = self._statements.get(text)
        if known is None:
            known = self._statements[text] = self.db.sql(text)
        return known

    def _run(self, db: Any, text: str, args: Sequence[Any] = ()) -> Any:
        return db.execute(self._sql(text), args)


class Alerts(Ledger):
    """One alert per route and cause per window; what was held back, for a digest; an
    announcement once per episode; which alerts are open until a route recovers."""

    #: A window never sent (a row made to be locked).
    _NEVER = datetime(1970, 1, 1, tzinfo=UTC)

    def window(
        self, route: str, cause: str, *, window_s: float, now: datetime, opens: bool = True
    ) -> AlertWindow:
        """Whether to send an alert for (route, cause) now, or hold it back (counted).
        ``opens``: the cause is a failure the route recovers from (``resolve`` closes it
        with one "recovered"); news that recovers from nothing (a repeat stopped) opens
        nothing."""
        opened = "1" if opens else "open"
        with self.db.write() as db:
            self._run(
                db,
                "INSERT INTO alerts (route, cause, sent_at, held, open) VALUES (?,?,?,0,0) "
                "ON CONFLICT DO NOTHING",
                (route, cause, self.db.stamp(self._NEVER)),
            )
            row = self._run(
                db,
                "SELECT sent_at, held FROM alerts WHERE route=? AND cause=?" + self.db.lock_rows,
                (route, cause),
            ).fetchone()
            sent = self.db.when(row["sent_at"])
            fresh = sent.year == 1970
            if fresh or (now - sent).total_seconds() >= window_s:
                self._run(
                    db,
                    f"UPDATE alerts SET sent_at=?, held=0, open={opened} WHERE route=? AND cause=?",
                    (self.db.stamp(now), route, cause),
                )
                return AlertWindow(send=True, suppressed=0 if fresh else row["held"])
            self._run(
                db,
                f"UPDATE alerts SET held=held+1, open={opened} WHERE route=? AND cause=?",
                (route, cause),
            )
            return AlertWindow(send=False, suppressed=row["held"] + 1)

    def due_digests(self, *, window_s: float, now: datetime) -> list[tuple[str, str, int]]:
        """(route, cause, held) of each window that held alerts back and has ended; its
        count is reset and its window starts again (one daemon sends each digest)."""
        lock = self.db.lock_rows + (" SKIP LOCKED" if self.db.lock_rows else "")
        due = "SELECT route, cause, held FROM alerts WHERE held>0 AND sent_at<=? ORDER BY 1, 2"
        with self.db.write() as db:
            rows = self._run(
                db, due + lock, (self.db.stamp(now - timedelta(seconds=window_s)),)
            ).fetchall()
            for r in rows:
                self._run(
                    db,
                    "UPDATE alerts SET held=0, sent_at=? WHERE route=? AND cause=?",
                    (self.db.stamp(now), r["route"], r["cause"]),
                )
        return [(r["route"], r["cause"], r["held"]) for r in rows]

    def announce(self, key: str, *, since: datetime, now: datetime) -> bool:
        """Whether this daemon is the first to announce ``key`` since ``since``."""
        with self.db.write() as db:
            row = self._run(
                db,
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                "SET value=excluded.value WHERE meta.value < ? RETURNING key",
                (f"announced:{key}", sortable_time(now), sortable_time(since)),
            ).fetchone()
        return row is not None

    def resolve(self, route: str) -> list[str]:
        """The causes of a route's open alerts, closed now (the route works again)."""
        with self.db.write() as db:
            rows = self._run(
                db, "UPDATE alerts SET open=0 WHERE route=? AND open=1 RETURNING cause", (route,)
            ).fetchall()
        return sorted(r["cause"] for r in rows)


class Deadlines(Ledger):
    """Each route's delivery deadline of each day: missed (once), met late (once)."""

    def missed(self, route: str, day: str, at: datetime) -> bool:
        """Record the deadline of ``day`` missed; False if it was already."""
        with self.db.write() as db:
            row = self._run(
                db,
                "INSERT INTO deadlines (route, day, missed_at) VALUES (?,?,?) "
                "ON CONFLICT DO NOTHING RETURNING day",
                (route, day, self.db.stamp(at)),
            ).fetchone()
        return row is not None

    def met(self, route: str, day: str, at: datetime) -> bool:
        """Record a missed deadline met after all; False if it was not missed, or met."""
        with self.db.write() as db:
            row = self._run(
                db,
                "UPDATE deadlines SET met_at=? WHERE route=? AND day=? AND met_at IS NULL "
                "RETURNING day",
                (self.db.stamp(at), route, day),
            ).fetchone()
        return row is not None

    def recent(self, route: str, limit: int = 7) -> list[tuple[str, datetime, datetime | None]]:
        """(day, missed at, met at) of the route's last missed deadlines, newest first."""
        with self.db.read() as db:
            rows = self._run(
                db,
                "SELECT day, missed_at, met_at FROM deadlines WHERE route=? "
                "ORDER BY day DESC LIMIT ?",
                (route, limit),
            ).fetchall()
        return [
            (
                r["day"],
                self.db.when(r["missed_at"]),
                None if r["met_at"] is None else self.db.when(r["met_at"]),
            )
            for r in rows
        ]


class Slots(Ledger):
    """Scheduled runs: each slot of a route's schedule is run by one daemon."""

    def take(self, route: str, slot: str) -> bool:
        """Whether this daemon runs ``slot`` (False: another daemon took it)."""
        if not self.db.shared:
            return True  # one daemon: every slot is its own
        now = datetime.now(UTC)
        with self.db.write() as db:
            row = self._run(
                db,
                "INSERT INTO slots VALUES (?,?,?,?) ON CONFLICT DO NOTHING RETURNING route",
                (route, slot, self.db.owner, self.db.stamp(now)),
            ).fetchone()
            # Slots older than a week are history nobody needs.
            self._run(
                db, "DELETE FROM slots WHERE taken_at < ?", (self.db.stamp(now - timedelta(7)),)
            )
        return row is not None


class Observations(Ledger):
    """What each route's poll holds back, and why: the files seen not taken yet."""

    def held(self, route: str) -> dict[str, Observation]:
        with self.db.read() as db:
            rows = self._run(db, "SELECT * FROM observations WHERE route=?", (route,)).fetchall()
        return {
            r["path"]: Observation(
                r["path"],
                r["size"],
                r["mtime_ns"],
                self.db.when(r["first_seen"]),
                self.db.when(r["changed_at"]),
                r["reason"],
            )
            for r in rows
        }

    def save(self, route: str, held: list[Observation]) -> None:
        """Replace the route's observations (one daemon at a time per route: two that
        both deleted, then both inserted, broke the primary key and failed a look)."""
        stamp = self.db.stamp
        with self.db.write() as db:
            self.db.serialize(db, f"observations:{route}")
            self._run(db, "DELETE FROM observations WHERE route=?", (route,))
            self.db.many(
                db,
                self._sql("INSERT INTO observations VALUES (?,?,?,?,?,?,?)"),
                [
                    (
                        route,
                        o.path,
                        o.size,
                        o.mtime_ns,
                        stamp(o.first_seen),
                        stamp(o.changed_at),
                        o.reason,
                    )
                    for o in held
                ],
            )


class BusinessKeys(Ledger):
    """Business keys delivered per route (a route's ``dedupe_key``)."""

    def delivered(self, route: str, keys: list[str], *, except_file: int) -> dict[str, int]:
        """Which of ``keys`` another file of the route delivered, and which file."""
        found: dict[str, int] = {}
        with self.db.read() as db:
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                holes = ",".join("?" * len(part))
                sql = f"SELECT key, file_id FROM business_keys WHERE route=? AND file_id<>? AND key IN ({holes})"  # noqa: E501 - placeholders only
                rows = db.execute(self.db.sql(sql), (route, except_file, *part)).fetchall()
                found.update({r["key"]: r["file_id"] for r in rows})
        return found

    def record(self, route: str, file_id: int, keys: list[str]) -> None:
        """Keys a file delivered (the first file to deliver a key keeps it)."""
        now = self.db.stamp(datetime.now(UTC))
        with self.db.write() as db:
            self.db.many(
                db,
                self._sql(
                    "INSERT INTO business_keys (route, key, file_id, recorded_at) "
                    "VALUES (?,?,?,?) ON CONFLICT DO NOTHING"
                ),
                [(route, key, file_id, now) for key in keys],
            )
            self._seen(db, route, file_id, keys, "delivered", now)

    def left_out(self, route: str, file_id: int, keys: list[str]) -> None:
        """Keys a file carried that were delivered before: left out as repeats (or the
        file quarantined for them)."""
        now = self.db.stamp(datetime.now(UTC))
        with self.db.write() as db:
            self._seen(db, route, file_id, keys, "repeat", now)

    def _seen(
        self, db: Any, route: str, file_id: int, keys: list[str], what: str, now: Any
    ) -> None:
        self.db.many(
            db,
            self._sql(
                "INSERT INTO key_files (route, key, file_id, what, at) VALUES (?,?,?,?,?) "
                "ON CONFLICT DO NOTHING"
            ),
            [(route, key, file_id, what, now) for key in keys],
        )


class Pickups(Ledger):
    """Outputs of targets whose partner collects them: which still wait, when each was
    seen collected, and the episodes of outputs not collected in time (one alert each)."""

    def waiting(self, route: str | None = None) -> list[Waiting]:
        """The outputs still waiting for their partner (of ``route``), oldest first."""
        where, args = ("AND f.route=?", (route,)) if route is not None else ("", ())
        with self.db.read() as db:
            rows = self._run(
                db,
                "SELECT o.id, o.file_id, f.route, f.path AS source, o.endpoint, o.path, "
                "o.delivered_at FROM outputs o JOIN files f ON f.id = o.file_id "
                f"WHERE o.pickup='waiting' {where} ORDER BY o.delivered_at, o.id",
                args,
            ).fetchall()
        return [
            Waiting(
                r["id"],
                r["file_id"],
                r["route"],
                r["source"],
                r["endpoint"],
                r["path"],
                self.db.when(r["delivered_at"]),
            )
            for r in rows
        ]

    def at(self, endpoint: str, path: str) -> list[int]:
        """The outputs still waiting for their partner under ``path`` on ``endpoint``."""
        with self.db.read() as db:
            rows = self._run(
                db,
                "SELECT id FROM outputs WHERE endpoint=? AND path=? AND pickup='waiting'",
                (endpoint, path),
            ).fetchall()
        return [r["id"] for r in rows]

    def collected(self, output_ids: Sequence[int], at: datetime) -> int:
        """Record outputs seen collected at ``at`` (those still waiting: a daemon that saw
        it first keeps its time); how many were."""
        count = 0
        with self.db.write() as db:
            for start in range(0, len(output_ids), 500):
                part = list(output_ids[start : start + 500])
                holes = ",".join("?" * len(part))
                rows = self._run(
                    db,
                    f"UPDATE outputs SET pickup='collected', picked_up_at=? "
                    f"WHERE pickup='waiting' AND id IN ({holes}) RETURNING id",
                    (self.db.stamp(at), *part),
                ).fetchall()
                count += len(rows)
        return count

    def episode(self, route: str, overdue: bool, *, now: datetime) -> bool | None:
        """An episode of ``route``'s outputs not collected in time: True when it begins
        now (alert it), False when it ends now (say so), None when nothing changes. Once
        per episode, whichever daemon of a shared journal sees it first."""
        key = f"pickup-overdue:{route}"
        with self.db.write() as db:
            if overdue:
                row = self._run(
                    db,
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING "
                    "RETURNING key",
                    (key, sortable_time(now)),
                ).fetchone()
                return True if row is not None else None
            row = self._run(db, "DELETE FROM meta WHERE key=? RETURNING key", (key,)).fetchone()
            return False if row is not None else None

    def looked_at(self, route: str, at: datetime) -> None:
        """Record that ``route``'s target was looked at (a later look than any kept)."""
        with self.db.write() as db:
            self._run(
                db,
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                "SET value=excluded.value WHERE meta.value < excluded.value",
                (f"pickup-looked:{route}", sortable_time(at)),
            )

    def looked(self, route: str) -> datetime | None:
        """When ``route``'s target was last looked at for pickups (None: never)."""
        with self.db.read() as db:
            row = self._run(
                db, "SELECT value FROM meta WHERE key=?", (f"pickup-looked:{route}",)
            ).fetchone()
        return None if row is None else datetime.fromisoformat(row["value"])


class Tallies(Ledger):
    """What each delivered file held, for the report per route and day."""

    def record(self, tally: FileTally) -> None:
        """Keep a delivered file's tally (a file delivered again keeps its latest)."""
        totals = json.dumps({k: format(v, "f") for k, v in sorted(tally.totals.items())})
        with self.db.write() as db:
            self._run(
                db,
                "INSERT INTO tallies (file_id, route, delivered_at, documents, repeats, totals) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT (file_id) DO UPDATE SET "
                "delivered_at=excluded.delivered_at, documents=excluded.documents, "
                "repeats=excluded.repeats, totals=excluded.totals",
                (
                    tally.file_id,
                    tally.route,
                    self.db.stamp(tally.delivered_at),
                    tally.documents,
                    tally.repeats,
                    totals,
                ),
            )

    def between(self, route: str, since: datetime, until: datetime) -> list[FileTally]:
        """The tallies of ``route``'s files delivered in [since, until), in order."""
        with self.db.read() as db:
            rows = self._run(
                db,
                "SELECT * FROM tallies WHERE route=? AND delivered_at>=? AND delivered_at<? "
                "ORDER BY delivered_at, file_id",
                (route, self.db.stamp(since), self.db.stamp(until)),
            ).fetchall()
        return [
            FileTally(
                r["file_id"],
                r["route"],
                self.db.when(r["delivered_at"]),
                r["documents"],
                r["repeats"],
                {k: Decimal(v) for k, v in json.loads(r["totals"]).items()},
            )
            for r in rows
        ]


#: What an action without ``--reason`` records as its reason.
NO_REASON = "no reason given"


class Actions(Ledger):
    """What operators did through the commands: who, when, what (the command, the files
    and route it acted on) and why (their words)."""

    def record(
        self,
        action: str,
        *,
        who: str,
        reason: str | None,
        files: Sequence[tuple[int, str]] = (),
        route: str | None = None,
        detail: str | None = None,
    ) -> None:
        """One row per file (id, route) acted on; one row for the whole when the action
        names no file (``route``: the route it was about, if any). A blank ``reason`` is
        recorded as :data:`NO_REASON`."""
        now = self.db.stamp(datetime.now(UTC))
        # One line: a reason cannot write a line of its own into `journal actions`.
        why = " ".join((reason or "").split()) or NO_REASON
        rows: list[tuple[Any, ...]] = [
            (now, who, action, file_id, file_route, why, detail) for file_id, file_route in files
        ]
        with self.db.write() as db:
            self.db.many(
                db,
                self._sql(
                    "INSERT INTO actions (at, who, action, file_id, route, reason, detail) "
                    "VALUES (?,?,?,?,?,?,?)"
                ),
                rows or [(now, who, action, None, route, why, detail)],
            )

    def of_files(self, file_ids: Sequence[int]) -> dict[int, list[Action]]:
        """The actions on each of these files, oldest first (files without any: absent)."""
        found: dict[int, list[Action]] = {}
        ids = sorted(set(file_ids))
        with self.db.read() as db:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                holes = ",".join("?" * len(part))
                sql = f"SELECT * FROM actions WHERE file_id IN ({holes}) ORDER BY id"
                for r in db.execute(self.db.sql(sql), part).fetchall():
                    found.setdefault(r["file_id"], []).append(self._action(r))
        return found

    def recent(self, *, since: datetime | None = None, limit: int = 100) -> list[Action]:
        """The latest actions, on files or not, newest first."""
        after = self.db.stamp(since or datetime(1970, 1, 1, tzinfo=UTC))
        with self.db.read() as db:
            rows = self._run(
                db,
                "SELECT * FROM actions WHERE at>=? ORDER BY at DESC, id DESC LIMIT ?",
                (after, limit),
            ).fetchall()
        return [self._action(r) for r in rows]

    def _action(self, row: Any) -> Action:
        return Action(
            at=self.db.when(row["at"]),
            who=row["who"],
            action=row["action"],
            file_id=row["file_id"],
            route=row["route"],
            reason=row["reason"],
            detail=row["detail"],
        )

"""The morning report: what each route did over a period (``xchange report``).

Per route: files delivered, duplicates, quarantined, waiting for a retry, output files,
source bytes, failures by cause, the days' deadlines met or missed, and the slowest files
(from their first claim to their delivery); and per day (in the route's time zone, else
this host's): files and documents delivered, the control totals they agreed on (per
currency where a total is kept so), files stopped because totals differed, repeats
stopped, and deliveries their partner has not collected yet. Read from the journal
(shared by every daemon on a PostgreSQL journal, so one report covers the group).
"""

from __future__ import annotations

import zoneinfo
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any

from xchange.config import AppConfig, RouteConfig
from xchange.journal import DONE_STATES, FileRecord, Journal, State
from xchange.totals import summary

#: The slowest files listed per route.
SLOWEST = 3


@dataclass
class DayReport:
    """One route's day."""

    day: str
    files: int = 0
    documents: int = 0
    #: Control totals agreed, summed over the day's files (exact; text in JSON).
    totals: dict[str, Decimal] = field(default_factory=dict)
    #: Files stopped because their totals differed (quarantined, kind "totals").
    differences: int = 0
    #: Documents left out as delivered already (business keys seen before).
    repeats: int = 0
    #: Files stopped whole because they repeated documents delivered before
    #: (quarantined, kind "repeat": ``repeats = "quarantine"``).
    repeat_files: int = 0
    #: Outputs delivered that day that their partner has not collected yet.
    not_collected: int = 0

    def line(self) -> str:
        parts = [f"{self.files} file(s), {self.documents} document(s)"]
        if self.totals:
            parts.append(summary(self.totals))
        if self.differences:
            parts.append(f"{self.differences} file(s) stopped: control totals differed")
        if self.repeats:
            parts.append(f"{self.repeats} repeat(s) stopped")
        if self.repeat_files:
            parts.append(f"{self.repeat_files} file(s) stopped: documents delivered before")
        if self.not_collected:
            parts.append(f"{self.not_collected} delivered, not collected yet")
        return f"  {self.day}: " + "; ".join(parts)


@dataclass
class RouteReport:
    route: str
    delivered: int = 0
    quarantined: int = 0
    retrying: int = 0
    outputs: int = 0
    bytes: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    deadlines_missed: list[str] = field(default_factory=list)
    deadlines_met_late: list[str] = field(default_factory=list)
    slowest: list[dict[str, Any]] = field(default_factory=list)
    days: list[DayReport] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = (
            f"{self.route}: {self.delivered} delivered ({self.outputs} output file(s), "
            f"{_size(self.bytes)}), {self.quarantined} quarantined, {self.retrying} waiting"
        )
        out = [head]
        out += [d.line() for d in self.days]
        if self.failures:
            causes = ", ".join(f"{c} {n}" for c, n in sorted(self.failures.items()))
            out.append(f"  failures by cause: {causes}")
        for day in self.deadlines_missed:
            out.append(f"  deadline missed: {day}")
        for day in self.deadlines_met_late:
            out.append(f"  deadline missed, files arrived late: {day}")
        for s in self.slowest:
            out.append(f"  slow: #{s['id']} {s['path']}: {s['seconds']:.1f} s")
        return out


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} bytes"


def report(config: AppConfig, journal: Journal, since: datetime) -> list[RouteReport]:
    """Each configured route's report for the records changed since ``since``."""
    out = []
    for route in config.routes:
        rep = RouteReport(route.name)
        records: list[FileRecord] = journal.query(route=route.name, since=since, limit=1_000_000)
        causes: Counter[str] = Counter()
        done = []
        for r in records:
            if r.state in DONE_STATES:
                rep.delivered += 1
                rep.outputs += len(r.outputs)
                rep.bytes += r.size
                done.append(r)
            elif r.state == State.QUARANTINED:
                rep.quarantined += 1
            elif r.state == State.RETRYING:
                rep.retrying += 1
            if r.error_kind and r.state not in DONE_STATES:
                causes[r.error_kind] += 1
        rep.failures = dict(causes)
        for day, missed_at, met_at in journal.deadlines.recent(route.name, limit=31):
            if missed_at >= since:
                (rep.deadlines_met_late if met_at else rep.deadlines_missed).append(day)
        # Slow in the taking: files delivered at their first attempt (a file retried, or
        # taken from quarantine, counts its wait, not its work).
        first_go = [r for r in done if r.outputs and r.attempts == 1]
        ranked = sorted(
            (
                ((max(o.delivered_at for o in r.outputs) - r.created_at).total_seconds(), r)
                for r in first_go
            ),
            key=lambda pair: -pair[0],
        )
        rep.slowest = [
            {"id": r.id, "path": r.path, "seconds": round(t, 3)} for t, r in ranked[:SLOWEST]
        ]
        rep.days = _days(route, journal, records, since)
        out.append(rep)
    return out


def _zone(route: RouteConfig) -> tzinfo | None:
    """The time zone a route's days are counted in (None: this host's)."""
    return zoneinfo.ZoneInfo(route.expect.timezone) if route.expect is not None else None


def _days(
    route: RouteConfig, journal: Journal, records: list[FileRecord], since: datetime
) -> list[DayReport]:
    """The route's days since ``since``, each as the journal has it."""
    zone = _zone(route)
    days: dict[str, DayReport] = {}

    def day(when: datetime) -> DayReport:
        name = when.astimezone(zone).date().isoformat()
        return days.setdefault(name, DayReport(name))

    for r in records:
        if r.state in DONE_STATES:
            # Dated by its delivery, as its tally is: a file delivered before ``since``
            # and touched since (archived, collected) is not one of the period's.
            delivered = max((o.delivered_at for o in r.outputs), default=r.updated_at)
            if delivered >= since:
                day(delivered).files += 1
        elif r.state == State.QUARANTINED and r.error_kind == "totals":
            day(r.updated_at).differences += 1
        elif r.state == State.QUARANTINED and r.error_kind == "repeat":
            day(r.updated_at).repeat_files += 1
    for tally in journal.tallies.between(route.name, since, datetime.now(UTC)):
        d = day(tally.delivered_at)
        d.documents += tally.documents or 0
        d.repeats += tally.repeats
        for name, value in tally.totals.items():
            d.totals[name] = d.totals.get(name, Decimal(0)) + value
    for waiting in journal.pickups.waiting(route.name):
        if waiting.delivered_at >= since:
            day(waiting.delivered_at).not_collected += 1
    return [days[k] for k in sorted(days)]


def as_json(reports: list[RouteReport], since: datetime) -> dict[str, Any]:
    routes = [asdict(r) for r in reports]
    for route in routes:  # exact decimals as text
        for d in route["days"]:
            d["totals"] = {k: format(v, "f") for k, v in d["totals"].items()}
    return {"since": since.isoformat(), "routes": routes}


__all__ = ["RouteReport", "as_json", "report"]

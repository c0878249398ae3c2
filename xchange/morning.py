"""The morning report: what each route did over a period (``xchange report``).

Per route: files delivered, duplicates, quarantined, waiting for a retry, output files,
source bytes, failures by cause, the days' deadlines met or missed, and the slowest files
(from their first claim to their delivery). Read from the journal (shared by every daemon
on a PostgreSQL journal, so one report covers the group).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from xchange.config import AppConfig
from xchange.journal import DONE_STATES, FileRecord, Journal, State

#: The slowest files listed per route.
SLOWEST = 3


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

    def lines(self) -> list[str]:
        head = (
            f"{self.route}: {self.delivered} delivered ({self.outputs} output file(s), "
            f"{_size(self.bytes)}), {self.quarantined} quarantined, {self.retrying} waiting"
        )
        out = [head]
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
        timed = [
            (max(o.delivered_at for o in r.outputs) - r.created_at).total_seconds()
            for r in done
            if r.outputs
        ]
        ranked = sorted(
            ((t, r) for t, r in zip(timed, [r for r in done if r.outputs], strict=True)),
            key=lambda pair: -pair[0],
        )
        rep.slowest = [
            {"id": r.id, "path": r.path, "seconds": round(t, 3)} for t, r in ranked[:SLOWEST]
        ]
        out.append(rep)
    return out


def as_json(reports: list[RouteReport], since: datetime) -> dict[str, Any]:
    return {"since": since.isoformat(), "routes": [asdict(r) for r in reports]}


__all__ = ["RouteReport", "as_json", "report"]

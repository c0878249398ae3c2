"""What each route is doing and waiting for, for `xchange status`: files held (and why),
files in hand right now, files waiting for a retry (and until when), how many are in
quarantine, outputs its partner has not collected yet, and files in local drop folders
that no route takes.

Read-only: it reads the journal and lists local folders; it never connects to a server.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from xchange import deadlines, pickups
from xchange.config import AppConfig, LocalEndpoint
from xchange.errors import NEEDS_A_PERSON, XchangeError
from xchange.journal import FileRecord, Journal, State
from xchange.readiness import describe, marker_name
from xchange.remote import open_remote
from xchange.remote.base import Selector


@dataclass
class RouteStatus:
    route: str
    held: list[dict[str, Any]] = field(default_factory=list)
    in_hand: list[dict[str, Any]] = field(default_factory=list)
    retrying: list[dict[str, Any]] = field(default_factory=list)
    quarantined: int = 0
    #: Today's arrival deadline and how it stands (None: none today), in words, and as
    #: values for scripts (due time, files wanted, delivered, on time, missed...).
    deadline: str | None = None
    deadline_detail: dict[str, Any] | None = None
    #: Why files of the route wait for a person (a host key, a login), from the journal.
    needs_a_person: list[str] = field(default_factory=list)
    #: Outputs waiting for the partner to collect them, and how that stands (None: the
    #: target's partner does not collect).
    pickup: str | None = None
    awaiting_pickup: list[dict[str, Any]] = field(default_factory=list)


def waiting_for_a_person(journal: Journal, route: str) -> list[str]:
    """Why a route's files wait for a person, read from the journal: true until those
    files go (see :func:`needs_a_person`)."""
    return needs_a_person(journal.query(route=route, state=State.RETRYING, limit=100_000))


def needs_a_person(retrying: Iterable[FileRecord]) -> list[str]:
    """Why files waiting for a retry wait for a person, one line per cause
    ("host-key-unknown: 3 files waiting (...)")."""
    waiting: dict[str, list[FileRecord]] = {}
    for r in retrying:
        if r.error_kind in NEEDS_A_PERSON:
            waiting.setdefault(r.error_kind or "", []).append(r)
    return [
        f"{cause}: {len(records)} file{'s' if len(records) > 1 else ''} waiting "
        f"({records[-1].error_message or cause})"
        for cause, records in sorted(waiting.items())
    ]


@dataclass
class Stray:
    """A file in a local drop folder that no route takes."""

    endpoint: str
    path: str
    size: int
    hint: str


def local_time(when: datetime | None, now: datetime) -> str:
    """``02:15:30`` today, ``2026-12-04 02:15:30`` another day, in local time."""
    if when is None:
        return "now"
    here = when.astimezone()
    if here.date() == now.astimezone().date():
        return here.strftime("%H:%M:%S")
    return here.strftime("%Y-%m-%d %H:%M:%S")


def route_status(config: AppConfig, journal: Journal, now: datetime) -> list[RouteStatus]:
    out = []
    for route in config.routes:
        status = RouteStatus(route.name)
        held = sorted(journal.observations.held(route.name).values(), key=lambda o: o.path)
        status.held = [{"path": o.path, "size": o.size, "reason": describe(o, now)} for o in held]
        for state in (State.PROCESSING, State.DELIVERING):
            for r in journal.query(route=route.name, state=state, limit=1000):
                status.in_hand.append(
                    {
                        "id": r.id,
                        "path": r.path,
                        "size": r.size,
                        "state": str(r.state),
                        "since": r.updated_at.isoformat(),
                        "since_local": local_time(r.updated_at, now),
                        # A shared journal's daemon holding it, and until when.
                        "owner": r.owner,
                        "lease_until": r.lease_until.isoformat() if r.lease_until else None,
                    }
                )
        retrying = journal.query(route=route.name, state=State.RETRYING, limit=1000)
        status.needs_a_person = needs_a_person(retrying)
        for r in retrying:
            status.retrying.append(
                {
                    "id": r.id,
                    "path": r.path,
                    "cause": r.error_kind,
                    "needs_a_person": r.error_kind in NEEDS_A_PERSON,
                    "error": r.error_message,
                    "next_retry_at": r.next_retry_at.isoformat() if r.next_retry_at else None,
                    "next_try_local": local_time(r.next_retry_at, now),
                }
            )
        deadline = deadlines.today(route, journal, now)
        if deadline is not None:
            status.deadline = deadline.describe()
            status.deadline_detail = {
                "day": deadline.day,
                "by": deadline.by,
                "due": deadline.due.isoformat(),
                "wanted": deadline.wanted,
                "delivered": deadline.delivered,
                "on_time": deadline.on_time,
                "late": deadline.late,
                "passed": deadline.passed,
                "judged": deadline.judged,
                "missed": deadline.missed,
            }
        status.quarantined = journal.count(route=route.name, states=[State.QUARANTINED])
        picked = pickups.standing(route, journal, now)
        if picked is not None:
            status.pickup = picked.describe()
            overdue = {w.output_id for w in picked.overdue}
            status.awaiting_pickup = [
                {
                    "output": w.path,
                    "source": w.source,
                    "file_id": w.file_id,
                    "delivered_at": w.delivered_at.isoformat(),
                    "due_at": due.isoformat() if (due := picked.due(w)) is not None else None,
                    "overdue": w.output_id in overdue,
                }
                for w in picked.waiting[:1000]
            ]
        out.append(status)
    return out


def strays(config: AppConfig) -> list[Stray]:
    """Files in the local drop folders of the configuration that no route reading that
    folder takes (nor is a done-marker of one that does), with a hint when a route's
    pattern differs from the name only by case. SFTP folders are not listed (that needs
    a connection)."""
    found: list[Stray] = []
    by_endpoint: dict[str, list[Any]] = {}
    for route in config.routes:
        by_endpoint.setdefault(route.source.endpoint, []).append(route)
    for name, routes in by_endpoint.items():
        endpoint = config.endpoints.get(name)
        if not isinstance(endpoint, LocalEndpoint) or not endpoint.path.is_dir():
            continue
        archives = tuple(
            r.after.folder.split("/")[0] for r in routes if r.after.action == "archive"
        )
        recursive = any(r.source.recursive for r in routes)
        remote = open_remote(name, endpoint)
        try:
            listing = remote.list(recursive=recursive, skip_dirs=archives)
        except XchangeError:
            continue
        finally:
            remote.close()
        selectors = [
            (r, Selector(tuple(r.source.patterns), tuple(r.source.exclude))) for r in routes
        ]
        taken = {f.name for f in listing if any(s.wants(f.name) for _, s in selectors)}
        # A partner's manifests are taken too (read, then archived with their files).
        manifests = [
            Selector(tuple(r.source.manifest.patterns), ())
            for r in routes
            if r.source.manifest is not None
        ]
        taken |= {f.name for f in listing if any(m.wants(f.name) for m in manifests)}
        markers = {
            marker_name(r.ready.marker, f)
            for r, s in selectors
            if r.ready.marker
            for f in taken
            if s.wants(f)
        }
        for f in listing:
            if f.name in taken or f.name in markers:
                continue
            found.append(Stray(name, f.name, f.size, _hint(f.name, routes)))
    return found


def _hint(name: str, routes: list[Any]) -> str:
    for route in routes:
        for pattern in route.source.patterns:
            if fnmatch.fnmatchcase(name.lower(), pattern.lower()):
                return (
                    f"route {route.name}'s pattern {pattern!r} differs from it only by case "
                    "(patterns are case-sensitive)"
                )
    patterns = ", ".join(repr(p) for r in routes for p in r.source.patterns)
    return f"no route's pattern matches ({patterns})"


def as_dicts(routes: list[RouteStatus], found: list[Stray]) -> dict[str, Any]:
    return {"routes": [asdict(r) for r in routes], "not_taken": [asdict(s) for s in found]}

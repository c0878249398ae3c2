"""Arrival deadlines and the silence alarm: the failure that hurts most is the nightly
file that never came.

A route may say ``expect = { by = "02:30", days = "mon-sat", timezone = "Asia/Shanghai",
min_files = 1, silence_hours = 26 }``. Once the deadline of a listed day has passed with
fewer files delivered that day than ``min_files``, one alert goes out ("wms-stock-count:
nothing arrived by 02:30"; the journal's ledger makes it one per day, whichever daemon
sees it first); when the files arrive after all, a "recovered" notice follows. With
``silence_hours``, a route that has delivered nothing for that long is alerted (one per
alert window). The daemon checks every minute; ``status`` shows each route's deadline.

A deadline is met by what was delivered **by** it: a file delivered at 03:55 does not meet
the 02:30 deadline, it arrives late (the miss is alerted, then the late arrival). A deadline
that passed before xchange was there to see it (a daemon started on a journal that holds
nothing from before it) is not judged: "not judged", never "MISSED".
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from xchange.alerts import Alerter
from xchange.config import AppConfig, ExpectSpec, RouteConfig, parse_days
from xchange.journal import DONE_STATES, Journal


@dataclass(frozen=True, slots=True)
class Deadline:
    """A route's deadline on one day, and how it stands."""

    route: str
    day: str
    by: str
    due: datetime
    wanted: int
    #: Files delivered that day up to now, and of those, by the deadline.
    delivered: int
    passed: bool
    on_time: int = 0
    #: False when the deadline passed before xchange was there to see it.
    judged: bool = True

    @property
    def missed(self) -> bool:
        return self.passed and self.judged and self.on_time < self.wanted

    @property
    def late(self) -> int:
        """Files delivered after the deadline (that day)."""
        return self.delivered - self.on_time if self.passed else 0

    def describe(self) -> str:
        if not self.passed:
            return f"expects {self.wanted} file(s) by {self.by} ({self.delivered} so far)"
        if not self.judged:
            return (
                f"not judged: xchange started after {self.by} on a journal with nothing "
                f"from before it ({self.delivered} file(s) today)"
            )
        if self.missed:
            late = f"; {self.late} arrived late" if self.late else ""
            return f"MISSED: {self.on_time} of {self.wanted} file(s) by {self.by}{late}"
        return f"met: {self.on_time} file(s) by {self.by}"


def window(expect: ExpectSpec, now: datetime) -> tuple[str, datetime, datetime] | None:
    """Today's deadline in the route's time zone: (day, start of that day, deadline), or
    None if today is not one of its days (or it has no deadline)."""
    if expect.by is None:
        return None
    zone = zoneinfo.ZoneInfo(expect.timezone)
    here = now.astimezone(zone)
    if here.weekday() not in parse_days(expect.days):
        return None
    hour, minute = (int(x) for x in expect.by.split(":"))
    start = datetime.combine(here.date(), time(0, 0), zone)
    return here.date().isoformat(), start, start + timedelta(hours=hour, minutes=minute)


def delivered_since(
    journal: Journal, route: str, since: datetime, until: datetime | None = None
) -> int:
    """Files of the route delivered since ``since`` (and before ``until``)."""
    return journal.count(route=route, states=DONE_STATES, since=since, until=until)


def today(
    route: RouteConfig, journal: Journal, now: datetime, *, started: datetime | None = None
) -> Deadline | None:
    """How the route's deadline of today stands (None: none today). ``started``: when the
    daemon began; a deadline before it, on a journal that holds nothing from before the
    deadline, is not judged."""
    if route.expect is None:
        return None
    found = window(route.expect, now)
    if found is None:
        return None
    day, start, due = found
    passed = now >= due
    judged = True
    if passed and started is not None and started > due:
        judged = bool(journal.query(until=due, limit=1))
    delivered = delivered_since(journal, route.name, start)
    return Deadline(
        route.name,
        day,
        route.expect.by or "",
        due,
        route.expect.min_files,
        delivered,
        passed,
        # (before the deadline, every file delivered so far is on time)
        on_time=delivered_since(journal, route.name, start, due) if passed else delivered,
        judged=judged,
    )


def check(
    config: AppConfig,
    journal: Journal,
    alerter: Alerter,
    now: datetime,
    *,
    started: datetime | None = None,
) -> list[Deadline]:
    """Alert missed deadlines (once a day), late arrivals (recovered), silent routes.
    Silence counts from the last delivery, or from ``started`` (the daemon's start) when
    that is later: a new installation is not silent yet."""
    states = []
    for route in config.routes:
        if route.expect is None:
            continue
        state = today(route, journal, now, started=started)
        if state is not None:
            states.append(state)
            if state.missed:
                if journal.deadlines.missed(route.name, state.day, now):
                    alerter.deadline_missed(route.name, state.by, state.on_time, state.wanted)
                if state.delivered >= state.wanted and journal.deadlines.met(
                    route.name, state.day, now
                ):
                    alerter.deadline_met(route.name, state.by)  # arrived late after all
        hours = route.expect.silence_hours
        if hours is not None:
            since = now - timedelta(hours=hours)
            fresh = started is not None and started > since
            if not fresh and delivered_since(journal, route.name, since) == 0:
                last = max(
                    (
                        r.updated_at
                        for state_ in DONE_STATES
                        for r in journal.query(route=route.name, state=state_, limit=1)
                    ),
                    default=None,
                )
                alerter.silence(
                    route.name,
                    hours,
                    last.astimezone().strftime("%Y-%m-%d %H:%M") if last else "never",
                )
    return states


__all__ = ["Deadline", "check", "today", "window"]

"""Pickup receipts: a target whose partner collects what is delivered (takes each file
out of its inbox) says when each output was collected, and alerts what was not in time.

A target declares ``pickup = true`` (or ``pickup_within = "2h"``). Each output delivered
there is journaled as waiting; a look at the target (every ``daemon.pickup_every``
seconds, and at the end of ``run --once``) lists its folder once and records each waiting
output that is gone as collected at that look ("picked up at": the first look that saw it
gone). An output still there ``pickup_within`` after its delivery is overdue: one alert
for the episode ("delivered but not collected by T"), and one notice when nothing is
overdue any more. What waits, what is overdue and when the target was last looked at come
from the journal, so ``status``, the status page, the metrics and the morning report
agree whichever daemon looked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from xchange.alerts import Alerter
from xchange.config import RouteConfig
from xchange.errors import JournalError, RemoteError
from xchange.journal import Journal, Waiting
from xchange.remote import Remote

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Standing:
    """How a route's pickups stand, from the journal."""

    route: str
    waiting: list[Waiting]
    within: timedelta | None
    #: When the target was last looked at (None: never yet).
    looked_at: datetime | None
    now: datetime

    def due(self, item: Waiting) -> datetime | None:
        return None if self.within is None else item.delivered_at + self.within

    @property
    def overdue(self) -> list[Waiting]:
        return [w for w in self.waiting if (d := self.due(w)) is not None and d <= self.now]

    def describe(self) -> str:
        """``3 waiting for the partner (1 overdue: WMS_1.xml, delivered 12:02); looked 14:10``."""
        if not self.waiting:
            text = "nothing waiting for the partner"
        else:
            text = f"{len(self.waiting)} waiting for the partner"
            overdue = self.overdue
            if overdue:
                first = overdue[0]
                text += (
                    f" ({len(overdue)} not collected within {self.within_text}: {first.path}, "
                    f"delivered {first.delivered_at.astimezone():%Y-%m-%d %H:%M})"
                )
            else:
                oldest = self.waiting[0]
                text += f" (oldest delivered {oldest.delivered_at.astimezone():%Y-%m-%d %H:%M})"
        looked = (
            f"last looked {self.looked_at.astimezone():%Y-%m-%d %H:%M}"
            if self.looked_at is not None
            else "not looked at yet"
        )
        return f"{text}; {looked}"

    @property
    def within_text(self) -> str:
        if self.within is None:
            return "-"
        minutes = int(self.within.total_seconds() // 60)
        return f"{minutes // 60}h{minutes % 60:02d}m" if minutes % 60 else f"{minutes // 60}h"


def standing(route: RouteConfig, journal: Journal, now: datetime) -> Standing | None:
    """How ``route``'s pickups stand now (None: its partner does not collect)."""
    if not route.target.collected:
        return None
    return Standing(
        route.name,
        journal.pickups.waiting(route.name),
        route.target.collect_within,
        journal.pickups.looked(route.name),
        now,
    )


def look(
    routes: Iterable[RouteConfig],
    journal: Journal,
    remote: Callable[[str], Remote],
    alerter: Alerter,
    now: datetime,
) -> list[Standing]:
    """Look at each collecting target once: record what its partner collected, alert
    what is overdue (once per episode) and what has been collected since."""
    found = []
    for route in routes:
        if not route.target.collected:
            continue
        try:
            found.append(_look(route, journal, remote, alerter, now))
        except RemoteError as exc:
            log.error("pickup.look_failed", route=route.name, error=exc.reason)
            alerter.pickup_unseen(route.name, route.target.endpoint, exc.reason)
        except JournalError as exc:
            log.error("pickup.look_failed", route=route.name, error=exc.reason)
    return found


def _look(
    route: RouteConfig,
    journal: Journal,
    remote: Callable[[str], Remote],
    alerter: Alerter,
    now: datetime,
) -> Standing:
    waiting = journal.pickups.waiting(route.name)
    unseeable: set[str] = set()
    if waiting:
        # Each output where it was delivered: a route moved to another target leaves
        # what it delivered before at the old one, still waiting there.
        present: set[tuple[str, str]] = set()
        for endpoint in sorted({w.endpoint for w in waiting}):
            try:
                where = remote(endpoint)
            except KeyError:  # no longer configured: nothing can be seen taken there
                log.warning(
                    "pickup.endpoint_gone",
                    route=route.name,
                    endpoint=endpoint,
                    then="its outputs are neither taken for collected nor alerted as late",
                )
                present |= {(endpoint, w.path) for w in waiting if w.endpoint == endpoint}
                unseeable.add(endpoint)
                continue
            present |= {(endpoint, info.name) for info in where.list()}
        gone = [w for w in waiting if (w.endpoint, w.path) not in present]
        if gone:
            journal.pickups.collected([w.output_id for w in gone], now)
            for w in gone:
                log.info(
                    "output.picked_up",
                    route=route.name,
                    output=w.path,
                    source=w.source,
                    delivered_at=w.delivered_at.isoformat(),
                    picked_up_at=now.isoformat(),
                )
            taken = {w.output_id for w in gone}
            waiting = [w for w in waiting if w.output_id not in taken]
    journal.pickups.looked_at(route.name, now)
    judged = [w for w in waiting if w.endpoint not in unseeable]
    state = Standing(route.name, judged, route.target.collect_within, now, now)
    overdue = state.overdue
    episode = journal.pickups.episode(route.name, bool(overdue), now=now)
    if episode is True:
        alerter.not_collected(
            route.name,
            route.target.endpoint,
            state.within_text,
            [(w.path, w.delivered_at) for w in overdue],
        )
    elif episode is False:
        alerter.collected(route.name, route.target.endpoint)
    return state


__all__ = ["Standing", "look", "standing"]

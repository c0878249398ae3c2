"""Readiness decided from successive looks, with an injected clock: a file whose time is
in the future (the writer's clock ahead) ages from when xchange first saw it unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from xchange.config import ReadySpec
from xchange.journal import Observation
from xchange.readiness import judge
from xchange.remote import FileInfo

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def look(spec: ReadySpec, f: FileInfo, before: dict[str, Observation], at: datetime) -> Any:
    verdict = judge(spec, [f], {f.name}, before, at)
    return verdict, {o.path: o for o in verdict.held}


def test_a_file_from_the_future_is_taken_after_min_age_of_seeing_it_unchanged() -> None:
    """min_age = 60 and a file time an hour ahead: it was held "too young: 0 s" until this
    machine's clock caught up with the writer's, an hour later."""
    spec = ReadySpec(settle=2, min_age=60)
    ahead = int((NOW + timedelta(hours=1)).timestamp() * 1e9) + 1
    f = FileInfo("orders.csv", 100, ahead)
    verdict, seen = look(spec, f, {}, NOW)
    assert not verdict.ready and verdict.future == [f]
    verdict, seen = look(spec, f, seen, NOW + timedelta(seconds=30))
    assert not verdict.ready and "too young: 30 s" in verdict.held[0].reason
    verdict, _ = look(spec, f, seen, NOW + timedelta(seconds=61))
    assert verdict.ready == [f]


def test_a_file_from_the_future_that_changes_starts_again() -> None:
    spec = ReadySpec(settle=2, min_age=60)
    ahead = int((NOW + timedelta(hours=1)).timestamp() * 1e9) + 1
    verdict, seen = look(spec, FileInfo("a.csv", 100, ahead), {}, NOW)
    verdict, seen = look(spec, FileInfo("a.csv", 200, ahead + 5), seen, NOW + timedelta(seconds=50))
    verdict, _ = look(spec, FileInfo("a.csv", 200, ahead + 5), seen, NOW + timedelta(seconds=70))
    assert not verdict.ready  # unchanged for 20 s only


def test_a_file_seen_before_the_clock_stepped_back_settles_from_now() -> None:
    """The file was seen at 12:00, then this machine's clock stepped back an hour: its
    settle counts from the first look after the step (before: it was held "settling"
    until the clock got back to 12:00, an hour later)."""
    spec = ReadySpec(settle=2)
    f = FileInfo("orders.csv", 100, int(NOW.timestamp() * 1e9) + 1)  # written just now
    verdict, seen = look(spec, f, {}, NOW)
    assert not verdict.ready
    back = NOW - timedelta(hours=1)
    verdict, seen = look(spec, f, seen, back + timedelta(seconds=1))
    assert not verdict.ready  # unchanged since the step for 0 s
    verdict, _ = look(spec, f, seen, back + timedelta(seconds=4))
    assert verdict.ready == [f]


def test_the_next_look_comes_when_a_new_file_is_old_enough_not_a_whole_settle_later() -> None:
    """settle = 10: a file written 7 s before it was first seen is ready at first sight
    3 s later (its own time is then 10 s old); one written just now, 10 s later."""
    spec = ReadySpec(settle=10)
    older = FileInfo("older.csv", 100, int((NOW - timedelta(seconds=7)).timestamp() * 1e9) + 1)
    fresh = FileInfo("fresh.csv", 100, int(NOW.timestamp() * 1e9) + 1)
    verdict, seen = look(spec, older, {}, NOW)
    assert not verdict.ready
    assert abs((verdict.soonest(NOW, spec) or 0) - 3.0) < 0.01
    verdict, _ = look(spec, older, seen, NOW + timedelta(seconds=3.01))
    assert verdict.ready == [older]
    verdict, _ = look(spec, fresh, {}, NOW)
    assert abs((verdict.soonest(NOW, spec) or 0) - 10.0) < 0.01
    # Whole seconds (SFTP): the time may be up to 1 s later than shown.
    whole = FileInfo("whole.csv", 100, int(NOW.timestamp() - 7) * 1_000_000_000)
    verdict, _ = look(spec, whole, {}, NOW)
    assert abs((verdict.soonest(NOW, spec) or 0) - 4.0) < 0.01

"""Is a file completely written? Decided from what successive looks at its folder saw.

A file is taken when:

- its done-marker exists, if the route asks for one (``orders.csv.ok``);
- its size and time did not change between two looks at least ``settle`` seconds apart,
  or, at first sight, it has not been touched for ``settle`` seconds already;
- it is at least ``min_age`` seconds old.

Otherwise it is *held*, with a reason a person can read (``size changed 2 s ago``);
held for longer than ``max_wait`` it is reported as stuck. Looks are kept in the journal,
so the daemon, ``run --once`` under cron and ``xchange status`` all see the same thing.
"""

from __future__ import annotations

import posixpath
import re
import string
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from xchange.config import ReadySpec
from xchange.journal import Observation
from xchange.remote import FileInfo


def marker_name(template: str, name: str) -> str:
    """The done-marker of ``name``: ``{name}.ok`` or ``{stem}.done`` next to it."""
    folder, base = posixpath.split(name)
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return posixpath.join(folder, template.format(name=base, stem=stem))


def marker_pattern(template: str) -> re.Pattern[str]:
    """What the base name of any done-marker made by ``template`` looks like: its
    literal parts as they are, ``{name}`` and ``{stem}`` anything."""
    parts = []
    for literal, field_name, _spec, _conv in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field_name is not None:
            parts.append(".*")
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True, slots=True)
class Verdict:
    ready: list[FileInfo]
    held: list[Observation]
    #: Held files that just passed ``max_wait``.
    stuck: list[Observation]
    #: Files whose time is in the future (the writer's clock is ahead): judged as age 0,
    #: by their size and time staying the same between looks.
    future: list[FileInfo] = field(default_factory=list)

    def soonest(self, now: datetime, spec: ReadySpec) -> float | None:
        """Seconds until a file held only for settling could be ready (None: none such):
        once it has been seen unchanged for ``settle`` seconds, or once its own time is
        ``settle`` seconds old, whichever comes first (as :func:`judge` decides; a file
        first seen long after it was written is not waited for a whole ``settle``)."""
        waits = [
            max(
                0.0,
                min(
                    spec.settle - (now - o.changed_at).total_seconds(),
                    spec.settle - _age(o.mtime_ns, now),
                ),
            )
            for o in self.held
            if o.reason in ("new", "size changed", "modified", "settling")
        ]
        return min(waits) if waits else None


#: Why a data file of a route with partner manifests is held until one lists it.
UNLISTED = "waiting for a manifest listing it"


def judge(
    spec: ReadySpec,
    files: list[FileInfo],
    names: set[str],
    previous: dict[str, Observation],
    now: datetime,
    listed: Container[str] | None = None,
) -> Verdict:
    """Split a listing into files ready to take and files held, with reasons; with
    ``listed`` (the names partner manifests list), a file no manifest lists is held."""
    ready: list[FileInfo] = []
    held: list[Observation] = []
    stuck: list[Observation] = []
    future: list[FileInfo] = []
    for f in files:
        before = previous.get(f.name)
        if before is not None and max(before.first_seen, before.changed_at) > now:
            # This machine's clock went back since that look: what was seen then counts
            # from now (a settle starts again), not from when the clock gets back there.
            before = Observation(
                before.path,
                before.size,
                before.mtime_ns,
                min(before.first_seen, now),
                min(before.changed_at, now),
                before.reason,
            )
        first_seen = before.first_seen if before else now
        same = before is not None and (before.size, before.mtime_ns) == (f.size, f.mtime_ns)
        changed_at = before.changed_at if same and before else now
        age = _age(f.mtime_ns, now)
        if age < -2.0:
            future.append(f)
            # A time in the future says nothing of how long ago the file changed: its age
            # counts from when xchange first saw it as it is (``min_age`` too), not from
            # when this machine's clock reaches the writer's.
            age = (now - changed_at).total_seconds() if same else 0.0
        age = max(age, 0.0)
        reason = _reason(spec, f, names, before, same, changed_at, age, now)
        if reason is None and listed is not None and f.name not in listed:
            reason = UNLISTED
        if reason is None:
            ready.append(f)
            continue
        obs, newly_stuck = hold(spec, f, reason, first_seen, changed_at, before, now)
        if newly_stuck:
            stuck.append(obs)
        held.append(obs)
    return Verdict(ready, held, stuck, future)


def _age(mtime_ns: int, now: datetime) -> float:
    """Seconds since a file's time (negative: in the future)."""
    age = (now - datetime.fromtimestamp(mtime_ns / 1e9, tz=now.tzinfo)).total_seconds()
    if mtime_ns % 1_000_000_000 == 0:
        age -= 1.0  # whole seconds (SFTP): the change may be up to 1 s later than shown
    return age


def hold(
    spec: ReadySpec,
    f: FileInfo,
    reason: str,
    first_seen: datetime,
    changed_at: datetime,
    before: Observation | None,
    now: datetime,
) -> tuple[Observation, bool]:
    """A held file's observation (``STUCK for ...`` once held longer than ``max_wait``),
    and whether it just became stuck."""
    if spec.max_wait and now - first_seen > timedelta(seconds=spec.max_wait):
        obs = Observation(
            f.name,
            f.size,
            f.mtime_ns,
            first_seen,
            changed_at,
            f"STUCK for {_ago(now - first_seen)}: {reason}",
        )
        return obs, before is None or not before.reason.startswith("STUCK")
    return Observation(f.name, f.size, f.mtime_ns, first_seen, changed_at, reason), False


def _reason(
    spec: ReadySpec,
    f: FileInfo,
    names: set[str],
    before: Observation | None,
    same: bool,
    changed_at: datetime,
    age: float,
    now: datetime,
) -> str | None:
    if spec.marker and marker_name(spec.marker, f.name) not in names:
        return f"waiting for marker {marker_name(spec.marker, f.name)}"
    stable_for = (now - changed_at).total_seconds() if same else 0.0
    if spec.settle and stable_for < spec.settle and age < spec.settle:
        if before is None:
            return "new"
        if not same:
            return "size changed" if before.size != f.size else "modified"
        return "settling"
    if age < spec.min_age:
        return f"too young: {age:.0f} s of {spec.min_age:g} s"
    return None


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def describe(obs: Observation, now: datetime) -> str:
    """A held file's reason for a person: ``size changed 2 s ago``."""
    if obs.reason in ("new", "size changed", "modified"):
        return f"{obs.reason} {_ago(now - obs.changed_at)} ago"
    if obs.reason == "settling":
        return f"settling: unchanged for {_ago(now - obs.changed_at)}"
    return obs.reason

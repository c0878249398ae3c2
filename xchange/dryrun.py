"""`run --once --dry-run`: what a run would do now, touching nothing.

Each route's source is listed (read-only), each file judged as a run would judge it (done
already, waiting for a retry, held as not complete yet, or ready) from what the journal
knows, and each ready file converted into a scratch folder to show the names its outputs
would get, or why it would be quarantined. Nothing is written to the journal, the source
folder, the target or the quarantine; no folder is marked as this journal's drop.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from xchange.archives import convert_file
from xchange.config import AppConfig, RouteConfig
from xchange.errors import XchangeError
from xchange.journal import DONE_STATES, Journal, State
from xchange.manifest import parse
from xchange.pgp import as_read, delivered_names
from xchange.pipeline import CopyPipeline, Pipeline, make_pipeline
from xchange.readiness import describe, judge, marker_name
from xchange.remote import FileInfo, Remote, open_remote
from xchange.remote.base import Selector
from xchange.sink import Sink

#: ``run --once`` waits at most this long for files finished moments ago (the runner's
#: MAX_SETTLE_WAIT).
SETTLE_WAIT = 10.0


@dataclass
class PlannedFile:
    route: str
    source: str
    size: int
    #: "take", "done", "waiting", "held", "quarantine" or "duplicate".
    verdict: str
    detail: str = ""
    outputs: list[str] = field(default_factory=list)

    def line(self) -> str:
        what = {
            "take": "would deliver",
            "done": "delivered already",
            "waiting": "waiting",
            "held": "held",
            "quarantine": "would be quarantined",
            "duplicate": "same content delivered already",
        }[self.verdict]
        text = f"{self.route}: {self.source} ({self.size} bytes): {what}"
        if self.outputs:
            text += f" as {', '.join(self.outputs)}"
        if self.detail:
            text += f": {self.detail}"
        return text


@dataclass
class RoutePlan:
    route: str
    files: list[PlannedFile] = field(default_factory=list)
    error: str | None = None


def plan(config: AppConfig, journal: Journal, routes: list[str] | None = None) -> list[RoutePlan]:
    """What ``run --once`` would do with each route's files now."""
    out = []
    remotes: dict[str, Remote] = {}
    try:
        for route in config.routes:
            if routes and route.name not in routes:
                continue
            if route.source.endpoint not in remotes:
                remotes[route.source.endpoint] = open_remote(
                    route.source.endpoint, config.endpoints[route.source.endpoint]
                )
            out.append(_route_plan(config, journal, route, remotes[route.source.endpoint]))
    finally:
        for remote in remotes.values():
            remote.close()
    return out


def _route_plan(
    config: AppConfig, journal: Journal, route: RouteConfig, source: Remote
) -> RoutePlan:
    result = RoutePlan(route.name)
    archive_top = route.after.folder.split("/", 1)[0] if route.after.action == "archive" else ""
    try:
        pipeline = make_pipeline(route, config.formats)
        listing = source.list(
            recursive=route.source.recursive,
            skip_dirs=tuple(d for d in (archive_top,) if d and "{" not in d),
        )
    except XchangeError as exc:
        result.error = exc.reason
        return result
    selector = Selector(tuple(route.source.patterns), tuple(route.source.exclude))
    wanted = [f for f in listing if selector.wants(f.name)]
    if route.ready.marker:
        markers = {marker_name(route.ready.marker, f.name) for f in wanted}
        wanted = [f for f in wanted if f.name not in markers]
    listed: set[str] | None = None
    if route.source.manifest is not None:
        # A partner's manifests are no data files; what they list may be taken.
        manifests = Selector(tuple(route.source.manifest.patterns))
        listed = set()
        for f in listing:
            if manifests.wants(f.name):
                listed |= _listed(route, source, f, result)
        wanted = [f for f in wanted if not manifests.wants(f.name)]
    now = datetime.now(UTC)
    fresh: list[FileInfo] = []
    for f in wanted:
        known = journal.lookup(route.name, route.source.endpoint, f.name, f.size, f.mtime_ns)
        if known is not None and known.state in DONE_STATES:
            result.files.append(
                PlannedFile(route.name, f.name, f.size, "done", f"#{known.id}, {known.state}")
            )
        elif (
            known is not None
            and known.state == State.RETRYING
            and known.next_retry_at is not None
            and known.next_retry_at > now
        ):
            when = known.next_retry_at.astimezone().strftime("%H:%M:%S")
            result.files.append(
                PlannedFile(route.name, f.name, f.size, "waiting", f"#{known.id}, next try {when}")
            )
        else:
            fresh.append(f)
    verdict = judge(
        route.ready,
        fresh,
        {f.name for f in listing},
        journal.observations.held(route.name),
        now,
        listed,
    )
    by_name = {f.name: f for f in fresh}
    for held in verdict.held:
        wait = route.ready.settle - (now - held.changed_at).total_seconds()
        settling = held.reason in ("new", "size changed", "modified", "settling")
        if settling and held.path in by_name and wait <= min(route.ready.settle + 1, SETTLE_WAIT):
            # run --once waits for a file finished moments ago (if it stays unchanged).
            planned = _try(config, route, pipeline, source, by_name[held.path], journal)
            note = f"once unchanged for {route.ready.settle:g} s ({max(0.0, wait):.0f} s more)"
            planned.detail = f"{note}; {planned.detail}" if planned.detail else note
            result.files.append(planned)
        else:
            result.files.append(
                PlannedFile(route.name, held.path, held.size, "held", describe(held, now))
            )
    for f in verdict.ready:
        result.files.append(_try(config, route, pipeline, source, f, journal))
    result.files.sort(key=lambda p: p.source)
    return result


def _listed(route: RouteConfig, source: Remote, f: FileInfo, result: RoutePlan) -> set[str]:
    """The names a partner's manifest lists (none, and said, if it is refused)."""
    assert route.source.manifest is not None
    buffer = io.BytesIO()
    try:
        source.download(f.name, buffer)
        return {e.name for e in parse(route.source.manifest, buffer.getvalue(), f.name)}
    except XchangeError as exc:
        result.files.append(
            PlannedFile(route.name, f.name, f.size, "held", f"manifest refused: {exc.reason}")
        )
        return set()


def _try(
    config: AppConfig,
    route: RouteConfig,
    pipeline: Pipeline | CopyPipeline,
    source: Remote,
    f: FileInfo,
    journal: Journal,
) -> PlannedFile:
    """Convert a ready file in a scratch folder: the names it would be delivered under."""
    planned = PlannedFile(route.name, f.name, f.size, "take")
    with tempfile.TemporaryDirectory(prefix="xchange-dry-run-") as scratch:
        try:
            with source.local_copy(f.name, Path(scratch)) as path:
                sha = hashlib.sha256()
                with open(path, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        sha.update(chunk)
                twin = journal.find_content(route.name, sha.hexdigest())
                if twin is not None and twin.state in DONE_STATES:
                    planned.verdict = "duplicate"
                    planned.detail = f"as {twin.path} (#{twin.id}); it would only be archived"
                    return planned
                out = Path(scratch) / "out"
                out.mkdir()
                with (
                    open(path, "rb") as fh,
                    as_read(config, route, fh, f.name) as (reading, named),
                ):
                    # (decrypted and checked first where the route's files come encrypted)
                    conversion = convert_file(
                        pipeline, route, reading, named, datetime.now(UTC).astimezone(), Sink(out)
                    )
                planned.outputs = delivered_names(route, [o.name for o in conversion.outputs])
                if not planned.outputs:
                    planned.detail = "nothing to deliver (no documents)"
        except XchangeError as exc:
            planned.verdict = "quarantine" if not exc.retryable else "waiting"
            planned.detail = exc.reason
    return planned

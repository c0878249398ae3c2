"""Running routes: list the source, convert each file, deliver atomically, journal every step.

Order of events for one file (each journal write is committed before the side
effect it announces, so a restart resumes from the last committed state):

1. look the file up by name, size and time: already delivered (archive it if that was
   interrupted), or waiting for its next retry, costs no read;
2. take a local copy, hash it, *claim* it in the journal; content already delivered on
   the route is not sent again;
3. convert it (streaming, into a private staging folder); a format, validation or
   mapping error quarantines it at once;
4. journal ``delivering``, then put each output under a hidden temporary name (the same
   on every try) and rename it into place. After a crash, an output the journal has is
   skipped, and one found on the target with the same bytes is recognised, not re-sent;
5. journal ``delivered``, then archive, delete or leave the source.

Transient failures are retried within the run (backoff with jitter), then at later runs
(``next_retry_at``, doubling), and quarantined after ``give_up_after`` runs.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import posixpath
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import structlog

from xchange.alerts import Alerter
from xchange.config import AppConfig, RouteConfig
from xchange.errors import (
    FormatError,
    RemoteError,
    RemoteNotFound,
    TargetExists,
    UnsafeName,
    XchangeError,
)
from xchange.faults import checkpoint
from xchange.journal import (
    DONE_STATES,
    FileKey,
    FileRecord,
    Journal,
    Observation,
    OutputRecord,
    State,
    Step,
)
from xchange.pipeline import make_pipeline
from xchange.quarantine import Quarantine
from xchange.readiness import Verdict, judge, marker_name
from xchange.remote import FileInfo, Remote, SmallPut, open_remote
from xchange.remote.base import (
    NullWriter,
    Selector,
    is_temporary,
    safe_subfolder,
    temp_name_for,
)
from xchange.retry import call_with_retry
from xchange.sink import Output, Sink, staging_folder

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: New files of a copy route up to this size go in batches: one journal transaction per
#: step for the whole batch, and their uploads overlapped on one session.
BATCH_FILE_MAX = 1 << 20
BATCH_FILES = 256
BATCH_BYTES = 16 << 20

#: Outcomes of one source file.
DELIVERED, DUPLICATE, QUARANTINED, RETRY_LATER, WAITING, SKIPPED = (
    "delivered",
    "duplicate",
    "quarantined",
    "retry-later",
    "waiting",
    "skipped",
)


@dataclass(slots=True)
class FileResult:
    route: str
    source: str
    outcome: str
    file_id: int | None = None
    outputs: list[str] = field(default_factory=list)
    bytes: int = 0
    documents: int = 0
    encoding: str | None = None
    duration_ms: int = 0
    error: str | None = None
    #: The cause class of a failure (``XchangeError.kind``) and whether it is transient.
    cause: str | None = None
    retryable: bool = False
    #: Business keys skipped because another file already delivered them.
    skipped_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AfterPlan:
    """What happens to a delivered source: deleted, or archived into ``folder``."""

    info: FileInfo
    action: str
    state: State
    folder: str
    marker: str | None
    #: The records (this route's and others' that read the same file) it concludes.
    ids: list[int]


@dataclass(slots=True)
class RouteResult:
    route: str
    files: list[FileResult] = field(default_factory=list)
    #: Set when the route could not run at all (e.g. its source is unreachable).
    error: str | None = None
    error_kind: str | None = None
    #: Files seen but not taken yet (still being written, waiting for a marker).
    held: list[Observation] = field(default_factory=list)
    #: Seconds until a held file could be ready (the daemon looks again then).
    next_look: float | None = None

    def count(self, outcome: str) -> int:
        return sum(1 for f in self.files if f.outcome == outcome)

    def merge(self, later: RouteResult) -> None:
        """Add a later look at the same route (run --once waiting for files to settle)."""
        self.files.extend(later.files)
        self.error, self.error_kind = later.error, later.error_kind
        self.held, self.next_look = later.held, later.next_look

    @property
    def ok(self) -> bool:
        return self.error is None and not any(
            f.outcome in (QUARANTINED, RETRY_LATER) for f in self.files
        )

    def summary(self) -> str:
        counts = Counter(f.outcome for f in self.files)
        docs = sum(f.documents for f in self.files if f.outcome == DELIVERED)
        parts = [f"{counts[DELIVERED]} delivered ({docs} documents)"]
        parts += [
            f"{counts[o]} {o}" for o in (DUPLICATE, QUARANTINED, RETRY_LATER, WAITING) if counts[o]
        ]
        if self.held:
            parts.append(f"{len(self.held)} held")
        text = f"{self.route}: " + ", ".join(parts)
        if self.error:
            text += f"; could not run: {self.error}"
        for f in self.files:
            if f.outcome in (QUARANTINED, RETRY_LATER):
                text += f"\n  {f.outcome}: {f.source} (#{f.file_id}): {f.error}"
            if f.skipped_keys:
                text += (
                    f"\n  skipped (already delivered): {f.source} (#{f.file_id}): "
                    f"{', '.join(f.skipped_keys[:10])}"
                    + (" ..." if len(f.skipped_keys) > 10 else "")
                )
        return text


#: The longest ``run --once`` waits for files to settle before leaving them for next time.
MAX_SETTLE_WAIT = 10.0

#: Exit codes of ``xchange run --once`` (documented in README.md).
EXIT_OK, EXIT_QUARANTINED, EXIT_CONFIG, EXIT_NOT_DELIVERED, EXIT_LOCKED = 0, 1, 2, 3, 4


def exit_code(results: list[RouteResult]) -> int:
    """0 all delivered; 3 something could not be delivered yet; else 1 if any quarantined."""
    if any(r.error or r.count(RETRY_LATER) or r.count(WAITING) for r in results):
        return EXIT_NOT_DELIVERED
    if any(r.count(QUARANTINED) for r in results):
        return EXIT_QUARANTINED
    return EXIT_OK


class Runner:
    """Runs the routes of one configuration against one journal."""

    def __init__(
        self,
        config: AppConfig,
        journal: Journal,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC).astimezone(),
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
        alerter: Alerter | None = None,
    ) -> None:
        self.config = config
        #: Set to stop taking new files; the file in hand is finished first.
        self.stop = stop or threading.Event()
        self.journal = journal
        self.now = now
        self.sleep = sleep
        self.pipelines = {r.name: make_pipeline(r, config.formats) for r in config.routes}
        self.quarantine = Quarantine(config.quarantine.path)
        self.alerter = alerter or Alerter(
            config.alerts, journal, config_file=str(config.source_file), now=now
        )
        #: Private scratch space: downloads and each file's staged outputs.
        self.scratch = config.journal.path.parent / "scratch"
        # Each thread has its own endpoints: an SFTP session is never shared between threads.
        self._local = threading.local()
        self._all_remotes: list[dict[str, Remote]] = []
        self._remotes_lock = threading.Lock()
        self._pools: dict[str, ThreadPoolExecutor] = {}
        #: Per route, files seen delivered and left in place (after = "leave"), so that a
        #: look at a folder with a long history costs one set look-up per old file.
        self._left_in_place: dict[str, set[tuple[str, int, int]]] = {}

    def remote(self, name: str) -> Remote:
        """This thread's connection to an endpoint (opened on first use, then reused)."""
        remotes: dict[str, Remote] | None = getattr(self._local, "remotes", None)
        if remotes is None:
            remotes = self._local.remotes = {}
            with self._remotes_lock:
                self._all_remotes.append(remotes)
        if name not in remotes:
            remotes[name] = open_remote(name, self.config.endpoints[name])
        return remotes[name]

    def close(self) -> None:
        """Close every thread's connections (when no route is running)."""
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._pools.clear()
        with self._remotes_lock:
            for remotes in self._all_remotes:
                for remote in remotes.values():
                    remote.close()
                remotes.clear()

    # ------------------------------------------------------------------ routes

    def run_once(
        self, routes: list[str] | None = None, *, wait_to_settle: bool = True
    ) -> list[RouteResult]:
        """Process every ready file of each route once, then send due alert digests.

        With ``wait_to_settle`` (``run --once``), files held only until they have been
        stable for ``ready.settle`` seconds are waited for within the run (all routes at
        once), so one cron run takes a file that was just finished.
        """
        chosen = [r for r in self.config.routes if routes is None or r.name in routes]
        results = {r.name: RouteResult(r.name) for r in chosen}
        pending = chosen
        for _ in range(4):
            for route in pending:
                if not self.stop.is_set():
                    results[route.name].merge(self.run_route(route))
            waits = {
                r.name: results[r.name].next_look
                for r in pending
                if results[r.name].next_look is not None
                and not results[r.name].error
                # Waiting is for files just finished: a cron run waits 10 s at most.
                and results[r.name].next_look <= min(r.ready.settle + 1, MAX_SETTLE_WAIT)  # type: ignore[operator]
            }
            if not wait_to_settle or not waits:
                break
            if self.stop.wait(max(w for w in waits.values() if w is not None) + 0.05):
                break
            pending = [r for r in pending if r.name in waits]
        self.alerter.flush()
        return list(results.values())

    def run_route(self, route: RouteConfig, only: set[str] | None = None) -> RouteResult:
        """One look at a route's source: take every ready file through to delivery.

        ``only`` (names relative to the source folder, from file events) limits the look to
        those files and the ones held at the last look, instead of listing the folder.
        """
        result = RouteResult(route.name)
        with structlog.contextvars.bound_contextvars(route=route.name):
            looked = self._look(route, result, only)
            verdict, unknown = looked if looked is not None else (None, set())
            ready = verdict.ready if verdict is not None else []
            for outcome in self._process_all(route, ready, unknown):
                result.files.append(outcome)
                if outcome.outcome == RETRY_LATER and result.error is None:
                    # The target is in trouble: the remaining files are left for the next
                    # run instead of failing each of them the same way.
                    result.error, result.error_kind = outcome.error, outcome.cause
            if verdict is not None:
                result.held = verdict.held
                result.next_look = verdict.soonest(datetime.now(UTC), route.ready)
            log.info(
                "route.summary",
                delivered=result.count(DELIVERED),
                duplicates=result.count(DUPLICATE),
                quarantined=result.count(QUARANTINED),
                retry_later=result.count(RETRY_LATER),
                waiting=result.count(WAITING),
                held=len(result.held),
                error=result.error,
            )
            self._alert(result)
        return result

    @staticmethod
    def _stat_names(
        route: RouteConfig, source: Remote, names: set[str], archive_top: str
    ) -> list[FileInfo]:
        """The given names that are regular files in the source folder (with their
        done-markers), as a listing would show them."""
        wanted: list[FileInfo] = []
        for name in sorted(names):
            if is_temporary(posixpath.basename(name)) or (
                archive_top and name.split("/", 1)[0] == archive_top
            ):
                continue
            if "/" in name and not route.source.recursive:
                continue
            info = source.stat(name)
            if info is None:
                continue
            wanted.append(info)
            if route.ready.marker:
                marker = source.stat(marker_name(route.ready.marker, name))
                if marker is not None:
                    wanted.append(marker)
        return sorted(wanted, key=lambda f: (f.mtime_ns, f.name))

    def _process_all(
        self, route: RouteConfig, ready: list[FileInfo], unknown: set[str]
    ) -> Iterator[FileResult]:
        """Take ready files through, ``route.transfers`` at a time, each worker thread with
        its own connections; stop taking new ones on a stop request or target trouble.

        New small files of a copy route go in batches (see ``_deliver_batch``), the rest
        one at a time."""
        trouble = threading.Event()

        def work(info: FileInfo) -> list[FileResult]:
            if self.stop.is_set() or trouble.is_set():
                return []
            outcome = self.process(route, info)
            if outcome.outcome == RETRY_LATER:
                trouble.set()
            return [outcome]

        def work_batch(batch: list[FileInfo]) -> list[FileResult]:
            if self.stop.is_set() or trouble.is_set():
                return []
            outcomes = self._deliver_batch(route, batch)
            if any(o.outcome == RETRY_LATER for o in outcomes):
                trouble.set()
            return outcomes

        batches, singles = self._batches(route, ready, unknown)
        for fn, items in ((work_batch, batches), (work, singles)):
            if route.transfers == 1 or len(items) < 2:
                done: Iterable[list[FileResult]] = map(fn, items)  # type: ignore[arg-type]
            else:
                done = self._pool(route).map(fn, items)
            for outcomes in done:
                yield from outcomes

    @staticmethod
    def _batches(
        route: RouteConfig, ready: list[FileInfo], unknown: set[str]
    ) -> tuple[list[list[FileInfo]], list[FileInfo]]:
        """Split ready files into batches of new small files (copy routes) and the rest."""
        if route.mapping != "copy":
            return [], ready
        batches: list[list[FileInfo]] = []
        singles: list[FileInfo] = []
        batch: list[FileInfo] = []
        size = 0
        for info in ready:
            if info.name not in unknown or info.size > BATCH_FILE_MAX:
                singles.append(info)
                continue
            if batch and (len(batch) == BATCH_FILES or size + info.size > BATCH_BYTES):
                batches.append(batch)
                batch, size = [], 0
            batch.append(info)
            size += info.size
        if batch:
            batches.append(batch)
        return batches, singles

    def _pool(self, route: RouteConfig) -> ThreadPoolExecutor:
        with self._remotes_lock:
            if route.name not in self._pools:
                self._pools[route.name] = ThreadPoolExecutor(
                    route.transfers, thread_name_prefix=f"xchange-{route.name}"
                )
            return self._pools[route.name]

    def _look(
        self, route: RouteConfig, result: RouteResult, only: set[str] | None = None
    ) -> tuple[Verdict, set[str]] | None:
        """List the source (or look at ``only`` these names and the held ones); return what
        is ready and what is held, and the names the journal has never seen (None: cannot
        list)."""
        source = self.remote(route.source.endpoint)
        archive_top = route.after.folder.split("/", 1)[0] if route.after.action == "archive" else ""
        observed = self.journal.observations(route.name)
        try:
            if only is None:
                listing = source.list(
                    recursive=route.source.recursive,
                    skip_dirs=tuple(d for d in (archive_top,) if d and "{" not in d),
                )
            else:
                listing = self._stat_names(route, source, only | set(observed), archive_top)
        except RemoteError as exc:
            result.error, result.error_kind = str(exc), exc.kind
            log.error("route.source_failed", error=str(exc), cause=exc.kind)
            return None
        names = {f.name for f in listing}
        selector = Selector(tuple(route.source.patterns), tuple(route.source.exclude))
        wanted = [f for f in listing if selector.wants(f.name)]
        if route.ready.marker:
            markers = {marker_name(route.ready.marker, f.name) for f in wanted}
            wanted = [f for f in wanted if f.name not in markers]
        fresh = []
        unknown = set()
        left = self._left_in_place.setdefault(route.name, set())
        # Files delivered and left in place on purpose need no journal look-up.
        wanted = [f for f in wanted if (f.name, f.size, f.mtime_ns) not in left]
        records = self.journal.lookup_many(
            route.name, route.source.endpoint, [(f.name, f.size, f.mtime_ns) for f in wanted]
        )
        for f in wanted:
            known = records.get((f.name, f.size, f.mtime_ns))
            if known is None:
                fresh.append(f)
                unknown.add(f.name)
            elif known.state not in DONE_STATES:
                fresh.append(f)
            elif route.after.action == "leave":
                left.add((f.name, f.size, f.mtime_ns))
            else:
                result.files.append(self._timed(route, f.name, self._after_of(route, f, known)))
        now = datetime.now(UTC)
        verdict = judge(route.ready, fresh, names, observed, now)
        if only is None or verdict.held or observed:
            self.journal.save_observations(route.name, verdict.held)
        for obs in verdict.stuck:
            log.warning("file.stuck", source=obs.path, reason=obs.reason)
            self.alerter.failure(route.name, "stuck", True, [obs.path], obs.reason)
        return verdict, unknown

    def _alert(self, result: RouteResult) -> None:
        failed: dict[tuple[str, bool], list[FileResult]] = defaultdict(list)
        for f in result.files:
            if f.outcome in (QUARANTINED, RETRY_LATER):
                failed[(f.cause or "error", f.retryable)].append(f)
        for (cause, retryable), files in failed.items():
            self.alerter.failure(
                result.route, cause, retryable, [f.source for f in files], files[0].error or cause
            )
        if result.error and not failed:
            self.alerter.failure(result.route, result.error_kind or "error", True, [], result.error)
        if not failed and not result.error and result.count(DELIVERED):
            self.alerter.recovered(result.route)

    # ------------------------------------------------------------------ one file

    def process(self, route: RouteConfig, info: FileInfo) -> FileResult:
        """Take one file from the route's drop folder through to delivery."""
        return self._timed(route, info.name, lambda result: self._from_drop(route, info, result))

    def reprocess(self, record: FileRecord, *, force: bool = False) -> FileResult:
        """Run a quarantined file again from its kept original (after a fix); with
        ``force``, send an already delivered file again from its archived copy."""
        route = self.config.route(record.route)
        return self._timed(
            route, record.path, lambda result: self._again(route, record, force, result)
        )

    def _timed(
        self, route: RouteConfig, name: str, work: Callable[[FileResult], None]
    ) -> FileResult:
        started = time.monotonic()
        result = FileResult(route.name, name, SKIPPED)
        with structlog.contextvars.bound_contextvars(route=route.name, source=name):
            try:
                work(result)
            except XchangeError as exc:
                # Anything not handled below (the source vanished, the journal failed):
                # the file stays where it is and is tried again next run.
                result.outcome, result.error = RETRY_LATER, str(exc)
                result.cause, result.retryable = exc.kind, True
            result.duration_ms = int((time.monotonic() - started) * 1000)
            self._log_result(route, result)
        return result

    @staticmethod
    def _log_result(route: RouteConfig, result: FileResult) -> None:
        """The one summary event of a file (none for files only looked at)."""
        if result.outcome in (SKIPPED, WAITING):
            return
        log.info(
            f"file.{result.outcome.replace('-', '_')}",
            target=route.target.endpoint,
            outputs=result.outputs,
            bytes=result.bytes,
            documents=result.documents,
            encoding=result.encoding,
            duration_ms=result.duration_ms,
            outcome=result.outcome,
            file_id=result.file_id,
            cause=result.cause,
            error=result.error,
            skipped_keys=result.skipped_keys or None,
        )

    def _after_of(
        self, route: RouteConfig, info: FileInfo, known: FileRecord
    ) -> Callable[[FileResult], None]:
        def work(result: FileResult) -> None:
            self._finish_after(route, info, known, result)

        return work

    def _finish_after(
        self, route: RouteConfig, info: FileInfo, known: FileRecord, result: FileResult
    ) -> None:
        """A delivered file still in the drop folder: its archive (or delete) was cut short
        by a crash, it is left in place on purpose, or another route still needs it."""
        result.file_id = known.id
        if route.after.action != "leave":
            unfinished = known.state == State.DELIVERED
            self._after(
                route, self.remote(route.source.endpoint), info, known.id if unfinished else None
            )

    def _from_drop(self, route: RouteConfig, info: FileInfo, result: FileResult) -> None:
        source = self.remote(route.source.endpoint)
        result.bytes = info.size
        known = self.journal.lookup(
            route.name, route.source.endpoint, info.name, info.size, info.mtime_ns
        )
        if known is not None:
            result.file_id = known.id
            if known.state in DONE_STATES:
                self._finish_after(route, info, known, result)
                return
            if (
                known.state == State.RETRYING
                and known.next_retry_at is not None
                and known.next_retry_at > datetime.now(UTC)
            ):
                result.outcome = WAITING
                result.error = f"next try at {known.next_retry_at.astimezone():%H:%M:%S}"
                return
        try:
            with source.local_copy(info.name, self.scratch / "downloads") as path:
                self._claimed(route, source, info, path, result)
        except RemoteNotFound:
            # Gone between the listing and the read (its producer took it back): nothing
            # to deliver and nothing lost.
            log.info("file.vanished", reason="removed from the drop folder before it was read")
            result.outcome = SKIPPED

    def _claimed(
        self, route: RouteConfig, source: Remote, info: FileInfo, path: Path, result: FileResult
    ) -> None:
        size, sha = _fingerprint(path)
        result.bytes = size
        if size != info.size:
            # Changed since the listing (truncated, or written again): judge it again.
            log.info(
                "file.changed",
                listed=info.size,
                now=size,
                reason="changed between the listing and the read; looked at again",
            )
            result.outcome = SKIPPED
            return
        pipeline = self.pipelines[route.name]
        claim = self.journal.claim(
            FileKey(route.name, route.source.endpoint, info.name, size, info.mtime_ns, sha),
            layout_version=pipeline.versions[0],
            mapping_version=pipeline.versions[1],
        )
        checkpoint("after-claim")
        result.file_id = claim.record.id
        if claim.already_delivered:
            result.outcome = DUPLICATE
            result.outputs = [o.path for o in claim.record.outputs]
            self.journal.transition(
                claim.record.id,
                claim.record.state,
                note=f"same content seen again as {info.name}; not sent again",
            )
            self._after(route, source, info, None)
            return
        self._convert_and_deliver(route, claim.record, path, info.name, result, source, info=info)

    def _again(
        self, route: RouteConfig, record: FileRecord, force: bool, result: FileResult
    ) -> None:
        result.file_id = record.id
        if record.state in DONE_STATES and not force:
            raise FormatError(
                f"file #{record.id} was delivered already; use --force to send it again"
            )
        if record.state == State.QUARANTINED and record.quarantine_path:
            original = Path(record.quarantine_path)
        elif record.state in DONE_STATES and record.archive_path:
            source = self.remote(record.endpoint)
            with source.local_copy(record.archive_path, self.scratch / "downloads") as path:
                self.journal.transition(record.id, State.PROCESSING, note="sent again (--force)")
                self._convert_and_deliver(
                    route, record, path, record.path, result, None, force=True
                )
            return
        else:
            raise FormatError(
                f"file #{record.id} is {record.state} and no copy of it is kept; drop it "
                "into the source folder again instead"
            )
        if not original.is_file():
            raise FormatError(f"file #{record.id}: its quarantined copy {original} is missing")
        pipeline = self.pipelines[route.name]
        claim = self.journal.claim(
            FileKey(
                route.name,
                record.endpoint,
                record.path,
                record.size,
                record.mtime_ns,
                record.sha256,
            ),
            layout_version=pipeline.versions[0],
            mapping_version=pipeline.versions[1],
        )
        self._convert_and_deliver(route, claim.record, original, record.path, result, None)
        if result.outcome == DELIVERED:
            self.quarantine.resolve(original)

    def _convert_and_deliver(
        self,
        route: RouteConfig,
        record: FileRecord,
        path: Path,
        name: str,
        result: FileResult,
        source: Remote | None,
        *,
        force: bool = False,
        info: FileInfo | None = None,
    ) -> None:
        pipeline = self.pipelines[route.name]
        # The first claim's time, not the clock: names and contents come out the same
        # when the file is converted again after a crash.
        when = record.created_at.astimezone()
        skip = self._dedupe(route, record) if route.dedupe_key and not force else None
        with staging_folder(self.scratch / "staging", f"{route.name}-{record.id}") as staging:
            try:
                with open(path, "rb") as stream:
                    conversion = pipeline.convert_stream(
                        stream,
                        name,
                        when,
                        Sink(staging),
                        skip=skip,
                        digest=(record.size, record.sha256),  # hashed when it was claimed
                    )
            except (FormatError, UnsafeName) as exc:
                self._quarantine(route, record, name, path, exc, result, source)
                return
            result.encoding = conversion.encoding
            result.skipped_keys = conversion.skipped
            outputs = conversion.outputs
            self.journal.transition(
                record.id,
                State.DELIVERING,
                note=", ".join(o.name for o in outputs) or "no documents",
                encoding=conversion.encoding,
            )
            try:
                self._deliver(route, record, outputs, force=force)
            except TargetExists as exc:
                self._quarantine(route, record, name, path, exc, result, source)
                return
            except RemoteError as exc:
                self._failed_delivery(route, record, name, path, exc, result, source)
                return
        if conversion.keys:
            self.journal.record_keys(route.name, record.id, conversion.keys)
        self.journal.transition(record.id, State.DELIVERED)
        checkpoint("before-archive")
        result.outcome = DELIVERED
        result.outputs = [o.name for o in outputs]
        result.documents = sum(o.documents for o in outputs)
        if source is not None and info is not None:
            self._after(route, source, info, record.id)

    # ------------------------------------------------------------------ small files

    def _deliver_batch(self, route: RouteConfig, infos: list[FileInfo]) -> list[FileResult]:
        """Take new small files of a copy route through together, with the guarantees of
        the one-at-a-time path and a fraction of its round trips:

        1. read and hash each file; claim them all and journal ``delivering`` in one
           transaction;
        2. upload them overlapped on one session (``Remote.put_many``), each under its
           hidden temporary name and renamed into place;
        3. journal the outputs, ``delivered`` and the coming archive/delete in one
           transaction, then archive or delete the sources.

        A file the batch cannot finish (refused name, a failure, a lost connection) goes
        on one at a time from its claim, exactly as a single file would.
        """
        started = time.monotonic()
        source = self.remote(route.source.endpoint)
        target = self.remote(route.target.endpoint)
        # The target's session opens while the files are read and claimed.
        warm_up = WarmUp(target)
        if target is not source:
            warm_up.start()
        pipeline = self.pipelines[route.name]
        results: list[FileResult] = []
        reads: list[tuple[FileInfo, bytes, str, FileResult]] = []
        alone: list[FileInfo] = []  # identical content twice in one batch: one at a time
        seen: set[str] = set()
        for info in infos:
            result = FileResult(route.name, info.name, SKIPPED, bytes=info.size)
            buffer = io.BytesIO()
            try:
                source.download(info.name, buffer)
            except RemoteNotFound:
                log.info(
                    "file.vanished",
                    source=info.name,
                    reason="removed from the drop folder before it was read",
                )
                results.append(result)
                continue
            except RemoteError:
                alone.append(info)
                continue
            data = buffer.getvalue()
            if len(data) != info.size:
                log.info(
                    "file.changed",
                    source=info.name,
                    listed=info.size,
                    now=len(data),
                    reason="changed between the listing and the read; looked at again",
                )
                results.append(result)
                continue
            sha = hashlib.sha256(data).hexdigest()
            if sha in seen:
                alone.append(info)
                continue
            seen.add(sha)
            reads.append((info, data, sha, result))

        # 1. Claims, and the outputs' names, in one transaction.
        policy = route.target.if_exists
        sending: list[tuple[FileInfo, FileRecord, Output, FileResult]] = []
        unsendable: list[tuple[FileInfo, FileRecord, bytes, XchangeError, FileResult]] = []
        plans: list[AfterPlan] = []
        steps: list[Step] = []
        with self.journal.batch():
            claims = self.journal.claim_many(
                [
                    FileKey(route.name, route.source.endpoint, i.name, len(d), i.mtime_ns, sha)
                    for i, d, sha, _ in reads
                ],
                layout_version=pipeline.versions[0],
                mapping_version=pipeline.versions[1],
            )
            for (info, data, sha, result), claim in zip(reads, claims, strict=True):
                record = claim.record
                result.file_id = record.id
                if claim.already_delivered:
                    result.outcome = DUPLICATE
                    result.outputs = [o.path for o in record.outputs]
                    note = f"same content seen again as {info.name}; not sent again"
                    steps.append(Step(record.id, record.state, note))
                    plans += self._planned(route, info, None, steps)
                    continue
                try:
                    (out,) = pipeline.convert_stream(
                        io.BytesIO(data),
                        info.name,
                        record.created_at.astimezone(),
                        Sink(None),
                        digest=(len(data), sha),
                    ).outputs
                except (FormatError, UnsafeName) as exc:
                    unsendable.append((info, record, data, exc, result))
                    continue
                steps.append(Step(record.id, State.DELIVERING, out.name))
                sending.append((info, record, out, result))
            self.journal.record_steps(steps)
        checkpoint("after-claim")
        for info, record, data, problem, result in unsendable:
            with self._spilled(record, data) as path:
                self._quarantine(route, record, info.name, path, problem, result, source)

        # 2. The uploads, overlapped (the whole batch tried again while no session opens).
        puts = [
            SmallPut(
                out.name,
                out.data,
                temp_name_for(out.name, f"{record.sha256[:8]}{out.sha256[:8]}"),
                policy == "overwrite",
            )
            for _, record, out, _ in sending
        ]
        try:
            # A failed warm-up counts as the first attempt.
            errors = call_with_retry(
                warm_up.then(functools.partial(target.put_many, puts)),
                route.retry,
                sleep=self.sleep,
            )
        except RemoteError as exc:
            for info, record, out, result in sending:
                with self._spilled(record, out.data) as path:
                    self._failed_delivery(route, record, info.name, path, exc, result, source)
            return self._batch_done(route, started, [r for *_, r in reads] + results)
        checkpoint("after-rename")

        # 3. What arrived, and what happens to its source, in one transaction.
        retry: list[tuple[FileInfo, FileRecord, Output, RemoteError, FileResult]] = []
        steps = []
        delivered_at = datetime.now(UTC)
        with self.journal.batch():
            for (info, record, out, result), error in zip(sending, errors, strict=True):
                if error is not None:
                    retry.append((info, record, out, error, result))
                    continue
                output = OutputRecord(
                    route.target.endpoint, out.name, out.size, out.sha256, delivered_at
                )
                steps.append(Step(record.id, State.DELIVERED, output=output))
                result.outcome, result.outputs, result.documents = DELIVERED, [out.name], 1
                plans += self._planned(route, info, record.id, steps)
            self.journal.record_steps(steps)
        checkpoint("after-output")
        checkpoint("before-archive")

        # Files the batch could not finish go on alone, from their claim.
        trouble: RemoteError | None = None
        for info, record, out, error, result in retry:
            if trouble is not None:
                # The target is in trouble: no point trying each remaining file.
                with self._spilled(record, out.data) as path:
                    self._failed_delivery(route, record, info.name, path, trouble, result, source)
                continue
            log.info("file.sent_alone", source=info.name, reason=str(error))
            with self._spilled(record, out.data) as path:
                self._convert_and_deliver(route, record, path, info.name, result, source, info=info)
            if result.outcome == RETRY_LATER:
                trouble = error

        # The sources: deleted, or archived (and the archived names journaled together).
        moved: list[tuple[AfterPlan, str]] = []
        for plan in plans:
            try:
                where = self._carry_out(source, plan)
            except XchangeError as exc:
                # Delivered; the source stays and is archived at the next look.
                log.warning("file.after_failed", source=plan.info.name, error=str(exc))
                continue
            if where is not None:
                moved.append((plan, where))
        if moved:
            self.journal.record_steps(
                [Step(fid, p.state, where, where) for p, where in moved for fid in p.ids]
            )

        finished = self._batch_done(route, started, [r for *_, r in reads] + results)
        # Unreadable files and twins go the one-at-a-time way.
        return finished + [self.process(route, info) for info in alone]

    def _batch_done(
        self, route: RouteConfig, started: float, results: list[FileResult]
    ) -> list[FileResult]:
        elapsed = int((time.monotonic() - started) * 1000)
        for result in results:
            result.duration_ms = elapsed
            self._log_result(route, result)
        return results

    def _planned(
        self, route: RouteConfig, info: FileInfo, file_id: int | None, steps: list[Step]
    ) -> list[AfterPlan]:
        """The after-plan of a delivered file, its announcement added to ``steps``."""
        plan = self._plan_after(route, info, file_id)
        if plan is None:
            return []
        steps += self._announcement(plan)
        return [plan]

    @contextmanager
    def _spilled(self, record: FileRecord, data: bytes) -> Iterator[Path]:
        """The bytes of a batched file as a private local file (to quarantine it, or to
        send it alone)."""
        folder = self.scratch / "batch"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / f"{record.id}-{record.sha256[:16]}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _dedupe(self, route: RouteConfig, record: FileRecord) -> Callable[[str], bool]:
        def already(key: str) -> bool:
            return bool(self.journal.delivered_keys(route.name, [key], except_file=record.id))

        return already

    def _failed_delivery(
        self,
        route: RouteConfig,
        record: FileRecord,
        name: str,
        path: Path,
        exc: RemoteError,
        result: FileResult,
        source: Remote | None,
    ) -> None:
        if exc.retryable and record.attempts >= route.retry.give_up_after:
            self._quarantine(
                route,
                record,
                name,
                path,
                exc,
                result,
                source,
                note=f"gave up after {record.attempts} attempts",
            )
            return
        # Not the file's fault: try again at a later run, backing off.
        delay = min(route.retry.later * 2 ** max(record.attempts - 1, 0), route.retry.later_max)
        when = datetime.now(UTC) + timedelta(seconds=delay)
        self.journal.transition(
            record.id, State.RETRYING, error=(exc.kind, str(exc)), next_retry_at=when
        )
        result.outcome, result.error = RETRY_LATER, str(exc)
        result.cause, result.retryable = exc.kind, True

    def _deliver(
        self, route: RouteConfig, record: FileRecord, outputs: list[Output], *, force: bool
    ) -> None:
        target = self.remote(route.target.endpoint)
        done = set() if force else {o.path for o in record.outputs}
        for out in outputs:
            if out.name in done:
                continue  # delivered before a crash; the journal already has it
            final = self._deliver_one(route, record, target, out, force=force)
            if final is None:
                continue
            self.journal.record_output(
                record.id,
                OutputRecord(route.target.endpoint, final, out.size, out.sha256, datetime.now(UTC)),
            )
            checkpoint("after-output")

    def _deliver_one(
        self, route: RouteConfig, record: FileRecord, target: Remote, out: Output, *, force: bool
    ) -> str | None:
        """Put one output under its name (or, with if_exists = unique, the first free
        variant); return the name used, or None if if_exists = skip left it out."""
        policy = "overwrite" if force else route.target.if_exists
        stem, dot, ext = out.name.rpartition(".")
        candidates = [out.name]
        if policy == "unique":
            candidates += [
                f"{stem}_{n}.{ext}" if dot else f"{out.name}_{n}" for n in range(1, 1000)
            ]
        # A file already on the target with these very bytes is this delivery, made before a
        # crash: recognise it instead of sending it again. Without overwrite the target says
        # so by refusing the name; with overwrite, look first when this is a later attempt.
        for name in candidates:
            if (
                policy == "overwrite"
                and record.attempts > 1
                and self._already_there(target, out, name)
            ):
                log.info(
                    "file.output_found",
                    output=name,
                    reason="present with the same bytes; not sent again",
                )
                return name
            temp = temp_name_for(name, f"{record.sha256[:8]}{out.sha256[:8]}")
            try:
                call_with_retry(
                    functools.partial(self._put, target, out, name, temp, policy == "overwrite"),
                    route.retry,
                    sleep=self.sleep,
                )
            except TargetExists:
                if self._already_there(target, out, name):
                    log.info(
                        "file.output_found",
                        output=name,
                        reason="present with the same bytes; not sent again",
                    )
                    return name
                if policy == "unique":
                    continue
                if policy == "skip":
                    log.warning(
                        "file.output_skipped",
                        output=name,
                        reason="a different file already has this name",
                    )
                    return None
                raise
            checkpoint("after-rename")
            return name
        raise TargetExists(f"{route.target.endpoint}: no free name left for {out.name}")

    @staticmethod
    def _put(target: Remote, out: Output, name: str, temp: str, overwrite: bool) -> None:
        with out.open() as src:
            target.put_atomic(name, src, out.size, temp_name=temp, overwrite=overwrite)

    @staticmethod
    def _already_there(target: Remote, out: Output, name: str) -> bool:
        """True if the target already holds exactly these bytes under ``name``."""
        info = target.stat(name)
        if info is None or info.size != out.size:
            return False
        probe = NullWriter()
        target.download(name, probe)  # type: ignore[arg-type]
        return probe.sha.hexdigest() == out.sha256

    def _after(
        self, route: RouteConfig, source: Remote, info: FileInfo, file_id: int | None
    ) -> None:
        """Archive, delete or leave a delivered source (and its done-marker). When several
        routes read the file, the last one to deliver it does this."""
        plan = self._plan_after(route, info, file_id)
        if plan is None:
            return
        self._announce_after(plan)
        moved = self._carry_out(source, plan)
        if moved is not None:
            for fid in plan.ids:
                self.journal.transition(fid, plan.state, archive_path=moved, note=moved)

    def _plan_after(
        self, route: RouteConfig, info: FileInfo, file_id: int | None
    ) -> AfterPlan | None:
        """What to do with a delivered source: None to leave it (on purpose, or until the
        other routes that read it have delivered it too)."""
        action = route.after.action
        if action == "leave":
            return None
        sharing = []
        for other in self.config.routes:
            if other is route or other.source.endpoint != route.source.endpoint:
                continue
            if not Selector(tuple(other.source.patterns), tuple(other.source.exclude)).wants(
                info.name
            ):
                continue
            record = self.journal.lookup(
                other.name, other.source.endpoint, info.name, info.size, info.mtime_ns
            )
            if record is None or record.state not in DONE_STATES:
                log.info(
                    "file.after_deferred", source=info.name, waiting_for=other.name, action=action
                )
                return None
            sharing.append(record)
        folder = (
            "" if action == "delete" else safe_subfolder(route.after.folder.format(date=self.now()))
        )
        ids = [file_id] if file_id is not None else []
        ids += [r.id for r in sharing if r.state == State.DELIVERED]
        return AfterPlan(
            info,
            action,
            State.DELETED if action == "delete" else State.ARCHIVED,
            folder,
            marker_name(route.ready.marker, info.name) if route.ready.marker else None,
            ids,
        )

    def _announce_after(self, plan: AfterPlan) -> None:
        """Journal the move before it is made: after a crash in between, the file is found
        still in the drop folder with its record archived, and the move is simply made then."""
        self.journal.record_steps(self._announcement(plan))

    @staticmethod
    def _announcement(plan: AfterPlan) -> list[Step]:
        note = f"{plan.action} into {plan.folder}" if plan.folder else plan.action
        return [Step(fid, plan.state, note, plan.folder or None) for fid in plan.ids]

    @staticmethod
    def _carry_out(source: Remote, plan: AfterPlan) -> str | None:
        """Delete or archive the source (and its marker); return the archived path."""
        name = plan.info.name
        if plan.action == "delete":
            source.remove(name)
            if plan.marker:
                source.remove(plan.marker)
            return None
        moved = source.move(name, plan.folder)
        if plan.marker and source.stat(plan.marker) is not None:
            source.move(plan.marker, plan.folder)
        return moved

    def _quarantine(
        self,
        route: RouteConfig,
        record: FileRecord,
        name: str,
        original: Path,
        exc: XchangeError,
        result: FileResult,
        source: Remote | None,
        *,
        note: str | None = None,
    ) -> None:
        entry = self.quarantine.put(
            route=route.name,
            file_id=record.id,
            source=name,
            original=original,
            error=exc,
            attempt=record.attempts,
            config_file=str(self.config.source_file),
            versions=self.pipelines[route.name].versions,
        )
        self.journal.transition(
            record.id,
            State.QUARANTINED,
            error=(exc.kind, str(exc)),
            quarantine_path=str(entry.data_path),
            note=note,
        )
        # The bytes are safe in quarantine: take the file out of the drop folder.
        if source is not None:
            source.remove(name)
        result.outcome = QUARANTINED
        result.error = (f"{note}: " if note else "") + str(exc).splitlines()[0]
        result.cause, result.retryable = exc.kind, exc.retryable


class WarmUp:
    """Connects to an endpoint in the background, ahead of its first use."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.error: XchangeError | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self.remote.connect()
        except XchangeError as exc:
            self.error = exc

    def then(self, call: Callable[[], T]) -> Callable[[], T]:
        """``call``, after the connection attempt has ended; its error is raised once, as
        the outcome of the first attempt."""

        def first_then_call() -> T:
            if self._thread.is_alive():
                self._thread.join()
            error, self.error = self.error, None
            if error is not None:
                raise error
            return call()

        return first_then_call


def _fingerprint(path: Path) -> tuple[int, str]:
    """Size and sha256 of a local file, read in chunks."""
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


__all__ = ["FileResult", "RouteResult", "Runner", "exit_code"]

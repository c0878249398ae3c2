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

import contextlib
import functools
import hashlib
import os
import posixpath
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, TypeVar

import structlog

from xchange import batch
from xchange.alerts import Alerter
from xchange.config import AppConfig, RouteConfig
from xchange.errors import (
    FormatError,
    JournalError,
    NameRefused,
    RemoteError,
    RemoteNotFound,
    SourceChanged,
    TargetExists,
    UnsafeName,
    XchangeError,
    one_line,
)
from xchange.faults import checkpoint
from xchange.healing import TRANSIENT, what_changed
from xchange.journal import (
    DONE_STATES,
    FileKey,
    FileRecord,
    Journal,
    OutputRecord,
    State,
    Step,
)
from xchange.pipeline import make_pipeline
from xchange.quarantine import Quarantine
from xchange.readiness import Verdict, judge, marker_name
from xchange.remote import DropOwner, FileInfo, Remote, open_remote
from xchange.remote.base import (
    NullWriter,
    Selector,
    is_temporary,
    safe_subfolder,
    temp_name_for,
)
from xchange.results import (
    DELIVERED,
    DUPLICATE,
    LEFT,
    QUARANTINED,
    RETRY_LATER,
    SKIPPED,
    WAITING,
    FileResult,
    RouteResult,
    exit_code,
)
from xchange.retry import call_with_retry
from xchange.sink import Output, Sink, staging_folder

log = structlog.get_logger(__name__)
T = TypeVar("T")


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


#: A drop folder's mark is renewed at a look at most this often, and another journal's
#: mark older than DROP_TTL seconds is taken over (its daemon is gone).
DROP_HEARTBEAT = 60.0
DROP_TTL = 600.0

#: The longest ``run --once`` waits for files to settle before leaving them for next time.
MAX_SETTLE_WAIT = 10.0


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
        self.journal_id = journal.journal_id
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
        self._uploaders: dict[str, ThreadPoolExecutor] = {}
        #: Per route, files seen delivered and left in place (after = "leave"), so that a
        #: look at a folder with a long history costs one set look-up per old file.
        self._left_in_place: dict[str, set[tuple[str, int, int]]] = {}
        #: (route, sha256) of the contents workers are taking through right now.
        self._in_hand: set[tuple[str, str]] = set()
        self._in_hand_changed = threading.Condition()
        #: Source endpoints marked as this journal's drop: the remote holding the mark,
        #: and the time of its last heartbeat.
        self._drops: dict[str, tuple[Remote, float]] = {}
        self._drops_lock = threading.Lock()
        #: The file each worker thread has in hand (for ``in_hand``).
        self._hands: dict[int, InHand] = {}
        self._hands_lock = threading.Lock()

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
        for pool in [*self._pools.values(), *self._uploaders.values()]:
            pool.shutdown(wait=True)
        with self._drops_lock:
            for remote, _ in self._drops.values():
                try:
                    remote.release_drop(self._owner())
                except XchangeError as exc:
                    log.warning("drop.release_failed", endpoint=remote.label, error=exc.reason)
            self._drops.clear()
        self._pools.clear()
        self._uploaders.clear()
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
        self.journal.checkpoint(force=True)  # a copy of the main file alone is complete
        return list(results.values())

    def run_route(
        self, route: RouteConfig, only: set[str] | None = None, *, heal: bool = True
    ) -> RouteResult:
        """One look at a route's source: take every ready file through to delivery.

        ``only`` (names relative to the source folder, from file events) limits the look to
        those files and the ones held at the last look, instead of listing the folder.
        """
        result = RouteResult(route.name)
        with structlog.contextvars.bound_contextvars(route=route.name):
            verdict = None
            try:
                if heal:
                    self._heal(route, result)
                looked = self._look(route, result, only)
                verdict, unknown = looked if looked is not None else (None, set())
                ready = verdict.ready if verdict is not None else []
                for outcome in self._process_all(route, ready, unknown):
                    result.files.append(outcome)
                    if _in_trouble(outcome) and result.error is None:
                        # The target (or the journal) is in trouble: the remaining files
                        # are left for the next run instead of failing each the same way.
                        result.error, result.error_kind = outcome.error, outcome.cause
            except JournalError as exc:
                # The journal cannot be written (a full disk, a read-only file system):
                # nothing more is taken; one clear error, and the files wait.
                result.error, result.error_kind = exc.reason, exc.kind
                log.error("route.journal_failed", error=exc.reason)
            if verdict is not None:
                result.held = verdict.held
                result.next_look = verdict.soonest(datetime.now(UTC), route.ready)
            # Every look has one; a look that found nothing to do is said at debug only
            # (a daemon polling every 30 s would otherwise fill the log with zeros).
            happened = result.files or result.held or result.error
            (log.info if happened else log.debug)(
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
        """Take ready files through and stop taking new ones on a stop request or target
        trouble: new small files of a copy route in batches (``xchange.batch``), the rest
        one at a time, ``route.transfers`` at once, each worker thread with its own
        connections."""
        batches, singles = batch.split(route, ready, unknown)
        trouble = False
        if batches:
            small = batch.SmallFiles(self, route, self._uploader(route))
            for done in small.run(batches, self.stop):
                trouble = trouble or done.outcome == RETRY_LATER
                yield done
        if trouble:
            return
        stop = threading.Event()

        def work(info: FileInfo) -> FileResult | None:
            if self.stop.is_set() or stop.is_set():
                return None
            outcome = self.process(route, info)
            if _in_trouble(outcome):
                stop.set()
            return outcome

        if route.transfers == 1 or len(singles) < 2:
            outcomes: Iterable[FileResult | None] = map(work, singles)
        else:
            outcomes = self._pool(route).map(work, singles)
        for outcome in outcomes:
            if outcome is not None:
                yield outcome

    def _uploader(self, route: RouteConfig) -> ThreadPoolExecutor:
        """The thread that owns the route's target session for batches (kept between
        runs, with its connection)."""
        return self._executor(self._uploaders, route, 1, "upload")

    def _pool(self, route: RouteConfig) -> ThreadPoolExecutor:
        return self._executor(self._pools, route, route.transfers, "worker")

    def _executor(
        self, kept: dict[str, ThreadPoolExecutor], route: RouteConfig, size: int, role: str
    ) -> ThreadPoolExecutor:
        with self._remotes_lock:
            if route.name not in kept:
                kept[route.name] = ThreadPoolExecutor(
                    size, thread_name_prefix=f"xchange-{route.name}-{role}"
                )
            return kept[route.name]

    def _look(
        self, route: RouteConfig, result: RouteResult, only: set[str] | None = None
    ) -> tuple[Verdict, set[str]] | None:
        """List the source (or look at ``only`` these names and the held ones); return what
        is ready and what is held, and the names the journal has never seen (None: cannot
        list)."""
        source = self.remote(route.source.endpoint)
        try:
            other = self._claim_drop(route.source.endpoint, source)
        except RemoteError as exc:
            result.error, result.error_kind = exc.reason, exc.kind
            log.error("route.source_failed", error=exc.reason, cause=exc.kind)
            return None
        if other is not None:
            result.error = (
                f"{route.source.endpoint}: another xchange takes files from this folder "
                f"({other.describe()}); two journals on one drop folder lose and duplicate "
                "files: give every daemon one journal (see README), or stop the other one"
            )
            result.error_kind = "drop-shared"
            log.error("route.drop_shared", endpoint=route.source.endpoint, other=other.describe())
            return None
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
        # Files seen delivered and left in place on purpose need neither matching nor a
        # journal look-up (a folder's history costs one set look-up per file).
        left = self._left_in_place.setdefault(route.name, set())
        if route.ready.marker:
            # Done-markers of every wanted file (left in place or not) are no input.
            wanted = [f for f in listing if selector.wants(f.name)]
            markers = {marker_name(route.ready.marker, f.name) for f in wanted}
            wanted = [
                f
                for f in wanted
                if f.name not in markers and (f.name, f.size, f.mtime_ns) not in left
            ]
        else:
            wanted = [
                f
                for f in listing
                if (f.name, f.size, f.mtime_ns) not in left and selector.wants(f.name)
            ]
        fresh = []
        unknown = set()
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
        for info in verdict.future:
            ahead = info.mtime_ns / 1e9 - now.timestamp()
            log.warning(
                "file.clock_skew",
                source=info.name,
                ahead_s=round(ahead),
                reason="the file's time is in the future (the writer's clock is ahead); "
                "judged by its size and time staying the same between looks",
            )
        for obs in verdict.stuck:
            log.warning("file.stuck", source=obs.path, reason=obs.reason)
            self.alerter.failure(route.name, "stuck", True, [obs.path], obs.reason)
        return verdict, unknown

    def _owner(self) -> DropOwner:
        return DropOwner(self.journal_id, socket.gethostname(), os.getpid(), time.time())

    def _claim_drop(self, endpoint: str, source: Remote) -> DropOwner | None:
        """Mark a source folder as this journal's (a heartbeat every ``DROP_HEARTBEAT``
        seconds); the other journal's owner if it is marked by one."""
        with self._drops_lock:
            held = self._drops.get(endpoint)
            now = time.monotonic()
            if held is not None and now - held[1] < DROP_HEARTBEAT:
                return None
            remote = held[0] if held is not None else source
            other = remote.claim_drop(self._owner(), DROP_TTL)
            if other is None:
                self._drops[endpoint] = (remote, now)
            return other

    def _alert(self, result: RouteResult) -> None:
        failed: dict[tuple[str, bool], list[FileResult]] = defaultdict(list)
        for f in result.files:
            if f.outcome in (QUARANTINED, RETRY_LATER):
                failed[(f.cause or "error", f.retryable)].append(f)
            elif f.after_error:
                failed[(f"after-{f.cause or 'error'}", True)].append(f)
        for (cause, retryable), files in failed.items():
            first = files[0]
            reason = (
                f"delivered; {first.after_error}"
                if first.after_error and first.outcome not in (QUARANTINED, RETRY_LATER)
                else first.error or cause
            )
            self.alerter.failure(result.route, cause, retryable, [f.source for f in files], reason)
        if result.error and not failed:
            self.alerter.failure(result.route, result.error_kind or "error", True, [], result.error)
        if not failed and not result.error and result.count(DELIVERED):
            self.alerter.recovered(result.route)

    # ------------------------------------------------------------------ quarantine

    def _heal(self, route: RouteConfig, result: RouteResult) -> None:
        """Quarantined files whose cause may be fixed, tried again from their kept copies:
        those judged by other layouts, mappings, value tables or master data than the
        current ones, and those given up on a transient cause once the target answers
        (one probe for all of them). What passes is delivered on its own record (exactly
        once); what fails stays with its report brought up to date. At most
        ``quarantine.batch`` files a look; heals cut short by a crash are resumed first."""
        if not route.quarantine.auto_retry or self.stop.is_set():
            return
        versions = self.pipelines[route.name].versions
        candidates = self.journal.reconsider(
            route.name,
            layout_version=versions[0],
            mapping_version=versions[1],
            transient=TRANSIENT,
            transient_before=self.now() - timedelta(seconds=route.retry.later),
            limit=route.quarantine.batch,
        )
        if not candidates:
            return
        waiting = [r for r in candidates if not what_changed(r, versions)]
        if waiting:
            try:
                self.remote(route.target.endpoint).connect()
            except XchangeError as exc:
                log.info("quarantine.target_still_down", files=len(waiting), error=exc.reason)
                candidates = [r for r in candidates if what_changed(r, versions)]
        why: dict[str, int] = {}
        healed: list[FileResult] = []
        failing: list[FileResult] = []
        for record in candidates:
            if self.stop.is_set():
                break
            if not Path(record.quarantine_path or "").is_file():
                continue
            changed = what_changed(record, versions) or (
                "the target answered again" if record.state == State.QUARANTINED else ""
            )
            log.info("quarantine.recheck", file_id=record.id, source=record.path, why=changed)
            outcome = self.reprocess(record)
            if outcome.outcome == DELIVERED:
                healed.append(outcome)
                if changed:
                    why[changed] = why.get(changed, 0) + 1
            else:
                if outcome.outcome == RETRY_LATER:
                    # Its copy is in quarantine, not in a drop folder: back there, tried
                    # again when the target answers.
                    self.journal.transition(
                        record.id,
                        State.QUARANTINED,
                        error=(outcome.cause or "error", outcome.error or ""),
                        note="auto-retry: still failing",
                    )
                failing.append(outcome)
            result.files.append(outcome)
        if healed or any(what_changed(r, versions) for r in candidates):
            self.alerter.healed(
                route.name,
                len(healed),
                len(healed) + len(failing),
                " and ".join(sorted(why, key=lambda k: -why[k])),
                [f"{f.source}: {f.error}" for f in failing],
            )

    # ------------------------------------------------------------------ one file

    def process(self, route: RouteConfig, info: FileInfo) -> FileResult:
        """Take one file from the route's drop folder through to delivery."""
        return self._timed(route, info.name, lambda result: self._from_drop(route, info, result))

    def reprocess(self, record: FileRecord, *, force: bool = False) -> FileResult:
        """Run a file again now: a quarantined one from its kept original (after a fix);
        one still waiting in its drop folder (for a retry, say) from there; with
        ``force``, an already delivered one from its archived copy. A delivered file
        without ``force`` is not touched: the result says so (outcome ``skipped``)."""
        route = self.config.route(record.route)
        if record.state in DONE_STATES and not force:
            when = record.updated_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            outputs = ", ".join(o.path for o in record.outputs) or "no outputs"
            return FileResult(
                route.name,
                record.path,
                SKIPPED,
                file_id=record.id,
                error=(
                    f"delivered already ({record.state} {when}: {outputs}); nothing sent. "
                    "--force sends it again from its archived copy"
                ),
            )
        kept = bool(record.quarantine_path) and Path(record.quarantine_path or "").is_file()
        if not kept and record.state in (State.RETRYING, State.PROCESSING, State.DELIVERING):
            return self._from_drop_now(route, record)
        return self._timed(
            route, record.path, lambda result: self._again(route, record, force, result)
        )

    def _from_drop_now(self, route: RouteConfig, record: FileRecord) -> FileResult:
        """A file still in its drop folder (waiting for a retry, or cut short): made due
        now and taken from there by a look at just that name."""
        if record.state == State.RETRYING:
            self.journal.transition(record.id, State.RETRYING, note="due now (by hand)")
        looked = self.run_route(route, only={record.path}, heal=False)
        for outcome in looked.files:
            if outcome.file_id == record.id or outcome.source == record.path:
                return outcome
        reason = looked.error or (
            f"it is not in {route.source.endpoint}'s drop folder any more (moved, or "
            "renamed); drop it there again"
            if not any(h.path == record.path for h in looked.held)
            else "it is in the drop folder but not complete yet (held); it is taken when it is"
        )
        return FileResult(route.name, record.path, WAITING, file_id=record.id, error=reason)

    def due_now(self, records: Iterable[FileRecord]) -> list[FileRecord]:
        """Files waiting for a later try (``retrying``) made due now: the next look takes
        them (after ``trust``, or once a target is fixed). Returns those changed."""
        changed = []
        for record in records:
            if record.state == State.RETRYING:
                self.journal.transition(record.id, State.RETRYING, note="due now (by hand)")
                changed.append(record)
        return changed

    def _timed(
        self, route: RouteConfig, name: str, work: Callable[[FileResult], None]
    ) -> FileResult:
        started = time.monotonic()
        result = FileResult(route.name, name, SKIPPED)
        entry = InHand(route.name, name, started, result)
        with self._hands_lock:
            self._hands[threading.get_ident()] = entry
        with structlog.contextvars.bound_contextvars(route=route.name, source=name):
            try:
                work(result)
            except XchangeError as exc:
                # Anything not handled below (the source vanished, the journal failed):
                # the file stays where it is and is tried again next run.
                result.outcome, result.error = RETRY_LATER, exc.reason
                result.cause, result.retryable = exc.kind, True
            except Exception as exc:
                # Not an error xchange knows: this file waits (and is said, with the
                # traceback in the log); the rest of the look goes on.
                log.exception("file.unexpected_error", error=f"{type(exc).__name__}: {exc}")
                result.outcome = RETRY_LATER
                result.error = one_line(
                    f"unexpected error ({type(exc).__name__}: {exc}); the file waits, the "
                    "others go on; the log has the details"
                )
                result.cause, result.retryable = "internal", True
            finally:
                with self._hands_lock:
                    self._hands.pop(threading.get_ident(), None)
            result.duration_ms = int((time.monotonic() - started) * 1000)
            self._log_result(route, result)
        return result

    def in_hand(self) -> list[str]:
        """The files being taken through right now, for a person waiting on a stop:
        ``orders.csv on shop-orders (126.0 MB, 40% read, for 12 s)``."""
        now = time.monotonic()
        with self._hands_lock:
            entries = list(self._hands.values())
        return [e.describe(now) for e in entries]

    @staticmethod
    def _log_result(route: RouteConfig, result: FileResult) -> None:
        """The one summary event of a file (none for files only looked at)."""
        if result.outcome in (SKIPPED, WAITING):
            return
        # Levels say what a person must do: a quarantined file needs one (error); a file
        # that waits for a retry may (warning); the rest is information.
        emit = {QUARANTINED: log.error, RETRY_LATER: log.warning}.get(result.outcome, log.info)
        emit(
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
            warnings=result.warnings or None,
            filtered=result.filtered or None,
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
            error = self._after(
                route, self.remote(route.source.endpoint), info, known.id if unfinished else None
            )
            if error is not None:
                result.outcome = LEFT
                self.after_failed(route, result, error)

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
                # One open handle from the hash to the conversion: the bytes claimed are
                # the bytes converted, whatever happens to the name meanwhile.
                try:
                    handle = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
                except FileNotFoundError:
                    raise RemoteNotFound(f"{info.name}: gone") from None
                with handle:
                    with self._hands_lock:
                        hand = self._hands.get(threading.get_ident())
                    if hand is not None:
                        hand.handle = handle
                    self._claimed(route, source, info, path, handle, result)
        except RemoteNotFound:
            # Gone between the listing and the read (its producer took it back): nothing
            # to deliver and nothing lost.
            log.info("file.vanished", reason="removed from the drop folder before it was read")
            result.outcome = SKIPPED

    def _claimed(
        self,
        route: RouteConfig,
        source: Remote,
        info: FileInfo,
        path: Path,
        handle: BinaryIO,
        result: FileResult,
    ) -> None:
        size, sha = _fingerprint(handle)
        handle.seek(0)
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
        # The same content on the same route is taken by one worker at a time: a twin
        # waits until the other is done, and is then known as a duplicate.
        twin = (route.name, sha)
        with self._in_hand_changed:
            while twin in self._in_hand:
                if self.stop.is_set():
                    result.outcome = SKIPPED  # looked at again at the next run
                    return
                self._in_hand_changed.wait(timeout=0.5)
            self._in_hand.add(twin)
        try:
            self._claimed_alone(route, source, info, path, handle, result, size, sha)
        finally:
            with self._in_hand_changed:
                self._in_hand.discard(twin)
                self._in_hand_changed.notify_all()

    def _claimed_alone(
        self,
        route: RouteConfig,
        source: Remote,
        info: FileInfo,
        path: Path,
        handle: BinaryIO,
        result: FileResult,
        size: int,
        sha: str,
    ) -> None:
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
            error = self._after(route, source, info, None)
            if error is not None:
                self.after_failed(route, result, error)
            return
        self._convert_and_deliver(
            route, claim.record, path, info.name, result, source, info=info, stream=handle
        )

    def _again(
        self, route: RouteConfig, record: FileRecord, force: bool, result: FileResult
    ) -> None:
        result.file_id = record.id
        if record.state in DONE_STATES and not force:
            raise FormatError(
                f"file #{record.id} was delivered already; use --force to send it again"
            )
        kept = record.quarantine_path and Path(record.quarantine_path).is_file()
        if record.state == State.QUARANTINED and record.quarantine_path:
            original = Path(record.quarantine_path)
        elif kept and record.state not in DONE_STATES:
            # Taken again from quarantine and cut short (a crash): go on from the copy.
            original = Path(record.quarantine_path or "")
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
        with open(original, "rb") as fh:
            size, sha256 = _fingerprint(fh)
        result.bytes = size
        key = FileKey(
            route.name, record.endpoint, record.path, record.size, record.mtime_ns, record.sha256
        )
        edited = sha256 != record.sha256
        if edited:
            # The kept copy was edited (a fix by hand): new content, with a record of its
            # own that says whose copy it is; the old record says what replaced it.
            key = FileKey(
                route.name, record.endpoint, record.path, size, original.stat().st_mtime_ns, sha256
            )
        claim = self.journal.claim(
            key, layout_version=pipeline.versions[0], mapping_version=pipeline.versions[1]
        )
        current = claim.record
        result.file_id = current.id
        if edited:
            if claim.already_delivered:
                self.journal.transition(
                    record.id,
                    State.DROPPED,
                    note=f"its edited copy is the content of #{current.id}, delivered already",
                )
                result.outcome = DUPLICATE
                result.error = f"the edited copy's content was delivered already as #{current.id}"
                return
            self.journal.transition(
                current.id,
                State.PROCESSING,
                quarantine_path=str(original),
                note=f"edited copy of #{record.id} ({record.path}), taken from quarantine",
            )
            if record.state != State.DROPPED:
                self.journal.transition(
                    record.id, State.DROPPED, note=f"replaced by its edited copy #{current.id}"
                )
            log.info("file.edited_copy", file_id=current.id, replaces=record.id, sha256=sha256)
        self._convert_and_deliver(route, current, original, record.path, result, None)
        if result.outcome == DELIVERED:
            resolved = self.quarantine.resolve(original)
            self._after_kept(route, current, resolved)

    def _after_kept(self, route: RouteConfig, record: FileRecord, kept: Path) -> None:
        """A file delivered from its quarantined copy: its source left the drop folder when
        it was quarantined, so the copy takes its place in the route's archive folder (as a
        delivered source would be archived), or the record says it is deleted; with
        ``after = "leave"`` it stays delivered. The copy's path in quarantine (now under
        ``resolved/``) is kept on the record."""
        action = route.after.action
        if action == "leave":
            self.journal.transition(record.id, State.DELIVERED, quarantine_path=str(kept))
            return
        if action == "delete":
            self.journal.transition(
                record.id,
                State.DELETED,
                quarantine_path=str(kept),
                note="its source left the drop folder when it was quarantined",
            )
            return
        folder = safe_subfolder(route.after.folder.format(date=self.now()))
        base = posixpath.basename(record.path)
        stem, dot, ext = base.rpartition(".")
        candidates = [base] + [
            f"{stem}_{n}.{ext}" if dot else f"{base}_{n}" for n in range(1, 1000)
        ]
        source = self.remote(route.source.endpoint)
        size = kept.stat().st_size
        token = f"{self.journal_id[:6]}{record.sha256[:12]}"
        for candidate in candidates:
            name = posixpath.join(folder, candidate)
            try:
                with open(kept, "rb") as fh:
                    source.put_atomic(
                        name,
                        fh,
                        size,
                        temp_name=posixpath.join(folder, temp_name_for(candidate, token)),
                        overwrite=False,
                    )
            except TargetExists:
                continue
            except XchangeError as exc:
                # Delivered all the same: only the archive copy is missing (said, kept).
                log.warning(
                    "file.after_failed", source=record.path, action=action, error=exc.reason
                )
                self.journal.transition(
                    record.id,
                    State.DELIVERED,
                    quarantine_path=str(kept),
                    note=f"archive of its quarantined copy failed: {exc.reason}",
                )
                return
            self.journal.transition(
                record.id,
                State.ARCHIVED,
                archive_path=name,
                quarantine_path=str(kept),
                note="archived from its quarantined copy",
            )
            return

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
        stream: BinaryIO | None = None,
    ) -> None:
        pipeline = self.pipelines[route.name]
        # The first claim's time, not the clock: names and contents come out the same
        # when the file is converted again after a crash.
        when = record.created_at.astimezone()
        skip = self._dedupe(route, record) if route.dedupe_key and not force else None
        with staging_folder(self.scratch / "staging", f"{route.name}-{record.id}") as staging:
            try:
                opened = contextlib.nullcontext(stream) if stream else open(path, "rb")  # noqa: SIM115
                with opened as reading:
                    reading.seek(0)
                    # Converted as the name the content was first taken under (the same as
                    # ``name`` but for a twin taking over an unfinished delivery).
                    conversion = pipeline.convert_stream(
                        reading,
                        record.path,
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
            result.warnings = conversion.warnings
            result.filtered = conversion.filtered_note()
            outputs = conversion.outputs
            note = ", ".join(o.name for o in outputs) or "no documents"
            self.journal.transition(
                record.id,
                State.DELIVERING,
                note=f"{note}; {result.filtered}" if result.filtered else note,
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
            error = self._after(route, source, info, record.id)
            if error is not None:
                self.after_failed(route, result, error)

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
        if isinstance(exc, NameRefused):
            self._quarantine(route, record, name, path, exc, result, source)
            return
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
            record.id, State.RETRYING, error=(exc.kind, exc.reason), next_retry_at=when
        )
        result.outcome, result.error = RETRY_LATER, exc.reason
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
            temp = temp_name_for(name, self.temp_token(record, out))
            try:
                call_with_retry(
                    functools.partial(
                        self._put,
                        target,
                        out,
                        name,
                        temp,
                        policy == "overwrite",
                        route.target.permissions,
                    ),
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

    def temp_token(self, record: FileRecord, out: Output) -> str:
        """The token of an output's temporary name: the same on every try of this
        journal's delivery (so a restart resumes it), another for any other journal's."""
        return f"{self.journal_id[:6]}{record.sha256[:6]}{out.sha256[:6]}"

    @staticmethod
    def _put(
        target: Remote, out: Output, name: str, temp: str, overwrite: bool, mode: int | None
    ) -> None:
        with out.open() as src:
            target.put_atomic(name, src, out.size, temp_name=temp, overwrite=overwrite, mode=mode)

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
    ) -> RemoteError | None:
        """Archive, delete or leave a delivered source (and its done-marker). When several
        routes read the file, the last one to deliver it does this. Returns what stopped
        the archive or delete (the records are then back at delivered, the file where it
        was, and the next look tries again)."""
        plan = self._plan_after(route, info, file_id)
        if plan is None:
            return None
        self.journal.record_steps(self._announcement(plan))
        moved, error = self.carry_out(source, plan)
        if moved is not None:
            self.journal.record_steps([Step(fid, plan.state, moved, moved) for fid in plan.ids])
        return error

    @staticmethod
    def after_failed(route: RouteConfig, result: FileResult, error: RemoteError) -> None:
        result.after_error = f"{route.after.action} failed: {error.reason}"
        result.cause, result.retryable = error.kind, True

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

    @staticmethod
    def _announcement(plan: AfterPlan) -> list[Step]:
        """The journal steps that announce a move before it is made: after a crash in
        between, the file is found still in the drop folder with its record archived (or
        deleted), and the move is simply made then."""
        note = f"{plan.action} into {plan.folder}" if plan.folder else plan.action
        return [Step(fid, plan.state, note, plan.folder or None) for fid in plan.ids]

    def carry_out(self, source: Remote, plan: AfterPlan) -> tuple[str | None, RemoteError | None]:
        """Delete or archive the source (and its marker): (the archived path, None), or
        (None, what stopped it) with its announcement taken back in the journal: the
        records stay delivered until the action is done."""
        try:
            return self._carry_out(source, plan), None
        except (SourceChanged, RemoteNotFound) as exc:
            # Not the file that was delivered any more (or gone already): it stays, and
            # is taken as new.
            note = f"not {plan.state}: {exc.reason}"
            self.journal.record_steps([Step(fid, State.DELIVERED, note) for fid in plan.ids])
            log.info("file.replaced", source=plan.info.name, action=plan.action, reason=exc.reason)
            return None, None
        except RemoteError as exc:
            note = f"{plan.action} failed: {exc.reason}"
            self.journal.record_steps([Step(fid, State.DELIVERED, note) for fid in plan.ids])
            log.warning(
                "file.after_failed", source=plan.info.name, action=plan.action, error=exc.reason
            )
            return None, exc

    @staticmethod
    def _carry_out(source: Remote, plan: AfterPlan) -> str | None:
        """Delete or archive the source (and its marker); return the archived path."""
        name = plan.info.name
        if plan.action == "delete":
            source.remove(name, expect=plan.info)
            if plan.marker:
                source.remove(plan.marker)
            return None
        moved = source.move(name, plan.folder, expect=plan.info)
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
            error=(exc.kind, exc.reason),
            quarantine_path=str(entry.data_path),
            note=note,
        )
        # The bytes are safe in quarantine: take the file out of the drop folder.
        if source is not None:
            source.remove(name)
        result.outcome = QUARANTINED
        result.error = one_line((f"{note}: " if note else "") + exc.reason)
        result.cause, result.retryable = exc.kind, exc.retryable


@dataclass
class InHand:
    """A file a worker is taking through: its route, name, start, result so far (its size
    once known), and the open handle its content is read from (for how far it got)."""

    route: str
    source: str
    started: float
    result: FileResult
    handle: BinaryIO | None = None

    def describe(self, now: float) -> str:
        size = self.result.bytes
        parts = [f"{size / 1e6:.1f} MB"] if size else []
        handle = self.handle
        if handle is not None and size and not handle.closed:
            with contextlib.suppress(OSError, ValueError):
                parts.append(f"{min(100, handle.tell() * 100 // size)}% read")
        parts.append(f"for {now - self.started:.0f} s")
        return f"{self.source} on {self.route} ({', '.join(parts)})"


def _in_trouble(outcome: FileResult) -> bool:
    """A file waits because its target or the journal is in trouble (the next files would
    fail the same way), not because of something of its own."""
    return outcome.outcome == RETRY_LATER and outcome.cause != "internal"


def _fingerprint(fh: BinaryIO) -> tuple[int, str]:
    """Size and sha256 of an open file, read in chunks."""
    sha = hashlib.sha256()
    size = 0
    while chunk := fh.read(1 << 20):
        sha.update(chunk)
        size += len(chunk)
    return size, sha.hexdigest()


__all__ = ["FileResult", "RouteResult", "Runner", "exit_code"]

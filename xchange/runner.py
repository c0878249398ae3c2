"""Running routes: look at each route's source, take every ready file through, say what
happened.

The runner only orders the work; each step has its module::

    runner -> scan       a look at a drop folder: ready, held, new, delivered-but-there
           -> healing    quarantined files whose cause may be fixed, tried again
           -> batch      new small files of copy routes, pipelined
           -> transfer   one file's life: claim, convert, deliver, after, quarantine
                 -> delivery, after, quarantine -> pipeline, remote/*, journal/*
    sessions             connections per worker thread, worker pools (beside them all)

Transient failures are retried within the run (backoff with jitter), then at later runs
(``next_retry_at``, doubling), and quarantined after ``give_up_after`` runs
(``xchange.retry``).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import structlog

from xchange import batch, pickups
from xchange.alerts import JOURNAL_CAUSES, Alerter
from xchange.config import AppConfig, RouteConfig
from xchange.errors import JournalError
from xchange.healing import Healer
from xchange.journal import DONE_STATES, FileRecord, Journal, State
from xchange.pipeline import make_pipeline
from xchange.remote import FileInfo, Remote, open_remote
from xchange.results import (
    DELIVERED,
    DUPLICATE,
    QUARANTINED,
    RETRY_LATER,
    SKIPPED,
    WAITING,
    FileResult,
    RouteResult,
    exit_code,
)
from xchange.scan import Scanner
from xchange.sessions import RemoteFactory, Sessions
from xchange.transfer import Transfer

log = structlog.get_logger(__name__)

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
        remotes: RemoteFactory | None = None,
    ) -> None:
        self.config = config
        #: Set to stop taking new files; the file in hand is finished first.
        self.stop = stop or threading.Event()
        self.journal = journal
        self.now = now
        self.alerter = alerter or Alerter(
            config.alerts, journal, config_file=str(config.source_file), now=now
        )
        scratch = config.journal.path.parent / "scratch"
        self.sessions = Sessions(
            config.endpoints, remotes or open_remote, partials=scratch / "partials"
        )
        self.transfer = Transfer(
            config,
            journal,
            self.sessions,
            {r.name: make_pipeline(r, config.formats) for r in config.routes},
            #: Private scratch space: downloads and each file's staged outputs.
            scratch=scratch,
            now=now,
            sleep=sleep,
            stop=self.stop,
        )
        self.scanner = Scanner(
            journal, self.sessions, self.alerter, now, listings=self.transfer.listings
        )
        self.healer = Healer(self.transfer, self.alerter, now=now, stop=self.stop)

    def remote(self, name: str) -> Remote:
        """This thread's connection to an endpoint (opened on first use, then reused)."""
        return self.sessions.remote(name)

    def close(self) -> None:
        """Close every thread's connections (when no route is running)."""
        self.sessions.stop_pools()
        self.scanner.release_drops()
        self.sessions.close()
        self.transfer.pgp.close()  # (gpg's agent, if PGP was used)

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
        self.look_for_pickups(chosen)
        self.alerter.flush()
        self.journal.checkpoint(force=True)  # a copy of the main file alone is complete
        return list(results.values())

    def look_for_pickups(self, routes: list[RouteConfig] | None = None) -> None:
        """Note what the partners of collecting targets have taken since the last look,
        and alert what they have not taken in time."""
        pickups.look(
            self.config.routes if routes is None else routes,
            self.journal,
            self.sessions.remote,
            self.alerter,
            self.now(),
        )

    def run_route_pinned(self, route: RouteConfig, only: set[str] | None = None) -> RouteResult:
        """``run_route`` on the route's own thread: a daemon's looks at a route keep one
        session per endpoint (an SFTP login costs several round trips; a scheduler thread
        chosen at random would open one per thread), and what it knows of the folder."""
        pinned = self.sessions.pool(route.name, "look", 1)
        return pinned.submit(self.run_route, route, only).result()

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
                    result.files += self.healer.heal(route)
                look = self.scanner.look(route, only)
                result.error, result.error_kind = look.error, look.error_kind
                result.listed_in = look.listed_in
                result.files += [
                    self.transfer.finish_after(route, info, known) for info, known in look.delivered
                ]
                result.files += [
                    self.transfer.finish_quarantine(route, info, known)
                    for info, known in look.quarantined
                ]
                verdict = look.verdict
                ready = verdict.ready if verdict is not None else []
                for outcome in self._process_all(route, ready, look.unknown):
                    result.files.append(outcome)
                    if _in_trouble(outcome) and result.error is None:
                        # The target (or the journal) is in trouble: the remaining files
                        # are left for the next run instead of failing each the same way.
                        result.error, result.error_kind = outcome.error, outcome.cause
                taken = {f.source for f in result.files if f.outcome in _TAKEN}
                self.scanner.finish_manifests(route, look, taken)
            except JournalError as exc:
                # The journal cannot be written (a full disk, a read-only file system):
                # nothing more is taken; one clear error, and the files wait.
                result.error, result.error_kind = exc.reason, exc.kind
                log.error("route.journal_failed", error=exc.reason)
            if verdict is not None:
                result.held = verdict.held
                result.next_look = verdict.soonest(self.now(), route.ready)
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

    def _process_all(
        self, route: RouteConfig, ready: list[FileInfo], unknown: set[str]
    ) -> Iterator[FileResult]:
        """Take ready files through and stop taking new ones on a stop request or target
        trouble: new small files of a copy route in batches (``xchange.batch``), the rest
        one at a time, ``route.transfers`` at once, each worker thread with its own
        connections."""
        if self.journal.owner is not None and len(ready) > 1:
            # Daemons sharing the journal start at different places in the same listing,
            # so that their claims meet as rarely as possible (none keeps a folder's order).
            start = zlib.crc32(self.journal.owner.encode()) % len(ready)
            ready = ready[start:] + ready[:start]
        batches, singles = batch.split(route, ready, unknown)
        trouble = False
        if batches:
            small = batch.SmallFiles(
                self.transfer, route, self.sessions.pool(route.name, "upload", 1)
            )
            for done in small.run(batches, self.stop):
                trouble = trouble or done.outcome == RETRY_LATER
                yield done
        if trouble:
            return
        stop = threading.Event()

        def work(info: FileInfo) -> FileResult | None:
            if self.stop.is_set() or stop.is_set():
                return None
            outcome = self.transfer.process(route, info)
            if _in_trouble(outcome):
                stop.set()
            return outcome

        if route.transfers == 1 or len(singles) < 2:
            outcomes: Iterable[FileResult | None] = map(work, singles)
        else:
            outcomes = self.sessions.pool(route.name, "worker", route.transfers).map(work, singles)
        for outcome in outcomes:
            if outcome is not None:
                yield outcome

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
        repeated = [f for f in result.files if f.skipped_keys]
        if repeated and self.config.route(result.route).repeats == "alert":
            self.alerter.repeats(result.route, [(f.source, f.skipped_keys) for f in repeated])
        if result.error and not failed:
            self.alerter.failure(result.route, result.error_kind or "error", True, [], result.error)
        if not failed and not result.error and result.count(DELIVERED):
            self.alerter.recovered(result.route)
        if result.error_kind not in JOURNAL_CAUSES:
            self.alerter.journal_answers()  # (asks the journal only after an episode)

    # ------------------------------------------------------------------ by hand

    def process(self, route: RouteConfig, info: FileInfo) -> FileResult:
        """Take one file from the route's drop folder through to delivery."""
        return self.transfer.process(route, info)

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
        kept = bool(record.quarantine_path) and _is_file(record.quarantine_path)
        if not kept and record.state in (State.RETRYING, State.PROCESSING, State.DELIVERING):
            return self._from_drop_now(route, record)
        return self.transfer.again(route, record, force=force)

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

    def in_hand(self, older_than: float = 0.0) -> list[str]:
        """The files being taken through right now (for ``older_than`` seconds or more),
        for a person waiting: ``orders.csv on shop-orders (126.0 MB, 40% read, for 12 s)``."""
        return self.transfer.in_hand(older_than)


#: Outcomes that are done with a file (for the manifest that listed it).
_TAKEN = frozenset({DELIVERED, DUPLICATE, QUARANTINED})


def _is_file(path: str | None) -> bool:
    return bool(path) and Path(path or "").is_file()


def _in_trouble(outcome: FileResult) -> bool:
    """A file waits because its target or the journal is in trouble (the next files would
    fail the same way), not because of something of its own."""
    return outcome.outcome == RETRY_LATER and outcome.cause != "internal"


__all__ = ["FileResult", "RouteResult", "Runner", "exit_code"]

"""One file's life, from its drop folder (or its kept copy) to delivered.

Order of events (each journal write is committed before the side effect it announces,
so that a restart resumes from the last committed state):

1. look the file up by name, size and time: already delivered (archive it if that was
   interrupted), or waiting for its next retry, costs no read;
2. take a local copy, hash it, *claim* it in the journal; content already delivered on
   the route is not sent again, and one content is taken by one worker at a time;
3. convert it (streaming, into a private staging folder); a format, validation or
   mapping error quarantines it at once;
4. journal ``delivering``, then deliver each output (``xchange.delivery``);
5. journal ``delivered``, then archive, delete or leave the source (``xchange.after``).

A transient failure waits for a later run (``xchange.retry``), and is quarantined once
its attempts run out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import structlog

from xchange import progress
from xchange.after import After
from xchange.archives import bundled, is_entry
from xchange.claims import Claimed
from xchange.config import AppConfig, RouteConfig
from xchange.delivery import Delivery
from xchange.errors import (
    FormatError,
    ManifestDiffers,
    MappingError,
    NameRefused,
    PgpUnavailable,
    RemoteError,
    RemoteNotFound,
    RepeatedDocuments,
    SourceChanged,
    TargetExists,
    UnsafeName,
    UsageError,
    XchangeError,
    one_line,
)
from xchange.faults import checkpoint
from xchange.journal import DONE_STATES, FileKey, FileRecord, FileTally, Journal, State
from xchange.manifest import (
    Entry,
    Listings,
    check_bytes,
    check_documents,
    manifest_name,
    render,
)
from xchange.manifest import delivered as delivered_entries
from xchange.pgp import Pgp
from xchange.pipeline import Conversion, CopyPipeline, Pipeline
from xchange.quarantine import Quarantine
from xchange.readiness import UNLISTED
from xchange.remote import FileInfo, Remote
from xchange.results import (
    DELIVERED,
    DUPLICATE,
    LEFT,
    QUARANTINED,
    RETRY_LATER,
    SKIPPED,
    WAITING,
    FileResult,
    Verdict,
)
from xchange.retry import gives_up, next_try
from xchange.sessions import Sessions
from xchange.sink import Output, Sink, staging_folder
from xchange.totals import summary as totals_summary
from xchange.unpacking import take_archive

log = structlog.get_logger(__name__)


@dataclass
class InHand:
    """A file a worker is taking through: its route, name and start, what is known of it
    so far (its size, its record, when it arrived), and the open handle its content is
    read from (for how far it got)."""

    route: str
    source: str
    started: float
    bytes: int = 0
    file_id: int | None = None
    arrived: float | None = None
    handle: BinaryIO | None = None

    #: The worker's thread (what it is moving right now: :mod:`xchange.progress`).
    thread: int = 0

    def describe(self, now: float) -> str:
        """``orders.csv on shop-orders (126.0 MB, uploading WMS_1.xml: 40.0 of 126.0 MB,
        45.2 MB/s, 2 s left, for 12 s)``: the bytes being moved, else how far it was read."""
        size = self.bytes
        parts = [f"{size / 1e6:.1f} MB"] if size else []
        meter = progress.of_thread(self.thread)
        handle = self.handle
        if meter is not None:
            parts.append(meter.describe())
        elif handle is not None and size and not handle.closed:
            with contextlib.suppress(OSError, ValueError):
                parts.append(f"{min(100, handle.tell() * 100 // size)}% read")
        parts.append(f"for {now - self.started:.0f} s")
        return f"{self.source} on {self.route} ({', '.join(parts)})"

    def result(self, verdict: Verdict) -> FileResult:
        """The file's result: what is known of it, and what its last step decided."""
        result = FileResult(
            self.route,
            self.source,
            verdict.outcome,
            file_id=self.file_id,
            bytes=self.bytes,
            arrived=self.arrived,
        )
        result.take(verdict)
        return result


def fingerprint(fh: BinaryIO) -> tuple[int, str]:
    """Size and sha256 of an open file, read in chunks."""
    sha = hashlib.sha256()
    size = 0
    while chunk := fh.read(1 << 20):
        sha.update(chunk)
        size += len(chunk)
    return size, sha.hexdigest()


def log_result(route: RouteConfig, result: FileResult) -> None:
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


class Transfer:
    """Takes single files through, each worker thread with its own connections."""

    def __init__(
        self,
        config: AppConfig,
        journal: Journal,
        sessions: Sessions,
        pipelines: dict[str, Pipeline | CopyPipeline],
        *,
        scratch: Path,
        now: Callable[[], datetime],
        sleep: Callable[[float], None],
        stop: threading.Event,
    ) -> None:
        self.config = config
        self.journal = journal
        self.sessions = sessions
        self.pipelines = pipelines
        self.scratch = scratch
        self.now = now
        self.sleep = sleep
        self.stop = stop
        self.quarantine = Quarantine(config.quarantine.path)
        self.delivery = Delivery(journal, sleep=sleep, now=now)
        self.after = After(config, journal, now)
        #: PGP: decrypts what routes receive encrypted, encrypts what they send so.
        self.pgp = Pgp(config, scratch)
        #: What the partners' manifests list (written by the looks, read here).
        self.listings = Listings()
        #: (route, sha256) of the contents workers are taking through right now.
        self._in_hand: set[tuple[str, str]] = set()
        self._in_hand_changed = threading.Condition()
        #: The file each worker thread has in hand (for ``in_hand``).
        self._hands: dict[int, InHand] = {}
        self._hands_lock = threading.Lock()

    # ------------------------------------------------------------------ entry points

    def process(self, route: RouteConfig, info: FileInfo) -> FileResult:
        """Take one file from the route's drop folder through to delivery."""
        return self.timed(route, info.name, lambda hand: self._from_drop(route, info, hand))

    def finish_after(self, route: RouteConfig, info: FileInfo, known: FileRecord) -> FileResult:
        """A delivered file still in the drop folder: its archive (or delete) was cut short
        by a crash, it is left in place on purpose, or another route still needs it."""
        return self.timed(route, info.name, lambda hand: self._finish_after(route, info, known))

    def finish_quarantine(
        self, route: RouteConfig, info: FileInfo, known: FileRecord
    ) -> FileResult:
        """A quarantined file (its bytes kept) still in the drop folder: the daemon that
        quarantined it is taking it out, or that failed. It is taken out, never claimed
        and judged again (before: another daemon of a group claimed it in that moment and
        quarantined it a second time)."""
        return self.timed(
            route, info.name, lambda hand: self._finish_quarantine(route, info, known)
        )

    def again(self, route: RouteConfig, record: FileRecord, *, force: bool) -> FileResult:
        """A file taken again from its kept copy: the quarantined original (after a fix),
        or with ``force`` the archived copy of a delivered one."""
        return self.timed(route, record.path, lambda hand: self._again(route, record, force, hand))

    def in_hand(self, older_than: float = 0.0) -> list[str]:
        """The files being taken through right now (for ``older_than`` seconds or more),
        for a person waiting: ``orders.csv on shop-orders (126.0 MB, 40% read, for 12 s)``."""
        now = time.monotonic()
        with self._hands_lock:
            entries = list(self._hands.values())
        return [e.describe(now) for e in entries if now - e.started >= older_than]

    def timed(self, route: RouteConfig, name: str, work: Callable[[InHand], Verdict]) -> FileResult:
        """Run one file's ``work`` (its steps, the last one's verdict returned), timed,
        logged, and shown in hand; an error it does not handle leaves the file where it
        is, for a later run."""
        started = time.monotonic()
        hand = InHand(route.name, name, started, thread=threading.get_ident())
        with self._hands_lock:
            self._hands[threading.get_ident()] = hand
        with structlog.contextvars.bound_contextvars(route=route.name, source=name):
            try:
                verdict = work(hand)
            except UsageError as exc:
                # Asked for something that cannot be done as asked: nothing changed.
                verdict = Verdict.failed(SKIPPED, exc)
            except XchangeError as exc:
                # Anything not handled below (the source vanished, the journal failed):
                # the file stays where it is and is tried again next run.
                verdict = Verdict(RETRY_LATER, error=exc.reason, cause=exc.kind, retryable=True)
            except Exception as exc:
                # Not an error xchange knows: this file waits (and is said, with the
                # traceback in the log); the rest of the look goes on.
                log.exception("file.unexpected_error", error=f"{type(exc).__name__}: {exc}")
                verdict = Verdict(
                    RETRY_LATER,
                    error=one_line(
                        f"unexpected error ({type(exc).__name__}: {exc}); the file waits, "
                        "the others go on; the log has the details"
                    ),
                    cause="internal",
                    retryable=True,
                )
            finally:
                with self._hands_lock:
                    self._hands.pop(threading.get_ident(), None)
            result = hand.result(verdict)
            result.duration_ms = int((time.monotonic() - started) * 1000)
            log_result(route, result)
        return result

    # ------------------------------------------------------------------ from the drop

    def _finish_after(self, route: RouteConfig, info: FileInfo, known: FileRecord) -> Verdict:
        done = Verdict(SKIPPED, file_id=known.id)
        if route.after.action == "leave":
            return done
        if not self.journal.take(known.id):
            # Another daemon of the shared journal is archiving (or deleting) it now.
            log.info("file.held_elsewhere", file_id=known.id, reason="its archive is under way")
            return done
        unfinished = known.state == State.DELIVERED
        error = self.after.apply(
            route,
            self.sessions.remote(route.source.endpoint),
            info,
            known.id if unfinished else None,
        )
        if error is not None:
            return done.but(outcome=LEFT).left_in_place(route.after.action, error)
        return done

    def _finish_quarantine(self, route: RouteConfig, info: FileInfo, known: FileRecord) -> Verdict:
        done = Verdict(SKIPPED, file_id=known.id)
        try:
            self.sessions.remote(route.source.endpoint).remove(info.name, expect=info)
        except SourceChanged:
            return done  # written again meanwhile: a new file, judged at the next look
        except RemoteError as exc:
            return done.but(
                outcome=LEFT,
                after_error=f"quarantined #{known.id}; taking it out failed: {exc.reason}",
                cause=exc.kind,
                retryable=True,
            )
        log.info(
            "file.quarantine_finished",
            file_id=known.id,
            reason="quarantined already (its bytes kept); taken out of the drop folder",
        )
        return done

    def _from_drop(self, route: RouteConfig, info: FileInfo, hand: InHand) -> Verdict:
        source = self.sessions.remote(route.source.endpoint)
        hand.bytes = info.size
        hand.arrived = info.mtime_ns / 1e9
        known = self.journal.lookup(
            route.name, route.source.endpoint, info.name, info.size, info.mtime_ns
        )
        if known is not None:
            hand.file_id = known.id
            if known.state in DONE_STATES:
                return self._finish_after(route, info, known)
            if self.busy_elsewhere(known):
                log.info("file.held_elsewhere", by=known.owner, file_id=known.id)
                return Verdict(SKIPPED)
            if (
                known.state == State.RETRYING
                and known.next_retry_at is not None
                and known.next_retry_at > self.now()
            ):
                return Verdict(
                    WAITING, error=f"next try at {known.next_retry_at.astimezone():%H:%M:%S}"
                )
        # The partner manifest's word on the file, read once: what admits it is what it is
        # checked against (a manifest taken back meanwhile cannot let it through unchecked).
        listed = self.listings.entry(route.name, info.name)
        if route.source.manifest is not None and listed is None:
            return Verdict(WAITING, error=UNLISTED)
        try:
            with source.local_copy(info.name, self.scratch / "downloads") as path:
                # One open handle from the hash to the conversion: the bytes claimed are
                # the bytes converted, whatever happens to the name meanwhile.
                try:
                    handle = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
                except FileNotFoundError:
                    raise RemoteNotFound(f"{info.name}: gone") from None
                with handle:
                    hand.handle = handle
                    return self._read(route, source, info, path, handle, hand, listed)
        except RemoteNotFound:
            # Gone between the listing and the read (its producer took it back): nothing
            # to deliver and nothing lost.
            log.info("file.vanished", reason="removed from the drop folder before it was read")
            return Verdict(SKIPPED)

    def _read(
        self,
        route: RouteConfig,
        source: Remote,
        info: FileInfo,
        path: Path,
        handle: BinaryIO,
        hand: InHand,
        listed: Entry | None,
    ) -> Verdict:
        """A file read from its drop folder: hashed, then claimed by one worker at a time."""
        size, sha = fingerprint(handle)
        handle.seek(0)
        hand.bytes = size
        if size != info.size:
            # Changed since the listing (truncated, or written again): judge it again.
            log.info(
                "file.changed",
                listed=info.size,
                now=size,
                reason="changed between the listing and the read; looked at again",
            )
            return Verdict(SKIPPED)
        with self.one_at_a_time(route.name, sha) as mine:
            if not mine:
                return Verdict(SKIPPED)  # looked at again at the next run
            return self._claim(route, source, info, path, handle, hand, size, sha, listed)

    @contextlib.contextmanager
    def one_at_a_time(self, route: str, sha: str) -> Iterator[bool]:
        """The same content on the same route is taken by one worker at a time (a file,
        or an archive's entry): a twin waits until the other is done, and is then known
        as a duplicate. Yields False when the daemon stops meanwhile."""
        twin = (route, sha)
        with self._in_hand_changed:
            while twin in self._in_hand:
                if self.stop.is_set():
                    yield False
                    return
                self._in_hand_changed.wait(timeout=0.5)
            self._in_hand.add(twin)
        try:
            yield True
        finally:
            with self._in_hand_changed:
                self._in_hand.discard(twin)
                self._in_hand_changed.notify_all()

    def _claim(
        self,
        route: RouteConfig,
        source: Remote,
        info: FileInfo,
        path: Path,
        handle: BinaryIO,
        hand: InHand,
        size: int,
        sha: str,
        listed: Entry | None,
    ) -> Verdict:
        pipeline = self.pipelines[route.name]
        claim = self.journal.claim(
            FileKey(route.name, route.source.endpoint, info.name, size, info.mtime_ns, sha),
            layout_version=pipeline.versions[0],
            mapping_version=pipeline.versions[1],
        )
        checkpoint("after-claim")
        hand.file_id = claim.record.id
        if claim.held_by is not None:
            # Another daemon of the shared journal is taking this content through.
            log.info("file.held_elsewhere", by=claim.held_by, file_id=claim.record.id)
            return Verdict(SKIPPED)
        if claim.already_delivered and self.itself(route, info, claim.record):
            # The very file, delivered by another daemon of the shared journal since this
            # look listed it: what is left is its archive (if that daemon is not on it).
            return self._finish_after(route, info, claim.record)
        if claim.already_delivered:
            duplicate = Verdict(DUPLICATE, outputs=tuple(o.path for o in claim.record.outputs))
            self.journal.note(
                claim.record.id, f"same content seen again as {info.name}; not sent again"
            )
            error = self.after.apply(route, source, info, None)
            if error is not None:
                return duplicate.left_in_place(route.after.action, error)
            return duplicate
        file = Claimed(route, claim.record, path, info.name, source, info, handle, listed)
        if listed is not None:
            try:
                check_bytes(listed, size, sha)
            except ManifestDiffers as exc:
                return self.quarantine_file(file, exc)
        return self.convert_and_deliver(file)

    def busy_elsewhere(self, record: FileRecord) -> bool:
        """Whether another daemon of a shared journal has this record in hand (its lease
        running) or has delivered it since the look: not worth reading now."""
        if not self.journal.shared:
            return False
        if record.state in DONE_STATES:
            return True
        return (
            record.owner is not None
            and record.owner != self.journal.owner
            and record.lease_until is not None
            and record.lease_until > self.now()
            and record.state in (State.PROCESSING, State.DELIVERING)
        )

    def itself(self, route: RouteConfig, info: FileInfo, record: FileRecord) -> bool:
        """Whether a delivered record is this very file (not another copy of its content)
        in a journal several daemons share."""
        return (
            self.journal.shared
            and record.endpoint == route.source.endpoint
            and (record.path, record.size, record.mtime_ns) == (info.name, info.size, info.mtime_ns)
        )

    # ------------------------------------------------------------------ from a kept copy

    def _again(self, route: RouteConfig, record: FileRecord, force: bool, hand: InHand) -> Verdict:
        hand.file_id = record.id
        if record.state in DONE_STATES and not force:
            raise UsageError(
                f"file #{record.id} was delivered already; use --force to send it again"
            )
        kept = record.quarantine_path and Path(record.quarantine_path).is_file()
        if record.state == State.QUARANTINED and record.quarantine_path:
            original = Path(record.quarantine_path)
        elif kept and record.state not in DONE_STATES:
            # Taken again from quarantine and cut short (a crash): go on from the copy.
            original = Path(record.quarantine_path or "")
        elif record.state in DONE_STATES and record.archive_path:
            source = self.sessions.remote(record.endpoint)
            with source.local_copy(record.archive_path, self.scratch / "downloads") as path:
                self.journal.transition(record.id, State.PROCESSING, note="sent again (--force)")
                return self.convert_and_deliver(
                    Claimed(route, record, path, record.path), force=True
                )
        else:
            raise UsageError(
                f"file #{record.id} is {record.state} and no copy of it is kept; drop it "
                "into the source folder again instead"
            )
        if not original.is_file():
            raise UsageError(f"file #{record.id}: its quarantined copy {original} is missing")
        pipeline = self.pipelines[route.name]
        with open(original, "rb") as fh:
            size, sha256 = fingerprint(fh)
        hand.bytes = size
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
        hand.file_id = current.id
        if claim.held_by is not None:
            raise UsageError(
                f"file #{current.id} is being taken through by another daemon "
                f"({claim.held_by}); look again when it is done"
            )
        if edited:
            if claim.already_delivered:
                self.journal.transition(
                    record.id,
                    State.DROPPED,
                    note=f"its edited copy is the content of #{current.id}, delivered already",
                )
                return Verdict(
                    DUPLICATE,
                    error=f"the edited copy's content was delivered already as #{current.id}",
                )
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
        # --force: documents delivered before go again too, over files of the same name.
        verdict = self.convert_and_deliver(
            Claimed(route, current, original, record.path), force=force
        )
        if verdict.outcome == DELIVERED:
            resolved = self.quarantine.resolve(original)
            self.after.archive_kept(
                route,
                self.sessions.remote(route.source.endpoint),
                current,
                resolved,
                token=f"{self.journal.journal_id[:6]}{current.sha256[:12]}",
            )
        return verdict

    # ------------------------------------------------------------------ convert, deliver

    def convert_and_deliver(self, file: Claimed, *, force: bool = False) -> Verdict:
        """Convert a claimed file and deliver its outputs: delivered, quarantined or
        waiting for a later try. A file still in its drop folder is taken out of it when
        quarantined, archived (or deleted) when delivered."""
        verdict = self._convert_and_deliver(file, force=force)
        if verdict.outcome != RETRY_LATER:
            self.pgp.forget(file.route, file.record.id)  # (kept for a later try only)
        return verdict

    def _convert_and_deliver(self, file: Claimed, *, force: bool) -> Verdict:
        route, record = file.route, file.record
        entry = is_entry(record.path)  # (an archive's entry: decrypted with its archive)
        if route.source.unpack is not None and not entry:
            # An archive: each entry claimed and taken through as a file of its own (the
            # archive decrypted first, where the route's files come encrypted).
            return self._unpacked(file, force=force)
        pipeline = self.pipelines[route.name]
        # The first claim's time, not the clock: names and contents come out the same
        # when the file is converted again after a crash.
        when = record.created_at.astimezone()
        skip = self._dedupe(route, record) if pipeline.dedupes and not force else None
        with (
            staging_folder(self.scratch / "staging", f"{route.name}-{record.id}") as staging,
            contextlib.ExitStack() as held,
        ):
            try:
                opened = (
                    contextlib.nullcontext(file.stream) if file.stream else open(file.path, "rb")  # noqa: SIM115
                )
                with opened as received:
                    received.seek(0)
                    # PGP: the plaintext is converted; the journal and the quarantine keep
                    # the bytes received. (It lives until the outputs are delivered.)
                    # Converted as the name the content was first taken under (the same as
                    # ``name`` but for a twin taking over an unfinished delivery).
                    reading, named = held.enter_context(
                        contextlib.nullcontext((received, record.path))
                        if entry
                        else self.pgp.received(route, received, record.path, f"{record.id}")
                    )
                    conversion = pipeline.convert_stream(
                        reading,
                        named,
                        when,
                        Sink(staging),
                        skip=skip,
                        # hashed when it was claimed (the bytes received, not decrypted)
                        digest=None if reading is not received else (record.size, record.sha256),
                    )
                if route.target.archive is not None:
                    # The outputs zipped into one, stamped with the claim's time.
                    conversion = bundled(
                        conversion, route.target.archive, record.path, when, staging
                    )
                # PGP: each output (or the zip) encrypted (and signed) for the partner.
                sealed = self.pgp.sealed(route, record.id, conversion.outputs)
                conversion = dataclasses.replace(conversion, outputs=sealed)
                manifest = self._manifest_name(file, conversion, when)
            except PgpUnavailable as exc:
                return self.failed_delivery(file, exc)
            except RepeatedDocuments as exc:
                self.journal.keys.left_out(route.name, record.id, exc.keys)
                earlier = self._earlier(route, record, exc.keys)
                return self.quarantine_file(
                    file,
                    RepeatedDocuments(
                        f"{record.path}: {len(earlier)} document(s) delivered before: "
                        f"{'; '.join(earlier[:10])}{' ...' if len(earlier) > 10 else ''} "
                        '(the route quarantines repeats: repeats = "quarantine"); nothing '
                        "was delivered",
                        exc.keys,
                    ),
                )
            except (FormatError, UnsafeName) as exc:
                return self.quarantine_file(file, exc)
            read = Verdict(
                DELIVERED,
                encoding=conversion.encoding,
                skipped_keys=self._earlier(route, record, conversion.skipped),
                warnings=tuple(conversion.warnings),
                filtered=conversion.filtered_note(),
            )
            outputs = conversion.outputs
            note = ", ".join(o.name for o in outputs) or "no documents"
            if conversion.totals:
                note += f"; {totals_summary(conversion.totals)}"
            if conversion.left_out:
                left = totals_summary(conversion.left_out).removeprefix("totals: ")
                note += f" (of which repeats left out: {left})"
            self.journal.transition(
                record.id,
                State.DELIVERING,
                note=f"{note}; {read.filtered}" if read.filtered else note,
                encoding=conversion.encoding,
            )
            target: Remote | None = None
            try:
                target = self.sessions.remote(route.target.endpoint)
                if manifest is not None:
                    self._manifest_free(file, target, manifest, force)
                self.delivery.deliver(route, target, record, outputs, force=force)
                if manifest is not None:
                    checkpoint("before-manifest")
                    manifest = self._deliver_manifest(file, target, manifest, conversion, force)
            except UnsafeName as exc:
                return self._conversion(read, self.quarantine_file(file, exc))
            except TargetExists as exc:
                return self._conversion(read, self.quarantine_file(file, exc))
            except RemoteError as exc:
                failed = self.failed_delivery(file, exc)
                if failed.outcome == QUARANTINED and target is not None:
                    # Given up on: what a cut upload kept for a resume goes too.
                    self.delivery.abandon(route, target, record, outputs)
                return self._conversion(read, failed)
        if conversion.keys:
            self.journal.keys.record(route.name, record.id, conversion.keys)
        if conversion.skipped:
            self.journal.keys.left_out(route.name, record.id, conversion.skipped)
        self.journal.tallies.record(
            FileTally(
                record.id,
                route.name,
                self.now().astimezone(UTC),
                sum(o.documents for o in outputs),
                len(conversion.skipped),
                conversion.delivered_totals,
            )
        )
        self.journal.transition(record.id, State.DELIVERED)
        checkpoint("before-archive")
        delivered = read.but(
            outputs=tuple(o.name for o in outputs) + ((manifest,) if manifest else ()),
            documents=sum(o.documents for o in outputs),
        )
        if file.source is not None and file.info is not None:
            error = self.after.apply(route, file.source, file.info, record.id)
            if error is not None:
                return delivered.left_in_place(route.after.action, error)
        return delivered

    def _unpacked(self, file: Claimed, *, force: bool) -> Verdict:
        """An archive's entries taken through, from its plaintext where the route's files
        come PGP-encrypted (transport -> decrypt -> unpack -> codec)."""
        route, record = file.route, file.record
        if route.source.pgp is None:
            return take_archive(self, file, force=force)
        opened = contextlib.nullcontext(file.stream) if file.stream else open(file.path, "rb")  # noqa: SIM115
        try:
            with opened as received:
                received.seek(0)
                with self.pgp.received(route, received, record.path, f"{record.id}") as (
                    plain,
                    _,
                ):
                    return take_archive(self, dataclasses.replace(file, stream=plain), force=force)
        except PgpUnavailable as exc:
            return self.failed_delivery(file, exc)
        except FormatError as exc:  # PgpRefused: quarantined with the bytes received
            return self.quarantine_file(file, exc)

    def _manifest_name(self, file: Claimed, conversion: Conversion, when: datetime) -> str | None:
        """Check a converted file against its partner's record count, and name its target
        manifest (None: the route writes none, or the file has no outputs to list).

        Raises:
            ManifestDiffers: the partner's manifest gives another record count.
            MappingError: the manifest would take a data file's name.
            UnsafeName: its name template does not make a safe name.
        """
        route = file.route
        if file.listed is not None and conversion.records is not None:
            check_documents(file.listed, conversion.records)
        elif file.listed is not None and file.listed.documents is not None:
            conversion.warnings.append(
                "manifest's documents count not checked: a copy route reads no records"
            )
        if route.target.manifest is None or not conversion.outputs:
            return None
        name = manifest_name(route, file.record.path, when)
        if any(o.name == name for o in conversion.outputs):
            raise MappingError(f"target.manifest.name: {name!r} is also the name of an output")
        # Made once before anything is sent: what cannot be written stops the file here.
        render(
            route.target.manifest,
            route=route.name,
            source=file.record.path,
            claimed=file.record.created_at,
            files=[Entry(o.name, o.size, o.sha256, o.documents) for o in conversion.outputs],
            totals=conversion.totals,
        )
        return name

    def _manifest_free(self, file: Claimed, target: Remote, name: str, force: bool) -> None:
        """Before any data file is sent: the manifest's name is free on a target that
        refuses a name it has (else the data would reach the partner without it).

        Raises:
            TargetExists: another file has the manifest's name there.
        """
        route, record = file.route, file.record
        if force or route.target.if_exists != "fail":
            return
        if record.outputs:
            return  # (an attempt a crash cut short sent some: the manifest there may be ours)
        if target.stat(name) is not None:
            raise TargetExists(
                f"{route.target.endpoint}: {name} (the manifest of {record.path}) is there "
                "already: nothing was sent; name manifests per source ({source_stem})"
            )

    def _deliver_manifest(
        self, file: Claimed, target: Remote, name: str, conversion: Conversion, force: bool
    ) -> str | None:
        """Deliver the target manifest of a file whose outputs are delivered: the outputs
        under the names the journal has for them, with the file's control totals and the
        time of its first claim (the same manifest when it is made again after a crash).
        Returns its name (None: nothing was delivered to list)."""
        route, record = file.route, self.journal.get(file.record.id) or file.record
        spec = route.target.manifest
        assert spec is not None
        recorded = [o for o in record.outputs if o.path != name]
        files = delivered_entries(conversion.outputs, recorded)
        if not files:
            return None
        data = render(
            spec,
            route=route.name,
            source=record.path,
            claimed=record.created_at,
            files=files,
            totals=conversion.totals,
        )
        out = Output(name, len(data), hashlib.sha256(data).hexdigest(), 0, content=data)
        self.delivery.deliver(route, target, record, [out], force=force)
        return name

    @staticmethod
    def _conversion(read: Verdict, verdict: Verdict) -> Verdict:
        """A verdict given after the file was converted: what the conversion said too."""
        return verdict.but(
            encoding=read.encoding,
            skipped_keys=read.skipped_keys,
            warnings=read.warnings,
            filtered=read.filtered,
        )

    def _earlier(
        self, route: RouteConfig, record: FileRecord, skipped: list[str]
    ) -> tuple[str, ...]:
        """Each business key skipped as delivered already, with the file that delivered
        it and when: ``EC1 (in #3 orders_1.csv, 2026-12-06)``."""
        if not skipped:
            return ()
        by = self.journal.keys.delivered(route.name, skipped, except_file=record.id)
        records = {i: self.journal.get(i) for i in set(by.values())}
        said = []
        for key in skipped:
            earlier = records.get(by.get(key, -1))
            if earlier is None:
                said.append(key)
                continue
            when = earlier.outputs[0].delivered_at if earlier.outputs else earlier.updated_at
            said.append(f"{key} (in #{earlier.id} {earlier.path}, {when.astimezone():%Y-%m-%d})")
        return tuple(said)

    def _dedupe(self, route: RouteConfig, record: FileRecord) -> Callable[[str], bool]:
        def already(key: str) -> bool:
            return bool(self.journal.keys.delivered(route.name, [key], except_file=record.id))

        return already

    def failed_delivery(self, file: Claimed, exc: XchangeError) -> Verdict:
        """A delivery that failed: quarantined when the target refuses the name or the
        attempts have run out, else left for a later run (backing off)."""
        route, record = file.route, file.record
        if isinstance(exc, NameRefused):
            return self.quarantine_file(file, exc)
        if exc.retryable and gives_up(route.retry, record.attempts):
            return self.quarantine_file(file, exc, note=f"gave up after {record.attempts} attempts")
        # Not the file's fault: try again at a later run, backing off.
        self.journal.transition(
            record.id,
            State.RETRYING,
            error=(exc.kind, exc.reason),
            next_retry_at=next_try(route.retry, record.attempts, self.now()),
        )
        return Verdict(RETRY_LATER, error=exc.reason, cause=exc.kind, retryable=True)

    def quarantine_file(
        self, file: Claimed, exc: XchangeError, *, note: str | None = None
    ) -> Verdict:
        """Keep the file's bytes and a report in quarantine, journal it quarantined, and
        take it out of its drop folder (when it is still there)."""
        route, record = file.route, file.record
        entry = self.quarantine.put(
            route=route.name,
            file_id=record.id,
            source=file.name,
            original=file.path,
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
        checkpoint("after-quarantine")
        # The bytes are safe in quarantine: take the file out of the drop folder.
        if file.source is not None:
            file.source.remove(file.name)
        return Verdict.failed(
            QUARANTINED, exc, said=one_line((f"{note}: " if note else "") + exc.reason)
        )


__all__ = ["Claimed", "InHand", "Transfer", "fingerprint", "log_result"]

"""New small files of a copy route, taken through in batches.

Many small files cost round trips and journal commits, not bytes. A batch keeps the
guarantees of the one-at-a-time path (every journal write committed before the action it
announces, hidden temporary names renamed into place, nothing sent twice) with a fraction
of the waits:

1. *prepare* (the route's thread): read and hash each file; claim them all and journal
   ``delivering`` in one transaction;
2. *upload* (the route's uploader thread, which owns the target session): send them with
   ``Remote.put_many``, up to 64 files in flight on one session;
3. *finish* (the route's thread): journal the outputs, ``delivered`` and the coming
   archive/delete in one transaction; archive or delete the sources.

While one batch uploads, the next ones are prepared (up to ``BATCHES_AHEAD``, which also
hides the time the session takes to open) and the previous one finished. A file the
batch cannot finish (a refused name, a failure, a lost connection) goes on alone from its
claim, exactly as a single file would; once one of those fails, the rest wait for a later
run, each told the batch stopped on that file. Identical files in one batch and files
that cannot be read go alone from the start. A file tried before is looked for on the
target first where a single file would be (``delivery.looks_first``).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

import structlog

from xchange.after import AfterPlan, announcement, note_failed
from xchange.claims import Claimed
from xchange.config import RouteConfig
from xchange.delivery import already_there, looks_first, output_record, verified, verify_of
from xchange.errors import FormatError, RemoteError, RemoteNotFound, UnsafeName, XchangeError
from xchange.faults import checkpoint
from xchange.journal import FileKey, FileRecord, State, Step
from xchange.private import private_folder
from xchange.remote import FileInfo, Remote, SmallPut
from xchange.remote.base import temp_name_for
from xchange.results import (
    DELIVERED,
    DUPLICATE,
    QUARANTINED,
    RETRY_LATER,
    SKIPPED,
    FileResult,
)
from xchange.retry import call_with_retry
from xchange.sink import Output, Sink
from xchange.transfer import Transfer, log_result

log = structlog.get_logger(__name__)

#: New files of a copy route up to this size go in batches of up to BATCH_FILES files
#: and BATCH_BYTES bytes.
BATCH_FILE_MAX = 1 << 20
BATCH_FILES = 256
BATCH_BYTES = 16 << 20
#: Batches read and claimed but not finished yet, at most (bounds memory to 64 MiB).
BATCHES_AHEAD = 4


def split(
    route: RouteConfig, ready: list[FileInfo], unknown: set[str]
) -> tuple[list[list[FileInfo]], list[FileInfo]]:
    """Ready files as batches of new small files (copy routes only) and the rest. A route
    whose target gets checksum files goes one file at a time (each checksum file follows
    its data file), as do routes with manifests (checked and written one file at a time)
    and routes with PGP or that unpack or zip (``xchange.archives``)."""
    if (
        route.mapping != "copy"
        or route.target.sidecar is not None
        or route.source.manifest
        or route.target.manifest
        or route.source.pgp  # (decrypted, or encrypted, one file at a time)
        or route.target.pgp
        or route.source.unpack
        or route.target.archive
    ):
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


@dataclass(slots=True, eq=False)
class Sending:
    """A file of a batch on its way to the target (compared, and hashed, as itself)."""

    info: FileInfo
    record: FileRecord
    output: Output
    result: FileResult


@dataclass(slots=True)
class Batch:
    """One batch on its way through the three stages."""

    started: float
    #: Every file's result, in the order read (those settled early included).
    results: list[FileResult] = field(default_factory=list)
    sending: list[Sending] = field(default_factory=list)
    #: Sources to archive or delete once the batch is finished (duplicates so far).
    plans: list[AfterPlan] = field(default_factory=list)
    #: Files that go the one-at-a-time way (twins, unreadable).
    alone: list[FileInfo] = field(default_factory=list)
    #: From the upload: one entry per ``sending`` file, or what stopped the whole batch.
    errors: list[RemoteError | None] = field(default_factory=list)
    #: How each ``sending`` file was verified, for its journal note (None: by its size).
    verified: list[str | None] = field(default_factory=list)
    failure: XchangeError | None = None


def not_sent(stopper: Sending, error: RemoteError) -> RemoteError:
    """What a file of a batch is told when the batch stopped on ``stopper`` before sending
    it: that it was not sent, and why (not ``stopper``'s own error, which names its
    output); of the class of the error the batch met on ``stopper`` (one cause: one
    alert), and retried as that is."""
    cause = stopper.result.cause or error.kind
    return type(error)(
        f"not sent: the batch stopped on {stopper.info.name}, whose delivery failed "
        f"({cause}); tried again at a later run"
    )


class SmallFiles:
    """Takes a route's batches through prepare -> upload -> finish, overlapped."""

    def __init__(
        self, transfer: Transfer, route: RouteConfig, uploader: ThreadPoolExecutor
    ) -> None:
        self.transfer = transfer
        self.route = route
        self.journal = transfer.journal
        self.pipeline = transfer.pipelines[route.name]
        self.uploader = uploader
        #: The target's trouble once a batch could not be sent at all: later batches
        #: are not tried.
        self.trouble: XchangeError | None = None
        #: Whether an upload has taken the warm-up's outcome (uploader thread only).
        self._warmed = False
        #: Contents claimed by batches not finished yet: a twin in a later batch goes
        #: alone once they are (and is then recognised as a duplicate), never sent twice.
        self._in_flight: dict[str, int] = {}

    def run(self, batches: list[list[FileInfo]], stop: threading.Event) -> Iterator[FileResult]:
        """Every file's result; stops taking new batches on ``stop`` or target trouble."""
        # The target session opens while the first batch is read and claimed.
        warm_up = self.uploader.submit(self._connect)
        in_flight: deque[tuple[Batch, Future[None]]] = deque()
        for infos in batches:
            if stop.is_set() or self.trouble is not None:
                break
            try:
                batch = self._prepare(infos)
            except XchangeError as exc:
                # The journal (or the source) failed: this batch and the rest wait.
                yield from self._unfinished(infos, exc)
                break
            in_flight.append((batch, self.uploader.submit(self._upload, batch, warm_up)))
            # Prepare ahead while the session opens or an upload runs; finish the oldest
            # batch once its upload is done, or when enough are waiting.
            while in_flight and (in_flight[0][1].done() or len(in_flight) > BATCHES_AHEAD):
                yield from self._finish(*in_flight.popleft())
        while in_flight:
            yield from self._finish(*in_flight.popleft())

    # ------------------------------------------------------------------ 1. prepare

    def _prepare(self, infos: list[FileInfo]) -> Batch:
        route, transfer = self.route, self.transfer
        batch = Batch(time.monotonic())
        source = transfer.sessions.remote(route.source.endpoint)
        if self.journal.shared:
            # Files another daemon took (or finished) since the look are not read again.
            known = self.journal.lookup_many(
                route.name, route.source.endpoint, [(i.name, i.size, i.mtime_ns) for i in infos]
            )
            infos = [
                i
                for i in infos
                if (r := known.get((i.name, i.size, i.mtime_ns))) is None
                or not transfer.busy_elsewhere(r)
            ]
        reads: list[tuple[FileInfo, bytes, str, FileResult]] = []
        seen: set[str] = set()
        for info, data in zip(infos, source.get_many(infos), strict=True):
            result = FileResult(
                route.name, info.name, SKIPPED, bytes=info.size, arrived=info.mtime_ns / 1e9
            )
            if isinstance(data, RemoteNotFound):
                log.info(
                    "file.vanished",
                    source=info.name,
                    reason="removed from the drop folder before it was read",
                )
                batch.results.append(result)
                continue
            if isinstance(data, RemoteError):
                batch.alone.append(info)  # read again (and judged) the careful way
                continue
            if len(data) != info.size:
                log.info(
                    "file.changed",
                    source=info.name,
                    listed=info.size,
                    now=len(data),
                    reason="changed between the listing and the read; looked at again",
                )
                batch.results.append(result)
                continue
            sha = hashlib.sha256(data).hexdigest()
            if sha in seen or sha in self._in_flight:
                # A twin, in this batch or one still on its way: the one-at-a-time path
                # takes it after this batch, and tells it is a duplicate.
                batch.alone.append(info)
                continue
            seen.add(sha)
            reads.append((info, data, sha, result))
            batch.results.append(result)

        unsendable: list[tuple[FileInfo, FileRecord, bytes, XchangeError, FileResult]] = []
        steps: list[Step] = []
        versions = self.pipeline.versions
        with self.journal.batch():
            claims = self.journal.claim_many(
                [
                    FileKey(route.name, route.source.endpoint, i.name, len(d), i.mtime_ns, sha)
                    for i, d, sha, _ in reads
                ],
                layout_version=versions[0],
                mapping_version=versions[1],
            )
            for (info, data, sha, result), claim in zip(reads, claims, strict=True):
                record = claim.record
                result.file_id = record.id
                if claim.held_by is not None:
                    log.info("file.held_elsewhere", source=info.name, by=claim.held_by)
                    continue  # another daemon of the shared journal has it
                if claim.already_delivered and transfer.itself(route, info, record):
                    batch.alone.append(info)  # delivered by another daemon just now
                    continue
                if claim.already_delivered:
                    result.outcome = DUPLICATE
                    result.outputs = [o.path for o in record.outputs]
                    note = f"same content seen again as {info.name}; not sent again"
                    steps.append(Step(record.id, record.state, note))
                    batch.plans += self._planned(info, None, steps)
                    continue
                try:
                    (out,) = self.pipeline.convert_stream(
                        io.BytesIO(data),
                        record.path,  # the name it was first taken under (see transfer)
                        record.created_at.astimezone(),
                        Sink(None),
                        digest=(len(data), sha),
                    ).outputs
                except (FormatError, UnsafeName) as exc:
                    unsendable.append((info, record, data, exc, result))
                    continue
                steps.append(Step(record.id, State.DELIVERING, out.name))
                batch.sending.append(Sending(info, record, out, result))
            self.journal.record_steps(steps)
        for s in batch.sending:
            self._in_flight[s.record.sha256] = self._in_flight.get(s.record.sha256, 0) + 1
        checkpoint("after-claim")
        for info, record, data, problem, result in unsendable:
            with self._spilled(record, data) as path:
                claimed = Claimed(route, record, path, info.name, source)
                result.take(transfer.quarantine_file(claimed, problem))
        return batch

    # ------------------------------------------------------------------ 2. upload

    def _connect(self) -> RemoteError | None:
        try:
            self.transfer.sessions.remote(self.route.target.endpoint).connect()
        except RemoteError as exc:
            return exc
        return None

    def _upload(self, batch: Batch, warm_up: Future[RemoteError | None]) -> None:
        """In the uploader thread: send the batch, tried again as a whole while no session
        opens (a failed warm-up counts as the first attempt)."""
        if self.trouble is not None:
            batch.failure = self.trouble
            return
        target = self.transfer.sessions.remote(self.route.target.endpoint)
        overwrite = self.route.target.if_exists == "overwrite"
        puts = [
            SmallPut(
                s.output.name,
                s.output.data,
                temp_name_for(s.output.name, self.transfer.delivery.temp_token(s.record, s.output)),
                overwrite,
                self.route.target.permissions,
                verify_of(self.route),
            )
            for s in batch.sending
        ]
        # The warm-up's failure is the first batch's first attempt, not every batch's.
        first_error = None if self._warmed else warm_up.result()
        self._warmed = True

        recognised: set[Sending] = set()

        def attempt() -> list[RemoteError | None]:
            nonlocal first_error
            if first_error is not None:
                error, first_error = first_error, None
                raise error
            found = self._found(target, batch)
            recognised.clear()
            recognised.update(found)
            for s in batch.sending:  # (still this daemon's files: free while leases renew)
                self.transfer.journal.confirm(s.record.id)
            errors = iter(
                target.put_many(
                    [p for s, p in zip(batch.sending, puts, strict=True) if s not in found]
                )
            )
            return [None if s in found else next(errors) for s in batch.sending]

        try:
            batch.errors = call_with_retry(attempt, self.route.retry, sleep=self.transfer.sleep)
            # (Asked here: this thread owns the target's session.)
            batch.verified = [
                None if s in recognised else verified(self.route, target, [s.output])
                for s in batch.sending
            ]
        except RemoteError as exc:
            batch.failure = self.trouble = exc
            return
        checkpoint("after-rename")

    def _found(self, target: Remote, batch: Batch) -> set[Sending]:
        """The batch's files tried before whose output is on the target already with its
        very bytes (put there by a try the journal could not record): recorded delivered,
        not sent again. They are looked for as one at a time (``delivery.looks_first``)."""
        found = set()
        for s in batch.sending:
            if looks_first(self.route.target.if_exists, s.record) and already_there(
                target, s.output, s.output.name
            ):
                log.info(
                    "file.output_found",
                    source=s.info.name,
                    output=s.output.name,
                    reason="present with the same bytes; not sent again",
                )
                found.add(s)
        return found

    # ------------------------------------------------------------------ 3. finish

    def _finish(self, batch: Batch, uploaded: Future[None]) -> list[FileResult]:
        try:
            return self._finish_batch(batch, uploaded)
        except XchangeError as exc:
            self._landed(batch)
            # The journal failed: what it did not record is sent again (and recognised on
            # the target) at a later run.
            self.trouble = self.trouble or exc
            for s in batch.sending:
                if s.result.outcome not in (QUARANTINED, RETRY_LATER):
                    s.result.outcome, s.result.error = RETRY_LATER, exc.reason
                    s.result.cause, s.result.retryable = exc.kind, True
            return self._done(batch)

    def _unfinished(self, infos: list[FileInfo], exc: XchangeError) -> list[FileResult]:
        log.error("batch.failed", files=len(infos), error=exc.reason, cause=exc.kind)
        return [
            FileResult(
                self.route.name,
                info.name,
                RETRY_LATER,
                bytes=info.size,
                error=exc.reason,
                cause=exc.kind,
                retryable=True,
            )
            for info in infos
        ]

    def _finish_batch(self, batch: Batch, uploaded: Future[None]) -> list[FileResult]:
        route, transfer = self.route, self.transfer
        source = transfer.sessions.remote(route.source.endpoint)
        uploaded.result()
        if batch.failure is not None:
            # Nothing of the batch could be sent: each file waits for a later run.
            for s in batch.sending:
                with self._spilled(s.record, s.output.data) as path:
                    claimed = Claimed(route, s.record, path, s.info.name, source)
                    s.result.take(transfer.failed_delivery(claimed, batch.failure))
            self._landed(batch)
            return self._done(batch)

        retry: list[tuple[Sending, RemoteError]] = []
        steps: list[Step] = []
        delivered_at = self.transfer.now().astimezone(UTC)
        with self.journal.batch():
            notes = batch.verified or [None] * len(batch.sending)
            for s, error, note in zip(batch.sending, batch.errors, notes, strict=True):
                if error is not None:
                    retry.append((s, error))
                    continue
                out = s.output
                output = output_record(route, out.name, out.size, out.sha256, delivered_at)
                steps.append(Step(s.record.id, State.DELIVERED, note=note, output=output))
                s.result.outcome, s.result.outputs, s.result.documents = DELIVERED, [out.name], 1
                batch.plans += self._planned(s.info, s.record.id, steps)
            self.journal.record_steps(steps)
        checkpoint("after-output")
        checkpoint("before-archive")

        # Files the batch could not finish go on alone, from their claim.
        stopped: RemoteError | None = None
        for s, error in retry:
            with self._spilled(s.record, s.output.data) as path:
                claimed = Claimed(route, s.record, path, s.info.name, source, s.info)
                if stopped is not None:
                    # The target is in trouble: no point trying each remaining file.
                    s.result.take(transfer.failed_delivery(claimed, stopped))
                    continue
                log.info("file.sent_alone", source=s.info.name, reason=str(error))
                s.result.take(transfer.convert_and_deliver(claimed))
            if s.result.outcome == RETRY_LATER:
                stopped = not_sent(s, error)

        # The sources: archived together where they can be, else one at a time (a name
        # taken in the archive, a done-marker, a delete); the archived names journaled
        # together.
        moved: list[tuple[AfterPlan, str]] = []
        alone: list[AfterPlan] = []
        together: dict[str, list[AfterPlan]] = {}
        deletes: list[AfterPlan] = []
        for plan in batch.plans:
            if plan.marker is not None:
                alone.append(plan)
            elif plan.action == "archive":
                together.setdefault(plan.folder, []).append(plan)
            else:
                deletes.append(plan)
        if deletes:
            try:
                errors = source.remove_many(
                    [p.info.name for p in deletes], expect=[p.info for p in deletes]
                )
            except XchangeError:
                alone += deletes
            else:
                alone += [p for p, error in zip(deletes, errors, strict=True) if error]
        for folder, plans in together.items():
            try:
                places = source.move_many(
                    [p.info.name for p in plans], folder, expect=[p.info for p in plans]
                )
            except XchangeError:
                alone += plans
                continue
            for plan, place in zip(plans, places, strict=True):
                if isinstance(place, str):
                    moved.append((plan, place))
                else:
                    alone.append(plan)
        by_name = {r.source: r for r in batch.results}
        for plan in alone:
            where, error = transfer.after.carry_out(source, plan)
            if error is not None:
                # Delivered; the source stays (its record back at delivered) and the next
                # look tries again.
                result = by_name.get(plan.info.name)
                if result is not None:
                    note_failed(route, result, error)
                continue
            if where is not None:
                moved.append((plan, where))
        if moved:
            self.journal.record_steps(
                [Step(fid, p.state, where, where) for p, where in moved for fid in p.ids]
            )
        self._landed(batch)
        return self._done(batch) + [transfer.process(route, info) for info in batch.alone]

    def _landed(self, batch: Batch) -> None:
        """The batch's contents are settled: their twins are no longer held back."""
        for s in batch.sending:
            left = self._in_flight.pop(s.record.sha256, 1) - 1
            if left > 0:
                self._in_flight[s.record.sha256] = left

    def _done(self, batch: Batch) -> list[FileResult]:
        elapsed = int((time.monotonic() - batch.started) * 1000)
        for result in batch.results:
            result.duration_ms = elapsed
            log_result(self.route, result)
        return batch.results

    # ------------------------------------------------------------------ helpers

    def _planned(self, info: FileInfo, file_id: int | None, steps: list[Step]) -> list[AfterPlan]:
        """The after-plan of a delivered file, its announcement added to ``steps``."""
        plan = self.transfer.after.plan(self.route, info, file_id)
        if plan is None:
            return []
        steps += announcement(plan)
        return [plan]

    @contextmanager
    def _spilled(self, record: FileRecord, data: bytes) -> Iterator[Path]:
        """The bytes of a batched file as a private local file (to quarantine it, or to
        send it alone)."""
        folder = self.transfer.scratch / "batch"
        private_folder(folder)
        path = folder / f"{record.id}-{record.sha256[:16]}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)


__all__ = ["BATCH_FILES", "BATCH_FILE_MAX", "SmallFiles", "split"]

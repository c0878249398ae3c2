"""An archive's entries taken through one by one, each a source file of its own.

The archive is claimed in the journal like any file. It is then unpacked whole (see
:mod:`xchange.archives`): an archive that is corrupt, hostile or over its limits is
quarantined as it is, nothing of it delivered. Otherwise each entry is looked up and
claimed under its own identity (``<archive>!/<entry>``, its size and content hash),
converted and delivered, or quarantined alone with its bytes kept. The archive itself is
marked delivered, and archived or deleted as the route says, only once every entry is
done (delivered, a duplicate, or quarantined); an entry that must wait keeps the archive
in its drop folder, and the next look takes it again: what was delivered is known by its
identity then and not sent twice, what was quarantined stays so.
"""

from __future__ import annotations

import contextlib
import dataclasses
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from xchange.archives import Member, entry_path, reads_workbooks, unpack
from xchange.claims import Claimed
from xchange.errors import ArchiveRefused, XchangeError
from xchange.journal import DONE_STATES, FileKey, State
from xchange.results import DELIVERED, DUPLICATE, QUARANTINED, RETRY_LATER, SKIPPED, Verdict
from xchange.retry import next_try
from xchange.sink import staging_folder

if TYPE_CHECKING:
    from xchange.after import After
    from xchange.journal import Journal
    from xchange.pipeline import CopyPipeline, Pipeline

log = structlog.get_logger(__name__)


class Transfer(Protocol):
    """What taking an archive's entries asks of the one file's life
    (:class:`xchange.transfer.Transfer`): each entry goes through it as a file."""

    journal: Journal
    after: After
    pipelines: dict[str, Pipeline | CopyPipeline]
    scratch: Path

    def now(self) -> datetime: ...

    def convert_and_deliver(self, file: Claimed, *, force: bool = False) -> Verdict: ...

    def one_at_a_time(self, route: str, sha: str) -> AbstractContextManager[bool]: ...

    def quarantine_file(
        self, file: Claimed, exc: XchangeError, *, note: str | None = None
    ) -> Verdict: ...


@dataclass(frozen=True, slots=True)
class EntryResult:
    """What became of one entry; ``before``: it was quarantined at an earlier look."""

    name: str
    verdict: Verdict
    before: bool = False


def take_archive(transfer: Transfer, file: Claimed, *, force: bool = False) -> Verdict:
    """Unpack a claimed archive and take each of its entries through (``force``: sent
    again even where delivered before, as ``xchange retry --force`` asks)."""
    route, record = file.route, file.record
    spec = route.source.unpack
    assert spec is not None
    with staging_folder(transfer.scratch / "unpacked", f"{route.name}-{record.id}") as into:
        try:
            opened = (
                contextlib.nullcontext(file.stream) if file.stream else open(file.path, "rb")  # noqa: SIM115
            )
            with opened as reading:
                workbooks = reads_workbooks(transfer.pipelines[route.name])
                unpacked = unpack(reading, record.path, spec, into, workbooks=workbooks)
        except ArchiveRefused as exc:
            exc.message = f"{record.path}: {exc.message}"
            return transfer.quarantine_file(file, exc)
        results = [take_entry(transfer, file, m, force=force) for m in unpacked.members]
    return _finish(transfer, file, results, unpacked.ignored)


def take_entry(transfer: Transfer, file: Claimed, member: Member, *, force: bool) -> EntryResult:
    """One entry: known from an earlier look (delivered, or quarantined), a content the
    route delivered before, or claimed, converted and delivered like a file (by one worker
    at a time, as a file is)."""
    with transfer.one_at_a_time(file.route.name, member.sha256) as mine:
        if not mine:
            name = entry_path(file.record.path, member.name)
            return EntryResult(name, Verdict(SKIPPED, error=f"{name}: the daemon stops"))
        return _take_entry(transfer, file, member, force=force)


def _take_entry(transfer: Transfer, file: Claimed, member: Member, *, force: bool) -> EntryResult:
    route, archive = file.route, file.record
    path = entry_path(archive.path, member.name)
    journal = transfer.journal
    known = journal.lookup(route.name, archive.endpoint, path, member.size, archive.mtime_ns)
    if known is not None and known.sha256 == member.sha256 and not force:
        if known.state in DONE_STATES:
            done = Verdict(
                DUPLICATE, file_id=known.id, outputs=tuple(o.path for o in known.outputs)
            )
            return EntryResult(path, done)
        if known.state in (State.QUARANTINED, State.DROPPED):
            said = f"{path}: {known.state} at an earlier look (#{known.id})"
            return EntryResult(path, Verdict(QUARANTINED, file_id=known.id, error=said), True)
    pipeline = transfer.pipelines[route.name]
    claim = journal.claim(
        FileKey(route.name, archive.endpoint, path, member.size, archive.mtime_ns, member.sha256),
        layout_version=pipeline.versions[0],
        mapping_version=pipeline.versions[1],
    )
    current = claim.record
    if claim.held_by is not None:
        held = f"{path}: taken through by {claim.held_by} (#{current.id})"
        return EntryResult(path, Verdict(SKIPPED, file_id=current.id, error=held))
    if claim.already_delivered and not force:
        journal.note(current.id, f"same content seen again as {path}; not sent again")
        outputs = tuple(o.path for o in current.outputs)
        return EntryResult(path, Verdict(DUPLICATE, file_id=current.id, outputs=outputs))
    if claim.already_delivered:
        journal.transition(current.id, State.PROCESSING, note="sent again with its archive")
    with open(member.path, "rb") as reading:
        entry = dataclasses.replace(
            file,
            record=current,
            path=member.path,
            name=path,
            source=None,
            info=None,
            stream=reading,
            listed=None,
        )
        verdict = transfer.convert_and_deliver(entry, force=force)
    verdict = verdict.but(file_id=current.id)
    log.info(
        "archive.entry",
        entry=path,
        outcome=verdict.outcome,
        file_id=current.id,
        outputs=verdict.outputs,
        error=verdict.error,
    )
    return EntryResult(path, verdict)


def _finish(
    transfer: Transfer, file: Claimed, results: list[EntryResult], ignored: list[str]
) -> Verdict:
    """The archive's verdict from its entries': delivered (and archived or deleted) once
    every entry is done, else waiting for a later look."""
    route, record = file.route, file.record
    outputs = tuple(o for r in results for o in r.verdict.outputs)
    documents = sum(r.verdict.documents for r in results)
    counts = {
        DELIVERED: sum(r.verdict.outcome == DELIVERED for r in results),
        DUPLICATE: sum(r.verdict.outcome == DUPLICATE for r in results),
        QUARANTINED: sum(r.verdict.outcome == QUARANTINED for r in results),
    }
    summary = ", ".join(f"{n} {o}" for o, n in counts.items() if n)
    if ignored:
        summary += f"; left out (unpack.ignore): {', '.join(ignored)}"
    waiting = [r for r in results if r.verdict.outcome in (RETRY_LATER, SKIPPED)]
    if waiting:
        # (a target's trouble decides: the archive then waits its retry delay)
        first = next(
            (r.verdict for r in waiting if r.verdict.outcome == RETRY_LATER), waiting[0].verdict
        )
        reason = (
            f"{len(waiting)} of {len(results)} entries not done ({first.error}); "
            f"the archive waits in its folder ({summary or 'none done'})"
        )
        if first.outcome == SKIPPED:
            return Verdict(SKIPPED, error=reason)
        transfer.journal.transition(
            record.id,
            State.RETRYING,
            error=(first.cause or "retry", reason),
            next_retry_at=next_try(route.retry, record.attempts, transfer.now()),
        )
        return Verdict(RETRY_LATER, error=reason, cause=first.cause, retryable=True)
    transfer.journal.transition(
        record.id, State.DELIVERING, note=f"entries: {summary}; outputs: {', '.join(outputs)}"
    )
    transfer.journal.transition(record.id, State.DELIVERED)
    quarantined = [r for r in results if r.verdict.outcome == QUARANTINED and not r.before]
    encoding = next((r.verdict.encoding for r in results if r.verdict.encoding), None)
    verdict = Verdict(DELIVERED, outputs=outputs, documents=documents, encoding=encoding)
    if quarantined:
        # Said as the archive's outcome: a person has entries to look at.
        said = "; ".join(f"{r.name} quarantined: {r.verdict.error}" for r in quarantined)
        verdict = verdict.but(
            outcome=QUARANTINED,
            error=f"{said} (the other entries: {summary})",
            cause=quarantined[0].verdict.cause,
        )
    if file.source is not None and file.info is not None:
        error = transfer.after.apply(route, file.source, file.info, record.id)
        if error is not None:
            return verdict.left_in_place(route.after.action, error)
    return verdict


__all__ = ["EntryResult", "take_archive", "take_entry"]

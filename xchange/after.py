"""What happens to a delivered source: archived, deleted or left in its drop folder.

When several routes read the same file, the last one to deliver it archives or deletes
it. Every move is announced in the journal before it is made: after a crash in between,
the file is found still in the drop folder with its record archived (or deleted), and the
move is simply made then. A move that does not happen takes its announcement back (the
records stay delivered) and the next look tries again.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from xchange.config import AppConfig, RouteConfig
from xchange.errors import RemoteError, RemoteNotFound, SourceChanged, TargetExists, XchangeError
from xchange.journal import DONE_STATES, FileRecord, Journal, State, Step
from xchange.readiness import marker_name
from xchange.remote import FileInfo, Remote
from xchange.remote.base import Selector, safe_subfolder, temp_name_for
from xchange.results import FileResult

log = structlog.get_logger(__name__)


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


def announcement(plan: AfterPlan) -> list[Step]:
    """The journal steps that announce a move before it is made."""
    note = f"{plan.action} into {plan.folder}" if plan.folder else plan.action
    return [Step(fid, plan.state, note, plan.folder or None) for fid in plan.ids]


def note_failed(route: RouteConfig, result: FileResult, error: RemoteError) -> None:
    """Say on a delivered file's result that its source could not be archived or deleted
    (it stays in the drop folder, and the next look tries again)."""
    result.after_error = f"{route.after.action} failed: {error.reason}"
    result.cause, result.retryable = error.kind, True


class After:
    """Plans and carries out the archive or delete of delivered sources."""

    def __init__(self, config: AppConfig, journal: Journal, now: Callable[[], datetime]) -> None:
        self.config = config
        self.journal = journal
        self.now = now

    def apply(
        self, route: RouteConfig, source: Remote, info: FileInfo, file_id: int | None
    ) -> RemoteError | None:
        """Archive, delete or leave a delivered source (and its done-marker). Returns what
        stopped the archive or delete (the records are then back at delivered, the file
        where it was)."""
        plan = self.plan(route, info, file_id)
        if plan is None:
            return None
        self.journal.record_steps(announcement(plan))
        moved, error = self.carry_out(source, plan)
        if moved is not None:
            self.journal.record_steps([Step(fid, plan.state, moved, moved) for fid in plan.ids])
        return error

    def plan(self, route: RouteConfig, info: FileInfo, file_id: int | None) -> AfterPlan | None:
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

    def carry_out(self, source: Remote, plan: AfterPlan) -> tuple[str | None, RemoteError | None]:
        """Delete or archive the source (and its marker): (the archived path, None), or
        (None, what stopped it) with its announcement taken back in the journal: the
        records stay delivered until the action is done."""
        try:
            return _move_or_remove(source, plan), None
        except (SourceChanged, RemoteNotFound) as exc:
            # Not the file that was delivered any more (or gone already): it stays, and
            # is taken as new. Gone because another daemon of a shared journal did this very
            # move (or delete) a moment before: the records say so already, left as they are.
            ids = plan.ids
            if isinstance(exc, RemoteNotFound):
                ids = [fid for fid in plan.ids if not self._done_elsewhere(fid, plan)]
            note = f"not {plan.state}: {exc.reason}"
            self.journal.record_steps([Step(fid, State.DELIVERED, note) for fid in ids])
            log.info("file.replaced", source=plan.info.name, action=plan.action, reason=exc.reason)
            return None, None
        except RemoteError as exc:
            note = f"{plan.action} failed: {exc.reason}"
            self.journal.record_steps([Step(fid, State.DELIVERED, note) for fid in plan.ids])
            log.warning(
                "file.after_failed", source=plan.info.name, action=plan.action, error=exc.reason
            )
            return None, exc

    def _done_elsewhere(self, file_id: int, plan: AfterPlan) -> bool:
        """Whether the record shows the move done: deleted as announced, or archived under
        a name (an announcement only names the folder)."""
        record = self.journal.get(file_id)
        if record is None or record.state != plan.state:
            return False
        if plan.action == "delete":
            return self.journal.shared
        return record.archive_path not in (None, plan.folder)

    def archive_kept(
        self, route: RouteConfig, source: Remote, record: FileRecord, kept: Path, token: str
    ) -> None:
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
        size = kept.stat().st_size
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


def _move_or_remove(source: Remote, plan: AfterPlan) -> str | None:
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


__all__ = ["After", "AfterPlan", "announcement", "note_failed"]

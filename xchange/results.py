"""What a run did: the outcome of each file, each route's summary, the exit code."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from xchange.errors import XchangeError
from xchange.journal import Observation


class Outcome(StrEnum):
    """What a look did with one source file (the one vocabulary of per-file results;
    the journal's ``State`` is what is recorded, this is what a run reports)."""

    DELIVERED = "delivered"
    #: Its content was delivered on the route already: not sent again.
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    #: Not delivered for a transient cause: tried again at a later run.
    RETRY_LATER = "retry-later"
    #: Waiting for its next try (not due at this look).
    WAITING = "waiting"
    #: Only looked at (gone, changed since the listing, delivered already).
    SKIPPED = "skipped"
    #: Delivered at an earlier run; its archive or delete failed again (``after_error``).
    LEFT = "left-in-place"


DELIVERED = Outcome.DELIVERED
DUPLICATE = Outcome.DUPLICATE
QUARANTINED = Outcome.QUARANTINED
RETRY_LATER = Outcome.RETRY_LATER
WAITING = Outcome.WAITING
SKIPPED = Outcome.SKIPPED
LEFT = Outcome.LEFT


@dataclass(slots=True)
class FileResult:
    route: str
    source: str
    outcome: Outcome
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
    #: What may be wrong with the content but did not stop it (mojibake, say).
    warnings: list[str] = field(default_factory=list)
    #: Delivered, but the source could not be archived or deleted (it stays in the drop
    #: folder, its record at delivered, and the next look tries again).
    after_error: str | None = None
    #: What the mapping's filters left out ("3 documents skipped by filter").
    filtered: str = ""
    #: When the file arrived in its drop folder (its time, Unix seconds), if known.
    arrived: float | None = None

    def take(self, verdict: Verdict) -> None:
        """What a step decided (its ``file_id`` where it names one)."""
        self.outcome = verdict.outcome
        if verdict.file_id is not None:
            self.file_id = verdict.file_id
        self.error, self.cause, self.retryable = verdict.error, verdict.cause, verdict.retryable
        self.outputs, self.documents = list(verdict.outputs), verdict.documents
        self.after_error = verdict.after_error
        if verdict.encoding is not None:
            self.encoding = verdict.encoding
        self.skipped_keys, self.warnings = list(verdict.skipped_keys), list(verdict.warnings)
        self.filtered = verdict.filtered


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one step of a file's life decided, as the step returns it (a step never fills
    in a result its caller passed): the outcome, and what goes with it. A run's
    ``FileResult`` takes the last step's verdict (``FileResult.take``)."""

    outcome: Outcome
    file_id: int | None = None
    error: str | None = None
    cause: str | None = None
    retryable: bool = False
    outputs: tuple[str, ...] = ()
    documents: int = 0
    #: Delivered, but its source could not be archived or deleted (see ``FileResult``).
    after_error: str | None = None
    encoding: str | None = None
    skipped_keys: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    filtered: str = ""

    def but(self, **changes: Any) -> Verdict:
        """The same verdict with ``changes``."""
        return replace(self, **changes)

    def left_in_place(self, action: str, error: XchangeError) -> Verdict:
        """A delivered file whose source could not be archived or deleted (``action``):
        it stays in the drop folder, and the next look tries again."""
        return self.but(
            after_error=f"{action} failed: {error.reason}", cause=error.kind, retryable=True
        )

    @classmethod
    def failed(cls, outcome: Outcome, error: XchangeError, *, said: str | None = None) -> Verdict:
        """A file stopped by ``error`` (``said``: its message, when not the error's)."""
        return cls(
            outcome,
            error=said if said is not None else error.reason,
            cause=error.kind,
            retryable=error.retryable,
        )


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
    #: Seconds the source folder's listing took (None: no listing at this look).
    listed_in: float | None = None

    def count(self, outcome: Outcome) -> int:
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
        skipped = [f.filtered for f in self.files if f.filtered]
        note = (
            f"; {'; '.join(skipped)}"
            if len(skipped) == 1
            else (f"; filters left out parts of {len(skipped)} files" if skipped else "")
        )
        parts = [f"{counts[DELIVERED]} delivered ({docs} document{'' if docs == 1 else 's'}{note})"]
        parts += [
            f"{counts[o]} {o}" for o in (DUPLICATE, QUARANTINED, RETRY_LATER, WAITING) if counts[o]
        ]
        left = [f for f in self.files if f.after_error]
        if left:
            parts.append(f"{len(left)} left in the drop folder (archive or delete failed)")
        if self.held:
            parts.append(f"{len(self.held)} held")
        text = f"{self.route}: " + ", ".join(parts)
        if self.error:
            text += f"; could not run: {self.error}"
        for f in self.files:
            if f.outcome in (QUARANTINED, RETRY_LATER):
                text += f"\n  {f.outcome}: {f.source} (#{f.file_id}): {f.error}"
            elif f.outcome == WAITING:
                text += (
                    f"\n  waiting: {f.source} (#{f.file_id}): {f.error}; "
                    "`xchange retry` makes it due now"
                )
            elif f.after_error:
                text += f"\n  left in place: {f.source} (#{f.file_id}): {f.after_error}"
            if f.skipped_keys:
                text += (
                    f"\n  skipped (already delivered): {f.source} (#{f.file_id}): "
                    f"{', '.join(f.skipped_keys[:10])}"
                    + (" ..." if len(f.skipped_keys) > 10 else "")
                )
        return text


#: Exit codes of ``xchange run --once`` (documented in README.md).
EXIT_OK, EXIT_QUARANTINED, EXIT_CONFIG, EXIT_NOT_DELIVERED, EXIT_LOCKED = 0, 1, 2, 3, 4
#: Everything taken was delivered, but a drop folder holds files no route takes.
EXIT_NOT_TAKEN = 5


def exit_code(results: list[RouteResult]) -> int:
    """0 all delivered; 3 something could not be delivered yet; else 1 if any quarantined."""
    if any(r.error or r.count(RETRY_LATER) or r.count(WAITING) for r in results):
        return EXIT_NOT_DELIVERED
    if any(r.count(QUARANTINED) for r in results):
        return EXIT_QUARANTINED
    return EXIT_OK


__all__ = [
    "DELIVERED",
    "DUPLICATE",
    "EXIT_CONFIG",
    "EXIT_LOCKED",
    "EXIT_NOT_DELIVERED",
    "EXIT_NOT_TAKEN",
    "EXIT_OK",
    "EXIT_QUARANTINED",
    "LEFT",
    "QUARANTINED",
    "RETRY_LATER",
    "SKIPPED",
    "WAITING",
    "FileResult",
    "Outcome",
    "RouteResult",
    "Verdict",
    "exit_code",
]

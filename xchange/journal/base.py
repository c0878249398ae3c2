"""The processed-file journal: the narrow interface every backend implements.

One record per source file *content* per route. Its idempotency key is
``(route, sha256)``: the same bytes on the same route are delivered once, whatever
their name; a changed file under the same name is a new record. A second index on
``(route, endpoint, path, size, mtime_ns)`` lets a poll find what it knows about a
file without reading it.

Its states and the transitions allowed between them are a table
(``xchange.journal.states``) that every backend checks on every write: a transition
not in it raises ``IllegalTransition`` and writes nothing. A source whose content was
already delivered on the route is not sent again; the original record notes that it
was seen again.

Beyond files, a journal keeps small ledgers that every daemon using it shares (alert
windows, deadlines, schedule slots, observations, business keys, what operators did):
written once for every backend in :mod:`xchange.journal.ledgers`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

from xchange.journal.states import State

if TYPE_CHECKING:
    from xchange.journal.ledgers import (
        Actions,
        Alerts,
        BusinessKeys,
        Deadlines,
        Observations,
        Pickups,
        Slots,
        Tallies,
    )
    from xchange.journal.values import Action


@dataclass(frozen=True, slots=True)
class FileKey:
    route: str
    endpoint: str
    path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True, slots=True)
class OutputRecord:
    endpoint: str
    path: str
    size: int
    sha256: str
    delivered_at: datetime
    #: Whether the partner is to collect it: None (not watched), "waiting", "collected"
    #: (``picked_up_at`` says when it was first seen gone), or "replaced" (a later
    #: delivery took its name before anyone collected it).
    pickup: str | None = None
    picked_up_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: int
    route: str
    endpoint: str
    path: str
    size: int
    mtime_ns: int
    sha256: str
    state: State
    attempts: int
    next_retry_at: datetime | None
    error_kind: str | None
    error_message: str | None
    quarantine_path: str | None
    archive_path: str | None
    layout_version: str | None
    mapping_version: str | None
    #: The encoding the source was read with (declared, or detected).
    source_encoding: str | None
    created_at: datetime
    updated_at: datetime
    outputs: list[OutputRecord] = field(default_factory=list)
    #: A shared journal's daemon taking the file through right now (host:pid:token), and
    #: until when its lease runs (renewed while it works); None in a single-daemon journal.
    owner: str | None = None
    lease_until: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: getattr(self, k) for k in self.__dataclass_fields__ if k != "outputs"
        }
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        out["state"] = str(self.state)
        out["outputs"] = [
            {
                "endpoint": o.endpoint,
                "path": o.path,
                "size": o.size,
                "sha256": o.sha256,
                "delivered_at": o.delivered_at.isoformat(),
                "pickup": o.pickup,
                "picked_up_at": o.picked_up_at.isoformat() if o.picked_up_at else None,
            }
            for o in self.outputs
        ]
        return out


def record_from_row(row: Mapping[str, Any], outputs: list[OutputRecord]) -> FileRecord:
    """A record from a backend's row of ``files`` (times as datetimes or ISO text)."""

    def when(value: Any) -> datetime | None:
        return datetime.fromisoformat(value) if isinstance(value, str) else value

    created, updated = when(row["created_at"]), when(row["updated_at"])
    assert created is not None and updated is not None
    return FileRecord(
        id=row["id"],
        route=row["route"],
        endpoint=row["endpoint"],
        path=row["path"],
        size=row["size"],
        mtime_ns=row["mtime_ns"],
        sha256=row["sha256"],
        state=State(row["state"]),
        attempts=row["attempts"],
        next_retry_at=when(row["next_retry_at"]),
        error_kind=row["error_kind"],
        error_message=row["error_message"],
        quarantine_path=row["quarantine_path"],
        archive_path=row["archive_path"],
        layout_version=row["layout_version"],
        mapping_version=row["mapping_version"],
        source_encoding=row["source_encoding"],
        created_at=created,
        updated_at=updated,
        outputs=outputs,
        owner=row.get("owner"),
        lease_until=when(row.get("lease_until")),
    )


@dataclass(frozen=True, slots=True)
class Transition:
    at: datetime
    from_state: str | None
    to_state: str
    note: str | None


@dataclass(frozen=True, slots=True)
class Found:
    """A file :meth:`Journal.find` found: its record, how the term matched it, and what
    operators did to it."""

    record: FileRecord
    #: How the term matched: ``business key``, ``source name``, ``output name``,
    #: ``source sha256``, ``output sha256`` (one or more).
    matched: tuple[str, ...]
    #: The business keys the term named that this file delivered (a key search).
    keys: tuple[str, ...] = ()
    #: The outputs the term named, by name or checksum (their paths).
    outputs: tuple[str, ...] = ()
    #: What operators did to the file, oldest first.
    actions: tuple[Action, ...] = ()


@dataclass(frozen=True, slots=True)
class Claim:
    """The record for a file, and whether its content was already delivered on the route."""

    record: FileRecord
    already_delivered: bool
    #: Another daemon of a shared journal holds this content (its owner): not taken now.
    held_by: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One plain state change of a file (for :meth:`Journal.record_steps`): an output
    delivered (if any) and the new state, with its note and archive path."""

    file_id: int
    state: State
    note: str | None = None
    archive_path: str | None = None
    output: OutputRecord | None = None


class Journal(Protocol):
    """What the runner, the operator commands and the alerts need from a backend."""

    #: Whether several daemons (processes, hosts) may share this journal: claims then hold
    #: leases, and a claim of content another daemon holds says so (``Claim.held_by``).
    shared: bool
    #: The ledgers beside the files, written once for every backend
    #: (:mod:`xchange.journal.ledgers`): alert windows, deadlines, schedule slots, what
    #: polls hold back, delivered business keys, outputs waiting for their partner, what
    #: each delivered file held.
    alerts: Alerts
    deadlines: Deadlines
    slots: Slots
    observations: Observations
    keys: BusinessKeys
    pickups: Pickups
    tallies: Tallies
    actions: Actions

    @property
    def owner(self) -> str | None:
        """This daemon as the owner of its claims (None: a journal of one daemon)."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Make the writes inside the block one transaction: nothing of it is committed
        before the block ends, and all of it is rolled back if the block raises. Other
        threads' journal calls wait for the block (keep I/O out of it)."""
        ...

    def lookup(
        self, route: str, endpoint: str, path: str, size: int, mtime_ns: int
    ) -> FileRecord | None:
        """The newest record of this exact file (name, size, time) on the route, if any."""
        ...

    def claim(self, key: FileKey, *, layout_version: str, mapping_version: str) -> Claim:
        """Find or create the record for this content on this route, and mark it processing
        (one more attempt) unless it was already delivered.

        Raises:
            JournalError: the journal cannot be written.
        """
        ...

    def find_content(self, route: str, sha256: str) -> FileRecord | None:
        """The record of this content on the route, if any (read-only)."""
        ...

    def lookup_many(
        self, route: str, endpoint: str, files: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], FileRecord]:
        """``lookup`` of many (path, size, mtime_ns) at once: the ones the journal has."""
        ...

    def states_many(
        self, route: str, endpoint: str, files: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], State]:
        """The state of the newest record of each (path, size, mtime_ns) the journal has:
        what a look at a long history needs to set aside the files done with, without
        making their records."""
        ...

    def claim_many(
        self, keys: Sequence[FileKey], *, layout_version: str, mapping_version: str
    ) -> list[Claim]:
        """``claim`` of each key in order, in one transaction (keys of distinct content)."""
        ...

    def record_steps(self, steps: Sequence[Step]) -> None:
        """Several ``record_output`` + ``transition`` (no error, no retry time) in order,
        in one transaction."""
        ...

    def transition(
        self,
        file_id: int,
        state: State,
        *,
        error: tuple[str, str] | None = None,
        quarantine_path: str | None = None,
        archive_path: str | None = None,
        note: str | None = None,
        encoding: str | None = None,
        next_retry_at: datetime | None = None,
    ) -> None:
        """Record a new state (and its details), committed before the caller acts on it."""
        ...

    def note(self, file_id: int, note: str) -> None:
        """Add a note to a file's history, in whatever state it is now (read and written
        in one transaction: another daemon's change in between is kept)."""
        ...

    def take(self, file_id: int) -> bool:
        """Take a delivered file's remaining work (its archive or delete) for this daemon:
        False while another daemon of a shared journal holds it (its lease running). A
        journal of one daemon always grants it."""
        ...

    def confirm(self, file_id: int) -> None:
        """Right before a delivery is renamed into place: the file being taken through is
        still this daemon's. A journal of one daemon always says so.

        Raises:
            LeaseLost: another daemon of a shared journal took it over.
        """
        ...

    def record_output(self, file_id: int, output: OutputRecord) -> None:
        """Record one delivered output file."""
        ...

    def get(self, file_id: int) -> FileRecord | None: ...

    def query(
        self,
        *,
        route: str | None = None,
        state: State | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        pattern: str | None = None,
        limit: int = 100,
    ) -> list[FileRecord]:
        """Records, newest first; ``pattern`` is a shell pattern on the source name."""
        ...

    def count(
        self,
        *,
        route: str | None = None,
        states: Collection[State] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many records match (updated since ``since``, before ``until``), without
        reading them."""
        ...

    def oldest(self, route: str, state: State) -> datetime | None:
        """When the oldest record of the route in ``state`` was first claimed (None: none)."""
        ...

    def reconsider(
        self,
        route: str,
        *,
        layout_version: str,
        mapping_version: str,
        transient: Collection[str],
        transient_before: datetime,
        limit: int,
    ) -> list[FileRecord]:
        """Records of the route with a kept quarantine copy that may heal, oldest first:
        quarantined by other layout/mapping versions than these; quarantined on one of
        the ``transient`` causes, or waiting to be retried, and untouched since
        ``transient_before``; or being processed or delivered (a crash cut them short)."""
        ...

    def history(self, file_id: int) -> list[Transition]: ...

    def find(self, term: str, *, route: str | None = None, limit: int = 50) -> list[Found]:
        """The files ``term`` names, newest first (at most ``limit``): a business key
        delivered (exactly), a source's or an output's name (exactly, or a shell pattern
        when it holds ``*`` or ``?``), or the start of a source's or an output's
        sha256 (8 hex digits or more). Every other character is itself (``%``, ``_``,
        quotes). ``route`` narrows."""
        ...

    def prune(self, before: datetime) -> int:
        """Forget delivered records last updated before ``before``; return how many.
        Quarantined records stay until an operator drops them."""
        ...

    @property
    def journal_id(self) -> str:
        """This journal's own id, made when it was created (the temporary names of its
        deliveries carry it, so that two journals never share one)."""
        ...

    def checkpoint(self, *, force: bool = False) -> None:
        """Make what is committed durable in the backend's main store (SQLite: the
        write-ahead log copied into the main file); cheap when called often."""
        ...

    def check(self) -> list[str]:
        """What is wrong with the stored journal (empty: nothing)."""
        ...

    def backup(self, dest: Path) -> None:
        """A consistent copy of the whole journal in ``dest`` (a new file)."""
        ...

    def close(self) -> None:
        """Release the journal; a clean close is what the next open expects."""
        ...

    def __enter__(self) -> Self:
        """The journal, closed when the block ends (``with open_journal(cfg) as j:``)."""
        ...

    def __exit__(self, *exc: object) -> None: ...

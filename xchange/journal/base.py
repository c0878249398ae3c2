"""The processed-file journal: the narrow interface every backend implements.

One record per source file *content* per route. Its idempotency key is
``(route, sha256)``: the same bytes on the same route are delivered once, whatever
their name; a changed file under the same name is a new record. A second index on
``(route, endpoint, path, size, mtime_ns)`` lets a poll skip files it has already
seen without reading them.

States and the transitions the runner makes (each committed *before* the side
effect it announces)::

    processing -> delivering -> delivered -> archived | deleted
         |              |
         +--------------+--> retrying (transient; picked up again later)
         +--------------+--> quarantined (permanent, or out of attempts)
    duplicate: same content already delivered on this route; not sent again
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class State(StrEnum):
    PROCESSING = "processing"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    ARCHIVED = "archived"
    DELETED = "deleted"
    RETRYING = "retrying"
    QUARANTINED = "quarantined"
    DUPLICATE = "duplicate"


#: States in which the content counts as delivered on its route.
DONE_STATES = frozenset({State.DELIVERED, State.ARCHIVED, State.DELETED})


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
    error_kind: str | None
    error_message: str | None
    quarantine_path: str | None
    layout_version: str | None
    mapping_version: str | None
    #: The encoding the source was read with (declared, or detected).
    source_encoding: str | None
    created_at: datetime
    updated_at: datetime
    outputs: list[OutputRecord] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "outputs"}
        out["state"] = str(self.state)
        out["created_at"] = self.created_at.isoformat()
        out["updated_at"] = self.updated_at.isoformat()
        out["outputs"] = [
            {
                "endpoint": o.endpoint,
                "path": o.path,
                "size": o.size,
                "sha256": o.sha256,
                "delivered_at": o.delivered_at.isoformat(),
            }
            for o in self.outputs
        ]
        return out


@dataclass(frozen=True, slots=True)
class Claim:
    """The record for a file, and whether its content was already delivered on the route."""

    record: FileRecord
    already_delivered: bool


class Journal(Protocol):
    """What the runner and the CLI need from a journal backend."""

    def seen(self, route: str, endpoint: str, path: str, size: int, mtime_ns: int) -> bool:
        """True if this exact file (name, size, time) was already delivered on the route."""
        ...

    def claim(self, key: FileKey, *, layout_version: str, mapping_version: str) -> Claim:
        """Find or create the record for this content on this route, and mark it processing.

        Raises:
            JournalError: the journal cannot be written.
        """
        ...

    def transition(
        self,
        file_id: int,
        state: State,
        *,
        error: tuple[str, str] | None = None,
        quarantine_path: str | None = None,
        note: str | None = None,
        encoding: str | None = None,
    ) -> None:
        """Record a new state, committed before the caller acts on it (with, optionally,
        the error, the quarantine location, a note, the source's text encoding)."""
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
        limit: int = 100,
    ) -> list[FileRecord]: ...

    def close(self) -> None: ...

"""A file claimed in the journal, as each step of its delivery takes it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xchange.config import RouteConfig
from xchange.journal import FileRecord
from xchange.manifest import Entry
from xchange.remote import FileInfo, Remote


@dataclass(frozen=True, slots=True)
class Claimed:
    """A file claimed in the journal, as each step of its delivery takes it (and returns
    a :class:`Verdict`): its route and record, its bytes on this machine (``path``, and
    the open ``stream`` they were hashed from, if any), its name, and the drop folder it
    is still in (``source``, ``info``; None when it is taken from a kept copy), and what
    its partner's manifest says of it (``listed``; None: no manifest, or a kept copy)."""

    route: RouteConfig
    record: FileRecord
    path: Path
    name: str
    source: Remote | None = None
    info: FileInfo | None = None
    stream: BinaryIO | None = None
    listed: Entry | None = None


__all__ = ["Claimed"]

"""Quarantined files grouped by cause: one mapping error on a bad morning quarantines 300
files, and they are one incident, not 300.

A file's cause is what its quarantine report says first, without what belongs to that file
alone: for a validation failure, the field, the rule and its message (``validation: field
channel: enum: not in value table 'channels'``), whatever the line or the value; for any
other failure its reason with the file's name, line and record numbers taken out. Each cause
has a short, stable id (a hash of its text), so that ``quarantine list --by-cause`` and
``quarantine retry --cause ID`` name the same group whatever else arrived in between.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xchange.journal import FileRecord

#: Places that belong to one file: "line 12", "row 3", "record 7", "$.orders[2]", "#12".
_PLACES = [
    (re.compile(r"\b(line|row|record|column|col|entry|document)s? \d+(?:-\d+)?"), r"\1 #"),
    (re.compile(r"\[\d+\]"), "[#]"),
    (re.compile(r"#\d+"), "#"),
    (re.compile(r"\b\d+ (bytes?|documents?|records?|lines?|files?)\b"), r"# \1"),
]


@dataclass
class Cause:
    """One cause and the quarantined files it holds (newest first)."""

    id: str
    text: str
    records: list[FileRecord] = field(default_factory=list)

    @property
    def routes(self) -> list[str]:
        return sorted({r.route for r in self.records})

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cause": self.text,
            "files": len(self.records),
            "routes": self.routes,
            "file_ids": [r.id for r in self.records],
            "first": min(r.updated_at for r in self.records).isoformat(),
            "last": max(r.updated_at for r in self.records).isoformat(),
        }


def _report(record: FileRecord) -> dict[str, Any] | None:
    if not record.quarantine_path:
        return None
    path = Path(record.quarantine_path + ".report.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cause_of(record: FileRecord) -> str:
    """The cause of a quarantined file, without what belongs to that file alone."""
    kind = record.error_kind or "error"
    report = _report(record)
    problems = (report or {}).get("report", {}).get("problems") or []
    if problems:
        first = problems[0]
        return f"{kind}: field {first.get('field')}: {first.get('rule')}: {first.get('message')}"
    text = (record.error_message or kind).splitlines()[0] if record.error_message else kind
    name = record.path.rsplit("/", 1)[-1]
    for found in (record.path, name):  # (the whole path first: the same text each time)
        text = text.replace(found, "<file>")
    for pattern, replacement in _PLACES:
        text = pattern.sub(replacement, text)
    return f"{kind}: {text}"


def cause_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def by_cause(records: list[FileRecord]) -> list[Cause]:
    """The records grouped by cause, the biggest group first (then the newest)."""
    causes: dict[str, Cause] = {}
    for record in records:
        text = cause_of(record)
        causes.setdefault(text, Cause(cause_id(text), text)).records.append(record)
    return sorted(
        causes.values(),
        key=lambda c: (-len(c.records), -max(r.updated_at for r in c.records).timestamp()),
    )


def find_cause(records: list[FileRecord], wanted: str) -> Cause | None:
    """The cause named by its id (or its whole text) among ``records``."""
    for cause in by_cause(records):
        if wanted in (cause.id, cause.text):
            return cause
    return None


__all__ = ["Cause", "by_cause", "cause_id", "cause_of", "find_cause"]

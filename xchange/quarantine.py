"""Quarantine: failed files kept byte for byte, each with a report a person can act on.

Layout on disk (owner-only permissions)::

    <quarantine>/<route>/<id>_<source name>               the original bytes
    <quarantine>/<route>/<id>_<source name>.report.txt    why, where, which attempt, which config
    <quarantine>/<route>/<id>_<source name>.report.json   the same, for scripts
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xchange.errors import UsageError, ValidationFailed, XchangeError
from xchange.journal import FileRecord, Journal, State
from xchange.names import clean_value
from xchange.private import private_folder


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    data_path: Path
    report_path: Path


def _copy_private(src: Path, dest: Path) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh, open(src, "rb") as source:
        shutil.copyfileobj(source, fh, 1 << 20)
        fh.flush()
        os.fsync(fh.fileno())


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class Quarantine:
    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def resolve(data_path: Path) -> Path:
        """The file was delivered after all: keep its entry under ``resolved/``; return
        the copy's new path."""
        return _resolve(data_path)

    @staticmethod
    def drop(data_path: Path) -> None:
        """An operator gave the file up: delete its copy and reports."""
        _drop(data_path)

    @staticmethod
    def report_of(data_path: Path) -> str | None:
        path = data_path.with_name(data_path.name + ".report.txt")
        return path.read_text(encoding="utf-8") if path.exists() else None

    def put(
        self,
        *,
        route: str,
        file_id: int,
        source: str,
        original: Path,
        error: XchangeError,
        attempt: int,
        config_file: str,
        versions: tuple[str, str],
    ) -> QuarantineEntry:
        folder = self.root / route
        private_folder(folder)
        base = _bounded(f"{file_id:06d}_{clean_value(Path(source).name) or 'file'}")
        data_path = folder / base
        report_path = folder / f"{base}.report.txt"
        info: dict[str, Any] = {
            "id": file_id,
            "route": route,
            "source": source,
            "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "cause": error.kind,
            "retryable": error.retryable,
            "reason": error.reason,
            "attempt": attempt,
            "config": config_file,
            "layouts": versions[0],
            "mapping": versions[1],
            "original": str(data_path),
            "size": original.stat().st_size,
        }
        if isinstance(error, ValidationFailed):
            info["report"] = error.report.as_dict()
        if original.resolve() != data_path.resolve():
            _copy_private(original, data_path)
        # (else: judged again from its kept copy, which stays byte for byte as it is)
        _write_private(
            folder / f"{base}.report.json", json.dumps(info, ensure_ascii=False, indent=2).encode()
        )
        _write_private(report_path, render_report(info, error).encode())
        return QuarantineEntry(data_path, report_path)


#: The longest name in a quarantine folder: the copy's, and ".report.json" after it.
_NAME_ROOM = 255 - len(".report.json")


def _bounded(base: str) -> str:
    """A quarantine name within the file system's 255 bytes, whatever the source's name
    (cut on a character boundary, with a hash of the whole: two long names never meet)."""
    if len(base.encode()) <= _NAME_ROOM:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:12]
    return base.encode()[: _NAME_ROOM - 13].decode("utf-8", "ignore") + "~" + digest


def render_report(info: dict[str, Any], error: XchangeError) -> str:
    lines = [
        f"xchange quarantine report for file #{info['id']}",
        f"route:       {info['route']}",
        f"source:      {info['source']} ({info['size']} bytes)",
        f"original:    {info['original']}",
        f"cause:       {info['cause']} ({'transient' if info['retryable'] else 'permanent'})",
        f"attempt:     {info['attempt']}",
        f"config:      {info['config']}",
        f"layouts:     {info['layouts']}",
        f"mapping:     {info['mapping']}",
        "",
        "why:",
    ]
    if isinstance(error, ValidationFailed):
        lines.append(error.report.text())
    else:
        lines.append(error.message)
    return "\n".join(lines) + "\n"


def _siblings(data_path: Path) -> list[Path]:
    return [
        data_path,
        data_path.with_name(data_path.name + ".report.txt"),
        data_path.with_name(data_path.name + ".report.json"),
    ]


def _resolve(data_path: Path) -> Path:
    """Move a delivered file's quarantine entry aside into ``resolved/`` (kept, not in the
    way); return the copy's new path."""
    folder = data_path.parent / "resolved"
    private_folder(folder)
    for path in _siblings(data_path):
        if path.exists():
            path.replace(folder / path.name)
    return folder / data_path.name


def give_up(journal: Journal, records: list[FileRecord]) -> None:
    """An operator gives quarantined files up: their kept copies (and reports) deleted,
    their records ``dropped`` (the history stays). Nothing is done unless every file is
    in quarantine (``UsageError`` names the first that is not)."""
    for record in records:
        if record.state != State.QUARANTINED:
            raise UsageError(f"file #{record.id} is not in quarantine (it is {record.state})")
    for record in records:
        if record.quarantine_path:
            Quarantine.drop(Path(record.quarantine_path))
        journal.transition(record.id, State.DROPPED, note="dropped by an operator")


def _drop(data_path: Path) -> None:
    for path in _siblings(data_path):
        path.unlink(missing_ok=True)

"""What sending files again would deliver, touching nothing (``quarantine retry --dry-run``,
``reprocess --dry-run``).

Each file is converted again from its kept copy (a quarantined file's, in quarantine; a
delivered file's, in its archive) with the current layouts, mappings and value tables, into a
scratch folder: the names its outputs would be delivered under, or why it would stay. An
output the file delivered before under the same name is read back from the target and
compared: identical, or a unified diff of what changes (a file re-sent on purpose shows what
the partner will receive that differs from last time). Nothing is written to the journal,
the quarantine, the source or the target.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import tempfile
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from xchange.archives import bundled, convert_file, is_entry
from xchange.config import AppConfig
from xchange.errors import UsageError, XchangeError
from xchange.journal import FileRecord, Journal, State
from xchange.pgp import as_read, delivered_names
from xchange.pipeline import make_pipeline
from xchange.remote import open_remote
from xchange.sink import Sink

#: Lines of difference shown per output (the rest counted).
DIFF_LINES = 40


@dataclass
class Preview:
    """What sending one file again would do."""

    record: FileRecord
    outputs: list[str] = field(default_factory=list)
    #: Why it would not be delivered (None: it would).
    error: str | None = None
    #: Per output delivered before under the same name: the lines of a unified diff
    #: (empty: identical bytes).
    changes: dict[str, list[str]] = field(default_factory=dict)
    #: Per output delivered before that could not be read back to compare: why.
    unseen: dict[str, str] = field(default_factory=dict)
    skipped_keys: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = f"#{self.record.id} {self.record.path}"
        if self.error is not None:
            return [f"{head}: would stay: {self.error}"]
        what = ", ".join(self.outputs) if self.outputs else "nothing (no documents)"
        said = [f"{head}: would deliver {what}"]
        if self.skipped_keys:
            said.append(f"  would skip (delivered before): {', '.join(self.skipped_keys[:10])}")
        for name, why in self.unseen.items():
            said.append(f"  {name}: delivered before; {why}")
        for name, diff in self.changes.items():
            if not diff:
                said.append(f"  {name}: the same bytes as delivered before")
                continue
            said.append(f"  {name}: differs from what was delivered before:")
            said += [f"    {line}" for line in diff[:DIFF_LINES]]
            if len(diff) > DIFF_LINES:
                said.append(f"    ... {len(diff) - DIFF_LINES} more line(s) of difference")
        return said


def preview(config: AppConfig, journal: Journal, record: FileRecord, *, force: bool) -> Preview:
    """What sending ``record`` again would deliver (``force``: documents delivered before
    too, as ``reprocess --force`` sends them)."""
    route = config.route(record.route)
    seen = Preview(record)
    with tempfile.TemporaryDirectory(prefix="xchange-replay-") as scratch:
        try:
            pipeline = make_pipeline(route, config.formats)
            skip = None
            if pipeline.dedupes and not force:

                def skip(key: str) -> bool:
                    return bool(journal.keys.delivered(route.name, [key], except_file=record.id))

            when = record.created_at.astimezone()
            entry = is_entry(record.path)  # (kept as unpacked: no decryption, no archive)
            with (
                _copy(config, record, Path(scratch)) as path,
                open(path, "rb") as fh,
                # As a run reads it: decrypted where the route's files come encrypted.
                contextlib.nullcontext((fh, record.path))
                if entry
                else as_read(config, route, fh, record.path) as (reading, named),
            ):
                out = Path(scratch) / "out"
                out.mkdir()
                if route.source.unpack is not None and not entry:
                    # An archive: its entries, as a run takes them.
                    conversion = convert_file(pipeline, route, reading, named, when, Sink(out))
                else:
                    conversion = pipeline.convert_stream(reading, named, when, Sink(out), skip=skip)
                    if route.target.archive is not None:
                        # The outputs zipped into one, as a delivery does.
                        conversion = bundled(
                            conversion, route.target.archive, record.path, when, out
                        )
            # Under the names they are delivered under (``.pgp`` where encrypted).
            seen.outputs = delivered_names(route, [o.name for o in conversion.outputs])
            seen.skipped_keys = list(conversion.skipped)
            # The earlier output of each name this file delivered on the route's target.
            before = {o.path: o for o in record.outputs if o.endpoint == route.target.endpoint}
            target = None
            try:
                for output, name in zip(conversion.outputs, seen.outputs, strict=True):
                    earlier = before.get(name)
                    if earlier is None:
                        continue
                    if route.target.pgp is not None:
                        # (an encryption is new bytes every time: nothing to compare)
                        seen.unseen[name] = "encrypted: its bytes differ at every encryption"
                        continue
                    if earlier.sha256 == output.sha256:
                        seen.changes[output.name] = []
                        continue
                    if earlier.pickup == "collected":
                        seen.unseen[output.name] = "its partner collected it: not compared"
                        continue
                    if target is None:
                        target = open_remote(
                            route.target.endpoint, config.endpoints[route.target.endpoint]
                        )
                    old = io.BytesIO()
                    try:
                        target.download(output.name, old)
                    except XchangeError as exc:
                        seen.unseen[output.name] = f"not compared: {exc.reason}"
                        continue
                    with output.open() as new:
                        seen.changes[output.name] = _diff(old.getvalue(), new.read(), output.name)
            finally:
                if target is not None:
                    target.close()
        except XchangeError as exc:
            seen.error = exc.reason
    return seen


class _copy:
    """The kept copy of a file as a local path while the block lasts."""

    def __init__(self, config: AppConfig, record: FileRecord, scratch: Path) -> None:
        self.config, self.record, self.scratch = config, record, scratch
        self._inner: AbstractContextManager[Path] | None = None

    def __enter__(self) -> Path:
        record = self.record
        if record.state == State.QUARANTINED and record.quarantine_path:
            path = Path(record.quarantine_path)
            if not path.is_file():
                raise UsageError(f"file #{record.id}: its quarantined copy {path} is missing")
            return path
        if record.archive_path:
            source = open_remote(record.endpoint, self.config.endpoints[record.endpoint])
            self._source = source
            self._inner = source.local_copy(record.archive_path, self.scratch)
            return self._inner.__enter__()
        raise UsageError(
            f"file #{record.id} is {record.state} and no copy of it is kept to send again"
        )

    def __exit__(self, *exc: object) -> None:
        if self._inner is not None:
            self._inner.__exit__(None, None, None)
            self._source.close()


def _diff(old: bytes, new: bytes, name: str) -> list[str]:
    def text(data: bytes) -> list[str]:
        for encoding in ("utf-8", "gb18030"):
            try:
                return data.decode(encoding).splitlines()
            except UnicodeDecodeError:
                continue
        return data.decode("latin-1").splitlines()

    return list(
        difflib.unified_diff(
            text(old), text(new), f"{name} (delivered)", f"{name} (now)", n=1, lineterm=""
        )
    )


__all__ = ["Preview", "preview"]

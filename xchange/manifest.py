"""Manifests: a file that says which data files belong together, with their figures.

A target manifest is written after the data files of one source are delivered (the last
file of the source, through the same delivery: hidden name, one rename, journaled as an
output so that it is sent once). It lists each output delivered, with its size, sha256
and number of documents, and the control totals the file agreed on; or it is an empty
*done file* whose name alone says the data is complete. Its content depends only on what
the journal holds (the names delivered, the time of the source's first claim), so a
manifest made again after a crash is the same file.

A source manifest is a partner's: its data files are taken only once a manifest lists
them, and each is checked against what the manifest says (size and sha256 before it is
converted, its record count after it is read). Names in a manifest are plain names in
the manifest's own folder: a name that would leave it refuses the whole manifest.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

from xchange.config import CsvManifestLayout, RouteConfig, SourceManifest, TargetManifest
from xchange.errors import ManifestDiffers, UnsafeName
from xchange.journal import OutputRecord
from xchange.names import check_plain_name, render_name, template_fields, template_problems
from xchange.sink import Output

#: Placeholders a manifest's name template may use.
NAME_FIELDS = frozenset({"route"})


@dataclass(frozen=True, slots=True)
class Entry:
    """One data file as a manifest gives it (a figure not given is None)."""

    name: str
    size: int | None = None
    sha256: str | None = None
    documents: int | None = None
    #: The manifest that lists it (a partner's manifest; "" for one being written).
    manifest: str = ""


class ManifestRefused(UnsafeName):
    """A partner's manifest that cannot be trusted (unreadable, or a name in it would
    leave its folder): none of its files are taken on its word."""

    kind = "manifest-refused"


# --------------------------------------------------------------------- a target's


def problems(route: RouteConfig, totals: Iterable[str] | None) -> list[str]:
    """What is wrong with a route's manifests: a partner's whose pattern is the data's; a
    target's name template (unsafe, or the same for every source where a taken name is
    refused), or a ``totals.<name>`` column the mapping does not declare (``totals``
    None: a copy route, which has none)."""
    found: list[str] = []
    if route.source.manifest is not None:
        same = set(route.source.manifest.patterns) & set(route.source.patterns)
        if same:
            found.append(
                f"route {route.name}: source.manifest.pattern: {sorted(same)[0]!r} is also the "
                "route's data pattern: a manifest is never a data file; give them names "
                "apart (e.g. *.manifest.json)"
            )
    spec = route.target.manifest
    if spec is None:
        return found
    found += [
        f"route {route.name}: target.manifest.name: {p}"
        for p in template_problems(spec.name, NAME_FIELDS)
    ]
    if not any("target.manifest.name" in f for f in found):
        try:
            manifest_name(route, "orders_20261121.csv", datetime(2026, 11, 21, 2, 0))
        except UnsafeName as exc:
            found.append(f"route {route.name}: target.manifest.name: {exc.reason}")
    if (
        not any("target.manifest.name" in f for f in found)
        and route.target.if_exists == "fail"
        and not {"source_name", "source_stem"} & template_fields(spec.name)
    ):
        found.append(
            f"route {route.name}: target.manifest.name: {spec.name!r} is the same for every "
            "source, and the target refuses a name it has (if_exists = \"fail\"): every source "
            "after the first would be quarantined; put {source_stem} in it (or choose "
            "if_exists = \"overwrite\" for a done file the partner takes each time)"
        )
    declared = set(totals or ())
    if spec.format == "csv":
        for column in spec.columns:
            total = column.removeprefix("totals.")
            if column.startswith("totals.") and total not in declared:
                offered = ", ".join(sorted(declared)) or "none"
                found.append(
                    f"route {route.name}: target.manifest.columns: {column!r}: the mapping "
                    f"declares no total {total!r} (totals: {offered})"
                )
    return found


def manifest_name(route: RouteConfig, source_name: str, when: datetime) -> str:
    """The name of the manifest of ``source_name`` on ``route``.

    Raises:
        UnsafeName: the template does not make a plain, safe name.
    """
    assert route.target.manifest is not None
    source = PurePosixPath(source_name)
    values = {
        "source_name": source.name,
        "source_stem": source.stem,
        "date": when,
        "route": route.name,
    }
    return render_name(route.target.manifest.name, values)


def delivered(outputs: Sequence[Output], recorded: Sequence[OutputRecord]) -> list[Entry]:
    """Each output as it was delivered: under the name the journal has for it (``unique``
    may have added ``_1``); an output not delivered (``skip``) is not listed."""
    left = list(recorded)
    entries: list[Entry] = []
    for out in outputs:
        same = [r for r in left if r.sha256 == out.sha256 and r.size == out.size]
        if not same:
            continue
        stem, dot, ext = out.name.rpartition(".")
        exact = [r for r in same if r.path == out.name]
        variant = [
            r
            for r in same
            if (r.path.startswith(f"{stem}_") and r.path.endswith(f".{ext}"))
            or (not dot and r.path.startswith(f"{out.name}_"))
        ]
        if not exact and not variant:
            continue
        chosen = (exact or variant)[0]
        left.remove(chosen)
        entries.append(Entry(chosen.path, out.size, out.sha256, out.documents))
    return entries


def render(
    spec: TargetManifest,
    *,
    route: str,
    source: str,
    claimed: datetime,
    files: Sequence[Entry],
    totals: dict[str, Decimal],
) -> bytes:
    """The manifest's bytes: JSON (keys in a fixed order, decimals as strings), CSV in
    the declared columns, or nothing (a done file)."""
    if spec.format == "done":
        return b""
    if spec.format == "json":
        document: dict[str, Any] = {
            "source": source,
            "route": route,
            "claimed_at": claimed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "files": [
                {"name": f.name, "size": f.size, "sha256": f.sha256, "documents": f.documents}
                for f in files
            ],
        }
        if totals:
            document["totals"] = {name: str(value) for name, value in totals.items()}
        return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    buffer = io.StringIO()
    writer = csv.writer(
        buffer, delimiter=spec.delimiter, lineterminator="\r\n" if spec.line_end == "crlf" else "\n"
    )
    if spec.header:
        writer.writerow(spec.columns)
    for f in files:
        values = {
            "name": f.name,
            "size": f.size,
            "sha256": f.sha256,
            "documents": f.documents,
            "source": source,
            "route": route,
        }
        writer.writerow(
            [
                str(totals.get(c.removeprefix("totals."), ""))
                if c.startswith("totals.")
                else values[c]
                for c in spec.columns
            ]
        )
    try:
        return buffer.getvalue().encode(spec.encoding)
    except UnicodeEncodeError as exc:
        raise UnsafeName(
            f"manifest: {exc.object[exc.start : exc.end]!r} cannot be written in {spec.encoding}"
        ) from None


# --------------------------------------------------------------------- a partner's


def parse(spec: SourceManifest, data: bytes, name: str) -> list[Entry]:
    """The data files a partner's manifest lists, named from the source folder.

    Raises:
        ManifestRefused: it cannot be read as declared, a figure is not a figure, a
            name is listed twice with other figures, or a name would leave its folder.
    """
    rows = _json_rows(data, name) if spec.format == "json" else _csv_rows(spec, data, name)
    folder = posixpath.dirname(name)
    entries: dict[str, Entry] = {}
    for i, row in enumerate(rows, 1):
        where = f"{name}: file {i}"
        listed = row.get("name")
        if not isinstance(listed, str) or not listed.strip():
            raise ManifestRefused(f"{where}: no name")
        try:
            check_plain_name(listed.strip())
        except UnsafeName:
            raise ManifestRefused(
                f"{where}: {listed!r} is not a plain name in the manifest's folder; the "
                "manifest is refused"
            ) from None
        entry = Entry(
            posixpath.join(folder, listed.strip()),
            _count(row.get("size"), f"{where}: size"),
            _digest(row.get("sha256"), f"{where}: sha256"),
            _count(row.get("documents"), f"{where}: documents"),
            name,
        )
        if entries.setdefault(entry.name, entry) != entry:
            raise ManifestRefused(f"{where}: {listed!r} is listed twice, with other figures")
    return list(entries.values())


def _json_rows(data: bytes, name: str) -> list[dict[str, Any]]:
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestRefused(f"{name}: not JSON: {exc}") from None
    files = document.get("files") if isinstance(document, dict) else document
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise ManifestRefused(
            f'{name}: expected {{"files": [{{"name": ..., "size": ...}}, ...]}} or a list '
            "of such objects"
        )
    return files


def _csv_rows(spec: CsvManifestLayout, data: bytes, name: str) -> list[dict[str, Any]]:
    encoding = "utf-8-sig" if spec.encoding.replace("_", "-").lower() == "utf-8" else spec.encoding
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ManifestRefused(f"{name}: not {spec.encoding} text: {exc}") from None
    rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=spec.delimiter) if r]
    if spec.header:
        rows = rows[1:]
    out = []
    for n, row in enumerate(rows, 2 if spec.header else 1):
        if len(row) != len(spec.columns):
            raise ManifestRefused(
                f"{name}: line {n}: {len(row)} columns, the layout declares {len(spec.columns)}"
            )
        out.append({c: v.strip() or None for c, v in zip(spec.columns, row, strict=True) if c})
    return out


def _count(value: Any, where: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ManifestRefused(f"{where}: {value!r} is not a whole number")


def _digest(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if len(text) != 64 or any(ch not in "0123456789abcdef" for ch in text):
        raise ManifestRefused(f"{where}: {value!r} is not a sha256 (64 hex digits)")
    return text


def check_bytes(entry: Entry, size: int, sha256: str) -> None:
    """A data file's size and sha256 against its manifest's figures (those it gives).

    Raises:
        ManifestDiffers: with both figures.
    """
    if entry.size is not None and entry.size != size:
        raise ManifestDiffers(
            f"{entry.name}: {size} bytes, its manifest {entry.manifest} says {entry.size}"
        )
    if entry.sha256 is not None and entry.sha256 != sha256:
        raise ManifestDiffers(
            f"{entry.name}: sha256 {sha256}, its manifest {entry.manifest} says {entry.sha256}"
        )


def check_documents(entry: Entry, read: int) -> None:
    """A data file's record count against its manifest's (when it gives one).

    Raises:
        ManifestDiffers: with both figures.
    """
    if entry.documents is not None and entry.documents != read:
        raise ManifestDiffers(
            f"{entry.name}: {read} records read, its manifest {entry.manifest} says "
            f"{entry.documents}"
        )


class Listings:
    """What the partners' manifests in each route's drop folder list, as the last look
    read them: the look writes it, the workers taking the files read it. Each manifest
    is read once while it stays the same (name, size, time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listed: dict[str, dict[str, Entry]] = {}
        self._read: dict[tuple[str, str, int, int], list[Entry] | ManifestRefused] = {}

    def known(self, route: str, name: str, size: int, mtime_ns: int) -> list[Entry] | None:
        """What a manifest listed when it was read as it is now (None: not read so)."""
        with self._lock:
            found = self._read.get((route, name, size, mtime_ns))
        if isinstance(found, ManifestRefused):
            raise found
        return found

    def remember(
        self, route: str, name: str, size: int, mtime_ns: int, read: list[Entry] | ManifestRefused
    ) -> None:
        with self._lock:
            self._read[(route, name, size, mtime_ns)] = read

    def publish(
        self, route: str, present: set[str], manifests: Sequence[tuple[int, list[Entry]]]
    ) -> None:
        """The files listed by the manifests of a look (each with its time): a file listed
        by several is taken by the newest manifest's figures. Manifests read before that
        are not ``present`` any more are forgotten."""
        listed: dict[str, Entry] = {}
        for _, entries in sorted(manifests, key=lambda m: m[0]):
            listed.update((e.name, e) for e in entries)
        with self._lock:
            self._listed[route] = listed
            for key in [k for k in self._read if k[0] == route and k[1] not in present]:
                del self._read[key]

    def listed(self, route: str) -> dict[str, Entry]:
        """The files the route's manifests list, by name."""
        with self._lock:
            return dict(self._listed.get(route, {}))

    def entry(self, route: str, name: str) -> Entry | None:
        """What a manifest says of one data file (None: no manifest lists it)."""
        with self._lock:
            return self._listed.get(route, {}).get(name)


__all__ = [
    "NAME_FIELDS",
    "Entry",
    "Listings",
    "ManifestRefused",
    "check_bytes",
    "check_documents",
    "delivered",
    "manifest_name",
    "parse",
    "problems",
    "render",
]

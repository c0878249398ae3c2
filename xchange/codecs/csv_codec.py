"""CSV through pandas (the only module that imports it), streamed in chunks.

Every value is read as text first, and typed by the layout afterwards: ``"00123"``
stays ``"00123"`` and ``"NA"`` stays ``"NA"`` unless a field lists it in
``null_values``. pandas pads short rows silently and reports syntax errors by
internal row, so a first streaming pass with the standard library's tokenizer
checks the encoding (exact line of a bad byte), finds ragged rows and unclosed
quotes, and notes the line each record starts on. The second pass reads values
with pandas in chunks of ``CHUNK_ROWS`` rows.
"""

from __future__ import annotations

import bisect
import codecs
import contextlib
import csv
import functools
import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import pandas as pd

from xchange.codecs import Chunk, StartOver
from xchange.codecs.text import (
    MAX_LINE,
    Encoder,
    decoded_chunks,
    python_codec,
    split_lines,
    text_reading,
)
from xchange.errors import DecodeError
from xchange.layout import CsvOptions, FieldSpec, Layout, parse_field
from xchange.mapping import Document, Record
from xchange.report import Report

CHUNK_ROWS = 50_000
#: Decoded text the fast reading takes at a time (about 15,000 rows of an order export;
#: larger blocks are no faster and raise the peak memory: 8 MiB took 350 MiB at 1M rows).
FAST_BLOCK = 2 << 20
_BLANK_LINES = re.compile(r"(?:\r?\n)*")
_LONE_CR = re.compile(r"\r(?!\n)")

_QUOTING: dict[str, Literal[0, 1, 2, 3]] = {
    "minimal": csv.QUOTE_MINIMAL,
    "all": csv.QUOTE_ALL,
    "nonnumeric": csv.QUOTE_NONNUMERIC,
    "none": csv.QUOTE_NONE,
}


class LineIndex:
    """The line each record starts on, in memory that grows with the exceptions (records
    spanning several lines, blank lines), not with the number of records."""

    def __init__(self) -> None:
        self.count = 0
        self.first = 0
        self._at: list[int] = [0]  # record index from which ...
        self._extra: list[int] = [0]  # ... this many extra lines come before it

    def add_run(self, line: int, count: int) -> None:
        """Records starting on ``count`` consecutive lines from ``line``."""
        if count:
            self.add(line)
            self.count += count - 1

    def add(self, line: int) -> None:
        if self.count == 0:
            self.first = line
        expected = self.first + self.count + self._extra[-1]
        if line != expected:
            self._at.append(self.count)
            self._extra.append(line - self.first - self.count)
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> int:
        return self.first + index + self._extra[bisect.bisect_right(self._at, index) - 1]


#: Called once with the first row: the header's cells (None without a header), its
#: width, and its line.
OnFirst = Callable[[list[str] | None, int, int], None]


def _structure(
    stream: BinaryIO,
    encoding: str,
    layout: Layout,
    origin: str,
    report: Report,
    on_first: OnFirst | None = None,
    check: Callable[[str, int], None] | None = None,
) -> tuple[LineIndex, list[str] | None]:
    """First pass: line of each record, ragged rows, the header; decode errors raise.

    Runs of lines without a quote character (most files) are checked by counting
    delimiters per line; from the first quote on, the standard library's tokenizer reads
    the rest (quoted fields may span lines), and each record holding a quote is checked
    against RFC 4180 (a quote only around a whole field)."""
    opts = layout.csv
    scan = _Scan(opts.delimiter, opts.header, report, on_first)
    chunks = decoded_chunks(stream, encoding, origin, check)
    rest = ""
    for chunk in chunks:
        text = rest + chunk
        cut = text.rfind("\n") + 1
        # (a \r last in the text may be the first half of a \r\n: decided next time)
        lone_cr = _LONE_CR.search(text)
        if opts.quote in text or (lone_cr is not None and lone_cr.start() < len(text) - 1):
            # Quotes, or line ends other than \n and \r\n: the tokenizer takes over.
            scan.tokenize(itertools.chain([text], chunks), opts, origin)
            return scan.starts, scan.header
        if cut == 0 and len(text) > MAX_LINE:
            raise DecodeError(
                f"{origin}: line {scan.line} is longer than {MAX_LINE // (1024 * 1024)} MiB;"
                " refused (a runaway field or a file without line breaks)"
            )
        scan.count(text[:cut])
        rest = text[cut:]
    if rest:
        scan.count(rest)
    return scan.starts, scan.header


def _field_pattern(opts: CsvOptions) -> str:
    """One field as RFC 4180 writes it: quoted as a whole, or holding no quote (with
    ``skipinitialspace``, spaces may come before the opening quote; with ``bare_quotes =
    "literal"``, an unquoted field may hold quotes after its first character)."""
    d, q = re.escape(opts.delimiter), re.escape(opts.quote)
    space = " *" if opts.skipinitialspace else ""
    unquoted = (
        f"(?:[^{q}{d}\r\n][^{d}\r\n]*)?" if opts.bare_quotes == "literal" else f"[^{q}{d}\r\n]*"
    )
    return f"{space}{q}(?:[^{q}]|{q}{q})*{q}|{unquoted}"


def _record_pattern(opts: CsvOptions) -> re.Pattern[str]:
    """One whole record, each field as :func:`_field_pattern` says."""
    field = f"(?:{_field_pattern(opts)})"
    d = re.escape(opts.delimiter)
    return re.compile(f"{field}(?:{d}{field})*(?:\r\n|\n|\r)?")


def _bare_quote(text: str, opts: CsvOptions) -> tuple[int, int]:
    """(line offset, column) of the first quote that is not around a whole field."""
    delimiter = opts.delimiter
    field = re.compile(_field_pattern(opts))
    pos = 0
    while True:
        match = field.match(text, pos)
        pos = match.end() if match else pos
        if pos >= len(text) or text[pos] in "\r\n":
            break
        if text[pos] == delimiter:
            pos += 1
            continue
        break  # a quote inside an unquoted field, or text after a closing quote
    before = text[:pos]
    newlines = len(re.findall(r"\r\n|\r|\n", before))
    line_start = max(before.rfind("\n"), before.rfind("\r")) + 1
    return newlines, pos - line_start + 1


class _Scan:
    """The state of the first pass: lines seen, record starts, header, width."""

    def __init__(
        self, delimiter: str, header: bool, report: Report, on_first: OnFirst | None
    ) -> None:
        self.delimiter = delimiter
        self.want_header = header
        self.report = report
        self.on_first = on_first
        self.starts = LineIndex()
        self.header: list[str] | None = None
        self.width: int | None = None
        #: The number of the next physical line.
        self.line = 1

    def first(self, row: list[str], line: int) -> None:
        """The first row: the header (or the first record), which sets the width."""
        self.width = len(row)
        if self.want_header:
            self.header = list(row)
        else:
            self.starts.add(line)
        if self.on_first is not None:
            self.on_first(self.header, self.width, line)

    def count(self, block: str) -> None:
        """Lines without quotes (each ends in \n or \r\n, but maybe the file's last)."""
        lines = block.split("\n")
        if lines[-1] == "":
            lines.pop()
        first = self.line
        self.line += len(lines)
        index = 0
        while self.width is None and index < len(lines):
            fields = lines[index].rstrip("\r")
            index += 1
            if not fields:
                continue  # blank lines before the first row are skipped
            self.first(fields.split(self.delimiter), first + index - 1)
        if index:
            first, lines = first + index, lines[index:]
        counts = list(map(str.count, lines, itertools.repeat(self.delimiter)))
        expected = (self.width or 1) - 1
        blank = lines.count("") + lines.count("\r")
        if not blank and counts.count(expected) == len(lines):
            self.starts.add_run(first, len(lines))  # the usual case: all records, all whole
            return
        for offset, (text, found) in enumerate(zip(lines, counts, strict=True)):
            if text in ("", "\r"):
                continue
            self.starts.add(first + offset)
            if found != expected:
                self._ragged(first + offset, found + 1)

    def tokenize(self, chunks: Iterable[str], opts: CsvOptions, origin: str) -> None:
        """The rest of the file through the standard library's CSV tokenizer."""
        raw: list[str] = []

        def lines() -> Iterator[str]:
            for line in split_lines(chunks, origin):
                raw.append(line)
                yield line

        quote, skip_space = opts.quote, opts.skipinitialspace
        whole = _record_pattern(opts)
        reader = csv.reader(
            lines(),
            delimiter=self.delimiter,
            quotechar=quote,
            strict=True,
            skipinitialspace=skip_space,
        )
        base = self.line - 1
        line = self.line
        try:
            for row in reader:
                start, line = line, base + reader.line_num + 1
                text = "".join(raw)
                raw.clear()
                if not row:
                    continue
                bare = quote in text and whole.fullmatch(text) is None
                header_row = self.width is None
                if header_row:
                    self.first(row, start)
                if bare:
                    self._bare(text, start, opts)
                if header_row:
                    continue
                self.starts.add(start)
                if not bare and len(row) != self.width:
                    self._ragged(start, len(row))
        except csv.Error as exc:
            raise DecodeError(
                f"{origin}: line {base + reader.line_num}: CSV syntax: {exc}"
            ) from None

    def _bare(self, text: str, start: int, opts: CsvOptions) -> None:
        down, column = _bare_quote(text, opts)
        self.report.add(
            f"line {start + down}",
            "(row)",
            "quote",
            None,
            f"column {column}: a quote inside a field that does not start with one "
            "(RFC 4180: quote the whole field and double quotes inside it; a layout may set "
            'skipinitialspace = true or bare_quotes = "literal" in [csv] if the export '
            "writes such fields)",
        )

    def _ragged(self, line: int, found: int) -> None:
        self.report.add(
            f"line {line}",
            "(row)",
            "columns",
            None,
            f"ragged row: expected {self.width} fields, found {found}",
        )


@dataclass(slots=True)
class Prepared:
    """What the first pass learned about a CSV file."""

    encoding: str
    start: int
    starts: LineIndex
    header: list[str]
    columns: list[tuple[FieldSpec, int | None]]


def _blocks(chunks: Iterable[str]) -> Iterator[str]:
    """Decoded text in blocks of about ``FAST_BLOCK`` characters, each ending with a line
    (the last block: with the file).

    Raises:
        StartOver: a line longer than ``MAX_LINE`` (the standard reading refuses it).
    """
    pieces: list[str] = []
    size = 0
    rest = ""
    for chunk in chunks:
        pieces.append(chunk)
        size += len(chunk)
        if size < FAST_BLOCK:
            continue
        text = rest + "".join(pieces)
        pieces, size = [], 0
        cut = text.rfind("\n") + 1
        if cut == 0 and len(text) > MAX_LINE:
            raise StartOver
        if cut:
            yield text[:cut]
        rest = text[cut:]
    text = rest + "".join(pieces)
    if text:
        yield text


class _Texts(Mapping[str, Sequence[str]]):
    """A fast chunk's columns by field key, as Python strings when first asked for."""

    def __init__(self, block: Any, positions: dict[str, int | None]) -> None:
        self.block = block
        self.positions = {k: p for k, p in positions.items() if p is not None}
        self.made: dict[str, list[str]] = {}

    def __getitem__(self, key: str) -> list[str]:
        known = self.made.get(key)
        if known is None:
            known = self.made[key] = self.block.texts(self.positions[key])
        return known

    def __iter__(self) -> Iterator[str]:
        return iter(self.positions)

    def __len__(self) -> int:
        return len(self.positions)


def _block_records(
    block: Any,
    columns: list[tuple[FieldSpec, int | None]],
    starts: LineIndex,
    offset: int,
    report: Report,
) -> Iterator[Record]:
    """Typed records of one fast chunk (the row path), as :meth:`CsvCodec.frame_records`
    makes them."""
    texts = {pos: block.texts(pos) for _, pos in columns if pos is not None}
    for i in range(block.size):
        where = f"line {starts[offset + i]}"
        failed: set[str] = set()
        values = {
            spec.name: parse_field(
                spec, texts[pos][i] if pos is not None else None, where, report, failed
            )
            for spec, pos in columns
        }
        yield Record(where, values, failed=failed)


class CsvCodec:
    """The CSV codec."""

    def records(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report
    ) -> Iterator[Record]:
        prepared = self.prepare(stream, layout, origin, report)
        if prepared is None:
            return
        for frame, offset in self.frames(stream, layout, origin, prepared):
            yield from self.frame_records(frame, prepared, offset, report)

    def prepare(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report
    ) -> Prepared | None:
        """The structural pass; None when there are no rows or the structure is broken.

        The header is checked against the layout as soon as it is read, whether or not
        rows follow, so that its problems come first in the report."""
        encoding, check = text_reading(
            stream,
            layout.encoding,
            layout.mojibake,
            origin,
            report,
            plausible=layout.check_text,
        )
        start = stream.tell()
        found: list[list[tuple[FieldSpec, int | None]]] = []

        def on_first(header: list[str] | None, width: int, line: int) -> None:
            found.append(self._columns(header, width, line, layout, report))

        starts, header = _structure(stream, encoding, layout, origin, report, on_first, check)
        if layout.csv.header and header is None:
            raise DecodeError(f"{origin}: the file is empty: not even a header line")
        if report or not starts or not found:
            return None
        names = header if header is not None else [f.key for f in layout.fields]
        return Prepared(encoding, start, starts, names, found[0])

    def chunks(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report
    ) -> Iterator[Chunk]:
        """The rows ``CHUNK_ROWS`` at a time as columns of text (the columnar fast path)."""
        prepared = self.prepare(stream, layout, origin, report)
        if prepared is None or report:
            return
        for frame, offset in self.frames(stream, layout, origin, prepared):
            # (pandas columns of text: what a Chunk's columns are, as the stubs cannot say)
            columns: dict[str, Any] = {
                spec.key: frame.iloc[:, pos] for spec, pos in prepared.columns if pos is not None
            }

            def rows(
                report: Report, frame: pd.DataFrame = frame, offset: int = offset
            ) -> Iterator[Record]:
                return self.frame_records(frame, prepared, offset, report)

            yield Chunk(columns, len(frame), offset, True, rows)

    def fast_chunks(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report
    ) -> Iterator[Chunk]:
        """The records as :meth:`chunks` gives them, read in one pass: each block of text is
        decoded once, its structure checked, and its values read by Arrow (the columns
        stay Arrow strings for :mod:`xchange.codecs.arrow`; the columnar plan and the row
        path get Python strings when they ask).

        For files without a quote character (most exports), whose records are all whole
        and plain. Anything else (a quote, a problem of the header or the structure, a
        decoding error, a blank file) raises :class:`StartOver`: :meth:`chunks` then
        reads the file and reports what is wrong as it always has.
        """
        from xchange.codecs.arrow import read_block

        opts = layout.csv
        if opts.skipinitialspace or opts.delimiter in "\r\n":
            raise StartOver
        encoding, _ = text_reading(
            stream,
            layout.encoding,
            layout.mojibake,
            origin,
            report,
            plausible=layout.check_text,
        )
        warnings = len(report.warnings)
        found: list[list[tuple[FieldSpec, int | None]]] = []

        def on_first(header: list[str] | None, width: int, line: int) -> None:
            found.append(self._columns(header, width, line, layout, report))

        def clean() -> None:
            if report or len(report.warnings) != warnings:
                raise StartOver

        scan = _Scan(opts.delimiter, opts.header, report, on_first)
        offset = 0
        try:
            # (the mojibake check looks only where two Latin-1 characters meet: Arrow
            # finds them in a whole block at once, and a block with any is read again the
            # standard way, which checks it piece by piece)
            for block in _blocks(decoded_chunks(stream, encoding, origin)):
                clean()
                raw = block.encode("utf-8")  # (what Arrow reads)
                before = len(scan.starts)
                data = body = raw
                if scan.width is None:
                    end = block.find("\n", _BLANK_LINES.match(block).end())  # type: ignore[union-attr]
                    head = block if end < 0 else block[: end + 1]
                    if opts.quote in head or "\r" in head.rstrip("\r\n"):
                        raise StartOver
                    scan.count(head)
                    clean()
                    if scan.width is None:
                        continue  # blank lines so far
                    body = raw[len(head.encode("utf-8")) :]
                    if opts.header:
                        data = body
                if not data:
                    continue
                read = read_block(data, scan.width or 0, opts.delimiter, opts.quote)
                if read is None or not found or read.latin or read.odd:
                    # ragged rows, quotes, a NUL, a lone CR, maybe mojibake
                    raise StartOver
                if read.blank:
                    scan.count(body.decode("utf-8"))  # record starts one by one
                    clean()
                else:  # (each line a record)
                    lines = read.size - (len(scan.starts) - before)
                    scan.starts.add_run(scan.line, lines)
                    scan.line += lines
                rows = len(scan.starts) - before
                if rows != read.size:
                    raise StartOver
                if not rows:
                    continue
                columns = found[0]
                positions = {spec.key: pos for spec, pos in columns}
                yield Chunk(
                    _Texts(read, positions),
                    rows,
                    offset,
                    True,
                    functools.partial(_block_records, read, columns, scan.starts, offset),
                    (read, positions),
                )
                offset += rows
        except DecodeError:
            raise StartOver from None
        clean()
        if not offset:
            raise StartOver  # no record, or not even a header: as the standard way says

    def frames(
        self, stream: BinaryIO, layout: Layout, origin: str, prepared: Prepared
    ) -> Iterator[tuple[pd.DataFrame, int]]:
        """The rows as text, ``CHUNK_ROWS`` at a time, with the index of each chunk's first."""
        stream.seek(prepared.start)
        opts = layout.csv
        try:
            chunks = pd.read_csv(
                stream,
                encoding=python_codec(prepared.encoding),
                sep=opts.delimiter,
                quotechar=opts.quote,
                header=0 if opts.header else None,
                dtype=object,  # text as Python strings (what the plan and the row path use)
                keep_default_na=False,
                na_filter=False,
                index_col=False,
                skip_blank_lines=True,
                skipinitialspace=opts.skipinitialspace,
                engine="c",
                chunksize=CHUNK_ROWS,
            )
            offset = 0
            # Closed even when the reading stops early (a problem, a stop): pandas then
            # lets go of the text wrapper it put around the stream. A generator left
            # unfinished by an error is closed later, maybe after its stream was: then
            # there is nothing left to close.
            try:
                for frame in chunks:
                    yield frame, offset
                    offset += len(frame)
            finally:
                with contextlib.suppress(ValueError, OSError):
                    chunks.close()
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DecodeError(f"{origin}: CSV syntax: {exc}") from None

    @staticmethod
    def frame_records(
        frame: pd.DataFrame, prepared: Prepared, offset: int, report: Report
    ) -> Iterator[Record]:
        """Typed records of one chunk (the row path)."""
        for i, row in enumerate(frame.to_numpy(dtype=object).tolist(), start=offset):
            where = f"line {prepared.starts[i]}"
            failed: set[str] = set()
            values = {
                spec.name: parse_field(
                    spec, row[pos] if pos is not None else None, where, report, failed
                )
                for spec, pos in prepared.columns
            }
            yield Record(where, values, failed=failed)

    @staticmethod
    def _columns(
        header: list[str] | None, width: int, line: int, layout: Layout, report: Report
    ) -> list[tuple[FieldSpec, int | None]]:
        """Where each field's values are; every column the layout and the file do not
        agree on is a problem at the header's line (unless the layout relaxes it)."""
        opts = layout.csv
        where = f"line {line}"
        if header is None:
            names: list[str] = [f.key for f in layout.fields]
            for spec in layout.fields[width:]:
                CsvCodec._missing(spec, where, opts.missing_columns, report, by_position=True)
            if width > len(layout.fields):
                CsvCodec._unknown(
                    layout,
                    where,
                    f"the rows have {width} columns, layout {layout.name} declares "
                    f"{len(layout.fields)}",
                    report,
                    layout.unknown_columns(),
                )
            return [(f, i if i < width else None) for i, f in enumerate(layout.fields)]
        keys = [f.key for f in layout.fields]
        if opts.header_spaces == "trim":
            header = [c.strip() for c in header]
        else:
            spaced = [(i, c) for i, c in enumerate(header) if c != c.strip() and c.strip() in keys]
            for i, cell in spaced:
                report.add(
                    where,
                    cell.strip(),
                    "header",
                    cell,
                    f"column {i + 1} of the header is {cell!r}, with spaces around the name "
                    f"{cell.strip()!r}: it is not that column (fix the export, or set "
                    'header_spaces = "trim" in [csv] if it always writes them)',
                )
            if spaced:
                return [(f, None) for f in layout.fields]
        if not set(keys) & set(header):
            shown = ", ".join(repr(c) for c in header[:8]) + (", ..." if len(header) > 8 else "")
            report.add(
                where,
                "(header)",
                "header",
                None,
                f"this is not the header of layout {layout.name}: none of its columns "
                f"({', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''}) is there; "
                f"found {shown}",
            )
            return [(f, None) for f in layout.fields]
        out: list[tuple[FieldSpec, int | None]] = []
        for spec in layout.fields:
            places = [i for i, name in enumerate(header) if name == spec.key]
            if len(places) > 1:
                report.add(
                    where,
                    spec.key,
                    "column",
                    None,
                    f"column {spec.key!r} appears {len(places)} times in the header (columns "
                    f"{', '.join(str(i + 1) for i in places)}): which one to read is unclear",
                )
            if places:
                out.append((spec, places[0]))
            else:
                CsvCodec._missing(spec, where, opts.missing_columns, report)
                out.append((spec, None))
        known = set(keys)
        by_policy: dict[str, list[str]] = {}
        for name in header:
            if name not in known:  # a column's own unknown_in, else the layout's unknown
                said: str = layout.unknown_in.get(name, layout.unknown_columns())
                by_policy.setdefault(said, []).append(name)
        for kind, names in by_policy.items():
            shown = ", ".join(repr(c) if c else "(an unnamed column)" for c in names[:10])
            CsvCodec._unknown(
                layout,
                where,
                f"column(s) not in layout {layout.name}: {shown}"
                f"{', ...' if len(names) > 10 else ''}",
                report,
                kind,
            )
        return out

    @staticmethod
    def _unknown(layout: Layout, where: str, what: str, report: Report, policy: str) -> None:
        """Columns the layout does not declare, as ``policy`` (its ``unknown``, or a
        column's own ``unknown_in``) says."""
        if policy == "ignore":
            return
        if policy == "warn":
            report.warn(f'{where}: {what}: not read (unknown = "warn")')
            return
        report.add(
            where,
            "(header)",
            "unknown",
            None,
            f"{what} (their values would be dropped; declare them as fields, or say "
            'unknown = "ignore" or "warn" in the layout)',
        )

    @staticmethod
    def _missing(
        spec: FieldSpec, where: str, policy: str, report: Report, *, by_position: bool = False
    ) -> None:
        what = "the rows have no column for" if by_position else "the header has no column"
        if spec.required:
            report.add(
                where,
                spec.key,
                "column",
                None,
                f"required column {spec.key!r} is missing from the header"
                if not by_position
                else f"{what} required field {spec.key!r}",
            )
        elif policy == "reject":
            report.add(
                where,
                spec.key,
                "column",
                None,
                f"{what} {spec.key!r}"
                ' (set missing_columns = "allow" in [csv] if the export may leave it out)',
            )

    def write(self, docs: Iterable[Document], layout: Layout, origin: str, out: Any) -> int:
        writer = CsvWriter(layout, origin, out)
        rows: list[list[str]] = []
        for doc in docs:
            rows.append([spec.render(doc.header.get(spec.name)) for spec in layout.fields])
            if len(rows) >= CHUNK_ROWS:
                writer.rows(rows)
                rows = []
        writer.rows(rows)
        return writer.close()


class CsvWriter:
    """Writes rendered rows to a CSV file a chunk at a time (header once, BOM once)."""

    def __init__(self, layout: Layout, origin: str, out: Any) -> None:
        self.opts = layout.csv
        self.encoder = Encoder(layout.encoding, origin)
        self.columns = [spec.key for spec in layout.fields]
        self.out = out
        self.header = self.opts.header
        self.count = 0
        #: Text already in the output encoding when it is UTF-8 (what Arrow writes).
        self.utf8 = codecs.lookup(python_codec(layout.encoding)).name == "utf-8"

    def rendered(self, out: Any) -> None:
        """Rows the Arrow plan rendered (:class:`xchange.codecs.arrow.Rendered`): its
        UTF-8 lines when no value needs quoting, else through the standard writer."""
        data = (
            out.lines(self.opts.delimiter, self.opts.quote, self.opts.line_ending)
            if self.opts.quoting == "minimal"
            else None
        )
        if data is None:
            self.rows(out.rows())
            return
        if self.header:
            self.rows([])
        self.out.write(data if self.utf8 else self.encoder(data.decode("utf-8")))
        self.count += len(out)

    def rows(self, rows: list[list[str]] | pd.DataFrame) -> None:
        """Write rendered rows (text only): a list of rows, or a frame of text columns."""
        if len(rows) == 0 and not self.header:
            return
        buf = io.StringIO()
        writer = csv.writer(
            buf,
            delimiter=self.opts.delimiter,
            quotechar=self.opts.quote,
            lineterminator=self.opts.line_ending,
            quoting=_QUOTING[self.opts.quoting],
        )
        if self.header:
            writer.writerow(self.columns)
        if isinstance(rows, pd.DataFrame):
            writer.writerows(zip(*(rows[c].tolist() for c in rows.columns), strict=True))
        else:
            writer.writerows(rows)
        self.out.write(self.encoder(buf.getvalue()))
        self.header = False
        self.count += len(rows)

    def close(self) -> int:
        if self.header:  # no row at all: still a header
            self.rows([])
        self.out.write(self.encoder("", final=True))
        return self.count

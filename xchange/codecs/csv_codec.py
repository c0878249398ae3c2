"""CSV through pandas: every value read as text first, typed by the layout afterwards.

``"00123"`` stays ``"00123"`` and ``"NA"`` stays ``"NA"`` unless the layout's field
says otherwise (``null_values``). pandas pads short rows silently, so a structural
pass with the standard library's tokenizer first finds ragged rows and unclosed
quotes, and the line each record starts on, for reports a person can act on.
"""

from __future__ import annotations

import csv
import io

import pandas as pd

from xchange.codecs.text import decode, encode
from xchange.errors import DecodeError
from xchange.layout import FieldSpec, Layout, parse_field
from xchange.mapping import Document, Record
from xchange.report import Report

_QUOTING = {
    "minimal": csv.QUOTE_MINIMAL,
    "all": csv.QUOTE_ALL,
    "nonnumeric": csv.QUOTE_NONNUMERIC,
    "none": csv.QUOTE_NONE,
}


def _record_lines(text: str, layout: Layout, origin: str, report: Report) -> list[int]:
    """Line on which each record starts; ragged rows go to the report."""
    opts = layout.csv
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=opts.delimiter, quotechar=opts.quote, strict=True
    )
    starts: list[int] = []
    width: int | None = None
    line = 1
    try:
        for row in reader:
            start, line = line, reader.line_num + 1
            if not row:
                continue
            if width is None:
                width = len(row)
                if opts.header:
                    continue
            starts.append(start)
            if len(row) != width:
                report.add(
                    f"line {start}",
                    "(row)",
                    "columns",
                    None,
                    f"ragged row: expected {width} fields, found {len(row)}",
                )
    except csv.Error as exc:
        raise DecodeError(f"{origin}: line {reader.line_num}: CSV syntax: {exc}") from None
    return starts


class CsvCodec:
    """The CSV codec."""

    def read(self, data: bytes, layout: Layout, origin: str, report: Report) -> list[Record]:
        text, _used = decode(data, layout.encoding, origin)
        starts = _record_lines(text, layout, origin, report)
        if report:
            return []
        opts = layout.csv
        try:
            frame = pd.read_csv(
                io.StringIO(text),
                sep=opts.delimiter,
                quotechar=opts.quote,
                header=0 if opts.header else None,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                index_col=False,
                skip_blank_lines=True,
                engine="c",
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DecodeError(f"{origin}: CSV syntax: {exc}") from None
        columns = self._columns(frame, layout, report)
        records: list[Record] = []
        for i, row in enumerate(frame.itertuples(index=False, name=None)):
            line = starts[i] if i < len(starts) else i + 1 + int(opts.header)
            where = f"line {line}"
            values = {
                spec.name: parse_field(spec, row[pos] if pos is not None else None, where, report)
                for spec, pos in columns
            }
            records.append(Record(where, values))
        return records

    @staticmethod
    def _columns(
        frame: pd.DataFrame, layout: Layout, report: Report
    ) -> list[tuple[FieldSpec, int | None]]:
        if not layout.csv.header:
            width = len(frame.columns)
            return [(f, i if i < width else None) for i, f in enumerate(layout.fields)]
        header = [str(c).strip() for c in frame.columns]
        out: list[tuple[FieldSpec, int | None]] = []
        for spec in layout.fields:
            if spec.key in header:
                out.append((spec, header.index(spec.key)))
            else:
                if spec.required:
                    report.add(
                        "line 1",
                        spec.key,
                        "column",
                        None,
                        f"required column {spec.key!r} is missing from the header",
                    )
                out.append((spec, None))
        return out

    def write(self, docs: list[Document], layout: Layout, origin: str) -> bytes:
        opts = layout.csv
        rows = [[spec.render(doc.header.get(spec.name)) for spec in layout.fields] for doc in docs]
        frame = pd.DataFrame(rows, columns=[spec.key for spec in layout.fields], dtype=object)
        buf = io.StringIO()
        frame.to_csv(
            buf,
            index=False,
            header=opts.header,
            sep=opts.delimiter,
            quotechar=opts.quote,
            lineterminator=opts.line_ending,
            quoting=_QUOTING[opts.quoting],
        )
        return encode(buf.getvalue(), layout.encoding, origin)

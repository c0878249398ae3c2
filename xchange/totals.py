"""Control totals: counts and exact sums, from a source file as it is read and from its
outputs as they were written, read again through the target layout (a path that shares
nothing with the mapping). They must agree to the last digit before anything is
delivered: a mapping that changed an amount, dropped a line or wrote a value twice is
stopped, and the file quarantined with both figures.

A mapping declares them::

    [totals]
    lines  = {}                                   # source lines (or records) = target lines
    amount = { source = "amount", target = "Amount" }   # sum of each, exact
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from xchange.codecs import codec_for
from xchange.errors import MappingError, TotalsDiffer
from xchange.layout import Layout
from xchange.mapping import Record, TotalSpec
from xchange.report import Report
from xchange.sink import Output


def _where(layout: Layout, name: str) -> tuple[str, Any] | None:
    for level, specs in (("record", layout.fields), ("lines", layout.line_fields)):
        for spec in specs:
            if spec.name == name:
                return level, spec
    return None


class Tally:
    """Counts and sums of one side, by total's name."""

    def __init__(self, totals: dict[str, TotalSpec], layout: Layout, side: str) -> None:
        self.layout = layout
        self.plan = [
            (name, getattr(spec, side), _where(layout, getattr(spec, side) or ""))
            for name, spec in totals.items()
        ]
        self.values: dict[str, Decimal] = {name: Decimal(0) for name in totals}

    def add(self, record: Record) -> None:
        """One record (with its lines) read or written."""
        nested = self.layout.shape == "nested"
        for name, field, where in self.plan:
            if field is None:
                self.values[name] += len(record.lines) if nested else 1
                continue
            assert where is not None
            rows = record.lines if where[0] == "lines" else [record]
            for row in rows:
                value = row.values.get(field)
                if value is not None:
                    self.values[name] += Decimal(value)

    def tap(self, records: Iterable[Record]) -> Iterator[Record]:
        """The records, counted and summed as they go by."""
        for record in records:
            self.add(record)
            yield record


def written(totals: dict[str, TotalSpec], target: Layout, outputs: list[Output]) -> Tally:
    """The outputs' totals, each output read again through the target layout (as read
    back, a batch is its documents; a wrapped JSON document its body).

    Raises:
        MappingError: an output does not read back in its own layout.
    """
    layout = readable(target)
    codec = codec_for(layout)
    tally = Tally(totals, layout, "target")
    for output in outputs:
        report = Report(output.name)
        with (
            io.BytesIO(output.content)
            if output.content is not None
            else open(output.path or "", "rb")  # (streamed: an output may be large)
        ) as stream:
            for record in codec.records(stream, layout, output.name, report):
                tally.add(record)
        if report:
            first = report.ordered()[0]
            raise MappingError(
                f"{output.name}: written in layout {target.name}, it does not read back in "
                f"it ({first.line(200)}): the totals cannot be checked"
            )
    return tally


def readable(layout: Layout) -> Layout:
    """The layout as its own written files are read: a batch's documents under its
    batch element or key, a document's body under its wrap."""
    if layout.codec == "json":
        opts = layout.json_
        path = "$"
        if opts.batch_key:
            path += f".{opts.batch_key}[*]"
        if opts.wrap:
            path += f".{opts.wrap}"
        json = opts.model_copy(update={"records": path, "wrap": None, "batch_key": None})
        return layout.model_copy(update={"json_": json})
    if layout.codec == "xml" and layout.xml is not None and layout.xml.batch_root:
        xml = layout.xml.model_copy(
            update={
                "root": layout.xml.batch_root,
                "records": f"/{layout.xml.batch_root}/{layout.xml.root}",
            }
        )
        return layout.model_copy(update={"xml": xml})
    return layout


def agree(source: Tally, target: Tally, name_of_file: str) -> dict[str, Decimal]:
    """The totals, once both sides agree.

    Raises:
        TotalsDiffer: naming each total that differs, with both figures.
    """
    differ = [
        f"{name}: the source has {_shown(value)}, the outputs {_shown(target.values[name])}"
        for name, value in source.values.items()
        if value != target.values[name]
    ]
    if differ:
        raise TotalsDiffer(
            f"{name_of_file}: control totals differ ({'; '.join(differ)}): the mapping "
            "changed, dropped or repeated something; nothing was delivered"
        )
    return dict(source.values)


def _shown(value: Decimal) -> str:
    return format(value, "f")


def summary(values: dict[str, Decimal]) -> str:
    """``totals: amount 1234.50, lines 12`` (empty when there are none)."""
    if not values:
        return ""
    return "totals: " + ", ".join(f"{k} {_shown(v)}" for k, v in sorted(values.items()))


__all__ = ["Tally", "agree", "readable", "summary", "written"]

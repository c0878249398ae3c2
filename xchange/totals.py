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
from xchange.expressions import Expression, ExpressionError
from xchange.layout import Layout
from xchange.mapping import Document, Record, TotalExpr, TotalSpec, total_expression
from xchange.report import Report
from xchange.sink import Output


def _figure_of(
    summed: str | TotalExpr | None, layout: Layout
) -> tuple[str | Expression | None, bool]:
    """What a total sums on one side (a field's name, an expression, or None: a count),
    and whether it is found on each line (else on each record)."""
    lines = {f.name for f in layout.line_fields}
    if isinstance(summed, TotalExpr):
        expression = total_expression(summed, layout)
        return expression, bool(expression.names & lines)
    return summed, summed in lines


def _evaluated(expression: Expression, name: str, record: Record, row: Record) -> Any:
    """A total's expression for one row (a line sees its document's fields too).

    Raises:
        MappingError: the values do not allow it (a text where a number is needed).
    """
    values = record.values if row is record else {**record.values, **row.values}
    try:
        return expression.evaluate(values)
    except ExpressionError as exc:
        raise MappingError(
            f"{row.location}: control total {name} ({expression.text}): {exc}"
        ) from None


class Tally:
    """Counts and sums of one side, by total's name (``amount``), or by name and the
    value of its ``by`` field (``amount[CNY]``); on the source side, also the figures
    the source states itself, to be checked against what was read."""

    def __init__(
        self,
        totals: dict[str, TotalSpec],
        layout: Layout,
        side: str,
        tables: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.layout = layout
        #: Per total kept apart by a source value the mapping translates: its table.
        self._tables = {
            name: (tables or {}).get(spec.by.table, {})
            for name, spec in totals.items()
            if side == "source" and spec.by is not None and spec.by.table is not None
        }
        self.nested = layout.shape == "nested"
        self.plan = [
            (
                name,
                spec,
                _figure_of(getattr(spec, side), layout),
                getattr(spec.by, side) if spec.by is not None else None,
                _stated_per(spec, layout) if side == "source" else None,
            )
            for name, spec in totals.items()
        ]
        self.values: dict[str, Decimal] = {
            name: Decimal(0) for name, spec in totals.items() if spec.by is None
        }
        #: Per (total, scope): the figure read, and the figures the source stated.
        self._scoped: dict[tuple[str, str], Decimal] = {}
        self._stated: dict[tuple[str, str], set[Decimal]] = {}
        #: Stated figures that differ from what was read (source side), in reading order.
        self.problems: list[str] = []

    def add(self, record: Record) -> None:
        """One record (with its lines) read or written."""
        for name, spec, (field, on_lines), by, stated_per in self.plan:
            lines = on_lines if field is not None else self.nested
            rows = record.lines if lines else [record]
            figure = Decimal(0)
            for row in rows:
                if field is None:
                    amount = Decimal(1)
                else:
                    value = (
                        row.values.get(field)
                        if isinstance(field, str)
                        else _evaluated(field, name, record, row)
                    )
                    if value is None:
                        continue
                    amount = Decimal(value)
                figure += amount
                key = name
                if by is not None:
                    key = self._group(name, row.values.get(by, record.values.get(by)))
                    if stated_per == "group":
                        self._scope(name, key, amount)
                self.values[key] = self.values.get(key, Decimal(0)) + amount
            if stated_per is None or spec.stated is None:
                continue
            said = record.values.get(spec.stated)
            if stated_per == "document":
                if said is not None and Decimal(said) != figure:
                    self.problems.append(
                        f"{record.location}: {spec.stated} states {_shown(Decimal(said))}, "
                        f"its lines give {name} {_shown(figure)}"
                    )
                continue
            if stated_per == "file":
                self._scope(name, "", figure)
                scope = ""
            else:
                scope = self._group(name, record.values.get(by or ""))
            if said is not None:
                self._stated.setdefault((name, scope), set()).add(Decimal(said))

    def _group(self, name: str, value: Any) -> str:
        """The key of a total kept apart by ``value``: ``amount[CNY]`` (as the target
        names it, where a table translates it)."""
        if isinstance(value, Decimal):  # (59.9 and 59.90 are one value)
            value = value.normalize() if value else Decimal(0)
            text = format(value, "f")
        else:
            text = "" if value is None else str(value)
        table = self._tables.get(name)
        if table is not None:
            text = table.get(text, f"{text}?")
        return f"{name}[{text}]"

    def _scope(self, name: str, scope: str, amount: Decimal) -> None:
        self._scoped[(name, scope)] = self._scoped.get((name, scope), Decimal(0)) + amount

    def stated_problems(self) -> list[str]:
        """Each figure the source states that what was read does not give (per group and
        per file; a document's were found as it was read)."""
        problems = list(self.problems)
        for (name, scope), said in self._stated.items():
            label = scope or f"{name} of the file"
            read = self._scoped.get((name, scope), Decimal(0))
            if len(said) > 1:
                figures = ", ".join(sorted(_shown(v) for v in said))
                problems.append(f"{label}: the source states different figures ({figures})")
            elif read != next(iter(said)):
                problems.append(
                    f"{label}: the source states {_shown(next(iter(said)))}, "
                    f"what was read gives {_shown(read)}"
                )
        return problems

    def tap(self, records: Iterable[Record]) -> Iterator[Record]:
        """The records, counted and summed as they go by."""
        for record in records:
            self.add(record)
            yield record


def _stated_per(spec: TotalSpec, layout: Layout) -> str | None:
    if spec.stated is None:
        return None
    if spec.stated_per is not None:
        return spec.stated_per
    stated = next((f for f in layout.fields if f.name == spec.stated), None)
    column = str(getattr(stated, "column", "") or "")
    if column.startswith(("$.", "^", "/")):
        return "file"  # read from outside the record: the document's root
    if layout.shape == "nested":
        return "document"
    return "group" if spec.by is not None else "file"


class LeftOut:
    """Documents left out of the outputs on purpose (repeats, delivered before), written
    and read back through the target layout as the outputs are, one at a time: the totals
    still compare everything read with everything the mapping made."""

    def __init__(self, totals: dict[str, TotalSpec], target: Layout) -> None:
        self.target = target
        self.layout = readable(target)
        self.tally = Tally(totals, self.layout, "target")
        self._writer = codec_for(target)
        self._reader = codec_for(self.layout)

    def add(self, document: Document, name: str) -> None:
        """One document left out (``name``: where it came from, for a message).

        Raises:
            MappingError: written in the target layout, it does not read back in it.
        """
        buf = io.BytesIO()
        self._writer.write([document], self.target, name, buf)
        buf.seek(0)
        report = Report(name)
        for record in self._reader.records(buf, self.layout, name, report):
            self.tally.add(record)
        if report:
            first = report.ordered()[0]
            raise MappingError(
                f"{name}: a document left out as a repeat does not read back in layout "
                f"{self.target.name} ({first.line(200)}): the totals cannot be checked"
            )


def written(
    totals: dict[str, TotalSpec],
    target: Layout,
    outputs: list[Output],
    left_out: LeftOut | None = None,
) -> Tally:
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
    if left_out is not None:
        for name, value in left_out.tally.values.items():
            tally.values[name] = tally.values.get(name, Decimal(0)) + value
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


def as_stated(source: Tally, name_of_file: str) -> None:
    """Check the figures the source states itself (its ``stated`` totals) against what
    was read.

    Raises:
        TotalsDiffer: naming each figure that differs, where, with both figures.
    """
    said = source.stated_problems()
    if said:
        raise TotalsDiffer(
            f"{name_of_file}: the figures the source states differ from what it holds "
            f"({'; '.join(said[:10])}{'; ...' if len(said) > 10 else ''}): the file is not "
            "what it says it is; nothing was delivered"
        )


def agree(source: Tally, target: Tally, name_of_file: str) -> dict[str, Decimal]:
    """The totals, once both sides agree.

    Raises:
        TotalsDiffer: naming each total that differs, with both figures.
    """
    keys = sorted(set(source.values) | set(target.values))
    differ = [
        f"{name}: the source has {_figure(source.values, name)}, the outputs "
        f"{_figure(target.values, name)}"
        for name in keys
        if source.values.get(name) != target.values.get(name)
    ]
    if differ:
        raise TotalsDiffer(
            f"{name_of_file}: control totals differ ({'; '.join(differ[:10])}"
            f"{'; ...' if len(differ) > 10 else ''}): the mapping "
            "changed, dropped or repeated something; nothing was delivered"
        )
    return dict(source.values)


def _shown(value: Decimal) -> str:
    return format(value, "f")


def _figure(values: dict[str, Decimal], name: str) -> str:
    value = values.get(name)
    return "none" if value is None else _shown(value)


#: Values of one ``by`` total shown in a summary (a total per document may have many).
SHOWN_GROUPS = 6


def summary(values: dict[str, Decimal]) -> str:
    """``totals: amount[CNY] 1234.50, amount[USD] 10.00, lines 12`` (empty when there
    are none); a total kept per many values is shown as its sum and their number."""
    if not values:
        return ""
    plain = {k: v for k, v in values.items() if "[" not in k}
    grouped: dict[str, dict[str, Decimal]] = {}
    for k, v in values.items():
        if "[" in k:
            name, _, rest = k.partition("[")
            grouped.setdefault(name, {})[rest[:-1]] = v
    parts = [(k, _shown(v)) for k, v in plain.items()]
    for name, groups in grouped.items():
        if len(groups) <= SHOWN_GROUPS:
            parts += [(f"{name}[{g}]", _shown(v)) for g, v in groups.items()]
        else:
            parts.append(
                (name, f"{_shown(sum(groups.values(), Decimal(0)))} ({len(groups)} values)")
            )
    return "totals: " + ", ".join(f"{k} {v}" for k, v in sorted(parts))


__all__ = ["LeftOut", "Tally", "agree", "as_stated", "readable", "summary", "written"]

"""Mappings: how documents in one layout become documents in another, declared as data.

A mapping file (``formats/<name>.toml``) names a source and a target layout and gives,
for each target field, one rule::

    OrderNo   = "order_sn"                              # copy a source field
    Channel   = { from = "channel", table = "channels" } # value table
    Address   = { template = "{province}{city}{address}" }
    Source    = { const = "ECSHOP" }
    Remark    = { from = "remark", default = "-", trim = true, case = "upper" }
    LineNo    = { sequence = 1 }                        # 1, 2, 3 ... within a document

Rows are grouped into nested documents by ``group_by``; nested documents are
flattened into rows by ``flatten = true``. ``output`` says whether each document
becomes its own file (``per-document``) or all go in one (``batch``).
"""

from __future__ import annotations

import functools
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, StrictBool, model_validator

from xchange.errors import ConfigError
from xchange.layout import FieldSpec, FieldValueError, Layout, _Model, load_toml_model
from xchange.report import Report


class Rule(_Model):
    """How one target field gets its value."""

    from_: str | None = Field(None, alias="from")
    const: str | None = None
    template: str | None = None
    join: list[str] = Field(default_factory=list)
    sep: str = ""
    sequence: int | None = None
    table: str | None = None
    default: str | None = None
    trim: StrictBool = False
    case: Literal["upper", "lower"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"from": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> Rule:
        given = [
            k
            for k, v in (
                ("from", self.from_),
                ("const", self.const),
                ("template", self.template),
                ("join", self.join or None),
                ("sequence", self.sequence),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of from, const, template, join, sequence"
                + (f" (found {', '.join(given)})" if given else "")
            )
        return self

    @functools.cached_property
    def fields(self) -> tuple[str, ...]:
        """Source fields this rule reads (cached: used for every row)."""
        return tuple(self.inputs())

    def inputs(self) -> list[str]:
        """Source fields this rule reads."""
        if self.from_ is not None:
            return [self.from_]
        if self.template is not None:
            return [f for _, f, _, _ in string.Formatter().parse(self.template) if f]
        return list(self.join)


class Mapping(_Model):
    name: str
    version: str = "1"
    description: str = ""
    source: str
    target: str
    output: Literal["per-document", "batch"] = "per-document"
    group_by: list[str] = Field(default_factory=list)
    #: Rows of one document are adjacent (streams in bounded memory); false groups the
    #: whole file in memory.
    group_adjacent: StrictBool = True
    flatten: StrictBool = False
    header: dict[str, Rule] = Field(default_factory=dict)
    lines: dict[str, Rule] = Field(default_factory=dict)
    tables: dict[str, dict[str, str]] = Field(default_factory=dict)
    source_file: Path = Field(Path("?"), exclude=True)


def load_mapping(formats: Path, name: str) -> Mapping:
    path = formats / f"{name}.toml"
    mapping = load_toml_model(path, Mapping, str(path))
    if mapping.name != name:
        raise ConfigError([f"{path}: name: is {mapping.name!r}, but the file name says {name!r}"])
    return mapping


def check_mapping(mapping: Mapping, source: Layout, target: Layout) -> list[str]:
    """Cross-check a mapping against its layouts; one line per problem, naming both files."""
    where = str(mapping.source_file)
    problems: list[str] = []
    if mapping.source != source.name:
        problems.append(f"{where}: source: is {mapping.source!r}, the route says {source.name!r}")
    if mapping.target != target.name:
        problems.append(f"{where}: target: is {mapping.target!r}, the route says {target.name!r}")
    src_fields = {f.name for f in (*source.fields, *source.line_fields)}
    for key in mapping.group_by:
        if key not in src_fields:
            problems.append(
                f"{where}: group_by: source layout {source.source_file} has no field {key!r}"
            )
    sections = (
        ("header", mapping.header, target.fields),
        ("lines", mapping.lines, target.line_fields),
    )
    for section, rules, target_fields in sections:
        names = {f.name for f in target_fields}
        for name, rule in rules.items():
            if name not in names:
                problems.append(
                    f"{where}: {section}.{name}: target layout {target.source_file} "
                    f"has no {'line ' if section == 'lines' else ''}field {name!r}"
                )
            for used in rule.inputs():
                if used not in src_fields:
                    problems.append(
                        f"{where}: {section}.{name}: source layout {source.source_file} "
                        f"has no field {used!r}"
                    )
            if rule.table is not None and rule.table not in mapping.tables:
                problems.append(f"{where}: {section}.{name}.table: no table {rule.table!r}")
        for spec in target_fields:
            if spec.name not in rules:
                problems.append(
                    f"{where}: {section}: {'required ' if spec.required else ''}target field "
                    f"{spec.name!r} ({target.source_file}) has no rule"
                    + ("" if spec.required else ' (for an empty value say so: { const = "" })')
                )
    if target.shape == "nested" and source.shape == "rows" and not mapping.group_by:
        problems.append(f"{where}: group_by: a rows -> nested mapping must say how to group rows")
    if target.shape == "rows" and source.shape == "nested" and not mapping.flatten:
        problems.append(f"{where}: flatten: a nested -> rows mapping needs flatten = true")
    return problems


# --------------------------------------------------------------------------- applying


@dataclass(slots=True)
class Record:
    """A source record: typed values by field name, where it was, and its lines if nested."""

    location: str
    values: dict[str, Any]
    lines: list[Record] = field(default_factory=list)
    #: Source fields whose value broke a rule while the record was read ("*": the record
    #: as a whole). The record is still mapped, so that every other problem of the row
    #: is reported too, but a target field fed by a failed field is skipped: one bad
    #: value is reported once, not again for every target field it feeds.
    failed: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(slots=True)
class Document:
    """A target document: typed header values and lines, ready for a codec to write."""

    location: str
    header: dict[str, Any]
    lines: list[dict[str, Any]] = field(default_factory=list)


class _Evaluator:
    def __init__(self, mapping: Mapping, target: Layout, report: Report) -> None:
        self.mapping = mapping
        self.target = target
        self.report = report

    def values(
        self,
        rules: dict[str, Rule],
        specs: list[FieldSpec],
        ctx: dict[str, Any],
        where: str,
        seq: int,
        failed: set[str] | frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for spec in specs:
            rule = rules.get(spec.name)
            if failed and rule is not None and ("*" in failed or failed.intersection(rule.fields)):
                out[spec.name] = None  # its source value was reported already
                continue
            raw: Any = None
            try:
                raw = self._evaluate(rule, ctx, seq) if rule else None
                out[spec.name] = spec.coerce(raw)
            except FieldValueError as exc:
                out[spec.name] = None
                shown = exc.value if exc.value is not None else raw
                self.report.add(where, spec.name, exc.rule, shown, exc.message)
        return out

    def _evaluate(self, rule: Rule, ctx: dict[str, Any], seq: int) -> Any:
        value: Any
        if rule.const is not None:
            value = rule.const
        elif rule.sequence is not None:
            value = rule.sequence + seq
        elif rule.template is not None:
            value = rule.template.format_map({k: _text(ctx.get(k)) for k in rule.fields})
        elif rule.join:
            value = rule.sep.join(_text(ctx.get(k)) for k in rule.join if ctx.get(k) is not None)
        else:
            value = ctx.get(rule.from_ or "")
        if isinstance(value, str):
            if rule.trim:
                value = value.strip()
            if rule.case == "upper":
                value = value.upper()
            elif rule.case == "lower":
                value = value.lower()
            if value == "":
                value = None
        if value is None and rule.default is not None:
            value = rule.default
        if rule.table is not None and value is not None:
            table = self.mapping.tables[rule.table]
            key = _text(value)
            if key not in table:
                raise FieldValueError(
                    "table", f"{key!r} is not in value table {rule.table!r}", value=key
                )
            value = table[key]
        return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return str(value.isoformat())
    return str(value)


def apply_mapping(
    mapping: Mapping, target: Layout, records: Iterable[Record], report: Report, start: int = 0
) -> Iterator[Document]:
    """Map source records to target documents, one at a time; problems go to ``report``.

    Grouping streams: rows of one document must be adjacent in the file, as exports
    sorted by document number are. A key seen again after its run ended is reported
    (with both places), unless the mapping sets ``group_adjacent = false``, which
    groups the whole file in memory instead.
    """
    ev = _Evaluator(mapping, target, report)
    if mapping.group_by:
        yield from _grouped(mapping, target, records, report, ev)
        return
    if mapping.flatten:
        for rec in records:
            for i, line in enumerate(rec.lines):
                ctx = {**rec.values, **line.values}
                failed = rec.failed | line.failed
                header = ev.values(mapping.header, target.fields, ctx, line.location, i, failed)
                yield Document(line.location, header)
    else:
        for i, rec in enumerate(records, start=start):
            header = ev.values(
                mapping.header, target.fields, rec.values, rec.location, i, rec.failed
            )
            lines = [
                ev.values(
                    mapping.lines,
                    target.line_fields,
                    {**rec.values, **ln.values},
                    ln.location,
                    j,
                    rec.failed | ln.failed,
                )
                for j, ln in enumerate(rec.lines)
            ]
            yield Document(rec.location, header, lines)


def _grouped(
    mapping: Mapping,
    target: Layout,
    records: Iterable[Record],
    report: Report,
    ev: _Evaluator,
) -> Iterator[Document]:
    def document(members: list[Record]) -> Document | None:
        first = members[0]
        header = ev.values(
            mapping.header, target.fields, first.values, first.location, 0, first.failed
        )
        lines = [
            ev.values(mapping.lines, target.line_fields, m.values, m.location, i, m.failed)
            for i, m in enumerate(members)
        ]
        return Document(first.location, header, lines)

    if not mapping.group_adjacent:
        groups: dict[tuple[Any, ...], list[Record]] = {}
        for rec in records:
            groups.setdefault(tuple(rec.values.get(k) for k in mapping.group_by), []).append(rec)
        for members in groups.values():
            if (doc := document(members)) is not None:
                yield doc
        return
    closed: dict[tuple[Any, ...], str] = {}
    run: list[Record] = []
    run_key: tuple[Any, ...] | None = None
    for rec in records:
        key = tuple(rec.values.get(k) for k in mapping.group_by)
        if run and key != run_key:
            closed[run_key] = run[0].location  # type: ignore[index]
            if (doc := document(run)) is not None:
                yield doc
            run = []
        if key in closed:
            report.add(
                rec.location,
                ", ".join(mapping.group_by),
                "grouping",
                ", ".join(map(str, key)),
                f"rows of this document are not together (its first rows are at "
                f"{closed[key]}); sort the export by {', '.join(mapping.group_by)}, or set "
                "group_adjacent = false in the mapping",
            )
            continue
        run_key = key
        run.append(rec)
    if run and (doc := document(run)) is not None:
        yield doc

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

A document's rules see the whole document: named values (``[let]`` once per document,
``[line_let]`` once per line), line rules that read the document's aggregates, their own
position (``position()``, ``is_first()``, ``is_last()``), ``allocate()`` and the line
fields and values computed before them. Rules run in the order of what they read (a
cycle is refused, naming its fields); the header's rules run last::

    [let]
    goods = "sum(qty * price)"
    [line_let]
    amount = "qty * price"
    [lines]
    Discount = { expr = "allocate(discount, amount, 2)" }
    Net      = { expr = "amount - Discount" }
"""

from __future__ import annotations

import ast
import functools
import string
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, StrictBool, model_validator

from xchange.errors import ConfigError
from xchange.expressions import (
    AGGREGATES,
    ALLOCATE,
    LITERALS,
    POSITION,
    Expression,
    ExpressionError,
    Names,
    functions_reference,
)
from xchange.layout import (
    FieldSpec,
    FieldValueError,
    Layout,
    StrictModel,
    as_text,
    group_count,
    load_toml_model,
)
from xchange.lookups import Lookup, Lookups
from xchange.report import Report


class Rule(StrictModel):
    """How one target field gets its value."""

    from_: str | None = Field(None, alias="from")
    #: An expression over the record's fields (see :mod:`xchange.expressions`).
    expr: str | None = None
    const: str | None = None
    template: str | None = None
    join: list[str] = Field(default_factory=list)
    sep: str = ""
    sequence: int | None = None
    table: str | None = None
    default: str | None = None
    trim: StrictBool = False
    case: Literal["upper", "lower"] | None = None
    #: A header rule of a document formed from several rows (``group_by``, ``split_by``):
    #: which row's values it reads. Unset, every row must give the same value (a row that
    #: disagrees is a problem); "first" or "last" say which row wins.
    row: Literal["first", "last"] | None = None

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
                ("expr", self.expr),
                ("const", self.const),
                ("template", self.template),
                ("join", self.join or None),
                ("sequence", self.sequence),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of from, expr, const, template, join, sequence"
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


class LookupSpec(StrictModel):
    """A master-data file read as a table: key column(s) -> value column(s)."""

    #: CSV or JSON file, relative to the formats folder.
    file: str
    #: Key column (or several, whose values are joined by "|" in the key given).
    key: str | list[str]
    #: The column a lookup gives by default (a lookup may name another).
    value: str
    encoding: str = "utf-8"
    delimiter: str = Field(",", min_length=1, max_length=1)


class GroupRules(StrictModel):
    """How the items of one target group (``Layout.groups``) are made."""

    #: The source group read item by item (one target item per source item, its rules
    #: reading the item's fields and its parent's); omitted: one item per parent.
    from_: str | None = Field(None, alias="from")
    #: Only source items for which this is true become items (the others are counted).
    filter: str | None = None
    #: A rule per field of the target group's items (as ``[lines]``'s).
    rules: dict[str, Rule] = Field(default_factory=dict)


class TotalBy(StrictModel):
    """The field a control total is kept apart by, on each side."""

    source: str
    target: str
    #: One of the mapping's ``[tables]`` that turns the source's value into the
    #: target's (``CNY`` -> ``PRE001``), where the mapping translates it.
    table: str | None = None


class TotalExpr(StrictModel):
    """A figure a control total sums that no one field holds: an expression over the
    fields of each line (and of its document), ``goods_number * goods_price``."""

    expr: str = Field(min_length=1)


def total_expression(spec: TotalExpr, layout: Layout) -> Expression:
    """A total's expression, compiled over the fields of a line and of its document.

    Raises:
        ExpressionError: it does not parse, or reads a name the layout does not have.
    """
    names = frozenset(f.name for f in (*layout.fields, *layout.line_fields))
    return Expression.compile(spec.expr, Names(fields=names))


class TotalSpec(StrictModel):
    """One control total (see :mod:`xchange.totals`): a count, or the sum of a field (or
    of an expression over fields) on each side."""

    #: The source field summed (where it is: each record's, or each line's), or
    #: ``{ expr = "qty * price" }``; omitted: the source's lines (a nested source's, else
    #: its records) counted.
    source: str | TotalExpr | None = None
    #: The target field summed over every document written (or its lines), or an
    #: expression; omitted: the documents' lines (a nested target's, else the documents)
    #: counted.
    target: str | TotalExpr | None = None
    #: Kept apart per value of a field on each side, compared value by value: per
    #: currency (``{ source = "currency", target = "Currency" }``), per document (its
    #: order number). The field carries the same value on both sides.
    by: TotalBy | None = None
    #: A source field that states this total itself (a header's ``TotalAmount``, a
    #: batch's ``$.total_count``), checked against what was read: for each value of
    #: ``by`` when given, else for each record of a nested source (its lines), else for
    #: the whole file (every record stating the same figure).
    stated: str | None = None
    #: What ``stated`` states a total of: each record of a nested source (``document``,
    #: its lines), each value of ``by`` (``group``; every record of it stating the same
    #: figure), or the file (``file``). Default: ``file`` for a field read from the
    #: document's root (``$.total``, ``/Batch/@count``), else ``document`` for a nested
    #: source, else ``group`` with ``by``, else ``file``.
    stated_per: Literal["document", "group", "file"] | None = None


class Mapping(StrictModel):
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
    #: Named values computed once per document (expressions; aggregates over its lines):
    #: every later rule may read them by name.
    let: dict[str, str] = Field(default_factory=dict)
    #: Named values computed once per line (expressions): line rules, ``[let]``'s
    #: aggregates and the header's may read them by name.
    line_let: dict[str, str] = Field(default_factory=dict)
    #: Control totals, by name: counts and exact sums that the source as read and the
    #: outputs as written (read again) must agree on before anything is delivered.
    totals: dict[str, TotalSpec] = Field(default_factory=dict)
    #: The target layout's groups (``Layout.groups``): how each one's items are made.
    groups: dict[str, GroupRules] = Field(default_factory=dict)
    tables: dict[str, dict[str, str]] = Field(default_factory=dict)
    #: Master data files read as tables: ``lookup("materials", sku)``.
    lookups: dict[str, LookupSpec] = Field(default_factory=dict)
    #: Only source records (rows, or nested documents) for which this is true are mapped;
    #: the others are counted as skipped by the filter.
    filter: str | None = None
    #: Only lines for which this is true go into a document (the others are counted).
    line_filter: str | None = None
    #: One source document becomes one target document per distinct value of these
    #: fields of its lines (e.g. one outbound order per warehouse).
    split_by: list[str] = Field(default_factory=list)
    #: Mappings run one after the other, as one (``formats/<name>.toml`` each): the first
    #: reads this mapping's source layout, each writes the layout the next reads, the last
    #: writes this mapping's target. A mapping with steps has no rules of its own.
    steps: list[str] = Field(default_factory=list)
    source_file: Path = Field(Path("?"), exclude=True)
    #: The file's bytes as they were read (see ``Layout.source_bytes``).
    source_bytes: bytes = Field(b"", exclude=True)


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
    if mapping.steps:
        own = [
            key
            for key in (
                "header",
                "lines",
                "let",
                "line_let",
                "group_by",
                "split_by",
                "filter",
                "line_filter",
                "groups",
                "tables",
                "lookups",
            )
            if getattr(mapping, key)
        ] + (["flatten"] if mapping.flatten else [])
        if own:
            problems.append(
                f"{where}: steps: a mapping of steps has no rules of its own (found "
                f"{', '.join(own)}): put them in a step"
            )
        if mapping.totals:
            problems.append(
                f"{where}: totals: a mapping of steps cannot declare control totals (nothing "
                "would compare them: the steps' records are not the file's); declare them on "
                "a mapping of one step"
            )
        if mapping.source != source.name:
            problems.append(
                f"{where}: source: is {mapping.source!r}, the route says {source.name!r}"
            )
        if mapping.target != target.name:
            problems.append(
                f"{where}: target: is {mapping.target!r}, the route says {target.name!r}"
            )
        return problems
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
    line_targets = {f.name for f in target.line_fields}
    item_fields = {f.name for g in source.groups for f in g.fields}
    for section, named in (("let", mapping.let), ("line_let", mapping.line_let)):
        for name in named:
            clash = (
                "a source field"
                if name in src_fields or name in item_fields
                else "a target line field"
                if name in line_targets
                else "a [let] value"
                if section == "line_let" and name in mapping.let
                else None
            )
            if clash is not None:
                problems.append(
                    f"{where}: {section}.{name}: {clash} has this name: give the value "
                    "another (a name means one thing)"
                )
    for section, named in (("let", mapping.let), ("line_let", mapping.line_let)):
        for name in named:
            if not name.isidentifier() or name in LITERALS or name in functions_reference():
                problems.append(
                    f"{where}: {section}.{name}: a value's name is a word a rule can write "
                    "(letters, digits, _), not a literal (true, false, null) or a function's"
                )
    if mapping.flatten and (mapping.let or mapping.line_let):
        problems.append(
            f"{where}: let: a flattened mapping (flatten = true) writes each line as a row "
            "of its own: [let] and [line_let] are not computed there; write the expressions "
            "in the rules"
        )
    computed = {
        "header": set(mapping.let),
        "lines": line_targets | set(mapping.line_let) | set(mapping.let),
    }
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
                if used not in src_fields and used not in computed[section]:
                    problems.append(
                        f"{where}: {section}.{name}: source layout {source.source_file} "
                        f"has no field {used!r}"
                    )
            if rule.table is not None and rule.table not in mapping.tables:
                problems.append(f"{where}: {section}.{name}.table: no table {rule.table!r}")
            if rule.row is not None:
                problems.extend(_row_problems(mapping, section, name, rule, where))
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
    for key in mapping.split_by:
        if key not in src_fields:
            problems.append(
                f"{where}: split_by: source layout {source.source_file} has no field {key!r}"
            )
    problems.extend(_group_problems(mapping, source, target, where))
    problems.extend(_totals_problems(mapping, source, target, where))
    compiled, compile_problems = compile_mapping(mapping, source, target)
    problems.extend(compile_problems)
    for name, rule in mapping.header.items():
        expression = compiled.rules.get(("header", name))
        if rule.row is not None and expression is not None and not expression.outer_names:
            problems.append(
                f"{where}: header.{name}.row: the expression reads fields only inside "
                "aggregates (over every line): row means nothing here"
            )
    return problems


def source_level(mapping: Mapping, source: Layout, target: Layout, level: str) -> str | None:
    """The source level whose items a target level's are made from: the document's for
    the document's, the lines' (a grouped source's rows: each its own record) for the
    lines', a group's ``from`` for a group's; None where there is none."""
    if level == "record":
        return None if mapping.group_by or mapping.flatten else "record"
    if level == "lines":
        return "record" if mapping.group_by else "lines" if source.shape == "nested" else None
    rules = mapping.groups.get(level)
    if rules is None or rules.from_ is None:
        group = next(g for g in target.groups if g.name == level)
        return source_level(mapping, source, target, group.under)  # the parent's
    return rules.from_


def _group_problems(mapping: Mapping, source: Layout, target: Layout, where: str) -> list[str]:
    """A target group without rules, rules for no group, a ``from`` that is not a source
    group held where the target group's parent is made from, a field without a rule."""
    problems: list[str] = []
    names = {g.name: g for g in target.groups}
    sources = {g.name: g for g in source.groups}
    for name in mapping.groups:
        if name not in names:
            problems.append(
                f"{where}: groups.{name}: target layout {target.source_file} has no group "
                f"{name!r}" + (f" (it has {', '.join(names)})" if names else "")
            )
    if target.groups and mapping.flatten:
        problems.append(f"{where}: groups: a flattened mapping writes rows; a row holds no group")
        return problems
    for group in target.groups:
        key = f"{where}: groups.{group.name}"
        rules = mapping.groups.get(group.name)
        if rules is None:
            problems.append(
                f"{key}: target group {group.name!r} ({target.source_file}) has no rules: "
                "say how its items are made ([groups." + group.name + "] with from = the "
                "source group, and a rule per field under [groups." + group.name + ".rules])"
            )
            continue
        if rules.from_ is not None:
            held = source_level(mapping, source, target, group.under)
            found = sources.get(rules.from_)
            if found is None:
                problems.append(
                    f"{key}.from: source layout {source.source_file} has no group "
                    f"{rules.from_!r}" + (f" (it has {', '.join(sources)})" if sources else "")
                )
            elif held is None or found.under != held:
                made = (
                    "made from no source level"
                    if held is None
                    else f"made from the source's {held!r}"
                )
                problems.append(
                    f"{key}.from: source group {rules.from_!r} is under {found.under!r}, but "
                    f"this group's parent ({group.under!r}) is {made}: an item is made from an "
                    "item its parent's source holds"
                )
        field_names = {f.name for f in group.fields}
        for name in rules.rules:
            if name not in field_names:
                problems.append(
                    f"{key}.rules.{name}: target group {group.name!r} has no field {name!r}"
                )
        for spec in group.fields:
            if spec.name not in rules.rules:
                problems.append(
                    f"{key}.rules: {'required ' if spec.required else ''}field "
                    f"{spec.name!r} of group {group.name!r} ({target.source_file}) has no rule"
                )
        known_from = rules.from_ is None or rules.from_ in sources
        readable = (
            _group_names(mapping, source, target, group.name)[0] | set(mapping.let)
            if known_from
            else frozenset()
        )
        for name, rule in rules.rules.items():
            if known_from and rule.expr is None:
                for used in rule.inputs():
                    if used not in readable:
                        problems.append(
                            f"{key}.rules.{name}: no field {used!r} here (an item's rules read "
                            "its source item's fields, every level's above it, and its "
                            "parent's target fields)"
                        )
            if rule.table is not None and rule.table not in mapping.tables:
                problems.append(f"{key}.rules.{name}.table: no table {rule.table!r}")
            if rule.row is not None:
                problems.append(
                    f"{key}.rules.{name}.row: an item's rule reads its own item; row is for "
                    "header rules"
                )
    return problems


def _totals_problems(mapping: Mapping, source: Layout, target: Layout, where: str) -> list[str]:
    """Control totals that read no number, or that a filter would make differ."""
    problems: list[str] = []
    if mapping.totals and (mapping.filter or mapping.line_filter):
        problems.append(
            f"{where}: totals: a filter leaves records out on purpose, and totals compare "
            "everything read with everything written: declare them on a mapping without one"
        )
    for name, spec in mapping.totals.items():
        key = f"{where}: totals.{name}"
        if (spec.source is None) != (spec.target is None):
            problems.append(
                f"{key}: give both source and target (a sum of each), or neither (a count of each)"
            )
        for side, field_name, layout in (
            ("source", spec.source, source),
            ("target", spec.target, target),
        ):
            if field_name is None:
                continue
            if isinstance(field_name, TotalExpr):
                try:
                    total_expression(field_name, layout)
                except ExpressionError as exc:
                    problems.append(f"{key}.{side}.expr: {exc}")
                continue
            found = next(
                (f for f in (*layout.fields, *layout.line_fields) if f.name == field_name), None
            )
            if found is None:
                problems.append(
                    f"{key}.{side}: layout {layout.source_file} has no field {field_name!r}"
                )
            elif found.type not in ("integer", "decimal"):
                problems.append(
                    f"{key}.{side}: field {field_name!r} is {found.type}: only numbers add up"
                )
        problems.extend(_total_scope_problems(key, spec, source, target, mapping.tables))
    return problems


def _total_scope_problems(
    key: str, spec: TotalSpec, source: Layout, target: Layout, tables: Collection[str]
) -> list[str]:
    """A total's ``by`` and ``stated`` fields: present, at a level that can hold them."""
    problems: list[str] = []
    if spec.by is not None and spec.by.table is not None and spec.by.table not in tables:
        problems.append(f"{key}.by.table: the mapping has no table {spec.by.table!r}")
    sides = [("source", spec.source, source), ("target", spec.target, target)]
    for side, summed, layout in sides if spec.by is not None else []:
        by = getattr(spec.by, side)
        if by not in {f.name for f in (*layout.fields, *layout.line_fields)}:
            problems.append(f"{key}.by.{side}: layout {layout.source_file} has no field {by!r}")
        elif (
            isinstance(summed, str)
            and summed in {f.name for f in layout.fields}
            and by in {f.name for f in layout.line_fields}
        ):
            problems.append(
                f"{key}.by.{side}: {by!r} is a line's field and {summed!r} the document's: "
                "a document's figure cannot be kept apart by its lines"
            )
    if spec.by is not None and spec.by.table is None:
        kinds = [
            next((f.type for f in (*layout.fields, *layout.line_fields) if f.name == name), None)
            for name, layout in ((spec.by.source, source), (spec.by.target, target))
        ]
        if None not in kinds and kinds[0] != kinds[1]:
            problems.append(
                f"{key}.by: {spec.by.source!r} is {kinds[0]} and {spec.by.target!r} is "
                f"{kinds[1]}: their values are never the same, so every file would differ; "
                "keep the total apart by fields of one kind"
            )
    if spec.stated_per is not None and spec.stated is None:
        problems.append(f"{key}.stated_per: give stated, the field that states the total")
    if spec.stated_per == "group" and spec.by is None:
        problems.append(f"{key}.stated_per: group needs by (the field the groups are of)")
    if (
        spec.stated_per == "group"
        and spec.by is not None
        and spec.by.source in {f.name for f in source.line_fields}
    ):
        problems.append(
            f"{key}.stated_per: group by a line's field ({spec.by.source!r}) has no one "
            "figure a document states; keep it apart by a document's field"
        )
    if spec.stated_per == "document" and source.shape != "nested":
        problems.append(
            f"{key}.stated_per: document needs a nested source (records with lines); "
            f"layout {source.source_file} is flat: use group (with by) or file"
        )
    if spec.stated is not None:
        found = next((f for f in source.fields if f.name == spec.stated), None)
        if found is None:
            where = (
                "a line's field: a stated total is the document's or the file's"
                if spec.stated in {f.name for f in source.line_fields}
                else "not a field"
            )
            problems.append(
                f"{key}.stated: {spec.stated!r} is {where} of layout {source.source_file}"
            )
        elif found.type not in ("integer", "decimal"):
            problems.append(f"{key}.stated: field {spec.stated!r} is {found.type}: not a figure")
        elif spec.source is not None and spec.source == spec.stated:
            problems.append(f"{key}.stated: a field cannot state its own sum")
    return problems


def _group_names(
    mapping: Mapping, source: Layout, target: Layout, group: str
) -> tuple[frozenset[str], frozenset[str]]:
    """What a target group's rules may read: the source fields of its item and of every
    level above it, the parent's target fields and named values; and the same inside
    aggregates (over the items of the same parent)."""
    target_group = next(g for g in target.groups if g.name == group)
    level = source_level(mapping, source, target, group)
    item = frozenset(
        f.name for f in (source.level_fields(level, ancestors=True) if level else source.fields)
    )
    above = frozenset(f.name for f in target.level_fields(target_group.under))
    named = frozenset(mapping.let) | (
        frozenset(mapping.line_let) if _under_lines(target, group) else frozenset()
    )
    readable = item | above | named
    return readable, readable


def _under_lines(layout: Layout, group: str) -> bool:
    """Whether a group's items are below a line (each line's own)."""
    level = group
    while level not in ("record", "lines"):
        level = next(g.under for g in layout.groups if g.name == level)
    return level == "lines"


def superseded(mapping: Mapping, source: Layout) -> list[str]:
    """What in a mapping is written for a form that has changed, and how to write it now:
    a value table keyed ``True``/``False`` read with a boolean (booleans are the text
    ``true``/``false`` wherever they become text, as the writers always wrote them)."""
    booleans = {f.name for f in (*source.fields, *source.line_fields) if f.type == "boolean"}
    notes = []
    for section in ("header", "lines"):
        for name, rule in getattr(mapping, section).items():
            if rule.table is None or rule.from_ not in booleans:
                continue
            keys = set(mapping.tables.get(rule.table, {}))
            if keys & {"True", "False"}:
                notes.append(
                    f"{mapping.source_file}: tables.{rule.table}: booleans are looked up as "
                    f"true/false (read by {section}.{name}): write the keys so "
                    "(True/False no longer match)"
                )
    return notes


def _row_problems(mapping: Mapping, section: str, name: str, rule: Rule, where: str) -> list[str]:
    """Where ``row`` (which row of a grouped document a header rule reads) means nothing."""
    key = f"{where}: {section}.{name}.row"
    if section == "lines":
        return [f"{key}: a line rule reads its own row; row is for header rules"]
    if not mapping.group_by and not mapping.split_by:
        return [
            f"{key}: each header is formed from one record here (no group_by or split_by): "
            "row means nothing"
        ]
    if rule.const is not None or rule.sequence is not None:
        return [f"{key}: the rule reads no field: row means nothing"]
    return []


@dataclass
class Compiled:
    """A mapping's expressions, compiled once, and the tables and lookups they read."""

    rules: dict[tuple[str, str], Expression]
    filter: Expression | None
    line_filter: Expression | None
    tables: dict[str, dict[str, str]]
    lookups: Lookups
    #: Where each source field is in a source file (``FieldSpec.key``), and what that
    #: place is called in the source's codec: for reports that name where a value came from.
    columns: dict[str, str] = field(default_factory=dict)
    column_word: str = "column"
    #: ``[let]`` and ``[line_let]``'s expressions.
    lets: dict[str, Expression] = field(default_factory=dict)
    line_lets: dict[str, Expression] = field(default_factory=dict)
    #: The rules below the header in the order of what they read: ("let" | "line_let" |
    #: "lines", name). Header rules come after all of them.
    order: list[tuple[str, str]] = field(default_factory=list)
    #: Each target group's item filter, by group name.
    group_filters: dict[str, Expression] = field(default_factory=dict)
    #: Whether a document's rules read more than their own row (named values, computed
    #: fields, aggregates, positions or allocations in line rules): then each rule runs
    #: over every line of a document before the next (``order``).
    whole: bool = False
    #: The source layout's fields by name, those whose name is one field's only (not
    #: also a line's, a group item's or a named value's): what a rule copying one reads.
    sources: dict[str, FieldSpec] = field(default_factory=dict)

    def source_of(self, fields: Iterable[str]) -> str:
        """ "source field channel, column 渠道" (several: joined by "; "), or ""."""
        parts = []
        for name in fields:
            key = self.columns.get(name)
            if key is None and self.columns:  # not a source field: a computed line field
                parts.append(f"field {name}")
            elif key is None:  # no source layout given
                parts.append(f"source field {name}")
            else:
                parts.append(f"source field {name}, {self.column_word} {key}")
        return "; ".join(parts)

    def inputs(self, section: str, name: str, rule: Rule) -> tuple[str, ...]:
        """Source fields a rule reads (an expression's names included)."""
        expression = self.rules.get((section, name))
        return tuple(expression.names) if expression is not None else rule.fields

    def column(self, name: str) -> dict[str, Any]:
        """A value table, or a lookup's value column, as one dictionary (columnar path)."""
        if name in self.tables:
            return self.tables[name]
        return self.lookups[name].column()

    def table_value(self, name: str, key: Any, column: Any = None, default: Any = None) -> Any:
        """A value table's or a lookup's value for ``key`` (for ``table()``/``lookup()``).

        Raises:
            ExpressionError: no such key and no default.
        """
        text = _text(key)
        if name in self.tables:
            if text in self.tables[name]:
                return self.tables[name][text]
            default = column if default is None else default  # table(name, key, default)
        else:
            lookup = self.lookups[name]
            try:
                return lookup.get(text, None if column is None else _text(column))
            except KeyError:
                if column is not None and lookup.has(text):
                    raise ExpressionError(f"lookup {name!r} has no column {column!r}") from None
        if default is not None:
            return default
        raise ExpressionError(f"{text!r} is not in {name!r}")


def compile_mapping(
    mapping: Mapping, source: Layout | None, target: Layout
) -> tuple[Compiled, list[str]]:
    """Compile a mapping's expressions (checked against its layouts when ``source`` is
    given); problems name the file, the key and the position in the expression."""
    where = str(mapping.source_file)
    formats = mapping.source_file.parent
    problems: list[str] = []
    lookups = Lookups(
        {
            name: Lookup(
                name,
                formats / spec.file,
                [spec.key] if isinstance(spec.key, str) else list(spec.key),
                spec.value,
                spec.encoding,
                spec.delimiter,
                f"{where}: lookups.{name}",
            )
            for name, spec in mapping.lookups.items()
        }
    )
    tables = frozenset(mapping.tables) | frozenset(mapping.lookups)
    if source is not None:
        head = frozenset(f.name for f in source.fields)
        lines = frozenset(f.name for f in source.line_fields)
        every = head | lines
        nested_source = source.shape == "nested"
        line_names = (lines | head if nested_source else every) | frozenset(
            f.name for f in target.line_fields
        )
        lets = frozenset(mapping.let)
        per_line = (
            every | frozenset(f.name for f in target.line_fields) | frozenset(mapping.line_let)
        )
        # A flattened mapping's header rules write one row per line: they read the line.
        header_fields = head if nested_source and not mapping.flatten else every
        header_names = Names(
            header_fields | lets,
            tables,
            # Over the document's lines, or (without lines) over a repeated value.
            aggregates=True,
            line_fields=line_names | frozenset(mapping.line_let) | lets,
        )
        let_names = Names(
            (head if nested_source else every) | lets, tables, aggregates=True, line_fields=per_line
        )
        line_rule_names = Names(
            per_line | lets, tables, aggregates=True, line_fields=per_line | lets, line=True
        )
        filter_names = Names(
            head if nested_source else every,
            tables,
            aggregates=nested_source,
            line_fields=lines | head,
        )
        line_filter_names = Names(every, tables)
    else:
        anything = Names(None, tables, aggregates=True, line_fields=None, line=True)
        header_names = line_rule_names = filter_names = let_names = anything
        line_filter_names = Names(None, tables)
    rules: dict[tuple[str, str], Expression] = {}
    for section, names in (("header", header_names), ("lines", line_rule_names)):
        for name, rule in getattr(mapping, section).items():
            if rule.expr is None:
                continue
            try:
                rules[(section, name)] = Expression.compile(rule.expr, names)
            except ExpressionError as exc:
                problems.append(f"{where}: {section}.{name}.expr: {exc}")
    named: dict[str, dict[str, Expression]] = {"let": {}, "line_let": {}}
    for section, names in (("let", let_names), ("line_let", line_rule_names)):
        for name, text in getattr(mapping, section).items():
            try:
                named[section][name] = Expression.compile(text, names)
            except ExpressionError as exc:
                problems.append(f"{where}: {section}.{name}: {exc}")
    group_filters: dict[str, Expression] = {}
    for group, group_rules in mapping.groups.items():
        if source is not None and (
            group not in {g.name for g in target.groups}
            or (
                group_rules.from_ is not None
                and group_rules.from_ not in {g.name for g in source.groups}
            )
        ):
            continue  # (``check`` says so)
        if source is not None:
            readable, inner = _group_names(mapping, source, target, group)
            rule_names = Names(
                readable | lets, tables, aggregates=True, line_fields=inner | lets, line=True
            )
            item_filter = Names(readable | lets, tables)
        else:
            rule_names, item_filter = anything, Names(None, tables)
        for name, rule in group_rules.rules.items():
            if rule.expr is None:
                continue
            try:
                rules[(f"groups.{group}", name)] = Expression.compile(rule.expr, rule_names)
            except ExpressionError as exc:
                problems.append(f"{where}: groups.{group}.rules.{name}.expr: {exc}")
        if group_rules.filter is not None:
            try:
                group_filters[group] = Expression.compile(group_rules.filter, item_filter)
            except ExpressionError as exc:
                problems.append(f"{where}: groups.{group}.filter: {exc}")
    filters: dict[str, Expression | None] = {"filter": None, "line_filter": None}
    for key, names in (("filter", filter_names), ("line_filter", line_filter_names)):
        text = getattr(mapping, key)
        if text is None:
            continue
        try:
            filters[key] = Expression.compile(text, names)
        except ExpressionError as exc:
            problems.append(f"{where}: {key}: {exc}")
    if source is not None:
        for lookup in lookups.lookups.values():
            try:
                lookup.refresh()
            except ConfigError as exc:
                problems.extend(exc.problems)
    compiled = Compiled(rules, filters["filter"], filters["line_filter"], mapping.tables, lookups)
    compiled.lets, compiled.line_lets = named["let"], named["line_let"]
    compiled.group_filters = group_filters
    sources = (
        frozenset(f.name for f in (*source.fields, *source.line_fields))
        if source is not None
        else frozenset()
    )
    compiled.order, compiled.whole, cycle = _order(mapping, compiled, sources)
    if cycle:
        problems.append(
            f"{where}: a cycle: {' -> '.join(f'{k}.{n}' for k, n in cycle)}: each reads "
            "the next; one of them must be computed from something else"
        )
    if source is not None:
        every_field = [
            *source.fields,
            *source.line_fields,
            *(f for g in source.groups for f in g.fields),
        ]
        seen = Counter(f.name for f in every_field)
        compiled.sources = {
            f.name: f
            for f in every_field
            if seen[f.name] == 1 and f.name not in mapping.let and f.name not in mapping.line_let
        }
        compiled.columns = {f.name: f.key for f in (*source.fields, *source.line_fields)}
        compiled.column_word = {"csv": "column", "xml": "path", "json": "key", "xlsx": "column"}[
            source.codec
        ]
    return compiled, problems


def _order(
    mapping: Mapping, compiled: Compiled, sources: frozenset[str]
) -> tuple[list[tuple[str, str]], bool, list[tuple[str, str]]]:
    """The rules below the header in the order of what they read, whether a document's
    rules read more than their own row, and a cycle if there is one (then the order is
    the file's)."""
    nodes: dict[str, tuple[str, str]] = {}
    for name in mapping.let:
        nodes[name] = ("let", name)
    for name in mapping.line_let:
        nodes.setdefault(name, ("line_let", name))
    for name in mapping.lines:
        nodes.setdefault(name, ("lines", name))
    expressions: dict[tuple[str, str], Expression | None] = {}
    reads: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for key in nodes.values():
        kind, name = key
        if kind == "lines":
            rule = mapping.lines[name]
            expression = compiled.rules.get(("lines", name))
            used: set[str] = set(expression.names) if expression is not None else set(rule.inputs())
        else:
            expression = (compiled.lets if kind == "let" else compiled.line_lets).get(name)
            used = set(expression.names) if expression is not None else set()
        expressions[key] = expression
        # A source field's name is the source field: computed names never shadow it.
        reads[key] = {nodes[n] for n in used - sources if n in nodes}
    whole = bool(mapping.let or mapping.line_let) or any(
        reads[key] or _reads_document(expressions[key])
        for key in nodes.values()
        if key[0] == "lines"
    )
    order: list[tuple[str, str]] = []
    state: dict[tuple[str, str], int] = {}  # 1: being visited, 2: done
    path: list[tuple[str, str]] = []

    def visit(key: tuple[str, str]) -> list[tuple[str, str]]:
        if state.get(key) == 2:
            return []
        if state.get(key) == 1:
            return [*path[path.index(key) :], key]
        state[key] = 1
        path.append(key)
        for dep in sorted(reads[key]):
            cycle = visit(dep)
            if cycle:
                return cycle
        path.pop()
        state[key] = 2
        order.append(key)
        return []

    for key in nodes.values():
        cycle = visit(key)
        if cycle:
            return list(nodes.values()), whole, cycle
    return order, whole, []


def _reads_document(expression: Expression | None) -> bool:
    """Whether a line rule's expression reads more than its own line."""
    if expression is None:
        return False
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and (node.func.id in AGGREGATES or node.func.id in POSITION or node.func.id == ALLOCATE)
        for node in ast.walk(expression.tree)
    )


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
    #: Its groups' items by group name (``Layout.groups`` under this record or line).
    groups: dict[str, list[Record]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(slots=True)
class Document:
    """A target document: typed header values and lines, ready for a codec to write. A
    group's items (each its values, as a line's) are in the values of what holds them,
    under the group's name: ``header["packages"]``, ``lines[0]["serials"]``."""

    location: str
    header: dict[str, Any]
    lines: list[dict[str, Any]] = field(default_factory=list)


#: The key under which a source record's (or line's) values carry its groups' items
#: (``Record.groups``) through the evaluator: no field has this name.
GROUPS = "\x00groups"

#: A member of a document: its values (with its document's, for a nested source), the
#: fields that failed while it was read, and where it is in the source file.
_Member = tuple[dict[str, Any], set[str], str]


class _RuleError(FieldValueError):
    """A rule that cannot be evaluated on a record; ``line``: the index of the line of
    the document an aggregate was reading when it failed."""

    def __init__(self, rule: str, message: str, value: Any = None, line: int | None = None):
        super().__init__(rule, message, value)
        self.line = line


class _Repeated(_RuleError):
    """A problem of the whole document met again on a later line: not reported twice."""


class _Evaluator:
    def __init__(
        self, mapping: Mapping, target: Layout, report: Report, compiled: Compiled
    ) -> None:
        self.mapping = mapping
        self.target = target
        self.report = report
        self.compiled = compiled
        #: Per section: each target field, its rule, and the source field when the rule
        #: only copies it.
        self._plans = {
            "header": self._plan(mapping.header, target.fields),
            "lines": self._plan(mapping.lines, target.line_fields),
        }
        #: Per section: the target fields whose rule copies a source field whose every
        #: value the target field takes as it is (same type, rules no stricter): copied
        #: without a second check (an unread or failed value goes the general way).
        self._unchanged = {
            section: frozenset(
                spec.name
                for spec, _, plain in self._plans[section]
                if plain is not None
                and plain in compiled.sources
                and spec.takes_unchanged(compiled.sources[plain])
            )
            for section in ("header", "lines")
        }
        #: Per section, when no rule of it evaluates an expression: each target field's
        #: name, the function that gives its value for a row that failed nothing (a
        #: problem raises: the general way then reports it), and the field and rule.
        self._quick: dict[str, list[tuple[str, _Quick, FieldSpec, Rule, str | None]]] = {}
        for section in ("header", "lines"):
            plan = self._plans[section]
            if all(rule is not None and rule.expr is None for _, rule, _ in plan):
                self._quick[section] = [
                    (spec.name, self._quick_value(section, spec, rule, plain), spec, rule, plain)
                    for spec, rule, plain in plan
                    if rule is not None
                ]
        for group in target.groups:
            group_rules = mapping.groups.get(group.name)
            if group_rules is not None:
                self._plans[f"groups.{group.name}"] = self._plan(group_rules.rules, group.fields)
        #: Only expressions (aggregates) read a document's lines from a header rule.
        self.header_reads_lines = any(r.expr is not None for r in mapping.header.values())
        #: A header formed from several rows (grouped rows, or the lines of a split part).
        self.from_rows = bool(mapping.group_by or mapping.split_by)
        self.reads_last = any(r.row == "last" for r in mapping.header.values())
        #: Whether the target has groups held by the document, and by its lines.
        self.record_groups = bool(target.children("record"))
        self.line_groups = bool(target.children("lines"))
        #: The source fields header rules read once per document (outside aggregates), and
        #: the target fields each feeds: every row of a document must agree on them,
        #: unless the rule says which row wins (``row``).
        self.agreed: dict[str, list[str]] = {}
        for name, rule in mapping.header.items():
            if rule.row is not None or rule.const is not None or rule.sequence is not None:
                continue
            expression = compiled.rules.get(("header", name))
            if rule.expr is not None and expression is None:
                continue  # not compiled (``check`` says why)
            reads = expression.outer_names if expression is not None else rule.fields
            for used in sorted(reads):
                self.agreed.setdefault(used, []).append(name)
        for name, expression in compiled.lets.items():  # read from the same first row
            for used in sorted(expression.outer_names):
                self.agreed.setdefault(used, []).append(f"let.{name}")
        # Groups made from the document's values (no ``from`` up to it): the same.
        for group in target.groups:
            if not self._reads_document(group.name):
                continue
            for name, rule in mapping.groups[group.name].rules.items():
                expression = compiled.rules.get((f"groups.{group.name}", name))
                if rule.expr is not None and expression is None:
                    continue
                reads = expression.outer_names if expression is not None else rule.fields
                for used in sorted(reads):
                    self.agreed.setdefault(used, []).append(f"groups.{group.name}.{name}")

    def _reads_document(self, level: str) -> bool:
        """Whether a target group's items are made from the document's own values (it and
        every group above it up to the document have no ``from``)."""
        while level not in ("record", "lines"):
            rules = self.mapping.groups.get(level)
            if rules is None or rules.from_ is not None:
                return False
            level = next(g.under for g in self.target.groups if g.name == level)
        return level == "record"

    def values(
        self,
        section: str,
        ctx: dict[str, Any],
        where: str,
        seq: int,
        failed: set[str] | frozenset[str] = frozenset(),
        lines: list[dict[str, Any]] | None = None,
        *,
        last: _Member | None = None,
        line_where: list[str] | None = None,
    ) -> dict[str, Any]:
        """One section's target values from ``ctx`` (read at ``where``; ``last``: the
        document's last row, for rules with ``row = "last"``; ``line_where``: where each
        of ``lines`` is, for a problem found on one of them by an aggregate)."""
        out: dict[str, Any] = {}
        quick = self._quick.get(section) if not failed and last is None else None
        if quick is not None:
            for name, value_of, spec, quick_rule, plain in quick:
                try:
                    out[name] = value_of(ctx, seq)
                except FieldValueError:
                    out[name], _ = self._field(
                        section, spec, quick_rule, plain, ctx, failed, where, seq, lines, line_where
                    )
            return out
        for spec, rule, plain in self._plans[section]:
            row_ctx, row_failed, row_where = ctx, failed, where
            if last is not None and rule is not None and rule.row == "last":
                row_ctx, row_failed, row_where = last
            out[spec.name], _ = self._field(
                section, spec, rule, plain, row_ctx, row_failed, row_where, seq, lines, line_where
            )
        return out

    def record_documents(self, rec: Record, seq: int) -> Iterator[Document]:
        """The documents of one record (of a mapping with no ``filter``, ``group_by`` or
        ``flatten``: :func:`apply_mapping`'s own step for each record)."""
        members = [
            (_carrying({**rec.values, **ln.values}, ln), rec.failed | ln.failed, ln.location)
            for ln in rec.lines
        ]
        head = {**rec.values, GROUPS: rec.groups} if rec.groups else rec.values
        yield from self.documents(head, rec.failed, rec.location, members, seq)

    def quick_rules(self, section: str) -> list[QuickRule] | None:
        """Each target field of ``section`` as :data:`QuickRule`, for a mapping whose every
        document is one record's, made by rules that read one source field (or none) as
        its value alone: None when some rule does more (an expression, a sequence, a
        template, a join, a row), or a constant fails its field."""
        quick = self._quick.get(section)
        if quick is None:
            return None
        out: list[QuickRule] = []
        for name, value_of, _, rule, plain in quick:
            if (
                rule.sequence is not None
                or rule.template is not None
                or rule.join
                or rule.row is not None
            ):
                return None
            if rule.from_ is None:
                try:
                    out.append((name, "const", None, value_of({}, 0)))
                except FieldValueError:
                    return None
                continue
            source = rule.from_
            if plain is not None:
                if name in self._unchanged[section]:
                    out.append((name, "same", source, None))
                else:
                    out.append((name, "coerce", source, self.target_spec(section, name).coerce))
                continue
            if rule.table is None and rule.default is None:
                spec = self.target_spec(section, name)
                out.append((name, "text", source, (rule.trim, rule.case, spec.coerce)))
                continue
            one = functools.partial(_one_value, value_of, source)
            out.append((name, "table" if rule.table is not None else "call", source, one))
        return out

    def target_spec(self, section: str, name: str) -> FieldSpec:
        """The target field ``name`` of ``section`` ("header" or "lines")."""
        return next(spec for spec, _, _ in self._plans[section] if spec.name == name)

    def _quick_value(self, section: str, spec: FieldSpec, rule: Rule, plain: str | None) -> _Quick:
        """What ``_field`` gives for a rule without an expression on a row that failed
        nothing, doing once what can be done once: a copy the target field takes
        unchanged is not checked again; a constant is checked once; a table's values
        are checked once each (a problem raises :class:`FieldValueError`)."""
        if plain is not None and spec.name in self._unchanged[section]:

            def unchanged(ctx: dict[str, Any], seq: int) -> Any:
                value = ctx.get(plain)
                return None if value == "" else value

            return unchanged
        coerce = spec.coerce
        if plain is not None:

            def copied(ctx: dict[str, Any], seq: int) -> Any:
                value = ctx.get(plain)
                return coerce(None if value == "" else value)

            return copied
        evaluate = self._evaluate
        if rule.const is not None and rule.table is None:
            try:
                constant = coerce(evaluate(section, spec.name, rule, {}, 0, None))
            except FieldValueError:
                constant = _FAILED
            if constant is not _FAILED:
                return lambda ctx, seq: constant
        if rule.table is not None:
            checked: dict[str, Any] = {}  # a table value -> the target field's value

            def from_table(ctx: dict[str, Any], seq: int) -> Any:
                value = evaluate(section, spec.name, rule, ctx, seq, None)
                if type(value) is not str:
                    return coerce(value)
                known = checked.get(value, _FAILED)
                if known is _FAILED:
                    known = checked[value] = coerce(value)
                return known

            return from_table
        return lambda ctx, seq: coerce(evaluate(section, spec.name, rule, ctx, seq, None))

    def _field(
        self,
        section: str,
        spec: FieldSpec,
        rule: Rule | None,
        plain: str | None,
        ctx: dict[str, Any],
        failed: set[str] | frozenset[str],
        where: str,
        seq: int,
        lines: list[dict[str, Any]] | None,
        line_where: list[str] | None,
        position: int | None = None,
        cache: dict[int, Any] | None = None,
    ) -> tuple[Any, bool]:
        """One target field's value, and whether it was had (a problem is reported)."""
        if (
            failed
            and rule is not None
            and (
                "*" in failed or failed.intersection(self.compiled.inputs(section, spec.name, rule))
            )
        ):
            return None, False  # its source value was reported already
        raw: Any = None
        try:
            if plain is not None:  # a source field as it is ("" is no value)
                raw = ctx.get(plain)
                if raw == "":
                    raw = None
            elif rule is not None:
                raw = self._evaluate(section, spec.name, rule, ctx, seq, lines, position, cache)
            return spec.coerce(raw), True
        except _Repeated:
            return None, False  # the document's problem, reported at its first line
        except FieldValueError as exc:
            shown = exc.value if exc.value is not None else raw
            at = where
            line = getattr(exc, "line", None)
            if line is not None and line_where is not None and line < len(line_where):
                at = line_where[line]
            self.report.add(at, spec.name, exc.rule, shown, exc.message)
            return None, False

    @staticmethod
    def _plan(
        rules: dict[str, Rule], specs: list[FieldSpec]
    ) -> list[tuple[FieldSpec, Rule | None, str | None]]:
        """Each target field with its rule, and the source field when the rule only copies
        it (no expression, template, case, trim, default or table)."""
        steps = []
        for spec in specs:
            rule = rules.get(spec.name)
            plain = None
            if (
                rule is not None
                and rule.from_ is not None
                and rule.expr is None
                and rule.const is None
                and rule.sequence is None
                and rule.template is None
                and not rule.join
                and not rule.trim
                and rule.case is None
                and rule.default is None
                and rule.table is None
            ):
                plain = rule.from_
            steps.append((spec, rule, plain))
        return steps

    def keeps(
        self,
        expression: Expression | None,
        ctx: dict[str, Any],
        where: str,
        what: str,
        lines: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Whether a filter keeps a record or a line (a filter that cannot be evaluated on
        it is a problem, and the record is not kept)."""
        if expression is None:
            return True
        try:
            kept = bool(
                expression.evaluate(ctx, lines=lines or (), tables=self.compiled.table_value)
            )
        except ExpressionError as exc:
            self.report.add(where, f"({what})", what, None, exc.message)
            return False
        if not kept:
            self.report.skipped[what] = self.report.skipped.get(what, 0) + 1
        return kept

    def _evaluate(
        self,
        section: str,
        name: str,
        rule: Rule,
        ctx: dict[str, Any],
        seq: int,
        lines: list[dict[str, Any]] | None,
        position: int | None = None,
        cache: dict[int, Any] | None = None,
    ) -> Any:
        value: Any
        if rule.expr is not None:
            try:
                value = self.compiled.rules[(section, name)].evaluate(
                    ctx,
                    lines=lines or (),
                    tables=self.compiled.table_value,
                    position=position,
                    cache=cache,
                )
            except ExpressionError as exc:
                if exc.repeated:
                    raise _Repeated("expr", exc.message) from None
                message = exc.message
                if exc.fields:  # a table() or lookup() miss: say where its key came from
                    message += f" ({self.compiled.source_of(exc.fields)})"
                raise _RuleError("expr", f"{rule.expr}: {message}", line=exc.line) from None
        elif rule.const is not None:
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
                source = self.compiled.source_of(self.compiled.inputs(section, name, rule))
                raise FieldValueError(
                    "table",
                    f"{key!r} is not in value table {rule.table!r}"
                    + (f" ({source})" if source else ""),
                    value=key,
                )
            value = table[key]
        return value

    def documents(
        self,
        head: dict[str, Any],
        head_failed: set[str],
        location: str,
        members: list[_Member],
        seq: int,
    ) -> Iterator[Document]:
        """The target documents of one source document: its header values, and its lines
        as (values, failed fields, location); split by ``split_by``, lines filtered by
        ``line_filter``, lines mapped before the header (whose aggregates read them).

        A header formed from rows (``group_by``, ``split_by``) is read from the first row
        its document keeps (``row = "last"``: the last); the rows must agree on every
        other field a header rule reads outside aggregates."""
        line_filter = self.compiled.line_filter
        kept = (
            members
            if line_filter is None
            else [m for m in members if self.keeps(line_filter, m[0], m[2], "lines")]
        )
        parts: dict[tuple[Any, ...], list[_Member]] = {}
        if self.mapping.split_by:
            for member in kept:
                key = tuple(member[0].get(k) for k in self.mapping.split_by)
                parts.setdefault(key, []).append(member)
        else:
            parts[()] = kept
        for part in parts.values():
            if members and not part:
                # Every line left out by the line filter: no document (said in the count).
                self.report.skipped["documents"] = self.report.skipped.get("documents", 0) + 1
                continue
            # The header (and [let]) read the document's first kept row, as it is formed.
            ctx, failed, where, last = head, head_failed, location, None
            if self.from_rows and part:
                self._agree(part)
                first_ctx, failed, where = part[0]
                ctx = {**head, **first_ctx}
                if self.reads_last:
                    last = ({**head, **part[-1][0]}, part[-1][1], part[-1][2])
            named: dict[str, Any] = {}
            contexts: list[dict[str, Any]] | None
            if self.compiled.whole:
                lines, contexts, named, within = self._whole(ctx, set(failed), where, part)
                ctx = {**ctx, **named}
                if last is not None:
                    last = ({**last[0], **named}, last[1], last[2])
                if self.line_groups:
                    for line, (line_ctx, line_failed, at) in zip(lines, within, strict=True):
                        line.update(self.items("lines", line_ctx, line_failed, at, line))
            else:
                lines = [
                    self.values("lines", ctx, at, j, failed)
                    for j, (ctx, failed, at) in enumerate(part)
                ]
                if self.line_groups:
                    for line, (line_ctx, line_failed, at) in zip(lines, part, strict=True):
                        line.update(self.items("lines", line_ctx, line_failed, at, line))
                contexts = (
                    [{**ctx, **line} for (ctx, _, _), line in zip(part, lines, strict=True)]
                    if self.header_reads_lines
                    else None
                )
            header = self.values(
                "header",
                ctx,
                where,
                seq,
                failed,
                lines=contexts,
                last=last,
                line_where=[at for _, _, at in part],
            )
            if self.record_groups:
                header.update(self.items("record", ctx, failed, where, header))
            yield Document(location, header, lines)

    def items(
        self,
        level: str,
        ctx: dict[str, Any],
        failed: set[str] | frozenset[str],
        where: str,
        parent: dict[str, Any],
    ) -> dict[str, list[dict[str, Any]]]:
        """The items of the target groups ``level``'s values hold: one per item of the
        source group a group's rules name (``from``; none: one item), its rules reading
        the item's values over its parent's (``ctx``: source values, and ``parent``: the
        parent's target values, under them), aggregates and positions over the items of
        the same parent."""
        out: dict[str, list[dict[str, Any]]] = {}
        held: dict[str, list[Record]] = ctx.get(GROUPS) or {}
        for group in self.target.children(level):
            rules = self.mapping.groups.get(group.name)
            if rules is None:
                continue  # (``check`` says so)
            base = {**parent, **ctx}
            members: list[tuple[dict[str, Any], set[str] | frozenset[str], str, Record | None]]
            if rules.from_ is None:
                members = [(base, failed, where, None)]
            else:
                members = [
                    ({**base, **item.values}, failed | item.failed, item.location, item)
                    for item in held.get(rules.from_, ())
                ]
            expression = self.compiled.group_filters.get(group.name)
            if expression is not None:
                what = f"{group.name} items"
                members = [m for m in members if self.keeps(expression, m[0], m[2], what)]
            section = f"groups.{group.name}"
            contexts = [m[0] for m in members]
            item_where = [m[2] for m in members]
            # A rule that aggregates (or allocates) over a value an item could not have:
            # not computed on any item (that value's problem is reported where it is).
            blocked = {
                spec.name
                for spec, _, _ in self._plans[section]
                if (expression := self.compiled.rules.get((section, spec.name))) is not None
                and self._reads_failed(expression, set(), [set(m[1]) for m in members])
            }
            cache: dict[int, Any] = {}
            below = bool(self.target.children(group.name))
            items: list[dict[str, Any]] = []
            for i, (item_ctx, item_failed, at, item) in enumerate(members):
                values: dict[str, Any] = {}
                for spec, rule, plain in self._plans[section]:
                    if spec.name in blocked:
                        values[spec.name] = None
                        continue
                    values[spec.name], _ = self._field(
                        section,
                        spec,
                        rule,
                        plain,
                        item_ctx,
                        item_failed,
                        at,
                        i,
                        contexts,
                        item_where,
                        i,
                        cache,
                    )
                if below:
                    inner = {**item_ctx, GROUPS: item.groups if item is not None else held}
                    values.update(self.items(group.name, inner, item_failed, at, values))
                items.append(values)
            problem = group_count(group, len(items))
            if problem:
                self.report.add(
                    where,
                    group.name,
                    "group",
                    None,
                    f"{problem}: layout {self.target.name} would refuse what is written",
                )
            out[group.name] = items
        return out

    def _whole(
        self,
        head: dict[str, Any],
        head_failed: set[str],
        location: str,
        part: list[_Member],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], list[_Member]]:
        """A document's lines when its rules read more than their own row: each rule (and
        named value) over every line before the next, in the order of what they read.
        ``head``: the document's header values as the header reads them (its first kept
        row), read at ``location``. Returns the lines' target values, the lines as the
        header's aggregates read them (their source values, the named values, and the
        target line fields over the source fields of the same name), the document's
        named values, and each line as its groups' rules read it (its source values and
        named values, the fields that failed, where it is). A value is not computed from a
        value that could not be read or computed (that problem is reported once, where it
        is)."""
        sources = set(head).union(*(ctx for ctx, _, _ in part)) if part else set(head)
        contexts = [dict(ctx) for ctx, _, _ in part]
        failed = [set(f) for _, f, _ in part]
        where = [at for _, _, at in part]
        lines: list[dict[str, Any]] = [{} for _ in part]
        named: dict[str, Any] = {}
        named_failed: set[str] = set(head_failed)
        plans = {spec.name: (spec, rule, plain) for spec, rule, plain in self._plans["lines"]}
        cache: dict[int, Any] = {}
        for kind, name in self.compiled.order:
            if kind == "let":
                expression = self.compiled.lets.get(name)
                value = _FAILED
                if expression is not None and not self._reads_failed(
                    expression, named_failed, failed
                ):
                    value = self._named(
                        expression,
                        {**head, **named},
                        contexts,
                        f"let.{name}",
                        location,
                        None,
                        cache,
                        where,
                    )
                if value is _FAILED:
                    named_failed.add(name)
                    value = None
                named[name] = value
                for j, ctx in enumerate(contexts):
                    ctx.setdefault(name, value)
                    if name in named_failed:
                        failed[j].add(name)
                continue
            expression = (
                self.compiled.line_lets.get(name)
                if kind == "line_let"
                else self.compiled.rules.get(("lines", name))
            )
            # An aggregate or an allocation over a value some line could not have.
            blocked = expression is not None and self._reads_failed(expression, set(), failed)
            for j, ctx in enumerate(contexts):
                ok = False
                value = None
                if kind == "line_let":
                    if (
                        expression is not None
                        and not blocked
                        and not ("*" in failed[j] or failed[j] & expression.names)
                    ):
                        value = self._named(
                            expression,
                            ctx,
                            contexts,
                            f"line_let.{name}",
                            where[j],
                            j,
                            cache,
                            where,
                        )
                        ok = value is not _FAILED
                elif name in plans:
                    spec, rule, plain = plans[name]
                    if not blocked:
                        value, ok = self._field(
                            "lines",
                            spec,
                            rule,
                            plain,
                            ctx,
                            failed[j],
                            where[j],
                            j,
                            contexts,
                            where,
                            j,
                            cache,
                        )
                    lines[j][name] = value if ok else None
                else:
                    continue
                if not ok:
                    failed[j].add(name)
                    value = None
                if name not in sources:
                    ctx[name] = value
        layout = [spec.name for spec, _, _ in self._plans["lines"]]
        lines = [{field_name: line.get(field_name) for field_name in layout} for line in lines]
        seen = [{**ctx, **line} for ctx, line in zip(contexts, lines, strict=True)]
        return lines, seen, named, list(zip(contexts, failed, where, strict=True))

    @staticmethod
    def _reads_failed(expression: Expression, document: set[str], lines: list[set[str]]) -> bool:
        """Whether an expression reads a document value that failed, or reads inside an
        aggregate (or an allocation) a line value that failed on some line."""
        if document & expression.names:
            return True
        inner = expression.names - expression.outer_names
        return bool(inner) and any("*" in f or f & inner for f in lines)

    def _named(
        self,
        expression: Expression,
        ctx: dict[str, Any],
        contexts: list[dict[str, Any]],
        key: str,
        where: str,
        position: int | None,
        cache: dict[int, Any],
        line_where: list[str],
    ) -> Any:
        """A named value (``[let]``: position None); _FAILED once reported."""
        try:
            return expression.evaluate(
                ctx,
                lines=contexts,
                tables=self.compiled.table_value,
                position=position,
                cache=cache if position is not None else None,
            )
        except ExpressionError as exc:
            if exc.repeated:
                return _FAILED  # the document's problem, reported at its first line
            at = where
            if exc.line is not None and exc.line < len(line_where):
                at = line_where[exc.line]
            message = exc.message
            if exc.fields:
                message += f" ({self.compiled.source_of(exc.fields)})"
            self.report.add(at, key, "expr", None, f"{expression.text}: {message}")
            return _FAILED

    def _agree(self, rows: list[_Member]) -> None:
        """Report each row that gives a header field another value than the document's
        first row giving it (a field that failed to be read on a row is reported already,
        and not compared). Typed values are compared; no value differs from a value."""
        if not self.agreed:
            return
        seen: dict[str, tuple[Any, str]] = {}
        for ctx, failed, where in rows:
            if "*" in failed:
                continue
            for name, targets in self.agreed.items():
                if name in failed:
                    continue
                value = ctx.get(name)
                if value == "":
                    value = None
                if name not in seen:
                    seen[name] = (value, where)
                    continue
                first, first_where = seen[name]
                if _same(first, value):
                    continue
                self.report.add(
                    where,
                    ", ".join(targets),
                    "agree",
                    value,
                    f"rows of one document disagree on {self.compiled.source_of([name])}: "
                    f"{_shown(value)} at {where}, {_shown(first)} at {first_where} (its first "
                    f"row); header field{'s' if len(targets) > 1 else ''} "
                    f"{', '.join(targets)} take{'' if len(targets) > 1 else 's'} one value: "
                    'make the rows agree, or say which row wins with row = "first" or '
                    '"last" in the rule',
                )


#: A named value that could not be computed (its problem reported).
_FAILED = object()

#: A target field's value from a row's values and its sequence number (see
#: ``_Evaluator._quick_value``).
_Quick = Callable[[dict[str, Any], int], Any]

#: A target field made by a rule that reads at most one source field, as
#: :meth:`RecordMapper.quick_rules` describes it: (target field, how, source field, what),
#: how being "same" (the source value as it is: the target field takes every value of
#: its source unchanged), "coerce" (``what`` brings the source value to the target
#: field), "text" (``what`` is (trim, case, coerce): a text is trimmed (``str.strip``)
#: and cased, an empty one is no value, then it is brought to the target field), "table"
#: (``what`` gives the value from the source value; it depends on nothing else, so it
#: may be remembered), "call" (the same, not worth remembering) or "const" (``what`` is
#: the value). A problem raises :class:`FieldValueError`.
QuickRule = tuple[str, str, str | None, Any]


def _one_value(value_of: _Quick, source: str, value: Any) -> Any:
    """A quick rule's value for a row whose field ``source`` holds ``value``."""
    return value_of({source: value}, 0)


def _same(a: Any, b: Any) -> bool:
    """Whether two rows give the same typed value (a text is not the number it spells)."""
    return type(a) is type(b) and a == b


def _shown(value: Any) -> str:
    return "no value" if value is None else repr(value) if isinstance(value, str) else _text(value)


_text = as_text  # one rendering per type (templates, joins, table keys as concat() does)


def apply_mapping(
    mapping: Mapping,
    target: Layout,
    records: Iterable[Record],
    report: Report,
    start: int = 0,
    compiled: Compiled | None = None,
) -> Iterator[Document]:
    """Map source records to target documents, one at a time; problems go to ``report``.

    Grouping streams: rows of one document must be adjacent in the file, as exports
    sorted by document number are. A key seen again after its run ended is reported
    (with both places), unless the mapping sets ``group_adjacent = false``, which
    groups the whole file in memory instead. Records the mapping's ``filter`` does not
    keep are counted in ``report.skipped``.
    """
    if compiled is None:
        compiled, _ = compile_mapping(mapping, None, target)
    compiled.lookups.refresh()
    ev = _Evaluator(mapping, target, report, compiled)
    if compiled.filter is not None:
        records = _kept(records, ev, compiled.filter, mapping)
    if mapping.group_by:
        yield from _grouped(mapping, records, report, ev)
        return
    if mapping.flatten:
        for rec in records:
            contexts = [{**rec.values, **ln.values} for ln in rec.lines]
            line_where = [ln.location for ln in rec.lines]
            for i, line in enumerate(rec.lines):
                if not ev.keeps(compiled.line_filter, contexts[i], line.location, "lines"):
                    continue
                header = ev.values(
                    "header",
                    contexts[i],
                    line.location,
                    i,
                    rec.failed | line.failed,
                    lines=contexts,
                    line_where=line_where,
                )
                yield Document(line.location, header)
        return
    for i, rec in enumerate(records, start=start):
        yield from ev.record_documents(rec, i)


def _carrying(values: dict[str, Any], rec: Record) -> dict[str, Any]:
    """A member's values with its record's groups (``GROUPS``), when it has any."""
    if rec.groups:
        values[GROUPS] = rec.groups
    return values


class RecordMapper:
    """:func:`apply_mapping` one record at a time, for a mapping that makes each record's
    documents from it alone (no ``filter``, ``group_by`` or ``flatten``: see
    :meth:`fits`), and what its rules do when they are quick (:meth:`quick_rules`)."""

    def __init__(
        self, mapping: Mapping, target: Layout, report: Report, compiled: Compiled
    ) -> None:
        compiled.lookups.refresh()
        self._ev = _Evaluator(mapping, target, report, compiled)

    @staticmethod
    def fits(mapping: Mapping, compiled: Compiled) -> bool:
        """Whether each record's documents are made from it alone, as :meth:`documents`
        makes them."""
        return compiled.filter is None and not mapping.group_by and not mapping.flatten

    def documents(self, rec: Record, seq: int) -> Iterator[Document]:
        """What :func:`apply_mapping` yields for ``rec``, the ``seq``-th record."""
        return self._ev.record_documents(rec, seq)

    def quick_rules(self, section: str) -> list[QuickRule] | None:
        """See :meth:`_Evaluator.quick_rules`; also None when documents are not simply
        one per record, lines one per line (a line filter, ``split_by``, ``[let]``, rules
        reading whole documents, groups)."""
        ev = self._ev
        mapping, compiled = ev.mapping, ev.compiled
        if (
            compiled.line_filter is not None
            or mapping.split_by
            or compiled.whole
            or compiled.lets
            or compiled.line_lets
            or mapping.groups
            or ev.target.groups
            or ev.header_reads_lines
            or ev.reads_last
        ):
            return None
        return ev.quick_rules(section)


@dataclass
class Step:
    """One mapping of a chain, with the layouts it reads and writes, compiled."""

    mapping: Mapping
    source: Layout
    target: Layout
    compiled: Compiled


def apply_steps(steps: list[Step], records: Iterable[Record], report: Report) -> Iterator[Document]:
    """Map records through each step in turn: each step's documents are the next step's
    records, in memory, their values as typed as the layout between them says (nothing is
    written or read again in between)."""
    docs: Iterable[Document] = ()
    for i, step in enumerate(steps):
        if i:
            records = (as_record(doc, steps[i - 1].target) for doc in docs)
        docs = apply_mapping(step.mapping, step.target, records, report, compiled=step.compiled)
    yield from docs


def as_record(doc: Document, layout: Layout) -> Record:
    """A document written by one step (in ``layout``) as the record the next reads."""
    header = _as_record(doc.location, doc.header, layout, "record")
    header.lines = [_as_record(doc.location, line, layout, "lines") for line in doc.lines]
    return header


def _as_record(location: str, values: dict[str, Any], layout: Layout, level: str) -> Record:
    """A level's values as a record, its groups' items as its groups."""
    held = layout.children(level)
    if not held:
        return Record(location, dict(values))
    own = dict(values)
    groups = {
        group.name: [
            _as_record(location, item, layout, group.name) for item in own.pop(group.name, ())
        ]
        for group in held
    }
    return Record(location, own, groups=groups)


def _kept(
    records: Iterable[Record], ev: _Evaluator, expression: Expression, mapping: Mapping
) -> Iterator[Record]:
    """The records the mapping's ``filter`` keeps."""
    what = "documents" if not mapping.group_by else "rows"
    for rec in records:
        lines = [{**rec.values, **ln.values} for ln in rec.lines]
        if ev.keeps(expression, rec.values, rec.location, what, lines):
            yield rec


def _grouped(
    mapping: Mapping,
    records: Iterable[Record],
    report: Report,
    ev: _Evaluator,
) -> Iterator[Document]:
    def document(members: list[Record]) -> Iterator[Document]:
        first = members[0]
        yield from ev.documents(
            first.values,
            first.failed,
            first.location,
            [
                (_carrying(dict(m.values), m) if m.groups else m.values, m.failed, m.location)
                for m in members
            ],
            0,
        )

    if not mapping.group_adjacent:
        groups: dict[tuple[Any, ...], list[Record]] = {}
        for rec in records:
            groups.setdefault(tuple(rec.values.get(k) for k in mapping.group_by), []).append(rec)
        for members in groups.values():
            yield from document(members)
        return
    closed: dict[tuple[Any, ...], str] = {}
    run: list[Record] = []
    run_key: tuple[Any, ...] | None = None
    for rec in records:
        key = tuple(rec.values.get(k) for k in mapping.group_by)
        if run and key != run_key:
            closed[run_key] = run[0].location  # type: ignore[index]
            yield from document(run)
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
    if run:
        yield from document(run)

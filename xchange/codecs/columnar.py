"""The fast path for flat mappings to CSV from CSV or line-level XML: a chunk of records at
a time, as pandas columns.

It computes exactly what the row path computes, for a safe subset of layouts and mappings
(see :meth:`ColumnarPlan.build`), and gives up on a chunk (returns ``None``) as soon as a row
breaks a rule or holds a value outside that subset: the row path then does that chunk, and
its report is the one a person reads. Amounts stay decimal text throughout: they are
checked and padded as strings, never turned into binary floating point.
"""

from __future__ import annotations

import ast
import itertools
import operator
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from xchange.codecs import Chunk
from xchange.expressions import Expression
from xchange.layout import SPACES, FieldSpec, FieldValueError, Layout
from xchange.mapping import Compiled, Mapping, Rule

_INT = r"[+-]?[0-9]+"
#: Digits on both sides of a decimal point (``5.`` and ``.5`` are the row path's problems).
_DEC = r"[+-]?[0-9]+(?:\.[0-9]+)?"
_DATE_DIRECTIVES = {"%Y", "%m", "%d", "%H", "%M", "%S"}
_TYPES = {"string", "enum", "integer", "decimal", "date", "datetime"}


class _GiveUp(Exception):
    """This chunk needs the row path."""


#: Values already in the canonical text the row path would write (checked on a whole
#: column at once; none of these patterns can match a NUL, the separator used).
CANONICAL_INT = "(?:0|[1-9][0-9]{0,17})"


def canonical_dec(scale: int | None) -> str | None:
    """Decimal text that ``format(Decimal(text), "f")`` gives back unchanged (never in
    exponent form: at most 5 decimals), with at most ``scale`` decimals."""
    most = 5 if scale is None else min(scale, 5)
    if most == 0:
        return CANONICAL_INT
    return f"{CANONICAL_INT}(?:\\.[0-9]{{1,{most}}})?"


def _all_match(values: pd.Series, pattern: str) -> bool:
    """Whether every value fully matches ``pattern``, in one scan of the column joined by
    NULs (``pattern`` must not be able to match a NUL)."""
    if values.empty:
        return True
    try:
        joined = "\x00".join(values.tolist())
    except TypeError:
        return False
    if joined.count("\x00") != len(values) - 1:
        return False  # a value holds a NUL itself
    return re.fullmatch(f"(?:{pattern})(?:\x00(?:{pattern}))*", joined) is not None


def _smap(fn: Callable[[str], object], text: pd.Series) -> pd.Series:
    """``fn`` of every value (all text), as pandas' ``.str`` methods give, without their
    per-value overhead."""
    try:
        values = list(map(fn, text.tolist()))
    except TypeError:  # a value that is not text: pandas decides
        return text.astype(object).map(fn)
    return pd.Series(values, index=text.index, dtype=object)


#: Date directives: the pattern of what strftime writes (years 1000-9999), and where
#: numpy's ISO text (YYYY-MM-DDTHH:MM:SS) holds them.
WHEN_PARTS = {
    "%Y": ("[1-9][0-9]{3}", 0, 4),
    "%m": ("(?:0[1-9]|1[0-2])", 5, 2),
    "%d": ("(?:0[1-9]|[12][0-9]|3[01])", 8, 2),
    "%H": ("(?:[01][0-9]|2[0-3])", 11, 2),
    "%M": ("[0-5][0-9]", 14, 2),
    "%S": ("[0-5][0-9]", 17, 2),
}


def when_pieces(fmt: str) -> list[str] | None:
    """A date format as directives and single literal characters (None: it uses other
    directives, or a NUL)."""
    pieces = re.findall(r"%.|.", fmt, flags=re.DOTALL)
    if "\x00" in fmt or any(p.startswith("%") and p not in WHEN_PARTS for p in pieces):
        return None
    return pieces


def canonical_when(fmt: str) -> str | None:
    """The text ``strftime(fmt)`` writes for a date of years 1000-9999, as a pattern."""
    pieces = when_pieces(fmt)
    if pieces is None:
        return None
    return "".join(WHEN_PARTS[p][0] if p in WHEN_PARTS else re.escape(p) for p in pieces)


def _strftime(data: pd.Series, fmt: str) -> pd.Series:
    """``data.dt.strftime(fmt)``, by cutting numpy's ISO text apart (years of pandas'
    range always have four digits)."""
    pieces = when_pieces(fmt)
    if pieces is None or len(data) == 0:
        formatted: pd.Series = data.dt.strftime(fmt)
        return formatted
    iso = np.datetime_as_string(data.to_numpy(dtype="datetime64[s]"), unit="s")
    chars = iso.astype("U19").view("U1").reshape(len(iso), 19)
    width = sum(WHEN_PARTS[p][2] if p in WHEN_PARTS else 1 for p in pieces)
    if width == 0:
        return pd.Series([""] * len(data), index=data.index, dtype=object)
    out = np.empty((len(iso), width), dtype="U1")
    at = 0
    for p in pieces:
        if p in WHEN_PARTS:
            _, start, size = WHEN_PARTS[p]
            out[:, at : at + size] = chars[:, start : start + size]
            at += size
        else:
            out[:, at] = p
            at += 1
    text = out.view(f"U{width}").ravel().astype(object)
    return pd.Series(text, index=data.index, dtype=object)


#: Pattern pieces that may match a NUL or depend on where a value starts or ends.
_NUL_UNSAFE = re.compile(r"\\[DWSAZbBxuUN0-9]|\[\^|\(\?(?!:)|[.^$]|\x00")


def _nul_safe(pattern: str) -> bool:
    """Whether ``pattern`` can only match NUL-free text and has no anchors, so that it can
    be checked on a column joined by NULs (conservative: escaped backslashes, classes
    and the like make it answer no)."""
    if "\\\\" in pattern:
        return False
    return _NUL_UNSAFE.search(pattern) is None


def _series(values: Sequence[str | None] | None) -> pd.Series | None:
    """A column of a chunk as text ("" where there is no value)."""
    if values is None or isinstance(values, pd.Series):
        return values
    text = pd.Series(values, dtype=object)  # type: ignore[arg-type]  # (None: no value)
    return text.fillna("") if None in values else text


_SCALED = re.compile(r"-?[0-9]+(?:\.[0-9]*)?")


def _scaled(scale: int) -> Callable[[str], str]:
    """Canonical decimal text -> the same number with exactly ``scale`` decimals (gives up
    on a value that would lose a digit other than a trailing zero)."""

    def fix(text: str) -> str:
        if _SCALED.fullmatch(text) is None:
            raise _GiveUp
        whole, _, frac = text.partition(".")
        if frac[scale:].strip("0"):
            raise _GiveUp
        return f"{whole}.{frac[:scale].ljust(scale, '0')}" if scale else whole

    return fix


def _unusual(spec: FieldSpec, text: pd.Series) -> pd.Series:
    """What the row path's first step (:meth:`FieldSpec.unusual`) makes of the values: one
    that shows nothing (only invisible characters, and whitespace when trimmed) is no value
    (""); one it would change (``digits = "unicode"``, ``invisible = "remove"``: the report
    says so) or refuse gives up. Printable text, all of a column in one scan, is as it is."""
    values = text.tolist()
    try:
        joined = "".join(values)
    except TypeError:
        raise _GiveUp from None
    ascii_digits = spec.digits == "ascii"
    if joined.isprintable() and (ascii_digits or joined.isascii()):
        return text
    out = list(values)
    for i, value in enumerate(values):
        if value.isprintable() and (ascii_digits or value.isascii()):
            continue
        try:
            read = spec.unusual(value)
        except FieldValueError:
            raise _GiveUp from None
        if read != value:
            if read:
                raise _GiveUp
            out[i] = ""
    return pd.Series(out, index=text.index, dtype=object)


def _trim(text: str) -> str:
    """A field's ``trim``: white space at both ends, not control characters."""
    return text.strip(SPACES)


def _trimmed(text: pd.Series) -> pd.Series:
    """:func:`_trim` of every value, by ``str.strip`` itself (no Python call per value)."""
    values = text.tolist()
    try:
        out = list(map(str.strip, values, itertools.repeat(SPACES, len(values))))
    except TypeError:  # a value that is not text: pandas decides
        return text.astype(object).map(_trim)
    return pd.Series(out, index=text.index, dtype=object)


def _is_empty(text: pd.Series) -> pd.Series:
    return pd.Series(text.to_numpy() == "", index=text.index)


@dataclass(slots=True)
class _Col:
    """A column of values of one kind: str, int (canonical text), dec (canonical decimal
    text), date or datetime (datetime64); ``null`` marks rows without a value."""

    kind: str
    data: pd.Series
    null: pd.Series
    #: No value has whitespace at either end (trimming would change nothing).
    stripped: bool = False
    #: Decimals: no value has more decimals than this (known from the field's scale).
    scale: int | None = None
    #: Decimals: every value is canonical with exactly ``scale`` decimals (as written).
    exact: bool = False


def kind_of(spec: FieldSpec) -> str:
    return {"string": "str", "enum": "str", "integer": "int", "decimal": "dec"}.get(
        spec.type, spec.type
    )


def _formats_ok(formats: list[str]) -> bool:
    return all(set(re.findall(r"%.", f)) <= _DATE_DIRECTIVES for f in formats)


def _spec_ok(spec: FieldSpec) -> bool:
    if spec.type not in _TYPES or spec.unique:
        return False
    if spec.type == "decimal" and spec.decimal_separator != ".":
        return False
    if spec.type in ("date", "datetime"):
        return _formats_ok(spec.formats) and spec.min_length is None and spec.max_length is None
    return True


class ColumnarPlan:
    """The columnar program for one flat mapping (CSV or XML records -> CSV rows)."""

    def __init__(
        self, source: Layout, mapping: Mapping, target: Layout, compiled: Compiled
    ) -> None:
        self.source = source
        self.mapping = mapping
        self.target = target
        self.compiled = compiled
        #: Rows the filter left out in the last chunk converted.
        self.skipped = 0
        self.by_name = {f.name: f for f in source.fields}
        #: What the chunk being converted has computed once for all its expressions.
        self._memo = _Memo()
        self._tables: dict[str, _Table] = {}

    #: Every key of a mapping, by what the columnar path does with it: carried out, or a
    #: reason to leave the route to the row path (``build`` refuses it). A new key is in
    #: neither until someone decides (a test ties this to the mapping's keys).
    CARRIES_OUT = frozenset(
        {
            "name",
            "version",
            "description",
            "source",
            "target",
            "header",
            "tables",
            "lookups",
            "filter",
            "source_file",
            "source_bytes",
            "group_adjacent",
        }
    )
    REFUSES = frozenset(
        {
            "output",
            "group_by",
            "flatten",
            "lines",
            "line_filter",
            "split_by",
            "let",
            "line_let",
            "steps",
            "groups",
            "totals",
        }
    )

    #: The same for every option of a rule (``mapping.Rule``): a rule that gives a refused
    #: one leaves the route to the row path.
    RULE_CARRIES_OUT = frozenset(
        {"from_", "expr", "const", "template", "sequence", "table", "default", "trim", "case"}
    )
    RULE_REFUSES = frozenset({"join", "sep", "row"})

    @classmethod
    def build(
        cls, source: Layout, mapping: Mapping, target: Layout, compiled: Compiled
    ) -> ColumnarPlan | None:
        """A plan, or None when the route is outside what the columnar path does."""
        if (
            source.codec not in ("csv", "xml")
            or target.codec != "csv"
            or any(f.multiple == "all" for f in source.fields)
            or source.shape != "rows"
            or target.shape != "rows"
            or source.groups
            or target.groups
            or mapping.group_by
            or mapping.flatten
            or mapping.output != "batch"
            or mapping.line_filter is not None
            or mapping.split_by
            or mapping.let
            or mapping.line_let
            or mapping.steps
            or mapping.totals
            or not all(_spec_ok(f) for f in (*source.fields, *target.fields))
            or not all(vectorizable(e) for e in compiled.rules.values())
            or (compiled.filter is not None and not vectorizable(compiled.filter))
            or (
                compiled.filter is not None
                and any(r.sequence is not None for r in mapping.header.values())
            )
        ):
            return None
        by_name = {f.name: f for f in source.fields}
        for spec in target.fields:
            rule = mapping.header.get(spec.name)
            if rule is None:
                continue
            if rule.model_fields_set & cls.RULE_REFUSES:
                return None
            if rule.template is not None and any(
                spec_ or conv for _, f, spec_, conv in string.Formatter().parse(rule.template) if f
            ):
                return None
            kind = cls._rule_kind(rule, by_name)
            if not cls._compatible(kind, spec):
                return None
        return cls(source, mapping, target, compiled)

    @staticmethod
    def _rule_kind(rule: Rule, by_name: dict[str, FieldSpec]) -> str:
        if rule.sequence is not None:
            return "int"
        if rule.expr is not None:
            return "str"  # (judged on each chunk: numbers go to scaled decimal fields only)
        if rule.from_ is not None and rule.table is None:
            return kind_of(by_name[rule.from_])
        return "str"

    @staticmethod
    def _compatible(kind: str, target: FieldSpec) -> bool:
        t = kind_of(target)
        return (
            kind == "str"
            or kind == t
            or (t == "str")
            or (t == "date" and kind == "datetime")
            or (t == "dec" and kind == "int")
        )

    # ------------------------------------------------------------------ running

    def convert(self, chunk: Chunk) -> pd.DataFrame | None:
        """Rendered target rows for a chunk of source text, or None (use the row path);
        ``self.skipped`` says how many rows the mapping's filter left out."""
        self.skipped = 0
        if not chunk.clean:
            return None
        n = chunk.size
        memo = self._memo = _Memo(self._tables)
        try:
            columns = {
                spec.name: self._parse(spec, _series(chunk.columns.get(spec.key)), n)
                for spec in self.source.fields
            }
            seq_start = chunk.offset
            if self.compiled.filter is not None:
                keep = _Vector(self.compiled, columns, n, memo).run(self.compiled.filter)
                if not isinstance(keep, np.ndarray) or keep.dtype != bool:
                    raise _GiveUp
                kept = {name: _kept(col, keep) for name, col in columns.items()}
                memo.keep(keep, {id(col): kept[name] for name, col in columns.items()})
                columns = kept
                self.skipped = int((~keep).sum())
                n = int(keep.sum())
            out = {}
            for spec in self.target.fields:
                rule = self.mapping.header.get(spec.name)
                value = (
                    self._evaluate(rule, columns, n, seq_start, spec)
                    if rule is not None
                    else _Col(
                        "str",
                        pd.Series([""] * n, dtype=object),
                        pd.Series(True, index=range(n)),
                    )
                )
                out[spec.key] = self._render(spec, self._coerce(spec, value))
        except (_GiveUp, pd.errors.OutOfBoundsDatetime, OverflowError):
            # Dates outside pandas' range (before 1677, after 2262) are the row path's too.
            return None
        return pd.DataFrame(out)

    # ------------------------------------------------------------------ parse

    def _parse(
        self, spec: FieldSpec, text: pd.Series | None, n: int, *, stripped: bool = False
    ) -> _Col:
        if text is None:
            text = pd.Series([""] * n, dtype=object)
        text = text.reset_index(drop=True).astype(object)
        if spec.trim and not stripped:
            text = _trimmed(text)
        text = _unusual(spec, text)
        null = _is_empty(text)
        if spec.null_values:
            null |= text.isin(spec.null_values)
        if spec.required and bool(null.any()):
            raise _GiveUp
        live = ~null
        kind = kind_of(spec)
        if kind == "str":
            data = text
            if spec.type == "enum" and not bool(text[live].isin(spec.values).all()):
                raise _GiveUp
            pattern = spec.pattern_regex  # (\d is 0-9, as the row path reads it)
            if pattern is not None:
                if _nul_safe(pattern):
                    ok = _all_match(text[live], pattern)
                else:
                    ok = all(map(re.compile(pattern).fullmatch, text[live].tolist()))
                if not ok:
                    raise _GiveUp
        elif kind == "int":
            data = self._int(text, live)
        elif kind == "dec":
            data = self._dec(spec, text, live)
        else:
            data = self._when(spec, text, live)
        self._lengths(spec, text, live)
        col = _Col(
            kind,
            data,
            null,
            stripped=spec.trim or stripped,
            scale=0 if kind == "int" else (spec.scale if kind == "dec" else None),
        )
        if kind in ("int", "dec"):
            self._bounds(spec, col)
        return col

    @staticmethod
    def _lengths(spec: FieldSpec, text: pd.Series, live: pd.Series) -> None:
        if spec.min_length is None and spec.max_length is None:
            return
        lengths = _smap(len, text[live])
        if spec.min_length is not None and bool((lengths < spec.min_length).any()):
            raise _GiveUp
        if spec.max_length is not None and bool((lengths > spec.max_length).any()):
            raise _GiveUp

    @staticmethod
    def _int(text: pd.Series, live: pd.Series) -> pd.Series:
        values = text[live]
        if _all_match(values, CANONICAL_INT):
            return text  # already as the row path writes it
        if not bool(values.str.fullmatch(_INT).all()) or bool((values.str.len() > 18).any()):
            raise _GiveUp
        data = text.copy()
        data[live] = values.astype("int64").astype(str)
        return data

    @staticmethod
    def _dec(spec: FieldSpec, text: pd.Series, live: pd.Series) -> pd.Series:
        canonical_form = canonical_dec(spec.scale)
        if canonical_form is not None and _all_match(text[live], canonical_form):
            return text  # already as the row path writes it
        # Group separators and currency symbols are the row path's to judge.
        cleaned = text[live]
        if not bool(cleaned.str.fullmatch(_DEC).all()):
            raise _GiveUp
        parts = cleaned.str.extract(r"^([+-]?)([0-9]+)\.?([0-9]*)$")
        sign, whole, frac = parts[0], parts[1].str.lstrip("0"), parts[2]
        whole = whole.where(whole != "", "0")
        if bool(((sign == "-") & (whole == "0") & (frac.str.strip("0") == "")).any()):
            raise _GiveUp  # negative zero: Decimal keeps its sign; leave it to the row path
        if bool(((whole == "0") & frac.str.match(r"^0{6}")).any()):
            raise _GiveUp  # would print in exponent form
        if spec.scale is not None and bool((frac.str.slice(spec.scale).str.strip("0") != "").any()):
            raise _GiveUp
        canonical = sign.where(sign == "-", "") + whole + ("." + frac).where(frac != "", "")
        data = text.copy()
        data[live] = canonical
        return data

    @staticmethod
    def _when(spec: FieldSpec, text: pd.Series, live: pd.Series) -> pd.Series:
        values = text[live]
        canonical = canonical_when(spec.formats[0]) if spec.formats else None
        if canonical is not None and _all_match(values, canonical):
            # Every value in the first format's canonical form: valid dates need no
            # round trip through strftime to be accepted.
            parsed = pd.to_datetime(values, format=spec.formats[0], errors="coerce")
            if bool(parsed.notna().all()):
                data = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
                data[live] = parsed
                return data
        result = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
        pending = pd.Series(True, index=values.index)
        for fmt in spec.formats:
            parsed = pd.to_datetime(values.where(pending), format=fmt, errors="coerce")
            hit = pending & parsed.notna()
            if bool(hit.any()) and not bool((parsed[hit].dt.strftime(fmt) == values[hit]).all()):
                raise _GiveUp  # accepted, but not in canonical form: strptime decides
            result[hit] = parsed[hit]
            pending &= ~hit
        if bool(pending.any()):
            raise _GiveUp
        data = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
        data[live] = result
        return data

    @staticmethod
    def _bounds(spec: FieldSpec, col: _Col) -> None:
        if spec.min is None and spec.max is None:
            return
        live = ~col.null
        text = col.data[live]
        values = text.astype("int64") if col.kind == "int" else text.astype(float)
        for bound, below in ((spec.min, True), (spec.max, False)):
            if bound is None:
                continue
            b = float(bound)
            broken = values < b if below else values > b
            if col.kind == "int":
                if bool(broken.any()):
                    raise _GiveUp
                continue
            # Floats decide far from the bound; near it, Decimal decides exactly.
            near = (values - b).abs() <= 1e-9 * max(1.0, abs(b))
            exact = [Decimal(t) < bound if below else Decimal(t) > bound for t in text[near]]
            if bool((broken & ~near).any()) or any(exact):
                raise _GiveUp

    # ------------------------------------------------------------------ map

    def _text(self, col: _Col) -> pd.Series:
        """What the row path's ``_text`` gives for each value ("" for no value)."""
        if col.kind in ("str", "int", "dec"):
            data = col.data
        elif col.kind == "date":
            data = col.data.dt.strftime("%Y-%m-%d")
        else:
            data = col.data.dt.strftime("%Y-%m-%d %H:%M:%S")
        return data.where(~col.null, "")

    def _evaluate(
        self,
        rule: Rule,
        columns: dict[str, _Col],
        n: int,
        seq_start: int,
        spec: FieldSpec | None = None,
    ) -> _Col:
        none = pd.Series(False, index=range(n))
        if rule.expr is not None:
            expression = self.compiled.rules[("header", spec.name if spec else "")]
            value = _Vector(self.compiled, columns, n, self._memo).run(expression)
            if isinstance(value, _Num):
                if spec is None or kind_of(spec) != "dec" or spec.scale is None:
                    raise _GiveUp  # the row path's text of a number: exact to the digit
                value = _num_text(value)
            if not isinstance(value, _Col) or rule.table or rule.default is not None:
                raise _GiveUp
            col = value
        elif rule.const is not None:
            const = pd.Series([rule.const] * n, dtype=object)
            col = _Col("str", const, none, stripped=rule.const == rule.const.strip())
        elif rule.sequence is not None:
            numbers = pd.Series(range(seq_start, seq_start + n)) + rule.sequence
            col = _Col("int", numbers.astype(str).astype(object), none, stripped=True)
        elif rule.template is not None:
            text = pd.Series([""] * n, dtype=object)
            for literal, field, _, _ in string.Formatter().parse(rule.template):
                text = text + literal
                if field:
                    text = text + self._text(columns[field])
            col = _Col("str", text, none)
        else:
            col = columns[rule.from_ or ""]
        if col.kind == "str":
            data = col.data
            stripped = col.stripped
            if rule.trim and not stripped:
                data = _smap(str.strip, data)
                stripped = True
            if rule.case in ("upper", "lower"):
                data = self._memo.text(rule.case, data)
            col = _Col("str", data, col.null | _is_empty(data), stripped=stripped)
        if rule.default is not None:
            col = _Col(
                col.kind,
                col.data.where(~col.null, rule.default),
                none,
                stripped=col.stripped and rule.default == rule.default.strip(),
            )
            if col.kind != "str":
                raise _GiveUp
        if rule.table is not None:
            table = self.mapping.tables[rule.table]
            keys = self._text(col)
            mapped = keys.map(table)
            if bool((mapped.isna() & ~col.null).any()):
                raise _GiveUp
            stripped = all(v == v.strip() for v in table.values())
            col = _Col("str", mapped.where(~col.null, ""), col.null, stripped=stripped)
        return col

    # ------------------------------------------------------------------ target

    def _coerce(self, spec: FieldSpec, col: _Col) -> _Col:
        t = kind_of(spec)
        if bool(col.null.all()) and not spec.required:
            return col
        if col.kind == "str":
            text = col.data.where(~col.null, "") if bool(col.null.any()) else col.data
            return self._parse(spec, text, len(col.data), stripped=col.stripped)
        if spec.required and bool(col.null.any()):
            raise _GiveUp
        if t == "date" and col.kind == "datetime":
            col = _Col("date", col.data.dt.normalize(), col.null)
        elif t == "dec" and col.kind == "int":
            col = _Col("dec", col.data, col.null)
        elif t == "str":
            as_source = (
                col.data.dt.strftime("%Y-%m-%d %H:%M:%S")
                if col.kind == "datetime"
                else col.data.dt.strftime("%Y-%m-%d")
                if col.kind == "date"
                else col.data
            )
            return self._parse(spec, as_source.where(~col.null, ""), len(col.data), stripped=True)
        if col.kind in ("int", "dec"):
            self._bounds(spec, col)
            self._lengths(spec, col.data, ~col.null)
        return col

    @staticmethod
    def _render(spec: FieldSpec, col: _Col) -> pd.Series:
        if col.kind in ("str", "int"):
            data = col.data
        elif col.kind == "dec":
            data = col.data
            exact = None if spec.scale is None else f"{CANONICAL_INT}\\.[0-9]{{{spec.scale}}}"
            if spec.scale == 0:
                exact = CANONICAL_INT
            if col.exact and col.scale == spec.scale:
                pass  # written so (a computed number)
            elif exact is not None and _all_match(data[~col.null], exact):
                pass  # every value has exactly ``scale`` decimals already
            elif spec.scale is not None:
                data = _smap(_scaled(spec.scale), data.where(~col.null, "0"))
        else:
            fmt = (
                spec.formats[0]
                if spec.formats
                else ("%Y-%m-%d" if col.kind == "date" else "%Y-%m-%d %H:%M:%S")
            )
            data = _strftime(col.data, fmt)
        if bool(col.null.any()):
            data = data.where(~col.null, "")
        return data.astype(object)


__all__ = ["ColumnarPlan"]


# --------------------------------------------------------------------------- expressions


@dataclass(slots=True)
class _Num:
    """Exact numbers of a column as integers scaled by 10**scale (int64, bounded so that
    products stay exact); ``null`` marks rows without a value."""

    data: np.ndarray
    scale: int
    null: np.ndarray


#: Scaled values at most this big: a product of two stays within int64.
_NUM_LIMIT = 3_000_000_000
_VECTOR_FUNCTIONS = {"upper", "lower", "trim", "lookup", "table", "round", "abs"}


#: 10**0 ... 10**18 (every power an int64 holds).
_POW10 = 10 ** np.arange(19, dtype=np.int64)


def _exact(values: np.ndarray, scale: int | None) -> tuple[np.ndarray, int] | None:
    """Numbers of a column (the text an int or dec column holds: an optional "-", digits,
    optionally a point and digits) as integers scaled by ``10**scale``, read digit by digit:
    exact, as ``Decimal`` reads them. ``scale`` None: the fewest decimals that hold every
    value (at most 9). None (the row path) for other text, more than 18 digits, a value
    beyond ``_NUM_LIMIT`` once scaled, or a non-zero digit beyond ``scale``."""
    n = len(values)
    if n == 0:
        return np.zeros(0, np.int64), scale or 0
    try:
        raw = values.astype("S")  # ASCII only (anything else raises)
    except (UnicodeEncodeError, TypeError, ValueError):
        return None
    width = raw.dtype.itemsize
    if width > 40:
        return None
    codes = raw.view(np.uint8).reshape(n, width)
    digit = codes - np.uint8(48)
    is_digit = digit < 10
    is_dot = codes == 46
    is_pad = codes == 0  # after the text (a NUL inside it is no digit: refused below)
    is_minus = codes == 45
    if not bool((is_digit | is_dot | is_pad | is_minus).all()) or bool(is_minus[:, 1:].any()):
        return None
    if bool((is_pad[:, :-1] & ~is_pad[:, 1:]).any()):
        return None
    dots = is_dot.sum(axis=1)
    if bool((dots > 1).any()) or bool((is_digit.sum(axis=1) > 18).any()):
        return None
    length = width - is_pad.sum(axis=1)
    if int(length.sum()) != sum(map(len, values.tolist())):
        return None  # a value ending in NUL (the fixed-width text dropped it)
    point = np.where(dots > 0, is_dot.argmax(axis=1), length)
    frac = np.where(dots > 0, length - 1 - point, 0)
    if bool((point - is_minus[:, 0] < 1).any()) or bool(((dots > 0) & (frac < 1)).any()):
        return None  # no digit before the point, or none after it
    value = np.zeros(n, np.int64)  # every digit, the point left out
    for j in range(width):
        value = np.where(is_digit[:, j], value * 10 + digit[:, j], value)
    if bool((is_minus[:, 0] & (value == 0)).any()):
        return None  # negative zero: Decimal keeps its sign
    if scale is None:
        trailing = np.zeros(n, np.int64)  # zeros at the end of the decimals
        for k in range(1, int(frac.max()) + 1):
            trailing = np.where((k <= frac) & (value % _POW10[k] == 0), k, trailing)
        scale = int((frac - trailing).max())
        if scale > 9:
            return None
    down = frac > scale
    if bool(down.any()):
        unit = _POW10[np.where(down, frac - scale, 0)]
        if bool((value % unit != 0).any()):
            return None  # a digit the scale does not hold
        value = value // unit
    up = np.maximum(scale - frac, 0)
    if bool((value > _NUM_LIMIT).any()) or bool(((up > 9) & (value != 0)).any()):
        return None  # (scaled up, beyond the limit too)
    scaled = value * _POW10[np.minimum(up, 9)]
    if bool((scaled > _NUM_LIMIT).any()):
        return None
    return np.where(is_minus[:, 0], -scaled, scaled), scale


#: Odd multipliers of the 8-byte words of a key, for one 64-bit hash of it.
_WORD_MULTIPLIERS = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93],
    dtype=np.uint64,
)


def _words(texts: list[str]) -> np.ndarray | None:
    """ASCII texts as rows of 8-byte words (zero padded), or None: a text that is not
    ASCII, holds a NUL (it would read as its padding), or is longer than 32 characters."""
    try:
        raw = np.array(texts, dtype=object).astype("S")
    except (UnicodeEncodeError, TypeError, ValueError):
        return None
    width = raw.dtype.itemsize
    if width > 32:
        return None
    buf = np.zeros((len(texts), 8 * -(-width // 8)), dtype=np.uint8)
    buf[:, :width] = raw.view(np.uint8).reshape(len(texts), width)
    if int(np.count_nonzero(buf)) != sum(map(len, texts)):
        return None
    return buf.view(np.uint64)


def _hashes(words: np.ndarray) -> np.ndarray:
    """One 64-bit number per row of words (equal rows, equal numbers)."""
    hashed: np.ndarray = (words * _WORD_MULTIPLIERS[: words.shape[1]]).sum(axis=1, dtype=np.uint64)
    return hashed


@dataclass(slots=True)
class _Table:
    """A value table or lookup column as prepared for the columnar path: its values text
    (else the row path), whether they are all trimmed, and, for keys of ASCII text of
    at most 32 characters, an index of them as numbers (a whole column of keys looked up
    at once; a key is found only if its words equal the table key's)."""

    values: dict[str, str]
    stripped: bool
    index: pd.Index | None = None
    words: np.ndarray | None = None
    column: np.ndarray | None = None

    @classmethod
    def of(cls, values: dict[str, Any]) -> _Table:
        if not all(type(v) is str for v in values.values()):
            raise _GiveUp
        table = cls(values, all(v == v.strip() for v in values.values()))
        keys = list(values)
        words = _words(keys) if keys and all(type(k) is str for k in keys) else None
        if words is not None:
            index = pd.Index(_hashes(words))
            if index.is_unique:  # (else each key by the dictionary)
                table.index, table.words = index, words
                table.column = np.array([values[k] for k in keys], dtype=object)
        return table

    def get(self, keys: list[str]) -> list[str] | np.ndarray:
        """The value of every key; a key not in the table gives up (the row path says
        where it is missing)."""
        index, known, column = self.index, self.words, self.column
        words = None if index is None else _words(keys)
        if words is None or index is None or known is None or column is None:
            try:
                return list(map(self.values.__getitem__, keys))
            except (KeyError, TypeError):
                raise _GiveUp from None
        have = known.shape[1]
        if words.shape[1] > have:
            if bool(words[:, have:].any()):
                raise _GiveUp  # longer than every key of the table
            words = words[:, :have]
        elif words.shape[1] < have:
            words = np.hstack([words, np.zeros((len(keys), have - words.shape[1]), np.uint64)])
        at = index.get_indexer(pd.Index(_hashes(words)))
        if bool((at < 0).any()) or not bool((known[at] == words).all()):
            raise _GiveUp
        return column[at]


_TEXT_FUNCTIONS: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "lower": str.lower,
    "trim": str.strip,
}


class _Memo:
    """What the expressions of one chunk share: columns read as numbers, and text
    functions of a column (each entry keeps the object it was made from, so that its id
    is not reused while the entry lives)."""

    __slots__ = ("numbers", "tables", "texts")

    def __init__(self, tables: dict[str, _Table] | None = None) -> None:
        self.numbers: dict[int, tuple[_Col, _Num]] = {}
        self.texts: dict[tuple[str, int], tuple[pd.Series, pd.Series]] = {}
        #: The plan's, kept from chunk to chunk: value tables and lookup columns by name.
        self.tables = {} if tables is None else tables

    def table(self, name: str, values: dict[str, Any]) -> _Table:
        """A value table or lookup column, prepared once per dictionary (a lookup makes a
        new one when its master data changes); a value that is not text is the row
        path's to write."""
        known = self.tables.get(name)
        if known is None or known.values is not values:
            known = self.tables[name] = _Table.of(values)
        return known

    def text(self, name: str, text: pd.Series) -> pd.Series:
        """upper, lower or trim (``str.strip``) of every value of a column of text, once
        per column in a chunk (a rule's case and an expression may ask for the same)."""
        known = self.texts.get((name, id(text)))
        if known is not None:
            return known[1]
        data = _smap(_TEXT_FUNCTIONS[name], text)
        self.texts[(name, id(text))] = (text, data)
        return data

    def keep(self, keep: np.ndarray, kept: dict[int, _Col]) -> None:
        """After the filter: the numbers already read, for the columns and rows it kept
        (``kept``: each column's id -> what is left of it)."""
        numbers = {}
        for key, (_, num) in self.numbers.items():
            col = kept.get(key)
            if col is not None:
                numbers[id(col)] = (col, _Num(num.data[keep], num.scale, num.null[keep]))
        self.numbers = numbers
        self.texts = {}


def vectorizable(expression: Expression) -> bool:
    """Whether the columnar path can compute an expression a chunk at a time (else the
    route takes the row path): names, numbers, texts, + - *, comparisons, and/or/not,
    upper/lower/trim, lookup/table, round, abs."""
    allowed = (
        ast.Expression,
        ast.Name,
        ast.Load,
        ast.Constant,
        ast.BinOp,
        ast.Add,
        ast.Sub,
        ast.Mult,
        ast.Compare,
        ast.Eq,
        ast.NotEq,
        ast.Lt,
        ast.LtE,
        ast.Gt,
        ast.GtE,
        ast.BoolOp,
        ast.And,
        ast.Or,
        ast.UnaryOp,
        ast.Not,
        ast.USub,
        ast.Call,
    )
    for node in ast.walk(expression.tree):
        if not isinstance(node, allowed):
            return False
        if isinstance(node, ast.Call) and (
            not isinstance(node.func, ast.Name) or node.func.id not in _VECTOR_FUNCTIONS
        ):
            return False
        if isinstance(node, ast.Name) and node.id in ("true", "false", "null"):
            return False
    return True


class _Vector:
    """One expression over a chunk's columns (see :func:`vectorizable`); gives up (the
    chunk takes the row path) on anything the row path would judge: a missing value in
    arithmetic, a lookup miss, a number too big to stay exact."""

    def __init__(self, compiled: Compiled, columns: dict[str, _Col], n: int, memo: _Memo) -> None:
        self.compiled = compiled
        self.columns = columns
        self.n = n
        self.memo = memo

    def run(self, expression: Expression) -> Any:
        return self._eval(expression.tree.body, expression)

    def _eval(self, node: ast.AST, expression: Expression) -> Any:
        if isinstance(node, ast.Name):
            return self.columns[node.id]
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return _Col(
                    "str",
                    pd.Series([node.value] * self.n, dtype=object),
                    pd.Series(False, index=range(self.n)),
                    stripped=True,
                )
            if isinstance(node.value, bool) or node.value is None:
                raise _GiveUp
            text = ast.get_source_segment(expression.text.strip(), node) or str(node.value)
            value = Decimal(text)
            scale = max(0, -value.as_tuple().exponent)  # type: ignore[operator]
            scaled = int(value.scaleb(scale))
            if abs(scaled) > _NUM_LIMIT:
                raise _GiveUp
            return _Num(np.full(self.n, scaled, dtype=np.int64), scale, np.zeros(self.n, bool))
        if isinstance(node, ast.BinOp):
            left = self._num(self._eval(node.left, expression))
            right = self._num(self._eval(node.right, expression))
            return self._arith(node.op, left, right)
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, expression)
            if isinstance(node.op, ast.Not):
                return ~self._bool(value)
            if not isinstance(node.op, ast.USub):
                raise _GiveUp  # (+x, ~x: the row path says what they give)
            num = self._num(value)
            return _Num(-num.data, num.scale, num.null)
        if isinstance(node, ast.BoolOp):
            masks = [self._bool(self._eval(v, expression)) for v in node.values]
            combined = masks[0]
            for mask in masks[1:]:
                combined = combined & mask if isinstance(node.op, ast.And) else combined | mask
            return combined
        if isinstance(node, ast.Compare):
            return self._compare(node, expression)
        if isinstance(node, ast.Call):
            return self._call(node, expression)
        raise _GiveUp

    def _num(self, value: Any) -> _Num:
        if isinstance(value, _Num):
            return value
        if not isinstance(value, _Col) or value.kind not in ("int", "dec"):
            raise _GiveUp
        known = self.memo.numbers.get(id(value))
        if known is not None:
            return known[1]
        if bool(value.null.any()):
            raise _GiveUp  # no value in arithmetic: the row path says what it gives
        read = _exact(value.data.to_numpy(), value.scale)
        if read is None:
            raise _GiveUp
        data, scale = read
        number = _Num(data, scale, value.null.to_numpy())
        self.memo.numbers[id(value)] = (value, number)
        return number

    @staticmethod
    def _aligned(a: _Num, b: _Num) -> tuple[np.ndarray, np.ndarray, int]:
        scale = max(a.scale, b.scale)
        return (
            a.data * 10 ** (scale - a.scale),
            b.data * 10 ** (scale - b.scale),
            scale,
        )

    def _arith(self, op: ast.operator, a: _Num, b: _Num) -> _Num:
        null = a.null | b.null
        if isinstance(op, ast.Mult):
            if a.scale + b.scale > 9:
                raise _GiveUp
            return _Num(a.data * b.data, a.scale + b.scale, null)
        x, y, scale = self._aligned(a, b)
        if np.abs(x).max(initial=0) > _NUM_LIMIT or np.abs(y).max(initial=0) > _NUM_LIMIT:
            raise _GiveUp
        return _Num(x + y if isinstance(op, ast.Add) else x - y, scale, null)

    def _bool(self, value: Any) -> np.ndarray:
        if isinstance(value, np.ndarray) and value.dtype == bool:
            return value
        raise _GiveUp

    def _compare(self, node: ast.Compare, expression: Expression) -> np.ndarray:
        result = np.ones(self.n, bool)
        left = self._eval(node.left, expression)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self._eval(comparator, expression)
            if (
                isinstance(left, _Col)
                and left.kind == "str"
                and isinstance(right, _Col)
                and (right.kind == "str")
            ):
                if bool(left.null.any()) or bool(right.null.any()):
                    raise _GiveUp
                a, b = left.data.to_numpy(), right.data.to_numpy()
                if not isinstance(op, ast.Eq | ast.NotEq):
                    raise _GiveUp
            else:
                x, y = self._num(left), self._num(right)
                a, b, _ = self._aligned(x, y)
            outcome = _COMPARE[type(op)](a, b)
            result &= np.asarray(outcome, dtype=bool)
            left = right
        return result

    def _call(self, node: ast.Call, expression: Expression) -> Any:
        name = node.func.id  # type: ignore[attr-defined]
        if name in ("lookup", "table"):
            if len(node.args) != 2:
                raise _GiveUp  # a column or a default: the row path
            table = node.args[0].value  # type: ignore[attr-defined]
            key = self._eval(node.args[1], expression)
            if not isinstance(key, _Col) or key.kind != "str" or bool(key.null.any()):
                raise _GiveUp
            values = self.memo.table(table, self.compiled.column(table))
            mapped = values.get(key.data.tolist())
            return _Col("str", pd.Series(mapped, dtype=object), key.null, stripped=values.stripped)
        if name in ("upper", "lower", "trim"):
            value = self._eval(node.args[0], expression)
            if not isinstance(value, _Col) or value.kind != "str":
                raise _GiveUp
            text = value.data.where(~value.null, "") if bool(value.null.any()) else value.data
            data = self.memo.text(name, text)
            return _Col("str", data, value.null | _is_empty(data), stripped=name == "trim")
        if name == "abs":
            num = self._num(self._eval(node.args[0], expression))
            return _Num(np.abs(num.data), num.scale, num.null)
        if name == "round":
            return self._round(node, expression)
        raise _GiveUp

    def _round(self, node: ast.Call, expression: Expression) -> _Num:
        num = self._num(self._eval(node.args[0], expression))
        places = 0
        if len(node.args) > 1:
            arg = node.args[1]
            if not isinstance(arg, ast.Constant) or not isinstance(arg.value, int):
                raise _GiveUp
            places = int(arg.value)
        mode = node.args[2].value if len(node.args) > 2 else "half-up"  # type: ignore[attr-defined]
        if mode != "half-up" or places >= num.scale:
            if places >= num.scale:
                return _Num(num.data * 10 ** (places - num.scale), places, num.null)
            raise _GiveUp
        unit = 10 ** (num.scale - places)
        magnitude = (np.abs(num.data) + unit // 2) // unit
        return _Num(np.sign(num.data) * magnitude, places, num.null)


#: A comparison operator over two arrays.
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def _kept(col: _Col, keep: np.ndarray) -> _Col:
    """The rows of a column that a filter keeps, renumbered from 0."""
    return _Col(
        col.kind,
        pd.Series(col.data.to_numpy()[keep], dtype=col.data.dtype),
        pd.Series(col.null.to_numpy()[keep], dtype=bool),
        stripped=col.stripped,
        scale=col.scale,
        exact=col.exact,
    )


def _num_text(num: _Num) -> _Col:
    """Scaled integers as decimal text with ``scale`` decimals (what format(Decimal, "f")
    writes for a value of that exponent)."""
    return _Col(
        "dec",
        pd.Series(_decimal_text(num.data, num.scale), dtype=object),
        pd.Series(num.null),
        stripped=True,
        scale=num.scale,
        exact=True,
    )


def _decimal_text(data: np.ndarray, scale: int) -> np.ndarray:
    """Integers (int64) divided by ``10**scale`` as text with exactly ``scale`` decimals:
    "-" for a negative value, the whole digits without leading zeros ("0" if none), a point
    and the decimals. Written as a matrix of characters, a digit position at a time, then
    read as text (numpy's string functions take several times as long)."""
    n = len(data)
    if n == 0:
        return np.array([], dtype=object)
    negative = data < 0
    magnitude = np.abs(data)
    # Digits to write: every digit of the value, and at least one before the point.
    digits = np.maximum(np.searchsorted(_POW10, magnitude, side="right"), scale + 1)
    length = negative + digits + (1 if scale else 0)
    width = int(length.max())
    chars = np.zeros((n, width), dtype=np.uint32)
    chars[negative, 0] = ord("-")
    rows = np.arange(n)
    rest = magnitude
    for k in range(int(digits.max())):  # k: the digit's place, from the right
        rest, digit = np.divmod(rest, 10)
        at = length - 1 - k - (1 if scale and k >= scale else 0)
        written = k < digits
        chars[rows[written], at[written]] = digit[written] + ord("0")
    if scale:
        chars[rows, length - 1 - scale] = ord(".")
    return chars.view(f"<U{width}").reshape(n).astype(object)

"""The CSV codec's fast path for flat CSV-to-CSV mappings: a chunk of rows at a time, as
pandas columns.

It computes exactly what the row path computes, for a safe subset of layouts and mappings
(see :meth:`ColumnarPlan.build`), and gives up on a chunk (returns ``None``) as soon as a row
breaks a rule or holds a value outside that subset: the row path then does that chunk, and
its report is the one a person reads. Amounts stay decimal text throughout: they are
checked and padded as strings, never turned into binary floating point.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pandas as pd

from xchange.layout import FieldSpec, Layout
from xchange.mapping import Mapping, Rule

_INT = r"[+-]?[0-9]+"
_DEC = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_UNICODE_INT = r"[+-]?\d+"
_DATE_DIRECTIVES = {"%Y", "%m", "%d", "%H", "%M", "%S"}
_TYPES = {"string", "enum", "integer", "decimal", "date", "datetime"}


class _GiveUp(Exception):
    """This chunk needs the row path."""


#: Values already in the canonical text the row path would write (checked on a whole
#: column at once; none of these patterns can match a NUL, the separator used).
_CANONICAL_INT = "(?:0|[1-9][0-9]{0,17})"


def _canonical_dec(scale: int | None) -> str | None:
    """Decimal text that ``format(Decimal(text), "f")`` gives back unchanged (never in
    exponent form: at most 5 decimals), with at most ``scale`` decimals."""
    most = 5 if scale is None else min(scale, 5)
    if most == 0:
        return _CANONICAL_INT
    return f"{_CANONICAL_INT}(?:\\.[0-9]{{1,{most}}})?"


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
_WHEN_PARTS = {
    "%Y": ("[1-9][0-9]{3}", 0, 4),
    "%m": ("(?:0[1-9]|1[0-2])", 5, 2),
    "%d": ("(?:0[1-9]|[12][0-9]|3[01])", 8, 2),
    "%H": ("(?:[01][0-9]|2[0-3])", 11, 2),
    "%M": ("[0-5][0-9]", 14, 2),
    "%S": ("[0-5][0-9]", 17, 2),
}


def _when_pieces(fmt: str) -> list[str] | None:
    """A date format as directives and single literal characters (None: it uses other
    directives, or a NUL)."""
    pieces = re.findall(r"%.|.", fmt, flags=re.DOTALL)
    if "\x00" in fmt or any(p.startswith("%") and p not in _WHEN_PARTS for p in pieces):
        return None
    return pieces


def _canonical_when(fmt: str) -> str | None:
    """The text ``strftime(fmt)`` writes for a date of years 1000-9999, as a pattern."""
    pieces = _when_pieces(fmt)
    if pieces is None:
        return None
    return "".join(_WHEN_PARTS[p][0] if p in _WHEN_PARTS else re.escape(p) for p in pieces)


def _strftime(data: pd.Series, fmt: str) -> pd.Series:
    """``data.dt.strftime(fmt)``, by cutting numpy's ISO text apart (years of pandas'
    range always have four digits)."""
    pieces = _when_pieces(fmt)
    if pieces is None or len(data) == 0:
        return data.dt.strftime(fmt)
    iso = np.datetime_as_string(data.to_numpy(dtype="datetime64[s]"), unit="s")
    chars = iso.astype("U19").view("U1").reshape(len(iso), 19)
    width = sum(_WHEN_PARTS[p][2] if p in _WHEN_PARTS else 1 for p in pieces)
    if width == 0:
        return pd.Series([""] * len(data), index=data.index, dtype=object)
    out = np.empty((len(iso), width), dtype="U1")
    at = 0
    for p in pieces:
        if p in _WHEN_PARTS:
            _, start, size = _WHEN_PARTS[p]
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


def _kind(spec: FieldSpec) -> str:
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
    """The columnar program for one flat CSV -> CSV mapping."""

    def __init__(self, source: Layout, mapping: Mapping, target: Layout) -> None:
        self.source = source
        self.mapping = mapping
        self.target = target
        self.by_name = {f.name: f for f in source.fields}

    @classmethod
    def build(cls, source: Layout, mapping: Mapping, target: Layout) -> ColumnarPlan | None:
        """A plan, or None when the route is outside what the columnar path does."""
        if (
            source.codec != "csv"
            or target.codec != "csv"
            or source.shape != "rows"
            or target.shape != "rows"
            or mapping.group_by
            or mapping.flatten
            or mapping.output != "batch"
            or mapping.filter is not None
            or mapping.line_filter is not None
            or mapping.split_by
            or mapping.lookups
            or any(rule.expr is not None for rule in mapping.header.values())
            or not all(_spec_ok(f) for f in (*source.fields, *target.fields))
        ):
            return None
        by_name = {f.name: f for f in source.fields}
        for spec in target.fields:
            rule = mapping.header.get(spec.name)
            if rule is None:
                continue
            if rule.join:
                return None
            if rule.template is not None and any(
                spec_ or conv for _, f, spec_, conv in string.Formatter().parse(rule.template) if f
            ):
                return None
            kind = cls._rule_kind(rule, by_name)
            if not cls._compatible(kind, spec):
                return None
        return cls(source, mapping, target)

    @staticmethod
    def _rule_kind(rule: Rule, by_name: dict[str, FieldSpec]) -> str:
        if rule.sequence is not None:
            return "int"
        if rule.from_ is not None and rule.table is None:
            return _kind(by_name[rule.from_])
        return "str"

    @staticmethod
    def _compatible(kind: str, target: FieldSpec) -> bool:
        t = _kind(target)
        return (
            kind == "str"
            or kind == t
            or (t == "str")
            or (t == "date" and kind == "datetime")
            or (t == "dec" and kind == "int")
        )

    # ------------------------------------------------------------------ running

    def convert(
        self, frame: pd.DataFrame, header: list[str], seq_start: int
    ) -> pd.DataFrame | None:
        """Rendered target rows for a chunk of source text, or None (use the row path)."""
        try:
            columns = {
                spec.name: self._parse(
                    spec,
                    frame.iloc[:, header.index(spec.key)] if spec.key in header else None,
                    len(frame),
                )
                for spec in self.source.fields
            }
            out = {}
            for spec in self.target.fields:
                rule = self.mapping.header.get(spec.name)
                value = (
                    self._evaluate(rule, columns, len(frame), seq_start)
                    if rule is not None
                    else _Col(
                        "str",
                        pd.Series([""] * len(frame), dtype=object),
                        pd.Series(True, index=range(len(frame))),
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
            text = _smap(str.strip, text)
        null = _is_empty(text)
        if spec.null_values:
            null |= text.isin(spec.null_values)
        if spec.required and bool(null.any()):
            raise _GiveUp
        live = ~null
        kind = _kind(spec)
        if kind == "str":
            data = text
            if spec.type == "enum" and not bool(text[live].isin(spec.values).all()):
                raise _GiveUp
            if spec.pattern is not None:
                if _nul_safe(spec.pattern):
                    ok = _all_match(text[live], spec.pattern)
                else:
                    ok = all(map(re.compile(spec.pattern).fullmatch, text[live].tolist()))
                if not ok:
                    raise _GiveUp
        elif kind == "int":
            data = self._int(text, live)
        elif kind == "dec":
            data = self._dec(spec, text, live)
        else:
            data = self._when(spec, text, live)
        self._lengths(spec, text, live)
        col = _Col(kind, data, null, stripped=spec.trim or stripped)
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
        if _all_match(values, _CANONICAL_INT):
            return text  # already as the row path writes it
        if not bool(values.str.fullmatch(_INT).all()) or bool((values.str.len() > 18).any()):
            raise _GiveUp
        data = text.copy()
        data[live] = values.astype("int64").astype(str)
        return data

    @staticmethod
    def _dec(spec: FieldSpec, text: pd.Series, live: pd.Series) -> pd.Series:
        canonical_form = _canonical_dec(spec.scale)
        if canonical_form is not None and _all_match(text[live], canonical_form):
            return text  # already as the row path writes it
        # Group separators and currency symbols are the row path's to judge.
        cleaned = text[live]
        if not bool(cleaned.str.fullmatch(_DEC).all()):
            raise _GiveUp
        parts = cleaned.str.extract(r"^([+-]?)([0-9]*)\.?([0-9]*)$")
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
        canonical = _canonical_when(spec.formats[0]) if spec.formats else None
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
            data = col.data.dt.strftime("%Y-%m-%dT%H:%M:%S")
        return data.where(~col.null, "")

    def _evaluate(self, rule: Rule, columns: dict[str, _Col], n: int, seq_start: int) -> _Col:
        none = pd.Series(False, index=range(n))
        if rule.const is not None:
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
            if rule.case == "upper":
                data = _smap(str.upper, data)
            elif rule.case == "lower":
                data = _smap(str.lower, data)
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
        t = _kind(spec)
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
            exact = None if spec.scale is None else f"{_CANONICAL_INT}\\.[0-9]{{{spec.scale}}}"
            if spec.scale == 0:
                exact = _CANONICAL_INT
            if exact is not None and _all_match(data[~col.null], exact):
                pass  # every value has exactly ``scale`` decimals already
            elif spec.scale is not None:
                parts = data.str.extract(r"^(-?[0-9]+)\.?([0-9]*)$")
                frac = parts[1].fillna("")
                if bool((frac.str.slice(spec.scale).str.strip("0") != "").any()):
                    raise _GiveUp
                frac = frac.str.slice(0, spec.scale).str.pad(spec.scale, side="right", fillchar="0")
                data = parts[0] + (("." + frac) if spec.scale else "")
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

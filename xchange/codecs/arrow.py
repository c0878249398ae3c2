"""Arrow (the only module that imports pyarrow): blocks of CSV text read into columns, and
the columnar plan's flat CSV -> CSV mapping computed on those columns by Arrow's compute
functions, rendered as CSV text.

Values stay Arrow strings from reading to writing: no Python object per value. This path
does a subset of what :class:`~xchange.codecs.columnar.ColumnarPlan` does (itself a subset
of the row path), and gives up on a chunk (``None``) wherever it cannot be sure to compute
exactly what the row path computes: the columnar plan then does that chunk, and behind it
the row path, whose report is the one a person reads. What it relies on:

- a block is checked once for the characters the row path's first step looks for
  (controls and invisible characters, :func:`~xchange.layout.invisible_ranges`); in a
  block without them, every value reads as it is, and the only white space in it is what
  ``trim`` removes (so ``str.strip`` and a trim of :data:`~xchange.layout.SPACES` agree);
- patterns are matched by RE2 only when written in a subset both RE2 and Python's ``re``
  read the same way (:func:`re2_pattern`);
- dates are parsed only when every value is in the canonical text of the first format,
  and kept only if rendering them back gives the same text (Arrow's ``strptime`` rolls
  2026-02-30 over to March: the round trip refuses it);
- decimals stay text; bounds are compared as 128-bit decimals, exactly;
- upper and lower case only for ASCII text (Python's special casing is not Arrow's).
"""

from __future__ import annotations

import ast
import math
import re
import string
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from xchange.codecs.columnar import (
    CANONICAL_INT,
    WHEN_PARTS,
    ColumnarPlan,
    canonical_dec,
    canonical_when,
    kind_of,
    when_pieces,
)
from xchange.codecs.text import LATIN_PAIR
from xchange.expressions import Expression
from xchange.layout import SPACES, FieldSpec, invisible_ranges
from xchange.mapping import Rule


class _GiveUp(Exception):
    """This chunk needs the columnar plan (or the row path)."""


# --------------------------------------------------------------------------- reading


def _invisible_class() -> str:
    return (
        "["
        + "".join(
            f"\\x{{{a:x}}}" + (f"-\\x{{{b:x}}}" if b > a else "") for a, b in invisible_ranges()
        )
        + "]"
    )


_INVISIBLE = _invisible_class()
#: Where the mojibake check of decoded text starts looking (in RE2's words).
_LATIN_PAIR = re.sub(r"\\u([0-9a-f]{4})", r"\\x{\1}", LATIN_PAIR.pattern)
#: White space that ``trim`` removes other than U+0020 (line ends are never in a value).
_WIDE = "".join(c for c in SPACES if c not in " \r\n")
_WIDE_SPACE = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _WIDE) + "]"
_ANY_MARK = f"{_INVISIBLE}|{_LATIN_PAIR}|{_WIDE_SPACE}"


#: Text the fast reading leaves to the standard one: a NUL, a carriage return that does
#: not end a line (the quote character is added per file).
_ODD = r"\x00|\r(?:[^\n]|$)"
#: A blank line (the text starts at the start of a line).
_BLANK = r"^\r?\n|\n\r?\n"


@dataclass(slots=True)
class Block:
    """The records of a block of CSV text as columns of Arrow strings, and what one scan
    of its text found."""

    columns: list[Any]
    size: int
    #: No value holds a control or invisible character (the block was checked whole).
    plain: bool
    #: The text holds two Latin-1 characters in a row (the mojibake check would look).
    latin: bool
    #: The only white space in the values is U+0020 (trimming is of spaces alone).
    narrow: bool
    #: The text holds the quote character, a NUL or a lone carriage return.
    odd: bool
    #: The text holds blank lines.
    blank: bool
    #: The UTF-8 text the block was read from.
    data: bytes

    def texts(self, index: int) -> list[str]:
        """A column as Python strings (for the columnar plan and the row path)."""
        values: list[str] = self.columns[index].to_pylist()
        return values


def _whole(data: bytes) -> Any:
    """``data`` as one Arrow string, without copying it."""
    offsets = (0).to_bytes(8, "little") + len(data).to_bytes(8, "little")
    return pa.LargeStringArray.from_buffers(1, pa.py_buffer(offsets), pa.py_buffer(data))


def read_block(data: bytes, width: int, delimiter: str, quote: str) -> Block | None:
    """Records of UTF-8 CSV text, each on one line, as ``width`` columns of text (quotes
    are not read as quotes: a block holding one says so, ``odd``); None when Arrow finds a
    record of another width (the caller then reads the file the standard way, which says
    what is wrong). One RE2 scan of the text finds what else the caller must know."""
    names = [f"c{i}" for i in range(width)]
    try:
        table = pcsv.read_csv(
            pa.py_buffer(data),
            read_options=pcsv.ReadOptions(
                column_names=names, use_threads=False, block_size=max(len(data) + 1, 1 << 16)
            ),
            parse_options=pcsv.ParseOptions(
                delimiter=delimiter,
                quote_char=False,
                double_quote=False,
                escape_char=False,
                newlines_in_values=False,
                ignore_empty_lines=True,
            ),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                check_utf8=False,  # (encoded by Python from text just decoded)
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                null_values=[],
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowCapacityError):
        return None
    columns = [table.column(i).combine_chunks() for i in range(width)]
    rows = table.num_rows
    whole = _whole(data)
    odd = f"{_ODD}|\\x{{{ord(quote):x}}}"
    if not _any(pc.match_substring_regex(whole, f"{_ANY_MARK}|{odd}|{_BLANK}")):
        return Block(columns, rows, True, False, True, False, False, data)

    def found(pattern: str) -> bool:
        return _any(pc.match_substring_regex(whole, pattern))

    return Block(
        columns,
        rows,
        plain=not found(_INVISIBLE),
        latin=found(_LATIN_PAIR),
        narrow=not found(_WIDE_SPACE),
        odd=found(odd),
        blank=found(_BLANK),
        data=data,
    )


def text_block(columns: list[list[str | None]], size: int) -> Block | None:
    """Values read by another codec (XML: each value's text, None for no element) as a
    block, or None when a value is not text or holds a line end. No value is missing in
    the block ("" for None: the columnar plan reads both as no value); ``data`` holds
    every value end to end, one scan of it says what ``plain`` and ``narrow`` say of a
    block of CSV text."""
    arrays = []
    for column in columns:
        try:
            array = pa.array(column, pa.string(), size=size)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        arrays.append(array.fill_null("") if array.null_count else array)
    data = b"".join(_values(a) for a in arrays)
    if b"\n" in data or b"\r" in data:
        return None  # (a value of CSV text never holds a line end: this plan assumes so)
    whole = _whole(data)
    if not _any(pc.match_substring_regex(whole, _ANY_MARK)):
        return Block(arrays, size, True, False, True, False, False, data)
    return Block(
        arrays,
        size,
        plain=not _any(pc.match_substring_regex(whole, _INVISIBLE)),
        latin=False,  # (the codec checked the text it decoded, whole)
        narrow=not _any(pc.match_substring_regex(whole, _WIDE_SPACE)),
        odd=False,
        blank=False,
        data=data,
    )


# --------------------------------------------------------------------------- patterns

#: What a pattern may hold to be read the same by RE2 and Python's re: no class
#: shorthands (\w, \s, \b are Unicode-aware in Python, ASCII in RE2), no flags or
#: look-arounds (``(?``), no anchors, no negated or nested classes, no ``{,n}``.
_RE2_REFUSED = re.compile(
    r"\\[^" + re.escape(string.punctuation) + r"]|\(\?(?!:)|[$^]|\[\[|\[:|\{,"
)


def re2_pattern(pattern: str) -> str | None:
    """A Python pattern as a whole-value RE2 pattern, or None when the two engines might
    read it differently."""
    if _RE2_REFUSED.search(pattern) or "&&" in pattern or "--" in pattern or "~~" in pattern:
        return None
    anchored = f"^(?:{pattern})$"
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), anchored)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return anchored


# --------------------------------------------------------------------------- helpers


def _all(mask: Any) -> bool:
    return len(mask) == 0 or pc.all(mask).as_py() is True


def _any(mask: Any) -> bool:
    return len(mask) > 0 and pc.any(mask).as_py() is True


def _matches(text: Any, null: Any, pattern: str) -> bool:
    """Whether every value with a value fully matches an anchored RE2 pattern."""
    return _all(pc.or_(null, pc.match_substring_regex(text, pattern)))


def _repeat(value: object, n: int) -> Any:
    return pa.repeat(value, n)


@dataclass(slots=True)
class _Col:
    """As the columnar plan's: text for str/int/dec (canonical for int and dec),
    timestamps (seconds) for date and datetime; ``null`` marks rows without a value."""

    kind: str
    data: Any
    null: Any
    #: No value has white space at either end.
    stripped: bool = False
    #: Computed decimals: canonical text with ``scale`` decimals, maybe negative.
    computed: bool = False
    scale: int | None = None


def _bound(value: object) -> Decimal | None:
    try:
        bound = Decimal(str(value))
    except InvalidOperation:
        return None
    if not bound.is_finite() or abs(bound) >= 10**30:
        return None
    exponent = bound.as_tuple().exponent
    return bound if isinstance(exponent, int) and exponent >= -5 else None


def _spec_ok(spec: FieldSpec) -> bool:
    if spec.digits != "ascii" or spec.unique:
        return False
    if spec.pattern_regex is not None and re2_pattern(spec.pattern_regex) is None:
        return False
    if spec.null_values and not all(isinstance(v, str) for v in spec.null_values):
        return False
    if spec.type == "enum" and not all(isinstance(v, str) for v in spec.values or []):
        return False
    if any(b is not None and _bound(b) is None for b in (spec.min, spec.max)):
        return False
    if spec.type in ("date", "datetime"):
        return bool(spec.formats) and _when_pattern(spec.formats[0]) is not None
    return True


def _when_pattern(fmt: str) -> str | None:
    """:func:`~xchange.codecs.columnar.canonical_when` in RE2's words (literal characters
    by code point), anchored."""
    pieces = when_pieces(fmt)
    if pieces is None or canonical_when(fmt) is None:
        return None
    return (
        "^"
        + "".join(WHEN_PARTS[p][0] if p in WHEN_PARTS else f"\\x{{{ord(p):x}}}" for p in pieces)
        + "$"
    )


def _expression_texts(plan: ColumnarPlan) -> list[str]:
    """The texts written in the mapping's expressions and filter (an expression may give
    one as a field's value)."""
    expressions = [*plan.compiled.rules.values()]
    if plan.compiled.filter is not None:
        expressions.append(plan.compiled.filter)
    return [
        node.value
        for expression in expressions
        for node in ast.walk(expression.tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def _plain(text: object) -> bool:
    return isinstance(text, str) and text.isprintable()


def _narrow(text: str) -> bool:
    return not any(c in _WIDE for c in text)


def _stripped(text: str) -> bool:
    return text == text.strip(SPACES)


#: 10**5 units: every canonical decimal (at most 5 decimals) is exact at this scale.
_DEC = pa.decimal128(38, 5)


# --------------------------------------------------------------------------- the plan


class ArrowPlan:
    """The columnar plan of a flat CSV -> CSV route, on Arrow columns."""

    def __init__(self, plan: ColumnarPlan) -> None:
        self.plan = plan
        self.source = plan.source
        self.target = plan.target
        self.mapping = plan.mapping
        self._quiet = True
        #: Lookup and table columns as Arrow arrays, by name (remade when the dictionary
        #: changes): the dictionary, keys, values, all trimmed, none needs quoting.
        self._columns: dict[str, tuple[Any, Any, Any, bool, bool]] = {}
        self._tables: dict[str, tuple[Any, Any]] = {}
        texts = [
            t
            for rule in self.mapping.header.values()
            for t in (rule.const, rule.default, rule.template)
            if t is not None
        ]
        texts += [
            v
            for rule in self.mapping.header.values()
            if rule.table is not None
            for v in self.mapping.tables[rule.table].values()
        ]
        texts += [
            f for s in self.target.fields if s.type in ("date", "datetime") for f in s.formats
        ]
        texts += _expression_texts(plan)
        #: Every text the mapping brings in has no white space but U+0020.
        self.narrow = all(_narrow(t) for t in texts)
        opts = self.target.csv
        #: Characters that would need quoting in the output.
        self.specials = {opts.delimiter, opts.quote, "\r", "\n"}
        #: No text the mapping brings in needs quoting.
        self.quiet = not any(c in t for t in texts for c in self.specials)
        self._trim_spaces = SPACES

    @classmethod
    def build(cls, plan: ColumnarPlan) -> ArrowPlan | None:
        """A plan for routes within this path's subset (else None: the columnar plan)."""
        mapping = plan.mapping
        if plan.source.codec not in ("csv", "xml") or not all(
            _spec_ok(s) for s in (*plan.source.fields, *plan.target.fields)
        ):
            return None
        if not all(map(_plain, _expression_texts(plan))):
            return None
        names = {f.name for f in plan.source.fields}
        for rule in mapping.header.values():
            if rule.case not in (None, "upper", "lower"):
                return None
            if not all(v is None or _plain(v) for v in (rule.const, rule.default, rule.template)):
                return None
            if rule.from_ is not None and rule.template is None and rule.from_ not in names:
                return None
            if rule.template is not None and any(
                f not in names for _, f, _, _ in string.Formatter().parse(rule.template) if f
            ):
                return None
            if rule.table is not None:
                table = mapping.tables.get(rule.table)
                if table is None or not all(
                    isinstance(k, str) and _plain(v) for k, v in table.items()
                ):
                    return None
        return cls(plan)

    def convert(
        self, block: Block, positions: dict[str, int | None], offset: int
    ) -> Rendered | None:
        """Rendered target columns for a block, or None (the columnar plan does it)."""
        if not block.plain:
            return None
        n = block.size
        self._trim_spaces = " " if block.narrow and self.narrow else SPACES
        # (values read from a block hold no line end, and values of CSV not the delimiter
        # they were split by, nor the quote character: the reader refuses blocks with one;
        # values of XML may hold both, see ``text_block``)
        source = self.source.csv.delimiter if self.source.codec == "csv" else "\n"
        quiet = self.quiet and not any(
            c not in (source, "\r", "\n") and c.encode() in block.data for c in self.specials
        )
        try:
            self._quiet = quiet
            columns = {}
            for spec in self.source.fields:
                at = positions.get(spec.key)
                text = None if at is None else block.columns[at]
                columns[spec.name] = self._parse(spec, text, n)
            skipped = 0
            if self.plan.compiled.filter is not None:
                keep = _Vector(self, columns, n).run(self.plan.compiled.filter)
                if not isinstance(keep, pa.BooleanArray):
                    raise _GiveUp
                columns = {name: _kept(col, keep) for name, col in columns.items()}
                kept = pc.sum(keep).as_py() or 0
                skipped, n = n - kept, kept
            out = []
            for spec in self.target.fields:
                rule = self.mapping.header.get(spec.name)
                value = (
                    self._evaluate(rule, columns, n, offset, spec)
                    if rule is not None
                    else _Col("str", _repeat("", n), _repeat(True, n))
                )
                out.append(self._render(spec, self._coerce(spec, value)))
        except (_GiveUp, pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        names = [s.name for s in self.target.fields]
        return Rendered(names, out, n, quiet=self._quiet, skipped=skipped)

    # ------------------------------------------------------------------ parse

    def column(self, name: str) -> tuple[Any, Any, bool]:
        """A value table or lookup column (``lookup()``, ``table()``) as Arrow keys and
        values, and whether its values are all trimmed; values that are not plain text
        give up (the columnar plan or the row path writes them)."""
        values = self.plan.compiled.column(name)
        known = self._columns.get(name)
        if known is None or known[0] is not values:
            texts = list(values.values())
            if not all(isinstance(k, str) for k in values) or not all(map(_plain, texts)):
                raise _GiveUp
            known = self._columns[name] = (
                values,
                pa.array(list(values.keys()), pa.string()),
                pa.array(texts, pa.string()),
                all(map(_stripped, texts)),
                not any(c in t for t in texts for c in self.specials),
            )
        _, keys, texts_array, stripped, quiet = known
        if not quiet:
            self._quiet = False  # (the writer looks at every value)
        return keys, texts_array, stripped

    def trim(self, text: Any) -> Any:
        """``str.strip`` of every value (see the module's notes)."""
        return self._trim(text)

    def _trim(self, text: Any) -> Any:
        """``str.strip`` of every value (see the module's notes), of spaces alone when
        the block and the mapping hold no other white space."""
        if self._trim_spaces == " ":
            return pc.ascii_trim(text, " ")  # (a space byte is never part of a character)
        return pc.utf8_trim(text, SPACES)

    def _parse(self, spec: FieldSpec, text: Any, n: int, *, stripped: bool = False) -> _Col:
        if text is None:
            text = _repeat("", n)
        if spec.trim and not stripped:
            text = self._trim(text)
        null = pc.equal(text, "")
        if spec.null_values:
            null = pc.or_(null, pc.is_in(text, value_set=pa.array(spec.null_values, pa.string())))
        if spec.required and _any(null):
            raise _GiveUp
        kind = kind_of(spec)
        data = text
        if kind == "str":
            if spec.type == "enum" and not _all(
                pc.or_(null, pc.is_in(text, value_set=pa.array(spec.values or [], pa.string())))
            ):
                raise _GiveUp
            if spec.pattern_regex is not None:
                pattern = re2_pattern(spec.pattern_regex)
                if pattern is None or not _matches(text, null, pattern):
                    raise _GiveUp
        elif kind == "int":
            if not _matches(text, null, f"^{CANONICAL_INT}$"):
                raise _GiveUp
        elif kind == "dec":
            form = canonical_dec(spec.scale)
            if form is None or not _matches(text, null, f"^(?:{form})$"):
                raise _GiveUp
        else:
            data = self._when(spec, text, null)
        self._lengths(spec, text, null)
        scale = 0 if kind == "int" else (spec.scale if kind == "dec" else None)
        col = _Col(kind, data, null, stripped=spec.trim or stripped, scale=scale)
        if kind in ("int", "dec"):
            self._bounds(spec, col)
        return col

    @staticmethod
    def _when(spec: FieldSpec, text: Any, null: Any) -> Any:
        fmt = spec.formats[0]
        pattern = _when_pattern(fmt)
        if pattern is None or not _matches(text, null, pattern):
            raise _GiveUp
        stamps = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
        # Canonical text holds months 01-12, hours 00-23, minutes and seconds 00-59 and
        # years 1000-9999: only a day beyond its month's end (2026-02-30) can be wrong, and
        # strptime rolls it over into the next month, which shows.
        pieces = when_pieces(fmt) or []
        if "%m" not in pieces or "%d" not in pieces:
            raise _GiveUp
        at = sum(WHEN_PARTS[p][2] if p in WHEN_PARTS else 1 for p in pieces[: pieces.index("%m")])
        month = pc.cast(
            pc.utf8_slice_codeunits(pc.if_else(null, "01", text), at, at + 2), pa.int8()
        )
        same = pc.fill_null(pc.equal(pc.month(stamps), month), False)
        if not _all(pc.or_(null, same)):
            raise _GiveUp  # not a date (or not strptime's reading): the row path says
        return stamps

    @staticmethod
    def _lengths(spec: FieldSpec, text: Any, null: Any) -> None:
        if spec.min_length is None and spec.max_length is None:
            return
        lengths = pc.utf8_length(text)
        if spec.min_length is not None and _any(
            pc.and_(pc.invert(null), pc.less(lengths, spec.min_length))
        ):
            raise _GiveUp
        if spec.max_length is not None and _any(
            pc.and_(pc.invert(null), pc.greater(lengths, spec.max_length))
        ):
            raise _GiveUp

    @staticmethod
    def _bounds(spec: FieldSpec, col: _Col) -> None:
        if spec.min is None and spec.max is None:
            return
        filled = pc.if_else(col.null, "0", col.data)
        live = pc.invert(col.null)
        for value, below in ((spec.min, True), (spec.max, False)):
            bound = None if value is None else _bound(value)
            if value is None:
                continue
            if bound is None:
                raise _GiveUp
            if below and bound <= 0 and not col.computed:
                continue  # canonical text has no sign: never below 0
            if col.kind == "int":
                numbers = pc.cast(filled, pa.int64())
                limit: Any = math.ceil(bound) if below else math.floor(bound)
            else:
                numbers = pc.cast(filled, _DEC)
                limit = pa.scalar(bound, _DEC)
            broken = pc.less(numbers, limit) if below else pc.greater(numbers, limit)
            if _any(pc.and_(live, broken)):
                raise _GiveUp

    # ------------------------------------------------------------------ map

    def _text(self, col: _Col) -> Any:
        if col.kind in ("str", "int", "dec"):
            data = col.data
        elif col.kind == "date":
            data = _strftime(col.data, "%Y-%m-%d")
        else:
            data = _strftime(col.data, "%Y-%m-%d %H:%M:%S")
        return pc.if_else(col.null, "", data)

    def _table(self, name: str) -> tuple[Any, Any]:
        known = self._tables.get(name)
        if known is None:
            table = self.mapping.tables[name]
            known = self._tables[name] = (
                pa.array(list(table.keys()), pa.string()),
                pa.array(list(table.values()), pa.string()),
            )
        return known

    def _evaluate(
        self, rule: Rule, columns: dict[str, _Col], n: int, start: int, spec: FieldSpec
    ) -> _Col:
        none = _repeat(False, n)
        if rule.expr is not None:
            expression = self.plan.compiled.rules[("header", spec.name)]
            value = _Vector(self, columns, n).run(expression)
            if isinstance(value, _Num):
                if kind_of(spec) != "dec" or spec.scale is None:
                    raise _GiveUp  # the row path's text of a number: exact to the digit
                value = value.text()
            if not isinstance(value, _Col) or rule.table or rule.default is not None:
                raise _GiveUp
            col = value
        elif rule.const is not None:
            col = _Col("str", _repeat(rule.const, n), none, _stripped(rule.const))
        elif rule.sequence is not None:
            numbers = pa.array(range(start + rule.sequence, start + rule.sequence + n), pa.int64())
            col = _Col("int", pc.cast(numbers, pa.string()), none, True)
        elif rule.template is not None:
            parts: list[Any] = []
            for literal, field, _, _ in string.Formatter().parse(rule.template):
                if literal:
                    parts.append(literal)
                if field:
                    parts.append(self._text(columns[field]))
            if not any(isinstance(p, pa.Array) for p in parts):
                text = _repeat("".join(parts), n)
            else:
                text = pc.binary_join_element_wise(*parts, "")
            col = _Col("str", text, none)
        else:
            found = columns.get(rule.from_ or "")
            if found is None:
                raise _GiveUp
            col = found
        if col.kind == "str":
            data = col.data
            stripped = col.stripped
            if rule.trim and not stripped:
                data = self._trim(data)
                stripped = True
            if rule.case is not None:
                if not _all(pc.string_is_ascii(data)):
                    raise _GiveUp  # (Python's upper and lower of other scripts are its own)
                data = pc.ascii_upper(data) if rule.case == "upper" else pc.ascii_lower(data)
            col = _Col("str", data, pc.or_(col.null, pc.equal(data, "")), stripped)
        if rule.default is not None:
            if col.kind != "str":
                raise _GiveUp
            stripped = col.stripped and _stripped(rule.default)
            col = _Col("str", pc.if_else(col.null, rule.default, col.data), none, stripped)
        if rule.table is not None:
            keys, values = self._table(rule.table)
            at = pc.index_in(self._text(col), value_set=keys)
            if _any(pc.and_(pc.is_null(at), pc.invert(col.null))):
                raise _GiveUp  # a value not in the table: the row path says where
            mapped = pc.take(values, at)
            stripped = all(_stripped(v) for v in self.mapping.tables[rule.table].values())
            col = _Col("str", pc.if_else(col.null, "", mapped), col.null, stripped)
        return col

    # ------------------------------------------------------------------ target

    def _coerce(self, spec: FieldSpec, col: _Col) -> _Col:
        t = kind_of(spec)
        if _all(col.null) and not spec.required:
            return col
        n = len(col.data)
        if col.kind == "str":
            text = pc.if_else(col.null, "", col.data) if _any(col.null) else col.data
            return self._parse(spec, text, n, stripped=col.stripped)
        if spec.required and _any(col.null):
            raise _GiveUp
        if t == "date" and col.kind == "datetime":
            col = _Col("date", pc.floor_temporal(col.data, unit="day"), col.null)
        elif t == "dec" and col.kind == "int":
            col = _Col("dec", col.data, col.null)
        elif t == "str":
            if col.kind == "datetime":
                text = _strftime(col.data, "%Y-%m-%d %H:%M:%S")
            elif col.kind == "date":
                text = _strftime(col.data, "%Y-%m-%d")
            else:
                text = col.data
            return self._parse(spec, pc.if_else(col.null, "", text), n, stripped=True)
        if col.kind != t:
            raise _GiveUp
        if col.kind in ("int", "dec"):
            self._bounds(spec, col)
            self._lengths(spec, col.data, col.null)
        return col

    @staticmethod
    def _render(spec: FieldSpec, col: _Col) -> Any:
        data = col.data
        if col.kind == "dec" and spec.scale is not None:
            exact = CANONICAL_INT if spec.scale == 0 else f"{CANONICAL_INT}\\.[0-9]{{{spec.scale}}}"
            if not _matches(data, col.null, f"^(?:{exact})$"):
                # Canonical text with other decimals: exactly ``scale`` of them (a digit
                # beyond the scale that is not 0 fails the cast: the row path decides).
                filled = pc.if_else(col.null, "0", data)
                data = _decimal_text(pc.cast(filled, pa.decimal128(38, spec.scale)))
        elif col.kind in ("date", "datetime"):
            data = _strftime(data, spec.formats[0])
        if _any(col.null):
            data = pc.if_else(col.null, "", data)
        return data


def _strftime(stamps: Any, fmt: str) -> Any:
    """Timestamps as ``strftime(fmt)`` writes them, for formats of %Y %m %d %H %M %S and
    other characters (years 1000-9999; Arrow's own strftime is slower and adds fractions
    of seconds)."""
    pieces = when_pieces(fmt)
    if pieces is None:
        raise _GiveUp
    parts: list[Any] = []
    fields = {"%Y": pc.year, "%m": pc.month, "%d": pc.day, "%H": pc.hour, "%M": pc.minute}
    for piece in pieces:
        if piece not in WHEN_PARTS:
            parts.append(piece)
            continue
        if piece == "%Y":
            years = pc.year(stamps)
            low, high = pc.min_max(years).values()
            if low.as_py() is not None and (low.as_py() < 1000 or high.as_py() > 9999):
                raise _GiveUp
            parts.append(pc.cast(years, pa.string()))
            continue
        number = fields[piece](stamps) if piece in fields else pc.second(stamps)
        parts.append(pc.utf8_lpad(pc.cast(number, pa.string()), 2, "0"))
    if not any(isinstance(p, pa.Array) for p in parts):
        return _repeat("".join(parts), len(stamps))
    return pc.binary_join_element_wise(*parts, "")


class Rendered:
    """A chunk's target rows as Arrow columns of text (no value missing: "" instead)."""

    def __init__(
        self, names: list[str], columns: list[Any], size: int, *, quiet: bool, skipped: int = 0
    ) -> None:
        self.names = names
        self.columns = columns
        self.size = size
        #: Rows the mapping's filter left out.
        self.skipped = skipped
        #: Known without looking: no value holds a character that needs quoting.
        self.quiet = quiet

    def __len__(self) -> int:
        return self.size

    def first(self) -> dict[str, object] | None:
        """The first row's values by target field name (None: no row)."""
        if not self.size:
            return None
        return {name: col[0].as_py() for name, col in zip(self.names, self.columns, strict=True)}

    def rows(self) -> list[list[str]]:
        """The rows as Python strings (for the standard library's writer)."""
        return [list(row) for row in zip(*(c.to_pylist() for c in self.columns), strict=True)]

    def lines(self, delimiter: str, quote: str, line_ending: str) -> bytes | None:
        """The rows as UTF-8 CSV lines, when no value needs quoting in the minimal style
        (else None: the standard library's writer quotes them)."""
        if len(self.columns) < 2 or not self.size:
            return None  # (a single empty field is written as "")
        *head, last = self.columns
        if not self.quiet:
            lines = pc.binary_join_element_wise(*self.columns, delimiter)
            fields = pc.count_substring(lines, delimiter)
            if not _all(pc.equal(fields, len(self.columns) - 1)):
                return None  # a value holds the delimiter
            chars = {quote, "\r", "\n", *line_ending}
            special = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"
            if _any(pc.match_substring_regex(lines, special)):
                return None
        ended = pc.binary_join_element_wise(last, line_ending, "")
        return _values(pc.binary_join_element_wise(*head, ended, delimiter))


def _values(texts: Any) -> bytes:
    """The concatenated values of a string array without nulls."""
    offsets = memoryview(texts.buffers()[1]).cast("B").cast("i")  # (int32, as string is)
    first, last = offsets[texts.offset], offsets[texts.offset + len(texts)]
    return bytes(memoryview(texts.buffers()[2])[first:last])


# --------------------------------------------------------------------------- expressions

#: Python's decimal context: products and sums of at most this many digits are exact there.
_DIGITS = 28
_NUMBER_TEXT = r"^-?[0-9]+(?:\.[0-9]+)?$"


def _decimal_text(data: Any) -> Any:
    """Decimals as text with all their decimals (Arrow writes 0E-7 and 1E-7 for small
    values of seven decimals or more: those give up)."""
    text = pc.cast(data, pa.string())
    if not _all(pc.match_substring_regex(text, _NUMBER_TEXT)):
        raise _GiveUp
    return text


@dataclass(slots=True)
class _Num:
    """Exact numbers of a column as Arrow decimals (no value missing: arithmetic on a
    missing value is the row path's to judge)."""

    data: Any

    @property
    def scale(self) -> int:
        scale: int = self.data.type.scale
        return scale

    def text(self) -> _Col:
        """As the columnar plan writes a computed number: ``scale`` decimals, "-" when
        negative, never an exponent."""
        text = _decimal_text(self.data)
        none = _repeat(False, len(text))
        return _Col("dec", text, none, stripped=True, computed=True, scale=self.scale)


def _kept(col: _Col, keep: Any) -> _Col:
    return _Col(
        col.kind,
        pc.filter(col.data, keep),
        pc.filter(col.null, keep),
        col.stripped,
        col.computed,
        col.scale,
    )


def _checked(data: Any) -> _Num:
    """A result, refused when its type could hold more digits than Python's decimal
    context keeps (the row path would round it)."""
    if data.type.precision > _DIGITS:
        raise _GiveUp
    return _Num(data)


class _Vector:
    """One expression over a chunk's Arrow columns, as the columnar plan's ``_Vector``
    computes it (names, numbers, texts, + - *, comparisons, and/or/not, upper/lower/trim,
    lookup/table, round, abs); gives up where it would, and where a number could hold more
    digits than the row path's decimals keep."""

    def __init__(self, plan: ArrowPlan, columns: dict[str, _Col], n: int) -> None:
        self.plan = plan
        self.columns = columns
        self.n = n

    def run(self, expression: Expression) -> Any:
        return self._eval(expression.tree.body, expression)

    def _eval(self, node: ast.AST, expression: Expression) -> Any:
        if isinstance(node, ast.Name):
            found = self.columns.get(node.id)
            if found is None:
                raise _GiveUp
            return found
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                data = _repeat(node.value, self.n)
                return _Col("str", data, _repeat(False, self.n), stripped=True)
            if isinstance(node.value, bool) or node.value is None:
                raise _GiveUp
            text = ast.get_source_segment(expression.text.strip(), node) or str(node.value)
            value = Decimal(text)
            exponent = value.as_tuple().exponent
            if not isinstance(exponent, int) or not value.is_finite():
                raise _GiveUp
            scale = max(0, -exponent)
            digits = max(len(str(abs(int(value.scaleb(scale))))), scale + 1)
            if digits > _DIGITS:
                raise _GiveUp
            kind = pa.decimal128(digits, scale)
            return _Num(pa.array([value] * self.n, kind))
        if isinstance(node, ast.BinOp):
            left = self._num(self._eval(node.left, expression))
            right = self._num(self._eval(node.right, expression))
            if isinstance(node.op, ast.Mult):
                return _checked(pc.multiply(left.data, right.data))
            if isinstance(node.op, ast.Add):
                return _checked(pc.add(left.data, right.data))
            if isinstance(node.op, ast.Sub):
                return _checked(pc.subtract(left.data, right.data))
            raise _GiveUp
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, expression)
            if isinstance(node.op, ast.Not):
                return pc.invert(self._bool(value))
            if isinstance(node.op, ast.USub):
                return _Num(pc.negate(self._num(value).data))
            raise _GiveUp
        if isinstance(node, ast.BoolOp):
            masks = [self._bool(self._eval(v, expression)) for v in node.values]
            combined = masks[0]
            for mask in masks[1:]:
                combined = (
                    pc.and_(combined, mask)
                    if isinstance(node.op, ast.And)
                    else pc.or_(combined, mask)
                )
            return combined
        if isinstance(node, ast.Compare):
            return self._compare(node, expression)
        if isinstance(node, ast.Call):
            return self._call(node, expression)
        raise _GiveUp

    def _num(self, value: Any) -> _Num:
        if isinstance(value, _Num):
            return value
        if not isinstance(value, _Col) or value.kind not in ("int", "dec") or value.computed:
            raise _GiveUp
        if _any(value.null):
            raise _GiveUp  # no value in arithmetic: the row path says what it gives
        scale = 0 if value.kind == "int" else (value.scale if value.scale is not None else 5)
        # (canonical text: at most ``scale`` decimals; its length bounds the whole digits)
        longest = pc.max(pc.utf8_length(value.data)).as_py() or 1
        digits = longest + scale
        if digits > 18:
            raise _GiveUp
        return _Num(pc.cast(value.data, pa.decimal128(digits, scale)))

    @staticmethod
    def _bool(value: Any) -> Any:
        if isinstance(value, pa.BooleanArray):
            return value
        raise _GiveUp

    def _compare(self, node: ast.Compare, expression: Expression) -> Any:
        result = _repeat(True, self.n)
        left = self._eval(node.left, expression)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self._eval(comparator, expression)
            if (
                isinstance(left, _Col)
                and left.kind == "str"
                and isinstance(right, _Col)
                and right.kind == "str"
            ):
                if _any(left.null) or _any(right.null):
                    raise _GiveUp
                if not isinstance(op, ast.Eq | ast.NotEq):
                    raise _GiveUp
                a, b = left.data, right.data
            else:
                a, b = self._num(left).data, self._num(right).data
            compare = _COMPARE.get(type(op))
            if compare is None:
                raise _GiveUp
            result = pc.and_(result, compare(a, b))
            left = right
        return result

    def _call(self, node: ast.Call, expression: Expression) -> Any:
        name = node.func.id if isinstance(node.func, ast.Name) else ""
        if name in ("lookup", "table"):
            first = node.args[0] if node.args else None
            if len(node.args) != 2 or not isinstance(first, ast.Constant):
                raise _GiveUp  # a column or a default: the row path
            key = self._eval(node.args[1], expression)
            if not isinstance(key, _Col) or key.kind != "str" or _any(key.null):
                raise _GiveUp
            keys, values, stripped = self.plan.column(str(first.value))
            at = pc.index_in(key.data, value_set=keys)
            if _any(pc.is_null(at)):
                raise _GiveUp  # a key not there: the row path says where
            return _Col("str", pc.take(values, at), key.null, stripped=stripped)
        if name in ("upper", "lower", "trim"):
            value = self._eval(node.args[0], expression)
            if not isinstance(value, _Col) or value.kind != "str":
                raise _GiveUp
            text = pc.if_else(value.null, "", value.data) if _any(value.null) else value.data
            if name == "trim":
                data = self.plan.trim(text)
            else:
                if not _all(pc.string_is_ascii(text)):
                    raise _GiveUp
                data = pc.ascii_upper(text) if name == "upper" else pc.ascii_lower(text)
            null = pc.or_(value.null, pc.equal(data, ""))
            return _Col("str", data, null, stripped=name == "trim")
        if name == "abs":
            return _Num(pc.abs(self._num(self._eval(node.args[0], expression)).data))
        if name == "round":
            return self._round(node, expression)
        raise _GiveUp

    def _round(self, node: ast.Call, expression: Expression) -> _Num:
        num = self._num(self._eval(node.args[0], expression))
        places = 0
        if len(node.args) > 1:
            arg = node.args[1]
            if not isinstance(arg, ast.Constant) or type(arg.value) is not int or arg.value < 0:
                raise _GiveUp
            places = arg.value
        mode = node.args[2] if len(node.args) > 2 else None
        half_up = mode is None or (isinstance(mode, ast.Constant) and mode.value == "half-up")
        if not half_up and places < num.scale:
            raise _GiveUp
        kind = num.data.type
        if places >= num.scale:
            wider = pa.decimal128(kind.precision + places - num.scale, places)
            return _checked(pc.cast(num.data, wider))
        # half-up: ties away from zero, as Decimal's ROUND_HALF_UP
        rounded = pc.round(num.data, ndigits=places, round_mode="half_towards_infinity")
        narrower = pa.decimal128(max(kind.precision - num.scale + places, places + 1), places)
        return _Num(pc.cast(rounded, narrower))


_COMPARE = {
    ast.Eq: pc.equal,
    ast.NotEq: pc.not_equal,
    ast.Lt: pc.less,
    ast.LtE: pc.less_equal,
    ast.Gt: pc.greater,
    ast.GtE: pc.greater_equal,
}

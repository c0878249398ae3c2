"""Expressions in mapping rules: computed values, conditions, aggregates and lookups.

An expression is one line of a small language with Python's syntax and its own meaning::

    FQty * FTaxPrice                                  exact decimal arithmetic
    round(amount / qty, 2, "half-up")                 rounding only when asked
    if(qty > 0, "gain", "loss")                       also: case(c1, v1, c2, v2, default)
    coalesce(remark, "-")    left(sku, 4)    upper(trim(name))    regex(code, "(\\d+)")
    format_date(add_days(order_date, 1), "%Y%m%d")    lookup("materials", sku)
    sum(qty * price)    count()    join(waybill, "|", true)       aggregates over lines
    allocate(discount, qty * price, 2)    position()    is_last()     in line rules

It is evaluated by simpleeval (a well-kept, audited evaluator for exactly this: one
expression, no statements) restricted further here: only names of the record's fields,
only the functions below, no attributes, subscripts, comprehensions, lambdas, f-strings or
powers; every number is an exact :class:`~decimal.Decimal` (literals are read from their
text, never through binary floating point); text is bounded in length and numbers in
digits and exponent, so that no expression can reach a Python object, a file or the
network, or run away with memory or time. Rules are compiled once per mapping load;
compile errors name the position in the expression.
"""

from __future__ import annotations

import ast
import decimal
import io
import itertools
import re
import tokenize
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import simpleeval

from xchange.layout import as_text, ascii_digit_pattern

#: The longest expression text, the most nodes one may have, the longest text a value
#: may become, the most digits of a number.
MAX_EXPRESSION = 2000
MAX_NODES = 200
MAX_TEXT = 1 << 20
DIGITS = 60

#: Exact decimal arithmetic: 60 significant digits, exponents bounded; a result that does
#: not fit is an error, never a silent rounding to 28 digits.
CONTEXT = decimal.Context(
    prec=DIGITS,
    Emax=999,
    Emin=-999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)


class ExpressionError(ValueError):
    """A rule's expression is wrong (compile time) or cannot be evaluated on these
    values (run time); ``position`` is the column in the expression, from 1."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        #: A table()/lookup() that failed: the fields its key was made of (where the
        #: value came from), so that the report can name them.
        self.fields: tuple[str, ...] | None = None
        #: An error inside an aggregate: the index of the line it was evaluated on.
        self.line: int | None = None
        #: A problem of the whole document (an aggregate or an allocation in a line rule)
        #: met again on a later line: reported once, at the first.
        self.repeated = False

    def __str__(self) -> str:
        where = f"position {self.position}: " if self.position else ""
        return f"{where}{self.message}"


# --------------------------------------------------------------------------- functions


_text = as_text  # one rendering per type, the layouts' own (see xchange.layout.as_text)


def _bounded(text: str) -> str:
    if len(text) > MAX_TEXT:
        raise ExpressionError(f"a text of {len(text)} characters is longer than {MAX_TEXT}")
    return text


def _number(value: Any, what: str = "a number") -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ExpressionError(f"expected {what}, got {_shown(value)}")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except decimal.InvalidOperation:
            raise ExpressionError(f"expected {what}, got {_shown(value)}") from None
    raise ExpressionError(f"expected {what}, got {_shown(value)}")


def _count(value: Any) -> int:
    number = _number(value, "a whole number")
    if number != number.to_integral_value() or abs(number) > 1_000_000:
        raise ExpressionError(f"expected a whole number up to 1,000,000, got {_shown(value)}")
    return int(number)


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else _text(value) or "no value"
    return text if len(text) <= 60 else text[:57] + "..."


_ROUNDING = {
    "half-up": decimal.ROUND_HALF_UP,
    "half-even": decimal.ROUND_HALF_EVEN,
    "half-down": decimal.ROUND_HALF_DOWN,
    "up": decimal.ROUND_UP,
    "down": decimal.ROUND_DOWN,
    "ceiling": decimal.ROUND_CEILING,
    "floor": decimal.ROUND_FLOOR,
}


def _round(value: Any, places: Any = 0, mode: Any = "half-up") -> Decimal | None:
    if value is None:
        return None
    if mode not in _ROUNDING:
        raise ExpressionError(f"rounding mode {mode!r} is not one of {', '.join(_ROUNDING)}")
    digits = _count(places)
    return _number(value).quantize(Decimal(1).scaleb(-digits), rounding=_ROUNDING[mode])


def _if(condition: Any, then: Any, otherwise: Any = None) -> Any:
    return then if condition else otherwise


def _case(*pairs: Any) -> Any:
    for i in range(0, len(pairs) - 1, 2):
        if pairs[i]:
            return pairs[i + 1]
    return pairs[-1] if len(pairs) % 2 else None


def _coalesce(*values: Any) -> Any:
    return next((v for v in values if v is not None and v != ""), None)


def _str_fn(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A text function: no value in, no value out; anything else is its text."""

    def wrapped(value: Any, *args: Any) -> Any:
        if value is None:
            return None
        result = fn(_text(value), *args)
        return _bounded(result) if isinstance(result, str) else result

    wrapped.__name__ = fn.__name__
    return wrapped


def _slice(text: str, start: Any, end: Any = None) -> str:
    return text[_count(start) : None if end is None else _count(end)]


def _left(text: str, count: Any) -> str:
    return text[: _count(count)]


def _right(text: str, count: Any) -> str:
    n = _count(count)
    return text[-n:] if n else ""


def _pad(text: str, width: Any, char: Any = " ", side: Any = "left") -> str:
    if not isinstance(char, str) or len(char) != 1:
        raise ExpressionError(f"pad: the fill must be one character, got {_shown(char)}")
    size = _count(width)
    if side == "left":
        return text.rjust(size, char)
    if side == "right":
        return text.ljust(size, char)
    raise ExpressionError(f'pad: side is "left" or "right", got {_shown(side)}')


def _zfill(text: str, width: Any) -> str:
    return text.zfill(_count(width))


def _replace(text: str, old: Any, new: Any) -> str:
    return text.replace(_text(old), _text(new))


def _split(text: str, sep: Any, index: Any) -> str | None:
    parts = text.split(_text(sep)) if _text(sep) else text.split()
    i = _count(index)
    return parts[i] if -len(parts) <= i < len(parts) else None


def _regex(text: str, pattern: re.Pattern[str], group: Any = 0) -> str | None:
    found = pattern.search(text)
    if found is None:
        return None
    try:
        return found.group(_count(group))
    except IndexError:
        raise ExpressionError(f"regex: the pattern has no group {_shown(group)}") from None


def _concat(*values: Any) -> str:
    return _bounded("".join(_text(v) for v in values))


def _when_value(value: Any) -> datetime | date:
    if isinstance(value, datetime | date):
        return value
    raise ExpressionError(f"expected a date or time, got {_shown(value)}")


def _parse_date(value: Any, fmt: Any) -> date | None:
    if value is None or value == "":
        return None
    try:
        return datetime.strptime(_text(value), _text(fmt)).date()
    except ValueError:
        raise ExpressionError(f"{_shown(value)} is not a date like {fmt!r}") from None


def _parse_datetime(value: Any, fmt: Any) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return datetime.strptime(_text(value), _text(fmt))
    except ValueError:
        raise ExpressionError(f"{_shown(value)} is not a time like {fmt!r}") from None


def _format_date(value: Any, fmt: Any) -> str | None:
    if value is None:
        return None
    if len(_text(fmt)) > 100:
        raise ExpressionError("format_date: the format is longer than 100 characters")
    return _when_value(value).strftime(_text(fmt))


def _add_days(value: Any, days: Any) -> date | datetime | None:
    if value is None:
        return None
    try:
        return _when_value(value) + timedelta(days=_count(days))
    except OverflowError:
        raise ExpressionError("add_days: the date leaves the calendar") from None


def _to_timezone(value: Any, zone: Any, source: Any = "UTC") -> datetime | None:
    if value is None:
        return None
    when = _when_value(value)
    if not isinstance(when, datetime):
        raise ExpressionError("to_timezone: expected a time, got a date")
    try:
        target, origin = ZoneInfo(_text(zone)), ZoneInfo(_text(source))
    except (ZoneInfoNotFoundError, ValueError):
        raise ExpressionError(f"unknown time zone {zone!r} or {source!r}") from None
    aware = when if when.tzinfo else when.replace(tzinfo=origin)
    return aware.astimezone(target).replace(tzinfo=None)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None or value == "" else _number(value)


def _abs(value: Any) -> Decimal | None:
    return None if value is None else abs(_number(value))


#: Names that are values, as a configuration file writes them.
LITERALS = {"true": True, "false": False, "null": None}

#: Plain functions: name -> (implementation, least and most arguments).
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "if": (_if, 2, 3),
    "case": (_case, 2, 99),
    "coalesce": (_coalesce, 1, 99),
    "round": (_round, 1, 3),
    "abs": (_abs, 1, 1),
    "decimal": (_decimal, 1, 1),
    "text": (lambda v: None if v is None else _bounded(_text(v)), 1, 1),
    "slice": (_str_fn(_slice), 2, 3),
    "left": (_str_fn(_left), 2, 2),
    "right": (_str_fn(_right), 2, 2),
    "pad": (_str_fn(_pad), 2, 4),
    "zfill": (_str_fn(_zfill), 2, 2),
    "replace": (_str_fn(_replace), 3, 3),
    "regex": (_str_fn(_regex), 2, 3),
    "split": (_str_fn(_split), 3, 3),
    "upper": (_str_fn(str.upper), 1, 1),
    "lower": (_str_fn(str.lower), 1, 1),
    "trim": (_str_fn(str.strip), 1, 1),
    "length": (_str_fn(len), 1, 1),
    "contains": (_str_fn(lambda t, s: _text(s) in t), 2, 2),
    "startswith": (_str_fn(lambda t, s: t.startswith(_text(s))), 2, 2),
    "endswith": (_str_fn(lambda t, s: t.endswith(_text(s))), 2, 2),
    "concat": (_concat, 1, 99),
    "parse_date": (_parse_date, 2, 2),
    "parse_datetime": (_parse_datetime, 2, 2),
    "format_date": (_format_date, 2, 2),
    "add_days": (_add_days, 2, 2),
    "to_timezone": (_to_timezone, 2, 3),
}
#: Functions that read a value table or a lookup: (name of the table, key[, ...]).
TABLE_FUNCTIONS = {"table": (2, 3), "lookup": (2, 4)}
#: A line's place in its document (line rules): position() from 1, is_first(), is_last().
POSITION = {"position", "is_first", "is_last"}
#: allocate(total, weight, scale[, "last" | "largest"]): this line's share of ``total``,
#: split over the document's lines in proportion to ``weight`` (evaluated on each line),
#: at ``scale`` decimal places, the shares summing to ``total`` exactly; the remainder of
#: the rounding goes to the last line, or (``"largest"``) a unit each to the lines with
#: the largest remainders.
ALLOCATE = "allocate"
ALLOCATE_POLICIES = ("last", "largest")
#: Aggregates over the document's lines (header rules, and line rules: the same value on
#: every line of a document): their first argument is evaluated once per line.
#: name -> (least, most arguments).
AGGREGATES = {
    "sum": (1, 1),
    "count": (0, 1),
    "min": (1, 1),
    "max": (1, 1),
    "first": (1, 1),
    "last": (1, 1),
    "join": (1, 3),
}


# --------------------------------------------------------------------------- operators


def _add(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if isinstance(a, str) and isinstance(b, str):
        return _bounded(a + b)
    if isinstance(a, str) or isinstance(b, str):
        raise ExpressionError(
            f"cannot add {_shown(a)} and {_shown(b)}: use concat() to join texts, decimal() "
            "to read a text as a number"
        )
    if isinstance(a, date) and not isinstance(b, date):
        return _add_days(a, b)
    return CONTEXT.add(_number(a), _number(b))


def _arith(name: str, op: Callable[[Decimal, Decimal], Decimal]) -> Callable[[Any, Any], Any]:
    def run(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        try:
            return op(_number(a), _number(b))
        except decimal.DivisionByZero:
            raise ExpressionError(f"{name}: division by zero") from None
        except (decimal.InvalidOperation, decimal.Overflow):
            raise ExpressionError(f"{name}: the result is out of range") from None

    return run


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def run(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return False  # (equality is asked with == and != below)
        if isinstance(a, Decimal | int) and not isinstance(a, bool) and isinstance(b, str):
            b = _number(b)
        elif isinstance(b, Decimal | int) and not isinstance(b, bool) and isinstance(a, str):
            a = _number(a)
        try:
            return bool(op(a, b))
        except TypeError:
            raise ExpressionError(f"cannot compare {_shown(a)} with {_shown(b)}") from None

    return run


def _equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b or (a is None and b == "") or (b is None and a == "")
    if (isinstance(a, Decimal | int) and isinstance(b, str)) or (
        isinstance(b, Decimal | int) and (isinstance(a, str))
    ):
        try:
            return _number(a) == _number(b)
        except ExpressionError:
            return False
    return bool(a == b)


OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: _add,
    ast.Sub: _arith("-", CONTEXT.subtract),
    ast.Mult: _arith("*", CONTEXT.multiply),
    ast.Div: _arith("/", CONTEXT.divide),
    ast.Mod: _arith("%", CONTEXT.remainder),
    ast.Eq: _equal,
    ast.NotEq: lambda a, b: not _equal(a, b),
    ast.Lt: _compare(lambda a, b: a < b),
    ast.LtE: _compare(lambda a, b: a <= b),
    ast.Gt: _compare(lambda a, b: a > b),
    ast.GtE: _compare(lambda a, b: a >= b),
    ast.Not: lambda a: not a,
    ast.USub: lambda a: None if a is None else CONTEXT.minus(_number(a)),
    ast.UAdd: lambda a: None if a is None else _number(a),
}

_ALLOWED = (
    ast.Expression,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.And,
    ast.Or,
    *OPERATORS,
)


# --------------------------------------------------------------------------- compiling


@dataclass(frozen=True, slots=True)
class Names:
    """What an expression's names and tables may refer to."""

    #: Field names of the record (None: any name, unchecked).
    fields: frozenset[str] | None
    #: Value tables and lookups of the mapping.
    tables: frozenset[str] = frozenset()
    #: Whether aggregates may be used (a header rule of a document with lines).
    aggregates: bool = False
    #: Names aggregates may use (the lines' fields; None: any).
    line_fields: frozenset[str] | None = frozenset()
    #: A line rule: its position and allocate() may be used.
    line: bool = False


def _with_if_calls(text: str) -> str:
    """``if(`` is Python's keyword followed by a parenthesis: spelt ``IF(`` (same length,
    so positions in messages stay right) before parsing."""
    out = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return text
    lines = text.splitlines(keepends=True) or [""]
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    chars = list(text)
    for tok, nxt in itertools.pairwise(tokens):
        if tok.type == tokenize.NAME and tok.string == "if" and nxt.string == "(":
            start = offsets[tok.start[0] - 1] + tok.start[1]
            chars[start : start + 2] = ["I", "F"]
    out.append("".join(chars))
    return out[0]


@dataclass
class Expression:
    """One compiled rule expression."""

    text: str
    tree: ast.Expression
    #: Field names it reads (outside and inside aggregates).
    names: frozenset[str]
    #: Regular expressions of its regex() calls, compiled once.
    patterns: dict[int, re.Pattern[str]] = field(default_factory=dict)
    #: Field names it reads outside aggregates (one value per record, not one per line).
    outer_names: frozenset[str] = frozenset()
    #: Per table()/lookup() call: the field names its key reads.
    table_keys: dict[int, tuple[str, ...]] = field(default_factory=dict)
    #: Each number literal as an exact decimal, read once from its text at compile time.
    numbers: dict[int, Decimal] = field(default_factory=dict)

    @classmethod
    def compile(cls, text: str, names: Names) -> Expression:
        """Parse and check ``text``.

        Raises:
            ExpressionError: with the position of what is wrong.
        """
        if len(text) > MAX_EXPRESSION:
            raise ExpressionError(f"longer than {MAX_EXPRESSION} characters")
        source = _with_if_calls(text)
        try:
            with warnings.catch_warnings():
                # "\d" in a text literal (a regex) is kept as written, not an error.
                warnings.simplefilter("ignore")
                tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"not a valid expression: {exc.msg}", exc.offset) from None
        nodes = list(ast.walk(tree))
        if len(nodes) > MAX_NODES:
            raise ExpressionError(f"more than {MAX_NODES} parts: split it into several rules")
        expression = cls(text, tree, frozenset())
        used: set[str] = set()
        expression._check(tree.body, names, used, inside=False)
        expression.names = frozenset(used)
        expression.outer_names = frozenset(expression._outer(tree.body)) - frozenset(LITERALS)
        for node in nodes:
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, int | float)
                and not isinstance(node.value, bool)
            ):
                # Numbers from their text: 0.1 is one tenth, not the float nearest to it.
                segment = ast.get_source_segment(source.strip(), node)
                try:
                    expression.numbers[id(node)] = Decimal(segment or str(node.value))
                except decimal.InvalidOperation:
                    expression.numbers[id(node)] = Decimal(str(node.value))
        return expression

    @staticmethod
    def _outer(node: ast.AST) -> Iterator[str]:
        """The names read outside aggregates' first argument (what is read per line)."""
        if isinstance(node, ast.Name):
            yield node.id
            return
        children: list[ast.AST] = list(ast.iter_child_nodes(node))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in AGGREGATES
        ):
            children = list(node.args[1:])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == ALLOCATE
        ):
            children = [a for i, a in enumerate(node.args) if i != 1]
        elif isinstance(node, ast.Call):
            children = list(node.args)
        for child in children:
            yield from Expression._outer(child)

    def _check(self, node: ast.AST, names: Names, used: set[str], *, inside: bool) -> None:
        position = getattr(node, "col_offset", -1) + 1 or None
        if not isinstance(node, _ALLOWED):
            what = {
                ast.Attribute: "attributes (a.b)",
                ast.Subscript: "subscripts (a[b])",
                ast.Pow: "powers",
                ast.Lambda: "lambdas",
                ast.JoinedStr: "f-strings",
            }.get(type(node), type(node).__name__)
            raise ExpressionError(f"{what} are not allowed in rules", position)
        if isinstance(node, ast.Name):
            if node.id in LITERALS:
                return
            if names.fields is None or (inside and names.line_fields is None):
                used.add(node.id)
                return
            known = names.fields | ((names.line_fields or frozenset()) if inside else frozenset())
            if node.id not in known:
                hint = ""
                if node.id in (names.line_fields or frozenset()):
                    hint = " (a line field: use it inside an aggregate, e.g. sum(...))"
                raise ExpressionError(f"unknown field {node.id!r}{hint}", position)
            used.add(node.id)
            return
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str) and len(node.value) > MAX_TEXT:
                raise ExpressionError("a text literal is too long", position)
            if isinstance(node.value, int | float) and not isinstance(node.value, bool):
                number = Decimal(str(node.value))
                digits = len(number.as_tuple().digits)
                if not number.is_finite() or digits > DIGITS or abs(number.adjusted()) > 999:
                    raise ExpressionError("a number out of range", position)
            if not isinstance(node.value, str | int | float | bool | type(None)) or isinstance(
                node.value, complex
            ):
                raise ExpressionError("this literal is not allowed", position)
            return
        if isinstance(node, ast.Call):
            self._check_call(node, names, used, inside=inside)
            return
        if isinstance(node, ast.BinOp) and not isinstance(node.op, ast.Add):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and isinstance(side.value, str):
                    raise ExpressionError(
                        f"arithmetic on the text {side.value!r}: numbers only", position
                    )
        for child in ast.iter_child_nodes(node):
            self._check(child, names, used, inside=inside)

    def _check_call(self, node: ast.Call, names: Names, used: set[str], *, inside: bool) -> None:
        position = node.col_offset + 1
        if not isinstance(node.func, ast.Name):
            raise ExpressionError("only the listed functions can be called", position)
        if node.keywords:
            raise ExpressionError("arguments are given by position, not by name", position)
        name = "if" if node.func.id == "IF" else node.func.id
        count = len(node.args)
        if name in POSITION or name == ALLOCATE:
            self._check_line_call(node, name, names, used, inside=inside)
            return
        if name in AGGREGATES:
            least, most = AGGREGATES[name]
            if not names.aggregates:
                raise ExpressionError(
                    f"{name}() is an aggregate over a document's lines: only for rules of "
                    "documents with lines",
                    position,
                )
            if inside:
                raise ExpressionError(f"{name}() inside another aggregate", position)
            self._arity(name, count, least, most, position)
            for i, arg in enumerate(node.args):
                self._check(arg, names, used, inside=i == 0)
            return
        if name in TABLE_FUNCTIONS:
            least, most = TABLE_FUNCTIONS[name]
            self._arity(name, count, least, most, position)
            table = node.args[0]
            if not isinstance(table, ast.Constant) or not isinstance(table.value, str):
                raise ExpressionError(f"{name}(): the table is named by a text", position)
            if table.value not in names.tables:
                raise ExpressionError(f"{name}(): no table or lookup {table.value!r}", position)
            key: set[str] = set()
            self._check(node.args[1], names, key, inside=inside)
            self.table_keys[id(node)] = tuple(sorted(key))
            used |= key
            for arg in node.args[2:]:
                self._check(arg, names, used, inside=inside)
            return
        if name not in FUNCTIONS:
            raise ExpressionError(f"unknown function {name}()", position)
        _, least, most = FUNCTIONS[name]
        self._arity(name, count, least, most, position)
        if name == "regex":
            pattern = node.args[1]
            if not isinstance(pattern, ast.Constant) or not isinstance(pattern.value, str):
                raise ExpressionError("regex(): the pattern must be a text literal", position)
            self.patterns[id(pattern)] = _safe_pattern(pattern.value, position)
        for arg in node.args:
            self._check(arg, names, used, inside=inside)

    def _check_line_call(
        self, node: ast.Call, name: str, names: Names, used: set[str], *, inside: bool
    ) -> None:
        """position(), is_first(), is_last() and allocate(): line rules only."""
        position = node.col_offset + 1
        if not names.line:
            raise ExpressionError(
                f"{name}() is about a line's place among its document's lines: only for line rules",
                position,
            )
        if inside:
            raise ExpressionError(f"{name}() inside an aggregate", position)
        if name in POSITION:
            self._arity(name, len(node.args), 0, 0, position)
            return
        self._arity(name, len(node.args), 3, 4, position)
        scale = node.args[2]
        if (
            not isinstance(scale, ast.Constant)
            or not isinstance(scale.value, int)
            or isinstance(scale.value, bool)
            or not 0 <= scale.value <= 20
        ):
            raise ExpressionError(
                "allocate(): the scale is a whole number of decimal places from 0 to 20, "
                "written as it is",
                position,
            )
        if len(node.args) == 4:
            policy = node.args[3]
            if not isinstance(policy, ast.Constant) or policy.value not in ALLOCATE_POLICIES:
                raise ExpressionError(
                    'allocate(): the remainder goes to "last" or "largest" (a text literal)',
                    position,
                )
        for i, arg in enumerate(node.args[:3]):
            self._check(arg, names, used, inside=i == 1)

    @staticmethod
    def _arity(name: str, count: int, least: int, most: int, position: int) -> None:
        if not least <= count <= most:
            expected = str(least) if least == most else f"{least} to {most}"
            raise ExpressionError(f"{name}() takes {expected} argument(s), {count} given", position)

    # ------------------------------------------------------------------ evaluating

    def evaluate(
        self,
        values: Mapping[str, Any],
        *,
        lines: Sequence[Mapping[str, Any]] = (),
        tables: Callable[[str, Any, Any, Any], Any] | None = None,
        position: int | None = None,
        cache: dict[int, Any] | None = None,
    ) -> Any:
        """The value for one record (``lines``: its document's lines, for aggregates;
        ``tables(name, key, column, default)`` reads value tables and lookups). For a line
        rule: ``position``, the line's index in ``lines``, and ``cache``, one per document,
        where what is the same on every line (aggregates, allocations) is kept.

        Raises:
            ExpressionError: the values do not allow it (a division by zero, a text where a
                number is needed, a table miss...).
        """
        evaluator = _Evaluator(self, values, lines, tables, position, cache)
        try:
            return evaluator.run()
        except ExpressionError:
            raise
        except RecursionError:
            raise ExpressionError("nested too deeply") from None
        except (simpleeval.InvalidExpression, TypeError, ValueError, ArithmeticError) as exc:
            raise ExpressionError(str(exc) or type(exc).__name__) from None


def _safe_pattern(pattern: str, position: int) -> re.Pattern[str]:
    """A regular expression that cannot backtrack without end: no quantified group that
    itself holds a quantifier (``(a+)+``), no backreferences."""
    if len(pattern) > 200:
        raise ExpressionError("regex(): the pattern is longer than 200 characters", position)
    if re.search(r"\([^)]*[+*}][^)]*\)\s*[+*{?]", pattern) or re.search(r"\\\d", pattern):
        raise ExpressionError(
            "regex(): nested repetition or backreferences could run without end; simplify "
            "the pattern",
            position,
        )
    try:
        # \d is 0-9, as in a layout's patterns (Python's \d takes any script's digits).
        return re.compile(ascii_digit_pattern(pattern))
    except (re.error, ValueError) as exc:
        raise ExpressionError(f"regex(): not a valid pattern: {exc}", position) from None


class _Evaluator(simpleeval.SimpleEval):  # type: ignore[misc,unused-ignore]
    """simpleeval with xchange's meaning: the node kinds of ``_ALLOWED`` only, exact
    decimals, field names from the record, aggregates evaluated once per line."""

    def __init__(
        self,
        expression: Expression,
        values: Mapping[str, Any],
        lines: Sequence[Mapping[str, Any]],
        tables: Callable[[str, Any, Any, Any], Any] | None,
        position: int | None = None,
        cache: dict[int, Any] | None = None,
    ) -> None:
        super().__init__(operators=OPERATORS, functions={}, names={})
        self.expression = expression
        self.values = values
        self.lines = lines
        self.tables = tables
        self.position = position
        self.cache = cache
        self.nodes = {
            ast.Name: self._name,
            ast.Constant: self._constant,
            ast.BinOp: self._eval_binop,
            ast.UnaryOp: self._eval_unaryop,
            ast.BoolOp: self._eval_boolop,
            ast.Compare: self._eval_compare,
            ast.IfExp: self._eval_ifexp,
            ast.Call: self._call,
        }

    def run(self) -> Any:
        self.expr = self.expression.text
        with decimal.localcontext(CONTEXT):
            return self._eval(self.expression.tree.body)

    def _name(self, node: ast.Name) -> Any:
        if node.id in LITERALS:
            return LITERALS[node.id]
        return self.values.get(node.id)

    def _constant(self, node: ast.Constant) -> Any:
        value = node.value
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        return self.expression.numbers[id(node)]  # read from its text once, at compile time

    def _call(self, node: ast.Call) -> Any:
        name = "if" if node.func.id == "IF" else node.func.id  # type: ignore[attr-defined]
        if name in POSITION:
            if self.position is None:
                raise ExpressionError(f"{name}(): not a line here")
            index, count = self.position, len(self.lines)
            if name == "position":
                return Decimal(index + 1)
            return index == 0 if name == "is_first" else index == count - 1
        if name == ALLOCATE:
            return self._allocate(node)
        if name in AGGREGATES:
            if self.cache is None:
                return self._aggregate(name, node)
            return self._once(id(node), lambda: self._aggregate(name, node))
        if name in TABLE_FUNCTIONS:
            args = [self._eval(a) for a in node.args[1:]]
            if self.tables is None:
                raise ExpressionError(f"{name}(): no tables here")
            try:
                return self.tables(node.args[0].value, *args, *([None] * (3 - len(args))))  # type: ignore[attr-defined]
            except ExpressionError as exc:
                if exc.fields is None:
                    exc.fields = self.expression.table_keys.get(id(node), ())
                raise
        if name in ("if", "case", "coalesce"):
            return self._lazy(name, node)
        fn = FUNCTIONS[name][0]
        args = [self._eval(a) for a in node.args]
        if name == "regex":
            args[1] = self.expression.patterns[id(node.args[1])]
        try:
            return fn(*args)
        except ExpressionError as exc:
            raise ExpressionError(f"{name}(): {exc.message}") from None

    def _lazy(self, name: str, node: ast.Call) -> Any:
        """if/case/coalesce evaluate only the branches they need."""
        args = node.args
        if name == "if":
            chosen = args[1] if self._eval(args[0]) else (args[2] if len(args) > 2 else None)
            return None if chosen is None else self._eval(chosen)
        if name == "case":
            for i in range(0, len(args) - 1, 2):
                if self._eval(args[i]):
                    return self._eval(args[i + 1])
            return self._eval(args[-1]) if len(args) % 2 else None
        for arg in args:
            value = self._eval(arg)
            if value is not None and value != "":
                return value
        return None

    def _once(self, key: Any, compute: Callable[[], Any]) -> Any:
        """What is the same on every line of a document, computed at its first line; a
        failure there is raised again on the later lines as ``repeated``."""
        assert self.cache is not None
        if key not in self.cache:
            try:
                self.cache[key] = (compute(),)
            except ExpressionError as exc:
                self.cache[key] = exc
                raise
        kept = self.cache[key]
        if isinstance(kept, ExpressionError):
            again = ExpressionError(kept.message)
            again.repeated = True
            raise again
        return kept[0]

    def _allocate(self, node: ast.Call) -> Any:
        """This line's share (the document's shares computed once, at its first line, for
        the total as that line gives it: a line giving another total is a problem)."""
        if self.position is None:
            raise ExpressionError("allocate(): not a line here")
        total = self._eval(node.args[0])
        total = None if total is None or total == "" else _number(total, "a total")
        scale = int(node.args[2].value)  # type: ignore[attr-defined]
        policy = node.args[3].value if len(node.args) > 3 else "last"  # type: ignore[attr-defined]
        if self.cache is None:
            self.cache = {}
        first, shares = self._once(
            id(node), lambda: (total, self._shares(node, total, scale, policy))
        )
        if total != first:
            raise ExpressionError(
                f"allocate(): this line's total is {_shown(total)}, its document's first "
                f"line's {_shown(first)}: one amount is split over one document's lines"
            )
        return shares[self.position]

    def _shares(self, node: ast.Call, total: Any, scale: int, policy: str) -> list[Any]:
        outer, weights = self.values, []
        try:
            for i, line in enumerate(self.lines):
                self.values = {**outer, **line}
                try:
                    weights.append(self._eval(node.args[1]))
                except ExpressionError as exc:
                    if exc.line is None:
                        exc.line = i
                    raise
        finally:
            self.values = outer
        return allocate(total, weights, scale, policy)

    def _aggregate(self, name: str, node: ast.Call) -> Any:
        if name == "count" and not node.args:
            return Decimal(len(self.lines))
        outer = self.values
        values: list[Any] = []
        try:
            for i, line in enumerate(self.lines):
                self.values = {**outer, **line}
                try:
                    value = self._eval(node.args[0])
                except ExpressionError as exc:
                    if exc.line is None:
                        exc.line = i
                    raise
                if isinstance(value, list):
                    values.extend(value)
                else:
                    values.append(value)
            if not self.lines:
                value = self._eval(node.args[0])
                values = list(value) if isinstance(value, list) else [value]
        finally:
            self.values = outer
        present = [v for v in values if v is not None and v != ""]
        if name == "count":
            return Decimal(sum(1 for v in values if v))
        if name == "sum":
            total = Decimal(0)
            for v in present:
                total = CONTEXT.add(total, _number(v))
            return total
        if name in ("min", "max"):
            if not present:
                return None
            try:
                return (min if name == "min" else max)(present)
            except TypeError:
                raise ExpressionError(f"{name}(): values of different kinds") from None
        if name == "first":
            return present[0] if present else None
        if name == "last":
            return present[-1] if present else None
        sep = _text(self._eval(node.args[1])) if len(node.args) > 1 else ""
        distinct = bool(self._eval(node.args[2])) if len(node.args) > 2 else False
        texts = [_text(v) for v in present]
        if distinct:
            texts = list(dict.fromkeys(texts))
        return _bounded(sep.join(texts))


def allocate(total: Any, weights: Sequence[Any], scale: int, policy: str = "last") -> list[Any]:
    """``total`` split over ``weights`` at ``scale`` decimal places, the shares summing to
    ``total`` exactly: each share rounded half-up and the remainder on the last
    (``"last"``), or each rounded down and one unit each to the largest remainders, the
    earlier line first on a tie (``"largest"``).

    Raises:
        ExpressionError: it cannot balance (a total finer than the scale, weights summing
            to zero, a weight that is no number).
    """
    try:
        return _allocate(total, weights, scale, policy)
    except ArithmeticError:
        raise ExpressionError("allocate(): the numbers are out of range") from None


def _allocate(total: Any, weights: Sequence[Any], scale: int, policy: str) -> list[Any]:
    if total is None:
        return [None] * len(weights)
    amount = _number(total, "a total")
    unit = Decimal(1).scaleb(-scale)
    if amount != amount.quantize(unit, context=CONTEXT):
        raise ExpressionError(
            f"allocate(): the total {_text(amount)} has more than {scale} decimal place(s): "
            "it cannot be split exactly at that scale"
        )
    numbers = []
    for i, weight in enumerate(weights):
        if weight is None or weight == "":
            error = ExpressionError("allocate(): this line's weight has no value")
            error.line = i
            raise error
        numbers.append(_number(weight, "a weight"))
    if not numbers:
        return []
    if any(w < 0 for w in numbers) and any(w > 0 for w in numbers):
        raise ExpressionError(
            "allocate(): weights of both signs: a share in proportion means nothing here "
            "(split the positive and the negative lines apart)"
        )
    return _shares_of(amount, numbers, unit, policy)


def _shares_of(
    amount: Decimal, weights: list[Decimal], unit: Decimal, policy: str
) -> list[Decimal]:
    whole = sum(weights, Decimal(0))
    if whole == 0:
        if amount == 0:
            return [Decimal(0).quantize(unit)] * len(weights)
        raise ExpressionError(
            f"allocate(): the weights sum to 0: {_text(amount)} cannot be split in proportion"
        )
    with decimal.localcontext(CONTEXT):
        exact = [amount * w / whole for w in weights]
        if policy == "largest":
            shares = [q.quantize(unit, rounding=decimal.ROUND_FLOOR) for q in exact]
            left = int((amount - sum(shares, Decimal(0))) / unit)
            order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - shares[i]), i))
            for i in order[:left]:
                shares[i] += unit
            return shares
        shares = [q.quantize(unit, rounding=decimal.ROUND_HALF_UP) for q in exact[:-1]]
        last = (amount - sum(shares, Decimal(0))).quantize(unit)
        if (last < 0 < exact[-1]) or (last > 0 > exact[-1]) or (exact[-1] == 0 and last != 0):
            error = ExpressionError(
                f"allocate(): the other lines' rounding leaves {_text(last)} for the last "
                f"line, whose share is {_text(exact[-1].quantize(unit))}: it cannot balance "
                'on the last line; split with "largest"'
            )
            error.line = len(weights) - 1
            raise error
        shares.append(last)
        return shares


def functions_reference() -> list[str]:
    """Every function's name (for the reference page and messages)."""
    return sorted({*FUNCTIONS, *TABLE_FUNCTIONS, *AGGREGATES, *POSITION, ALLOCATE})

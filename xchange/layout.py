"""Layouts: what a document must look like, declared as data in ``formats/*.toml``.

A layout names its codec (csv, xml, json, xlsx), its encoding and shape (flat ``rows``, or
``nested``: a header with lines), and declares its fields with a type and rules.
Reading, a field turns text into a typed value (``str``, ``int``, ``Decimal``,
``date``, ``datetime``, ``bool``); writing, it turns a typed value back into text.
Amounts are :class:`decimal.Decimal` from the first character read to the last
written: they never pass through binary floating point.
"""

from __future__ import annotations

import functools
import re
import tomllib
import unicodedata
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from xchange.config import describe_error, key_path
from xchange.errors import ConfigError
from xchange.report import Report

FieldType = Literal["string", "integer", "decimal", "date", "datetime", "boolean", "enum"]
#: What input a layout does not read means: a problem, a warning, or nothing.
Unknown = Literal["reject", "warn", "ignore"]

M = TypeVar("M", bound=BaseModel)

_TRUE = {"1", "true", "yes", "y", "t", "是"}
_FALSE = {"0", "false", "no", "n", "f", "否"}


class FieldValueError(ValueError):
    """A text could not become a field's typed value; ``rule`` names the broken rule."""

    def __init__(self, rule: str, message: str, value: Any = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        #: The offending value when it is not the one handed in (e.g. a table key).
        self.value = value


class StrictModel(BaseModel):
    """A layout or mapping file's model: unknown keys refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


#: One unit in the last place of each scale a field may have.
_QUANTA = [Decimal(1).scaleb(-n) for n in range(19)]


def beyond_scale(value: Decimal, scale: int) -> bool:
    """Whether a number has a non-zero digit after its first ``scale`` decimals (exactly,
    however many digits it has: no rounding). Not a finite number counts as beyond."""
    try:
        return value != value.quantize(_QUANTA[scale])
    except InvalidOperation:  # more digits than the context holds: count them
        pass
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        return True
    extra = -exponent - scale
    return extra > 0 and any(digits[-extra:])


def with_scale(value: Decimal, scale: int) -> str:
    """The text of a number with exactly ``scale`` decimals (its extra decimals must be
    zeros: see :func:`beyond_scale`), however many digits it has."""
    try:
        return format(value.quantize(_QUANTA[scale]), "f")
    except InvalidOperation:
        pass
    text = format(value, "f")
    whole, _, fraction = text.partition(".")
    fraction = fraction[:scale].ljust(scale, "0")
    return f"{whole}.{fraction}" if scale else whole


_INTEGER = re.compile(r"[+-]?[0-9]+")
#: What min and max compare.
_NUMBERS = (int, Decimal)
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
#: A decimal digit of another script (fullwidth ２, Arabic-Indic ١, mathematical 𝟏...).
_OTHER_DIGIT = re.compile(r"[^\D0-9]")
#: Keys of a field that only some types read (the others refuse them).
_APPLIES: dict[str, tuple[str, ...]] = {
    "formats": ("date", "datetime"),
    "scale": ("decimal",),
    "min": ("integer", "decimal"),
    "max": ("integer", "decimal"),
    "values": ("enum",),
    "pattern": ("string",),
    "min_length": ("string", "enum"),
    "max_length": ("string", "enum"),
    "decimal_separator": ("decimal",),
    "group_separator": ("integer", "decimal"),
    "currency": ("decimal",),
    "digits": ("string", "integer", "decimal", "date", "datetime"),
    "invisible": ("string",),
}


#: Control characters (ESC, NUL, DEL, C1's NEL...) and the line and paragraph separators:
#: a problem in a value like invisible ones; not tab, line feed and carriage return (a
#: remark may hold lines).
_CONTROLS = frozenset(
    {*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029}
)
#: What ``trim`` removes at both ends: white space of any script (U+3000, U+00A0), but
#: not a control character that ``str.strip`` would take too (U+001F, U+0085): those are
#: a problem, not silently dropped.
SPACES = "".join(chr(c) for c in range(0x3001) if chr(c).isspace() and c not in _CONTROLS)
# (U+3000, the ideographic space, is the last white space character Unicode has)


@functools.cache
def invisible_ranges() -> tuple[tuple[int, int], ...]:
    """The code points :meth:`FieldSpec.unusual` looks for (format characters and
    controls, see ``_invisibles``), as ranges (first, last): a text holding none of them
    reads as it is (for a field that keeps ASCII digits only)."""
    found = [
        c
        for block in (range(0x80, 0x20000), range(0xE0000, 0xE1000))
        for c in block
        if unicodedata.category(chr(c)) == "Cf"
    ]
    ranges: list[list[int]] = []
    for c in sorted({*found, *_CONTROLS}):
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return tuple((a, b) for a, b in ranges)


@functools.cache
def _invisibles() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """An invisible character (Unicode's format characters, Cf: zero-width space and
    joiners, soft hyphen, BOM, word joiner, direction marks, tags...); a text of nothing
    but them and whitespace (any script's), and one of nothing but them: no value, trimmed
    or not. None of them is printable (``str.isprintable``), which is how a value is known
    to hold none of them at once."""
    chars = "".join(
        f"\\U{a:08x}" + (f"-\\U{b:08x}" if b > a else "") for a, b in invisible_ranges()
    )
    return re.compile(f"[{chars}]"), re.compile(f"[\\s{chars}]*"), re.compile(f"[{chars}]*")


def _char_name(char: str) -> str:
    kind = "a control character" if unicodedata.category(char) == "Cc" else "(unnamed)"
    return f"U+{ord(char):04X} {unicodedata.name(char, kind)}"


def _ascii_digits(text: str) -> str:
    """Every decimal digit of another script as its 0-9 digit."""
    return _OTHER_DIGIT.sub(lambda m: str(unicodedata.decimal(m.group())), text)


def as_text(value: Any) -> str:
    """A typed value as text, the one way for every type wherever no layout's format says
    otherwise (a field without ``formats``, templates, ``concat()``, table keys): no value is
    "", booleans ``true``/``false``, decimals as written out (``0.0000001``, never
    ``1E-7``), times ``2026-11-21 09:15:02``, dates ``2026-11-21``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def ascii_digit_pattern(pattern: str) -> str:
    """A layout's pattern with ``\\d`` meaning 0-9 and ``\\D`` anything else (Python's
    ``\\d`` is any script's digit: ``EC\\d{11}`` would take fullwidth ``EC２０２６...``);
    every other escape, class and ``\\w`` (letters of any script) keeps its meaning.

    Raises:
        ValueError: ``\\D`` inside a class (``[\\D...]``), which cannot be said with 0-9.
    """
    if "\\" not in pattern:
        return pattern
    verbose = bool(re.compile(pattern).flags & re.VERBOSE)
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            escaped = pattern[i + 1]
            if escaped == "d":
                out.append("0-9" if in_class else "[0-9]")
            elif escaped == "D":
                if in_class:
                    raise ValueError(
                        "\\D inside [...] cannot be read as 'not 0-9' there: write the class "
                        "without it (e.g. [^0-9] for \\D alone)"
                    )
                out.append("[^0-9]")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            out.append(c)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":  # a ] right after [ or [^ is a character
                out.append("]")
                i += 1
            continue
        elif verbose and c == "#":  # a comment, to the end of the line
            end = pattern.find("\n", i)
            end = n if end < 0 else end
            out.append(pattern[i:end])
            i = end
            continue
        out.append(c)
        i += 1
    return "".join(out)


class FieldSpec(StrictModel):
    """One field of a layout."""

    name: str = Field(min_length=1)
    #: Column header (CSV), element or attribute name (XML), or key (JSON); default: name.
    column: str | None = None
    type: FieldType = "string"
    required: StrictBool = False
    #: Date/datetime input formats (strptime); the first is also the output format. Each
    #: number in them has its exact width (%Y four digits, %m two...).
    formats: list[str] = Field(default_factory=list)
    #: Decimal places for decimals; written with exactly this many.
    scale: int | None = Field(None, ge=0, le=18)
    #: Strings: a regular expression the whole value must match (``\d`` is 0-9).
    pattern: str | None = None
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=1)
    min: Decimal | None = None
    max: Decimal | None = None
    values: list[str] = Field(default_factory=list)
    unique: StrictBool = False
    #: Texts that mean "no value" for this field, e.g. ["NA", "NULL"]; none by default.
    null_values: list[str] = Field(default_factory=list)
    #: Whitespace (any script's: also U+3000 and U+00A0) at either end is removed.
    trim: StrictBool = True
    #: Digits read in numbers, dates and a pattern's ``\d``: "ascii" (0-9 only, the
    #: default), or "unicode" (any script's decimal digits, read as 0-9: the value is
    #: normalised and the report says so).
    digits: Literal["ascii", "unicode"] = "ascii"
    #: Strings: an invisible character in a value (U+200B zero-width space, U+00AD soft
    #: hyphen, U+FEFF, U+2060, direction marks...): "reject" (a problem, the default),
    #: "remove" (the report says so) or "keep" (e.g. emoji joined by U+200D in free text).
    invisible: Literal["reject", "remove", "keep"] = "reject"
    #: Decimals: the character between the whole part and the fraction ("." or ",").
    decimal_separator: str = Field(".", min_length=1, max_length=1)
    #: Integers and decimals: the character between groups of three digits ("," "." " "
    #: or "'"), accepted only between whole groups of three before the decimal separator;
    #: none by default (1,500 is 1500 to one export and 1.5 to another).
    group_separator: str = Field("", max_length=1)
    #: Decimals: currency symbols tolerated before or after the number, e.g. ["¥", "￥"];
    #: none by default.
    currency: list[str] = Field(default_factory=list)
    #: XML: what a path that matches several elements means: "reject" (a problem, the
    #: default), "first", "last", "join" (every value, joined by ``separator``), or "all"
    #: (a list of every value, for a mapping's aggregates: ``join(waybill, "|")``).
    multiple: Literal["reject", "first", "last", "join", "all"] = "reject"
    separator: str = "|"

    @model_validator(mode="after")
    def _check(self) -> FieldSpec:
        name = self.name
        for key in sorted(self.model_fields_set & _APPLIES.keys()):
            types = _APPLIES[key]
            if self.type not in types:
                article = "an" if self.type[0] in "aeiou" else "a"
                raise ValueError(
                    f"field {name!r}: {key} does not apply to {article} {self.type} field "
                    f"(it is for {', '.join(types[:-1]) + ' and ' if types[1:] else ''}"
                    f"{types[-1]} fields)"
                )
        if self.type in ("date", "datetime"):
            if not self.formats:
                raise ValueError(f"field {name!r}: a {self.type} field needs formats = [...]")
            for fmt in self.formats:
                try:
                    _when_shape(fmt)
                except ValueError as exc:
                    raise ValueError(f"field {name!r}: formats: {fmt!r}: {exc}") from None
        if self.type == "enum" and not self.values:
            raise ValueError(f"field {name!r}: an enum field needs values = [...]")
        if self.type == "decimal" and self.decimal_separator == self.group_separator:
            raise ValueError(
                f"field {name!r}: decimal_separator and group_separator are both "
                f"{self.decimal_separator!r}"
            )
        if self.decimal_separator.isdigit() or self.group_separator.isdigit():
            raise ValueError(f"field {name!r}: a separator cannot be a digit")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"field {name!r}: pattern is not a valid regex: {exc}") from exc
            try:
                re.compile(ascii_digit_pattern(self.pattern))
            except (re.error, ValueError) as exc:
                raise ValueError(f"field {name!r}: pattern: {exc}") from exc
        return self

    @functools.cached_property
    def key(self) -> str:
        """Where the field is in a file: its column (or path), else its name."""
        return self.column or self.name

    @functools.cached_property
    def shown(self) -> str:
        """How a report names the field: its key, or its name where the key is the item
        itself (``"."``: a group's item that is one value)."""
        return self.name if self.key == "." else self.key

    # ------------------------------------------------------------------ reading

    def parse(self, text: str | None) -> Any:
        """Turn the text found in a file into this field's typed value (None: no value).

        Raises:
            FieldValueError: naming the broken rule.
        """
        return self.parser(text)

    @functools.cached_property
    def parser(self) -> Callable[[str | None], Any]:
        """``parse`` for this field, with its settings looked up once (called for every
        value of every record: ASCII text takes no step beyond the type's own regex)."""
        trim, required = self.trim, self.required
        nulls = frozenset(self.null_values)
        convert = {
            "integer": self._integer_reader,
            "decimal": self._decimal_reader,
            "boolean": self._boolean,
            "date": self._when_reader,
            "datetime": self._when_reader,
        }.get(self.type)
        check = self._checker
        unusual, hinted = self.unusual, self._hinted
        ascii_digits = self.digits == "ascii"

        def parse(text: str | None) -> Any:
            if text is not None:
                if trim:
                    text = text.strip(SPACES)
                if not (text.isprintable() and (ascii_digits or text.isascii())):
                    # (whitespace but " ", an invisible or control character, digits)
                    text = unusual(text)
            if not text or text in nulls:
                if required:
                    raise FieldValueError("required", "a value is required")
                return None
            try:
                value = text if convert is None else convert(text)
                if check is not None:
                    check(text, value)
            except FieldValueError as exc:
                if text.isascii() and text.isprintable():
                    raise
                raise hinted(exc, text) from None
            return value

        return parse

    def unusual(self, text: str) -> str:
        """A text that is not plain printable ASCII as this field reads it (after
        trimming): "" when it shows nothing (only invisible or control characters, and
        whitespace when the field trims: no value); in a string, an invisible or control
        character a problem (``invisible = "reject"``) or removed ("remove"); any
        script's digits as 0-9 (``digits = "unicode"``).

        Raises:
            FieldValueError: an invisible character in a string (rule "invisible").
        """
        invisible, blank, only_invisible = _invisibles()
        found = invisible.search(text)
        if found is not None and (blank if self.trim else only_invisible).fullmatch(text):
            return ""
        if found is not None and self.type == "string" and self.invisible != "keep":
            if self.invisible == "reject":
                raise FieldValueError(
                    "invisible",
                    f"holds an invisible character, {_char_name(found.group())}, at "
                    f"character {found.start() + 1} (if this export writes them on "
                    'purpose, set invisible = "remove" or "keep" on the field)',
                )
            text = invisible.sub("", text)
            if self.trim:
                text = text.strip(SPACES)
        if self.digits == "unicode" and _OTHER_DIGIT.search(text):
            text = _ascii_digits(text)
        return text

    @functools.cached_property
    def normalises(self) -> bool:
        """Whether reading may change a value's characters (and the report says so)."""
        return self.digits == "unicode" or (self.type == "string" and self.invisible == "remove")

    def note_normalised(self, text: str, where: str, report: Report) -> None:
        """A warning, once per field and file, when reading changed ``text``'s characters
        (``digits = "unicode"``, ``invisible = "remove"``)."""
        before = text.strip(SPACES) if self.trim else text
        if before.isascii() and before.isprintable():
            return
        try:
            after = self.unusual(before)
        except FieldValueError:  # pragma: no cover - the value was read, so it cannot fail
            return
        if not after or after == before:
            return
        what = []
        if self.digits == "unicode" and _OTHER_DIGIT.search(before):
            what.append('digits of other scripts read as 0-9 (digits = "unicode")')
        if self.invisible == "remove" and self.type == "string" and _invisibles()[0].search(before):
            what.append('invisible characters removed (invisible = "remove")')
        prefix = f"field {self.key}: {' and '.join(what)}"
        if any(w.startswith(prefix) for w in report.warnings):
            return
        report.warn(f"{prefix}; first at {where}: {before!r} read as {after!r}")

    def _hinted(self, exc: FieldValueError, text: str) -> FieldValueError:
        """A broken rule's message, with what in a non-ASCII text may explain it."""
        notes = []
        found = _OTHER_DIGIT.search(text)
        if (
            found is not None
            and self.digits == "ascii"
            and exc.rule in ("type", "pattern")
            and self.type in _APPLIES["digits"]
        ):
            notes.append(
                f"{found.group()!r} is a digit of another script: if this export writes "
                'such digits, set digits = "unicode" on the field to read them as 0-9'
            )
        found = _invisibles()[0].search(text)
        if found is not None:
            notes.append(f"it holds an invisible character, {_char_name(found.group())}")
        if not notes:
            return exc
        return FieldValueError(exc.rule, f"{exc.message} ({'; '.join(notes)})", exc.value)

    @staticmethod
    def _boolean(text: str) -> bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise FieldValueError("type", "expected true/false, yes/no or 1/0")

    @functools.cached_property
    def pattern_regex(self) -> str | None:
        """The pattern as it is matched: ``\\d`` is 0-9 (see :func:`ascii_digit_pattern`)."""
        return None if self.pattern is None else ascii_digit_pattern(self.pattern)

    @functools.cached_property
    def _pattern(self) -> re.Pattern[str] | None:
        return re.compile(self.pattern_regex) if self.pattern_regex is not None else None

    @functools.cached_property
    def rule_free(self) -> bool:
        """Whether the field has no rule besides its type (pattern, lengths, values,
        min, max)."""
        return not self._limits

    @functools.cached_property
    def takes_text_as_is(self) -> bool:
        """Whether :meth:`parse` returns a non-empty printable ASCII text that neither
        starts nor ends with a space as it is: a string field with no rule on its text
        and no null values."""
        return self.type == "string" and not self._limits and not self.null_values

    @functools.cached_property
    def _limits(self) -> bool:
        """Whether any rule besides the type is set (else checking them is skipped)."""
        return (
            self.pattern is not None
            or self.min_length is not None
            or self.max_length is not None
            or self.type == "enum"
            or self.min is not None
            or self.max is not None
        )

    @functools.cached_property
    def _number(self) -> re.Pattern[str]:
        """Digits 0-9, with group separators only between whole groups of three, and a
        fraction with digits on both sides of the decimal separator."""
        group = re.escape(self.group_separator)
        point = re.escape(self.decimal_separator)
        whole = rf"[0-9]{{1,3}}(?:{group}[0-9]{{3}})+|[0-9]+" if self.group_separator else "[0-9]+"
        return re.compile(rf"({whole})(?:{point}([0-9]+))?")

    @functools.cached_property
    def _integer_reader(self) -> Callable[[str], int]:
        """``_integer`` with the common case (digits 0-9 alone) first."""
        general = self._integer

        def read(text: str) -> int:
            if text.isdigit() and text.isascii() and len(text) < 4000:
                return int(text)
            return general(text)

        return read

    @functools.cached_property
    def int_reader(self) -> Callable[[int], Any] | None:
        """For a number field without ``null_values``: what :meth:`parse` gives for the
        text of an integer (``parse(str(n))``), read from the integer itself (a JSON
        number); None for other fields."""
        if self.type not in ("integer", "decimal") or self.null_values:
            return None
        parse, low, high = self.parser, self.min, self.max
        as_decimal = self.type == "decimal"

        def read(number: int) -> Any:
            value = Decimal(number) if as_decimal else number
            if (low is not None and value < low) or (high is not None and value > high):
                return parse(int.__repr__(number))  # (which says what is wrong)
            return value

        return read

    @functools.cached_property
    def _when_reader(self) -> Callable[[str], date | datetime]:
        """``_when`` with the field's formats looked up once."""
        formats, as_date = tuple(self.formats), self.type == "date"

        def read(text: str) -> date | datetime:
            return _parse_when(text, formats, as_date)

        return read

    def _integer(self, text: str) -> int:
        if _INTEGER.fullmatch(text) is None:
            body, sign = text, ""
            if body[:1] in ("+", "-"):
                sign, body = body[0], body[1:]
            match = self._number.fullmatch(body) if self.group_separator else None
            if match is None or match.group(2) is not None:
                hint = self._number_hint(body) if match is None else " (it has a fraction)"
                raise FieldValueError("type", "expected a whole number" + hint)
            text = sign + match.group(1).replace(self.group_separator, "")
        try:
            return int(text)
        except ValueError:  # beyond int()'s 4300 digits
            raise FieldValueError(
                "type", f"expected a whole number (this one has {len(text)} characters)"
            ) from None

    @functools.cached_property
    def _decimal_reader(self) -> Callable[[str], Decimal]:
        """``_decimal`` with the common case (digits, maybe a sign and a point) first and
        the field's settings looked up once."""
        plain = self.decimal_separator == "."
        scale = self.scale
        quantum = _QUANTA[scale] if scale is not None else None
        general = self._decimal

        def read(text: str) -> Decimal:
            # (what _PLAIN_DECIMAL matches, said with str methods: digits 0-9, maybe a
            # minus and a point with digits on both sides)
            whole, point, fraction = (text[1:] if text[:1] == "-" else text).partition(".")
            if not (
                plain
                and whole.isdigit()
                and whole.isascii()
                and (not point or (fraction.isdigit() and fraction.isascii()))
            ):
                return general(text)
            value = Decimal(text)
            if text[0] == "-" and not value:
                value = value.copy_abs()  # -0.00 is 0.00: a zero has no sign
            if quantum is not None:
                try:
                    beyond = value != value.quantize(quantum)
                except InvalidOperation:  # more digits than the context holds
                    beyond = beyond_scale(value, scale)  # type: ignore[arg-type]
                if beyond:
                    raise FieldValueError("scale", f"has more than {scale} decimal places")
            return value

        return read

    def _decimal(self, text: str) -> Decimal:
        if self.decimal_separator == "." and _PLAIN_DECIMAL.fullmatch(text):
            value = Decimal(text)  # the common case: digits, maybe a sign and a point
            if text[0] == "-" and not value:
                value = value.copy_abs()  # -0.00 is 0.00: a zero has no sign
            if self.scale is not None and beyond_scale(value, self.scale):
                raise FieldValueError("scale", f"has more than {self.scale} decimal places")
            return value
        body, sign = text, ""
        if body[:1] in ("+", "-"):
            sign, body = body[0], body[1:]
        for symbol in self.currency:
            if body.startswith(symbol):
                body = body[len(symbol) :]
                break
            if body.endswith(symbol):
                body = body[: -len(symbol)]
                break
        if not sign and body[:1] in ("+", "-"):
            sign, body = body[0], body[1:]
        match = self._number.fullmatch(body)
        if match is None:
            raise FieldValueError("type", "expected a decimal number" + self._number_hint(body))
        whole, fraction = match.group(1), match.group(2)
        if self.group_separator:
            whole = whole.replace(self.group_separator, "")
        value = Decimal(f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}")
        if not value:
            value = value.copy_abs()
        if self.scale is not None and beyond_scale(value, self.scale):
            raise FieldValueError("scale", f"has more than {self.scale} decimal places")
        return value

    def _number_hint(self, body: str) -> str:
        """Why a text that looks like a number is not one, in the field's own terms."""
        if re.fullmatch(r"[0-9.,' ]+", body) is None:
            if self.type == "decimal" and re.search(r"[¥￥$€£]", body) and not self.currency:
                return " (a currency symbol: list the ones the export writes in currency = [...])"
            return ""
        point, group = self.decimal_separator, self.group_separator
        grouped = re.fullmatch(r"[0-9]{1,3}([,.' ])[0-9]{3}(?:\1[0-9]{3})*(?:\.[0-9]+)?", body)
        comma = (
            self.type == "decimal"
            and point == "."
            and group != ","
            and re.fullmatch(r"[0-9]{1,3}(?:\.[0-9]{3})+,[0-9]*|[0-9]+,[0-9]+", body)
        )
        if comma and grouped and not group:
            return (
                f" ({body!r} is two numbers: {body.replace(',', '')} with ',' between groups "
                f"of three, or {body.replace(',', '.')} with a decimal comma; the field must "
                'say which: group_separator = "," or decimal_separator = ","'
                + (' and group_separator = "."' if "." in body else "")
                + ")"
            )
        if comma:
            return (
                f" ({body!r} looks like a decimal comma: if this export writes 1.299,00, "
                'set decimal_separator = "," and group_separator = "." on the field)'
            )
        if grouped and not group and grouped.group(1) != point:
            return (
                f" (digits grouped by {grouped.group(1)!r}: if this export writes them, "
                f"set group_separator = {grouped.group(1)!r} on the field)"
            )
        if group and group in body:
            return f" (the group separator {group!r} is accepted only between groups of three " + (
                "digits)" if self.type == "integer" else "digits before the decimal separator)"
            )
        if self.type == "decimal" and (body.startswith(point) or body.endswith(point)):
            return f" (a decimal separator needs digits on both sides: 0{point}5, 5{point}0)"
        return ""

    def _when(self, text: str) -> date | datetime:
        return _parse_when(text, tuple(self.formats), self.type == "date")

    @functools.cached_property
    def _checker(self) -> Callable[[str, Any], None] | None:
        """``_check_rules`` with the field's rules looked up once (None: it has none)."""
        if not self._limits:
            return None
        pattern = self._pattern
        shortest, longest = self.min_length, self.max_length
        values = tuple(self.values) if self.type == "enum" else None
        low, high = self.min, self.max
        check_rules = self._check_rules
        if self.type in ("integer", "decimal"):  # only min and max apply

            def limits(text: str, value: Any) -> None:
                kind = type(value)
                if (
                    (kind is not int and kind is not Decimal)
                    or (low is not None and value < low)
                    or (high is not None and value > high)
                ):
                    check_rules(text, value)

            return limits

        def check(text: str, value: Any) -> None:
            if (
                (pattern is not None and isinstance(value, str) and not pattern.fullmatch(value))
                or (shortest is not None and len(text) < shortest)
                or (longest is not None and len(text) > longest)
                or (values is not None and value not in values)
                or (
                    (low is not None or high is not None)
                    and isinstance(value, _NUMBERS)
                    and not isinstance(value, bool)
                    and ((low is not None and value < low) or (high is not None and value > high))
                )
            ):
                check_rules(text, value)  # a rule is broken: it says which

        return check

    def _check_rules(self, text: str, value: Any) -> None:
        if not self._limits:
            return
        if (
            self._pattern is not None
            and isinstance(value, str)
            and not self._pattern.fullmatch(value)
        ):
            raise FieldValueError("pattern", f"does not match {self.pattern}")
        if self.min_length is not None and len(text) < self.min_length:
            raise FieldValueError("length", f"shorter than {self.min_length} characters")
        if self.max_length is not None and len(text) > self.max_length:
            raise FieldValueError("length", f"longer than {self.max_length} characters")
        if self.type == "enum" and value not in self.values:
            raise FieldValueError("enum", f"not one of {', '.join(self.values)}")
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            if self.min is not None and value < self.min:
                raise FieldValueError("min", f"less than {self.min}")
            if self.max is not None and value > self.max:
                raise FieldValueError("max", f"greater than {self.max}")

    # ------------------------------------------------------------------ writing

    def coerce(self, value: Any) -> Any:
        """Bring a value from a mapping to this field's type (text is parsed by the rules)."""
        if type(value) is str:
            return self.parser(value)
        if value is None:
            if self.required:
                raise FieldValueError("required", "a value is required")
            return None
        if isinstance(value, str):
            return self.parse(value)
        kind = self.type
        if kind == "date" and isinstance(value, datetime):
            value = value.date()
        elif kind == "decimal" and isinstance(value, int) and not isinstance(value, bool):
            value = Decimal(value)
        elif kind in ("string", "enum") and not isinstance(value, str):
            return self.parse(self.render(value, as_source=True))
        if isinstance(value, Decimal):
            if not value and value.is_signed():
                value = value.copy_abs()  # -0.00 is 0.00, as when it is read
            if self.scale is not None and beyond_scale(value, self.scale):
                raise FieldValueError(
                    "scale", f"has more than {self.scale} decimal places (never rounded)"
                )
        check = self._checker
        if check is not None:
            lengths = self.min_length is not None or self.max_length is not None
            check(self.render(value, as_source=True) if lengths else "", value)
        return value

    @functools.cached_property
    def renderer(self) -> Callable[[Any], str]:
        """``render`` for this field, with its settings looked up once: what it writes for
        every value, one type test for the usual ones (a text, a decimal at the field's
        scale, a date); anything else goes through ``render`` itself (and raises
        :class:`FieldValueError` as it does)."""
        render = self.render
        quantum = _QUANTA[self.scale] if self.scale is not None else None
        fmt = self.formats[0] if self.formats else None

        def rendered(value: Any) -> str:
            kind = type(value)
            if kind is str:
                return value  # type: ignore[no-any-return]
            if kind is Decimal:
                if quantum is None:
                    return format(value, "f")
                try:
                    exact = value.quantize(quantum)
                except InvalidOperation:
                    return render(value)
                return format(exact, "f") if exact == value else render(value)
            if fmt is not None and (kind is date or kind is datetime):
                return _format_when(value, fmt)
            return render(value)

        return rendered

    def takes_unchanged(self, source: FieldSpec) -> bool:
        """Whether every value ``source`` reads is one this field takes as it is: what
        :meth:`coerce` would return unchanged, and never refuse (the same type, and no
        rule of this field stricter than the source field's). A copy between such fields
        is not checked twice."""
        kind = self.type
        if source.type != kind or source.multiple in ("join", "all"):
            return False
        if self.required and not source.required:
            return False
        if kind in ("integer", "decimal"):
            return (
                (self.scale is None or (source.scale is not None and source.scale <= self.scale))
                and (self.min is None or (source.min is not None and source.min >= self.min))
                and (self.max is None or (source.max is not None and source.max <= self.max))
            )
        if kind in ("date", "datetime", "boolean"):
            return True  # (no rule beyond the type)
        # A text is parsed again: by the same rules (reading is idempotent), or by none.
        reading = ("trim", "digits", "invisible", "null_values")
        rules = ("pattern", "min_length", "max_length", "values")
        if any(getattr(self, k) != getattr(source, k) for k in reading):
            return (
                kind == "string"
                and not self.trim
                and not self.null_values
                and (self.digits == source.digits and self.invisible == source.invisible)
                and all(getattr(self, k) in (None, []) for k in rules)
            )
        return all(getattr(self, k) in (None, [], getattr(source, k)) for k in rules)

    def render(self, value: Any, *, as_source: bool = False) -> str:
        """The text written for a typed value."""
        if type(value) is str:
            return value
        if value is None:
            return ""
        if isinstance(value, bool):
            return as_text(value)
        if isinstance(value, datetime | date):
            fmt = self.formats[0] if self.formats and not as_source else None
            if fmt is None:
                return as_text(value)
            return _format_when(value, fmt)
        if isinstance(value, Decimal):
            if self.scale is not None and not as_source:
                try:
                    exact = value.quantize(_QUANTA[self.scale])
                except InvalidOperation:  # more digits than the context holds
                    exact = None
                if exact is not None and exact == value:
                    return format(exact, "f")
                if beyond_scale(value, self.scale):
                    raise FieldValueError("scale", f"{value} has more than {self.scale} decimals")
                return with_scale(value, self.scale)
            return format(value, "f")
        return str(value)


def parse_field(
    spec: FieldSpec,
    text: str | None,
    where: str,
    report: Report,
    failed: set[str] | None = None,
) -> Any:
    """Parse one value, sending a broken rule to ``report`` (the value is then None, and
    the field's name goes into ``failed``), and a warning when reading changed the text's
    characters (a field that asks for it: ``digits = "unicode"``, ``invisible = "remove"``)."""
    try:
        value = spec.parser(text)
    except FieldValueError as exc:
        report.add(where, spec.shown, exc.rule, text, exc.message)
        if failed is not None:
            failed.add(spec.name)
        return None
    if spec.normalises and text and not (text.isascii() and text.isprintable()):
        spec.note_normalised(text, where, report)
    return value


@functools.lru_cache(maxsize=4096)
def _format_when(value: date | datetime, fmt: str) -> str:
    """strftime through a cache: documents repeat the same dates."""
    return value.strftime(fmt)


#: strptime directives read as a fixed number of digits 0-9.
_WHEN_DIGITS = {
    "Y": 4, "G": 4, "j": 3, "m": 2, "d": 2, "H": 2, "I": 2, "M": 2, "S": 2, "y": 2,
    "U": 2, "W": 2, "V": 2, "u": 1, "w": 1,
}  # fmt: skip
#: strptime directives read as words (names of months and days, AM/PM, a zone's name).
_WHEN_WORDS = {"a", "A", "b", "B", "p", "Z"}
_WHEN_OTHER = {
    "f": "[0-9]{1,6}",
    "z": "(?:Z|[+-][0-9]{2}:?[0-9]{2}(?::?[0-9]{2}(?:\\.[0-9]{1,6})?)?)",
    "%": "%",
}


@functools.lru_cache(maxsize=256)
def _when_shape(fmt: str) -> tuple[re.Pattern[str], re.Pattern[str], tuple[tuple[str, int], ...]]:
    """What a date format's text must look like: each number exactly its width in digits
    0-9 (strptime alone takes 2026111 for %Y%m%d, any script's digits, and any run of
    whitespace for a space); a pattern with each run of adjacent numbers loose (to say
    which run has the wrong width), and those runs (directives, digits; 0: %f's 1-6).

    Raises:
        ValueError: a directive strptime does not read, or one that depends on the locale.
    """
    strict: list[str] = []
    loose: list[str] = []
    runs: list[tuple[str, int]] = []
    run: list[str] = []

    def close() -> None:
        if run:
            width = 0 if "%f" in run else sum(_WHEN_DIGITS[d[1]] for d in run)
            runs.append(("".join(run), width))
            loose.append("([0-9]+)")
            run.clear()

    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            close()
            strict.append(re.escape(c))
            loose.append(re.escape(c))
            i += 1
            continue
        d = fmt[i + 1 : i + 2]
        i += 2
        if d in _WHEN_DIGITS or d == "f":
            strict.append(_WHEN_OTHER[d] if d == "f" else f"[0-9]{{{_WHEN_DIGITS[d]}}}")
            run.append("%" + d)
            continue
        close()
        if d in _WHEN_WORDS:
            piece = r"[^0-9\s]+"
        elif d in _WHEN_OTHER:
            piece = _WHEN_OTHER[d]
        elif d in ("c", "x", "X"):
            raise ValueError(f"%{d} depends on the locale: write its parts (%Y-%m-%d, %H:%M:%S)")
        else:
            raise ValueError(f"%{d} is not a directive a date is read with" if d else "ends in %")
        strict.append(piece)
        loose.append(piece)
    close()
    return re.compile("".join(strict)), re.compile("".join(loose)), tuple(runs)


@functools.lru_cache(maxsize=4096)
def _parse_when(text: str, formats: tuple[str, ...], as_date: bool) -> date | datetime:
    """strptime through a cache (exports repeat the same dates and times on many rows), on
    a text of exactly the format's shape (see :func:`_when_shape`)."""
    for fmt in formats:
        if _when_shape(fmt)[0].fullmatch(text) is None:
            continue
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return parsed.date() if as_date else parsed
    kind = "date" if as_date else "datetime"
    raise FieldValueError(
        "type", f"expected a {kind} like {' or '.join(formats)}{_when_hint(text, formats)}"
    )


def _when_hint(text: str, formats: tuple[str, ...]) -> str:
    """Which number of a date has the wrong width, for the first format it is shaped like;
    or that its whitespace is not the format's."""
    for fmt in formats:
        squeezed = re.sub(r"\s+", " ", text)
        if squeezed != text and _when_shape(re.sub(r"\s+", " ", fmt))[0].fullmatch(squeezed):
            return " (its whitespace is not the format's: each space is read as written)"
        _, loose, runs = _when_shape(fmt)
        match = loose.fullmatch(text)
        if match is None:
            continue
        for digits, (directives, width) in zip(match.groups(), runs, strict=True):
            if width and len(digits) != width:
                has = f"{len(digits)} digit" + ("s" if len(digits) > 1 else "")
                return f" ({digits} has {has} where {directives} needs {width})"
    return ""


class CsvOptions(StrictModel):
    delimiter: str = Field(",", min_length=1, max_length=1)
    quote: str = Field('"', min_length=1, max_length=1)
    header: StrictBool = True
    line_ending: Literal["\n", "\r\n"] = "\r\n"
    quoting: Literal["minimal", "all", "nonnumeric", "none"] = "minimal"
    #: Reading: spaces after a delimiter are skipped, so that ``x, "y, z"`` is two fields
    #: (by default a quote inside an unquoted field is a problem, as RFC 4180 says).
    skipinitialspace: StrictBool = False
    #: Reading: a quote inside a field that does not start with one is a problem
    #: ("reject", RFC 4180), or a plain character (``"literal"``: ``37°36'37.8"N``).
    bare_quotes: Literal["reject", "literal"] = "reject"
    #: Reading: a layout column missing from the header is a problem ("reject"), or,
    #: for fields that are not required, no value ("allow").
    missing_columns: Literal["reject", "allow"] = "reject"
    #: Reading: a header column the layout does not declare. Superseded by the layout's
    #: ``unknown`` (which says the same for every codec); when given, it still decides
    #: for the columns and ``check`` says how to write it the new way.
    extra_columns: Literal["reject", "ignore"] | None = None
    #: Reading: a header cell with spaces around its name (``数量 ``) is a problem
    #: ("reject": it is not the layout's column), or read as the name without them
    #: ("trim").
    header_spaces: Literal["reject", "trim"] = "reject"


class XmlOptions(StrictModel):
    """XML documents. Field columns are paths relative to the record (or line) element:
    ``OrderNo``, ``Header/OrderNo``, ``@id``, ``Customer/@code``; prefixes as declared in
    ``namespaces``."""

    #: Root element of one document (writing), and of the file (reading, checked).
    root: str
    #: Element that holds the lines (omit for lines directly under the record).
    lines: str | None = None
    #: Element of one line (nested layouts).
    line: str | None = None
    #: Default namespace of written documents.
    namespace: str | None = None
    #: Prefixes used in paths when reading, e.g. { w = "urn:example:wms" }.
    namespaces: dict[str, str] = Field(default_factory=dict)
    #: Root element wrapping several documents when a mapping batches them.
    batch_root: str | None = None
    indent: str = "  "
    #: Reading: path of the record elements from the top, e.g. "/Orders/Order";
    #: default: the root element is the one record.
    records: str | None = None
    #: Optional XSD (relative to the formats folder) that documents must satisfy.
    xsd: str | None = None
    #: Reading: an XML declaration's encoding must agree with the layout's ("agree": the
    #: same, or a subset such as GB2312 under GB18030; else the file is refused naming
    #: both), or is what the document is read in ("trust").
    declared_encoding: Literal["agree", "trust"] = "agree"


#: One step of an XML group's path: an element's name, with a prefix or not.
_XML_STEP = re.compile(r"[^\W\d][\w.-]*(?::[^\W\d][\w.-]*)?")
_JSON_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+|\*)\]")


def json_steps(path: str) -> list[str]:
    """A JSON document path (``$.orders[3].lines[*]``) as its steps (``.orders``, ``[3]``,
    ``.lines``, ``[*]``)."""
    return [m.group(0) for m in _JSON_STEP.finditer(path, 1)]


def json_outside(records: str, column: str) -> tuple[list[str], str] | None:
    """Where a JSON record field outside its record reads, or None for a key path inside
    the record: ``$.batch_no`` from the document's root, ``^.order_no`` from the object
    whose list holds the record (``^^.`` one object further up). Given as the steps from
    the root to the object read (taken from ``records``: ``[*]`` for any index) and the key
    path read in it.

    Raises:
        ValueError: more ``^`` than objects above the record, or no key after them.
    """
    if column.startswith("$."):
        return [], column[2:]
    if not column.startswith("^"):
        return None
    ups = len(column) - len(column.lstrip("^"))
    rest = column[ups:]
    if not rest.startswith(".") or len(rest) < 2:
        raise ValueError(f"column {column!r}: after ^ comes a key path (^.order_no)")
    steps = json_steps(records)
    for _ in range(ups):
        while steps and steps[-1].startswith("["):
            steps.pop()
        if not steps:
            raise ValueError(
                f"column {column!r}: goes up {ups} object(s); the records ({records}) "
                "have fewer above them"
            )
        steps.pop()
    return steps, rest[1:]


class JsonOptions(StrictModel):
    """JSON documents. Field columns are dotted key paths: ``FCustId.FNumber``."""

    #: Reading: where the records are, e.g. "$.orders[*]" ("$" = the whole document).
    records: str = "$"
    #: Key path of a record's lines (nested layouts), e.g. "items".
    lines: str | None = None
    #: One JSON value per line.
    ndjson: StrictBool = False
    #: What a key given twice in one object means.
    duplicate_keys: Literal["reject", "last"] = "reject"
    #: Writing: key path that wraps each document, e.g. "Model" (Kingdee's Save API).
    wrap: str | None = None
    #: Writing: key that wraps several documents when a mapping batches them.
    batch_key: str | None = None
    indent: int | None = 2


class XlsxOptions(StrictModel):
    """Excel workbooks (.xlsx). Field columns are the texts of the header row's cells."""

    #: The sheet read or filled: its name, or its position (1 = the first).
    sheet: str | int = Field(1)
    #: The row holding the column names (rows above it are not read: a title, notes).
    header_row: int = Field(1, ge=1)
    #: The first row of data (default: the row after the header); rows between the header
    #: and it are not read (a row of captions under the keys, say).
    first_row: int | None = Field(None, ge=2)
    #: Reading: a cell with a formula is a problem ("reject"), or read as the value Excel
    #: saved with it ("cached"; a formula saved without a value is still a problem).
    formulas: Literal["reject", "cached"] = "reject"
    #: Reading: merged cells in the rows read are a problem ("reject"), or each cell of
    #: the range reads the value of its first ("fill").
    merged: Literal["reject", "fill"] = "reject"
    #: Reading: columns read as the value stored in the file rather than as the cell
    #: shows it (for a number format xchange cannot show exactly).
    stored: list[str] = Field(default_factory=list)
    #: Writing: the workbook filled, relative to the formats folder; every part of it but
    #: the filled sheet's rows from ``first_row`` on is written as it is.
    template: str | None = None
    #: Reading: the most parts a workbook may hold, their total size unpacked (bytes),
    #: and how much larger than packed a part over 1 MiB may be (against zip bombs).
    max_parts: int = Field(10_000, ge=1)
    max_size: int = Field(1 << 30, ge=1)
    max_ratio: int = Field(200, ge=1)
    #: Reading: the most shared strings a workbook may hold (each one kept in memory while
    #: the sheet is read: ten million one-letter strings pack into 25 MB).
    max_strings: int = Field(2_000_000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> XlsxOptions:
        if isinstance(self.sheet, int) and self.sheet < 1:
            raise ValueError("sheet: a position counts from 1 (the first sheet)")
        if self.first_row is not None and self.first_row <= self.header_row:
            raise ValueError("first_row: comes after header_row")
        return self

    @property
    def data_row(self) -> int:
        """The first row of data."""
        return self.first_row if self.first_row is not None else self.header_row + 1


class GroupSpec(StrictModel):
    """A repeating group of a document other than its lines: items beside the lines
    (a WMS order's packages), under each line (a Kingdee entry's serial sub-entries), or
    under another group's items; an item is an object of fields, or one value (a list of
    waybill numbers: one field whose column is ``"."``)."""

    #: The group's name (a mapping's ``[groups.<name>]`` writes it; never a field's name).
    name: str = Field(min_length=1)
    #: Whose items hold this group: "record" (the document), "lines" (each line of a
    #: nested layout), or another group's name.
    under: str = "record"
    #: Where the items are, from their parent: XML, the path of one item's element
    #: (``Packages/Package``); JSON, the key path of the list (``packages``).
    path: str = Field(min_length=1)
    #: The fewest and most items a parent may have (none and any number by default).
    min_items: int = Field(0, ge=0)
    max_items: int | None = Field(None, ge=1)
    fields: list[FieldSpec] = Field(min_length=1)

    @property
    def scalar(self) -> bool:
        """Whether each item is one value (its one field at ``"."``), not an object."""
        return self.fields[0].key == "."


class Layout(StrictModel):
    """A document layout, as declared in one ``formats/*.toml`` file."""

    name: str
    version: str = "1"
    description: str = ""
    codec: Literal["csv", "xml", "json", "xlsx"]
    encoding: str = "utf-8"
    #: Text that looks double-encoded (``Ã¤Â¸Â­``): a problem ("reject"), or a warning.
    mojibake: Literal["warn", "reject"] = "reject"
    #: Input the layout does not read (an XML element or attribute, a JSON key, a CSV
    #: column): a problem ("reject"), a warning naming it ("warn"), or nothing ("ignore").
    unknown: Unknown = "reject"
    #: The same per subtree: a path (as a field's column: below the record or line, or
    #: from the document's root with ``/`` in XML and ``$.`` in JSON) -> policy. The
    #: nearest enclosing path decides.
    unknown_in: dict[str, Unknown] = Field(default_factory=dict)
    #: Nested layouts: the fewest lines a document may have (a document without lines
    #: is a problem by default).
    min_lines: int = Field(1, ge=0)
    #: GB text (declared or guessed) must look like Chinese in it (Big5 or Shift_JIS read
    #: as GB18030 does not); false for files of rare characters on purpose.
    check_text: StrictBool = True
    shape: Literal["rows", "nested"] = "rows"
    fields: list[FieldSpec] = Field(min_length=1)
    line_fields: list[FieldSpec] = Field(default_factory=list)
    #: The header field that identifies a business document (an order number): a route
    #: writing this layout does not deliver a document whose key it delivered before
    #: (see the route's ``repeats``).
    business_key: str | None = None
    #: Repeating groups other than the lines, on the document, its lines or each other's
    #: items (written after the fields and the lines, in the order declared).
    groups: list[GroupSpec] = Field(default_factory=list)
    csv: CsvOptions = CsvOptions()
    xml: XmlOptions | None = None
    json_: JsonOptions = Field(JsonOptions(), alias="json")
    xlsx: XlsxOptions = XlsxOptions()
    max_problems: int = Field(100, ge=1)
    source_file: Path = Field(Path("?"), exclude=True)
    #: The file's bytes as they were read (what the journal's versions hash: what was
    #: loaded and used, not what is on disk now).
    source_bytes: bytes = Field(b"", exclude=True)

    @model_validator(mode="after")
    def _check(self) -> Layout:
        if self.shape == "nested" and not self.line_fields:
            raise ValueError("a nested layout needs [[line_fields]]")
        if self.codec == "xml" and self.xml is None:
            raise ValueError("an xml layout needs an [xml] table (root = ...)")
        if self.business_key is not None and self.business_key not in {f.name for f in self.fields}:
            raise ValueError(
                f"business_key: {self.business_key!r} is not a header field of the layout "
                "([[fields]])"
            )
        for group in (self.fields, self.line_fields):
            names = [f.name for f in group]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"field names defined twice: {', '.join(dupes)}")
        try:
            if self.encoding.lower() != "auto":
                "".encode(self.encoding)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {self.encoding!r}") from exc
        if self.shape != "nested":
            given = [
                key
                for key, is_set in (
                    ("min_lines", "min_lines" in self.model_fields_set),
                    ("line_fields", bool(self.line_fields)),
                    ("xml.lines", self.xml is not None and self.xml.lines is not None),
                    ("xml.line", self.xml is not None and self.xml.line is not None),
                    ("json.lines", self.json_.lines is not None),
                )
                if is_set
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)}: only a nested layout has lines (this one is "
                    f'shape = "{self.shape}")'
                )
        self._check_groups()
        if self.codec == "json":
            self._check_outside()
        if self.codec == "xml" and self.xml is not None:
            self._check_prefixes()
        if self.codec != "csv" and "csv" in self.model_fields_set:
            raise ValueError(f"csv: a {self.codec} layout has no [csv] options")
        if self.codec != "json" and "json_" in self.model_fields_set:
            raise ValueError(f"json: a {self.codec} layout has no [json] options")
        if self.codec != "xml" and self.xml is not None:
            raise ValueError(f"xml: a {self.codec} layout has no [xml] options")
        if self.codec != "xlsx" and "xlsx" in self.model_fields_set:
            raise ValueError(f"xlsx: a {self.codec} layout has no [xlsx] options")
        if self.codec == "xlsx" and self.shape != "rows":
            raise ValueError('an xlsx layout is flat: shape = "rows" (a row per record)')
        stray = [c for c in self.xlsx.stored if c not in {f.key for f in self.fields}]
        if stray:
            raise ValueError(f"xlsx.stored: {', '.join(map(repr, stray))}: not a field's column")
        return self

    def _check_groups(self) -> None:
        if self.groups and self.codec == "xlsx":
            raise ValueError("groups: a sheet is flat: its rows have no groups")
        if self.groups and self.codec == "csv":
            raise ValueError(
                "groups: a CSV file is flat: its rows have no groups (a nested layout's "
                "lines are the CSV's rows, grouped by a mapping's group_by)"
            )
        names = [g.name for g in self.groups]
        for group in self.groups:
            where = f"groups.{group.name}"
            if names.count(group.name) > 1:
                raise ValueError(f"{where}: two groups have this name")
            if group.name in ("record", "lines"):
                raise ValueError(f"{where}: {group.name!r} is a level's name, not a group's")
            if group.under == "lines" and self.shape != "nested":
                raise ValueError(f'{where}: under = "lines": only a nested layout has lines')
            if group.under not in ("record", "lines") and group.under not in names:
                raise ValueError(
                    f'{where}: under: is {group.under!r}: say "record", "lines" or '
                    f"a group's name ({', '.join(names) or 'none'})"
                )
            seen: list[str] = []
            parent = group.under
            while parent not in ("record", "lines"):
                if parent in seen:
                    raise ValueError(f"{where}: under: groups under each other in a circle")
                seen.append(parent)
                parent = next(g.under for g in self.groups if g.name == parent)
            field_names = [f.name for f in group.fields]
            dupes = sorted({n for n in field_names if field_names.count(n) > 1})
            if dupes:
                raise ValueError(f"{where}: field names defined twice: {', '.join(dupes)}")
            above = {f.name for f in self.level_fields(group.under, ancestors=True)}
            clash = sorted(above.intersection(field_names) | ({group.name} & above))
            if clash:
                raise ValueError(
                    f"{where}: {', '.join(clash)}: a field above the group has this name "
                    "(an item's rules read both: a name means one thing)"
                )
            if any(f.key == "." for f in group.fields) and len(group.fields) > 1:
                raise ValueError(
                    f'{where}: a field at column "." is the item itself: an item is one '
                    "value (one field) or an object of fields, not both"
                )
            if group.max_items is not None and group.max_items < group.min_items:
                raise ValueError(f"{where}: max_items is below min_items")
            self._check_group_path(group)
        if self.groups:
            self._check_levels()

    def _check_group_path(self, group: GroupSpec) -> None:
        """A group's path is plain steps: element names (XML, a prefix declared under
        [xml] namespaces) or keys (JSON): no query, no step up or across."""
        where = f"groups.{group.name}.path"
        if self.codec == "xml":
            for step in group.path.split("/"):
                if not _XML_STEP.fullmatch(step):
                    raise ValueError(
                        f"{where}: {group.path!r}: each step is an element's name "
                        "(Packages/Package), not a query ('.', '..', '*', '//', [n], @)"
                    )
        elif any(
            not part or part != part.strip() or part[0] in "$^" or "[" in part
            for part in group.path.split(".")
        ):
            raise ValueError(
                f"{where}: {group.path!r}: a dotted key path below its parent (packages, "
                "data.packages), not a document path ($, ^, [n], empty keys or spaces around one)"
            )

    def _check_levels(self) -> None:
        """At each level, no path reads what a group's list holds: a field, the lines or
        another group at a group's path or inside it, nor a group at or inside the lines'
        (it would be read twice, or in JSON not at all: a key path does not go into a
        list)."""
        xml = self.codec == "xml"
        sep = "/" if xml else "."
        if self.xml is not None:
            lines = "/".join(p for p in (self.xml.lines, self.xml.line) if p)
        else:
            lines = self.json_.lines or "lines"
        for level in ("record", "lines", *(g.name for g in self.groups)):
            if level == "lines" and self.shape != "nested":
                continue
            groups = [(g.path, f"group {g.name!r}") for g in self.children(level)]
            others = [
                (f.key.split("@")[0].rstrip("/") if xml else f.key, f"field {f.name!r}")
                for f in self.level_fields(level)
                if f.key != "." and not f.key.startswith(("/", "$.", "^"))
            ]
            if level == "record" and self.shape == "nested":
                others.append((lines, "the lines"))
            pairs = [(g, o) for g in groups for o in groups + others if o != g]
            if level == "record" and self.shape == "nested":
                pairs += [((lines, "the lines"), g) for g in groups]
            for (path, what), (other, other_what) in pairs:
                if other and (other == path or other.startswith(path + sep)):
                    raise ValueError(
                        f"{other_what} ({other!r}) is at or inside the path of {what} "
                        f"({path!r}): "
                        "its items would be read "
                        + ("twice" if other == path or xml else "by neither")
                        + "; give each its own path"
                    )

    def _check_prefixes(self) -> None:
        """Every namespace prefix a path uses is declared (else every file would fail)."""
        assert self.xml is not None
        declared = set(self.xml.namespaces) | {"xml"}
        paths = [(f"field {f.name!r}", f.key) for f in (*self.fields, *self.line_fields)]
        paths += [(f"field {f.name!r}", f.key) for g in self.groups for f in g.fields]
        paths += [(f"groups.{g.name}.path", g.path) for g in self.groups]
        paths += [(f"unknown_in {k!r}", k) for k in self.unknown_in]
        for what, path in paths:
            for step in re.split(r"[/@]", path):
                prefix, colon, _ = step.partition(":")
                if colon and not step.startswith("{") and prefix not in declared:
                    raise ValueError(
                        f"{what}: {path!r}: the prefix {prefix!r} is not declared under "
                        "[xml] namespaces"
                    )

    def _check_outside(self) -> None:
        """JSON fields outside the record: record fields only, above the root nowhere."""
        for spec in self.fields:
            if spec.key.startswith(("$.", "^")):
                try:
                    json_outside(self.json_.records, spec.key)
                except ValueError as exc:
                    raise ValueError(f"field {spec.name!r}: {exc}") from None
        below = [*self.line_fields, *(f for g in self.groups for f in g.fields)]
        for spec in below:
            if spec.key.startswith(("$.", "^")):
                raise ValueError(
                    f"field {spec.name!r}: column {spec.key!r}: only a record's fields read "
                    "outside it (a line's and an item's rules read the record's fields)"
                )

    def outside(self) -> list[FieldSpec]:
        """The record fields read outside the record (JSON: ``$.`` and ``^.`` columns)."""
        if self.codec != "json":
            return []
        return [f for f in self.fields if f.key.startswith(("$.", "^"))]

    def children(self, level: str) -> list[GroupSpec]:
        """The groups whose items are held by ``level``'s ("record", "lines", or a group's
        name), in the order declared."""
        groups, held = self._children
        if groups is not self.groups:  # (a copy of the layout with other groups)
            del self.__dict__["_children"]
            groups, held = self._children
        return held.get(level, [])

    @functools.cached_property
    def _children(self) -> tuple[list[GroupSpec], dict[str, list[GroupSpec]]]:
        """``children`` of every level, made once (asked for each record, line and item),
        with the list of groups it was made from."""
        held: dict[str, list[GroupSpec]] = {}
        for group in self.groups:
            held.setdefault(group.under, []).append(group)
        return self.groups, held

    def level_fields(self, level: str, *, ancestors: bool = False) -> list[FieldSpec]:
        """The fields of a level ("record", "lines" or a group's name), and with
        ``ancestors`` those of every level above it."""
        if level == "record":
            return list(self.fields)
        if level == "lines":
            return [*(self.fields if ancestors else []), *self.line_fields]
        group = next(g for g in self.groups if g.name == level)
        above = self.level_fields(group.under, ancestors=True) if ancestors else []
        return [*above, *group.fields]

    def unknown_columns(self) -> Unknown:
        """What a CSV column the layout does not declare means (``extra_columns``, where
        an older layout still says it, else ``unknown``)."""
        extra = self.csv.extra_columns
        return self.unknown if extra is None else extra

    def superseded(self) -> list[str]:
        """Keys of this layout written in a superseded form, and how to write them now."""
        notes: list[str] = []
        if self.csv.extra_columns is not None:
            notes.append(
                f"{self.source_file}: csv.extra_columns is superseded: write "
                f'unknown = "{self.csv.extra_columns}" at the top of the layout (it says the '
                "same for every codec)"
            )
        return notes

    def write_collisions(self) -> list[str]:
        """What would lose a value when documents are written in this layout: two fields at
        one key (one value written over the other), or, in JSON, a field inside another's
        key (``A`` and ``A.B``: a key holds a value or an object, not both). Reading such a
        layout loses nothing, so this is asked of target layouts only."""
        if self.codec not in ("json", "xml"):
            return []
        problems: list[str] = []
        lines = self.json_.lines or "lines"
        nested = self.codec == "json" and self.shape == "nested"
        levels: list[tuple[list[FieldSpec], list[tuple[str, str]], str]] = [
            (self.fields, [(lines, "the lines")] if nested else [], "record"),
            (self.line_fields, [], "lines"),
            *((g.fields, [], g.name) for g in self.groups),
        ]
        for spec in self.outside():
            problems.append(
                f"field {spec.name!r} is at {spec.key!r}, outside the document: a layout "
                "written has every field inside its documents"
            )
        for group, extra, level in levels:
            paths = [(f.key, f"field {f.name!r}") for f in group if f.key != "."]
            paths += extra
            paths += [(g.path, f"group {g.name!r}") for g in self.children(level)]
            for i, (key, what) in enumerate(paths):
                for other, other_what in paths[i + 1 :]:
                    if key == other:
                        problems.append(
                            f"{what} and {other_what} are both at {key!r}: one value would "
                            "be written over the other"
                        )
                    elif self.codec == "json" and (
                        other.startswith(key + ".") or key.startswith(other + ".")
                    ):
                        (outer, outer_what), (inner, inner_what) = sorted(
                            ((key, what), (other, other_what)), key=lambda p: len(p[0])
                        )
                        problems.append(
                            f"{inner_what} is at {inner!r}, inside {outer_what}'s key "
                            f"{outer!r}: a JSON key holds a value or an object, not both"
                        )
        return problems

    def field(self, name: str) -> FieldSpec | None:
        for spec in (*self.fields, *self.line_fields):
            if spec.name == name:
                return spec
        return None


def group_count(group: GroupSpec, found: int, given: list[Any] | None = None) -> str | None:
    """The message for a parent with fewer or more items of a group than its layout
    allows (``given``: the items found, whatever they were), or None."""
    items = f"{found} item(s)"
    if given is not None and len(given) != found:
        items += f" ({len(given) - found} more that are not items: said above)"
    if found < group.min_items:
        return (
            f"group {group.name} ({group.path}) has {items}; the layout needs at least "
            f"{group.min_items}"
        )
    if group.max_items is not None and found > group.max_items:
        return (
            f"group {group.name} ({group.path}) has {items}; the layout allows at most "
            f"{group.max_items}"
        )
    return None


def few_lines(found: int, least: int, what: str) -> str:
    """The message for a nested document with fewer lines than its layout's ``min_lines``."""
    has = "no line" if not found else f"{found} line(s)"
    return (
        f"the document has {has} ({what}); layout needs at least {least} "
        "(a misspelt or missing lines element loses them all; say min_lines = 0 in the "
        "layout if an empty document is real)"
    )


def load_toml_model(path: Path, model: type[M], shown: str) -> M:
    """Load one TOML data file into ``model``; errors name the file and key path."""
    try:
        data = path.read_bytes()
        raw = tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{shown}: file not found"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{shown}: not UTF-8 text: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{shown}: not valid TOML: {exc}"]) from None
    try:
        return model.model_validate({**raw, "source_file": path, "source_bytes": data})
    except ValidationError as exc:
        raise ConfigError(
            [f"{shown}: {key_path(tuple(e['loc']))}: {describe_error(e)}" for e in exc.errors()]
        ) from None


def load_layout(formats: Path, name: str) -> Layout:
    """Load ``formats/<name>.toml`` as a layout.

    Raises:
        ConfigError: naming the file and the key path.
    """
    path = formats / f"{name}.toml"
    layout = load_toml_model(path, Layout, str(path))
    if layout.name != name:
        raise ConfigError([f"{path}: name: is {layout.name!r}, but the file name says {name!r}"])
    return layout

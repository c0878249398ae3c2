"""Excel workbooks (.xlsx): a sheet read as rows of text, a template's sheet filled.

Reading takes each cell's stored text (``<v>``) and shows it as Excel does, with exact
decimals: a cell holding 0.1+0.2 (stored as ``0.30000000000000004``) reads ``0.3``; a
date serial under ``yyyy-mm-dd`` reads ``2026-11-21``. A number format that cannot be
shown exactly is a problem (unless the layout reads that column's stored value). The
layout's fields then type the text as they do a CSV file's. Formulas and merged cells
are problems unless the layout says what they mean; every non-empty cell is accounted
for (a cell outside the layout's columns is a problem unless declared ignored).

The package is a zip: its parts are counted and sized before anything is unpacked
(against bombs), a workbook with macros or external links is refused, and every XML part
is read by :mod:`xchange.codecs.xml_codec`'s hardened parser (no entity, no DTD, no
network). Writing copies every part of the template as it is and writes only the filled
sheet's XML: the rows above the data, styles, validations, other sheets and whatever a
library would not understand stay as the ERP made them.
"""

from __future__ import annotations

import functools
import html
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from xchange.codecs import per_layout
from xchange.codecs.xml_codec import iter_tagged
from xchange.errors import ConfigError, DecodeError, MappingError
from xchange.layout import FieldSpec, Layout, XlsxOptions, parse_field
from xchange.mapping import Document, Record
from xchange.report import Report

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
OFFICE_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PACKAGE_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
CONTENT_TYPES = "http://schemas.openxmlformats.org/package/2006/content-types"


def _q(name: str, ns: str = MAIN) -> str:
    return f"{{{ns}}}{name}"


ROW, C, V, F, IS, T, R, SI = (_q(n) for n in ("row", "c", "v", "f", "is", "t", "r", "si"))
#: Parts that are code or reach outside the workbook: refused whatever the sheet holds.
_HOSTILE_TYPES = ("macroenabled", "vbaproject", "externallink", "activex", "oleobject")
_CELL_REF = re.compile(r"([A-Z]{1,3})([0-9]+)")
_MERGE = re.compile(rb"<(?:\w+:)?mergeCell\b[^>]*?\bref=[\"']([A-Z]+[0-9]+(?::[A-Z]+[0-9]+)?)[\"']")
_MiB = 1 << 20
#: The most cells ``merged = "fill"`` gives a value (a range over the whole sheet is a
#: bomb of its own).
MAX_FILLED = 1_000_000
#: Excel's last column (XFD): a sheet has no column beyond it.
MAX_COLUMN = 16384
#: Excel's last row, and the most characters (UTF-16 units) a cell holds: past them Excel
#: "repairs" the workbook (cuts the text, drops the rows), so an import reads other data.
MAX_ROW = 1_048_576
MAX_CELL_TEXT = 32_767


def column_index(letters: str) -> int:
    """``A`` -> 1, ``Z`` -> 26, ``AA`` -> 27."""
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n


@functools.lru_cache(maxsize=16384)
def column_letters(index: int) -> str:
    """1 -> ``A``, 27 -> ``AA``."""
    out = ""
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(65 + rem) + out
    return out


class CellError(ValueError):
    """A cell's value cannot be read as the cell shows it (the message says why)."""


# -- number formats ---------------------------------------------------------------------

_SIG15 = 15


def _exact(stored: str) -> Decimal:
    """The number a cell holds: its stored text to Excel's 15 significant digits (the
    rest is binary floating point's noise: 0.30000000000000004 is 0.3)."""
    try:
        value = Decimal(stored)
    except InvalidOperation:
        raise CellError(f"the stored value {stored!r} is not a number") from None
    if not value.is_finite():
        raise CellError(f"the stored value {stored!r} is not a number")
    if value == 0:
        return Decimal(0)
    last = value.adjusted() - _SIG15 + 1
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < last:
        value = value.quantize(Decimal(1).scaleb(last), ROUND_HALF_EVEN)
    return value


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def show_general(stored: str) -> str:
    """What the General format shows: up to 11 significant digits; a number Excel would
    show in scientific notation (1.23457E+11) cannot be read as it shows."""
    value = _exact(stored)
    if value == 0:
        return "0"
    top = value.adjusted()
    if top >= 11 or top < -9:
        raise CellError(
            f"under the General format Excel shows {stored} in scientific notation, "
            "without all its digits (give the column a number format, or store it as text)"
        )
    shown = value.quantize(Decimal(1).scaleb(top - 10), ROUND_HALF_UP)
    return _plain(shown)


_NUMBER_CODE = re.compile(r"(#,##0|0)(\.(0+))?(%?)")
_LOCALE_TAG = re.compile(r"\[\$-[0-9A-Fa-f]+\]")
_DATE_TOKEN = re.compile(r'"[^"]*"|\\.|[yY]+|[mM]+|[dD]+|[hH]+|[sS]+|.', re.S)
_DATE_LITERALS = set(" -/:.,年月日时分秒T")

#: Built-in number formats (ECMA-376 18.8.30) that show the same in every locale, and
#: the two whose date order depends on the reader's locale, read as ISO dates.
BUILTIN = {
    0: "General",
    1: "0",
    2: "0.00",
    3: "#,##0",
    4: "#,##0.00",
    9: "0%",
    10: "0.00%",
    14: "yyyy-mm-dd",
    20: "h:mm",
    21: "h:mm:ss",
    22: "yyyy-mm-dd hh:mm",
    45: "mm:ss",
    49: "@",
}


def _unquote(section: str) -> str:
    """A section's literal text as shown: ``"¥"`` -> ``¥``, ``\\-`` -> ``-``."""
    out = re.sub(r'"([^"]*)"', r"\1", section)
    return re.sub(r"\\(.)", r"\1", out)


def _number_shower(code: str) -> Callable[[str], str] | None:
    """A renderer for a plain number code (``0.00``, ``#,##0``, ``0%``, with literal text
    around it; a second section for negatives that is the first with a minus), or None."""
    sections = [_LOCALE_TAG.sub("", s) for s in _split_sections(code)]
    if len(sections) > 2:
        return None
    first = sections[0]
    if len(sections) == 2 and sections[1] not in ("-" + first, "[Red]-" + first):
        return None
    core = re.sub(r'"[^"]*"|\\.', "", first)
    match = _NUMBER_CODE.fullmatch(core.strip(" "))
    if match is None or any(ch in core for ch in "_*?/E["):
        return None
    prefix_end = first.find(match.group(0))
    if prefix_end < 0:
        return None
    prefix = _unquote(first[:prefix_end])
    suffix = _unquote(first[prefix_end + len(match.group(0)) :])
    grouped = match.group(1) == "#,##0"
    places = len(match.group(3) or "")
    percent = match.group(4) == "%"
    quantum = Decimal(1).scaleb(-places)

    def show(stored: str) -> str:
        value = _exact(stored)
        if percent:
            value *= 100
        value = value.quantize(quantum, ROUND_HALF_UP)
        sign = "-" if value < 0 else ""
        body = format(abs(value), ",f" if grouped else "f")
        return f"{sign}{prefix}{body}{'%' if percent else ''}{suffix}"

    return show


def _split_sections(code: str) -> list[str]:
    out, current, quoted, escaped = [], [], False, False
    for ch in code:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == ";" and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def _is_date_code(code: str) -> bool:
    bare = re.sub(r'"[^"]*"|\\.|\[[^\]]*\]', "", code)
    return bool(re.search(r"[yYdDhHsS]", bare)) or (
        bool(re.search(r"[mM]", bare)) and not re.search(r"[0#]", bare)
    )


def _date_shower(code: str, epoch1904: bool) -> Callable[[str], str] | None:
    """A renderer for a date/time code built of y, m, d, h, s and plain separators
    (``yyyy-mm-dd``, ``yyyy/m/d h:mm``, ``yyyy"年"m"月"d"日"``), or None."""
    sections = _split_sections(code)
    if len(sections) == 2 and sections[1] == "@":  # (a text section: not for numbers)
        sections = sections[:1]
    if len(sections) != 1:
        return None
    section = _LOCALE_TAG.sub("", sections[0])
    tokens = _DATE_TOKEN.findall(section)
    parts: list[tuple[str, str]] = []  # (kind, text): kind y m d h M(inute) s or lit
    for token in tokens:
        lower = token.lower()
        if token.startswith(('"', "\\")):
            parts.append(("lit", _unquote(token)))
        elif lower[0] in "ymdhs":
            if lower[0] == "y" and len(lower) not in (2, 4):
                return None
            if lower[0] in "md" and len(lower) > 2:
                return None  # month and day names depend on the language
            if lower[0] in "hs" and len(lower) > 2:
                return None
            parts.append((lower[0], lower))
        elif token in _DATE_LITERALS:
            parts.append(("lit", token))
        else:
            return None  # AM/PM, [h], fractions of a second, eras, colours...
    # m after an hour or before a second is minutes
    for i, (kind, text) in enumerate(parts):
        if kind != "m":
            continue
        before = next((k for k, _ in reversed(parts[:i]) if k != "lit"), None)
        after = next((k for k, _ in parts[i + 1 :] if k != "lit"), None)
        if before == "h" or after == "s":
            parts[i] = ("M", text)
    dated = any(k in "ymd" for k, _ in parts if k != "lit")

    def show(stored: str) -> str:
        when = serial_datetime(stored, epoch1904, dated)
        out = []
        for kind, text in parts:
            if kind == "lit":
                out.append(text)
                continue
            number = {
                "y": when.year if len(text) == 4 else when.year % 100,
                "m": when.month,
                "d": when.day,
                "h": when.hour,
                "M": when.minute,
                "s": when.second,
            }[kind]
            out.append(f"{number:0{len(text)}d}" if len(text) >= 2 else str(number))
        return "".join(out)

    return show


def serial_datetime(stored: str, epoch1904: bool, dated: bool = True) -> datetime:
    """The date and time a serial number stands for (to the second, rounded as Excel
    shows it), in the workbook's date system."""
    value = _exact(stored)
    if value < 0:
        raise CellError(f"{stored} is before the workbook's first date: not a date")
    days = int(value)
    seconds = int(((value - days) * 86400).quantize(Decimal(1), ROUND_HALF_UP))
    if epoch1904:
        base = datetime(1904, 1, 1)
    elif days == 60 and dated:
        raise CellError("serial 60 is 1900-02-29, a day that never was (Excel's 1900 leap bug)")
    elif days < 60:
        if days == 0 and dated:
            raise CellError("serial 0 is 1900-01-00, not a date")
        base = datetime(1899, 12, 31)
    else:
        base = datetime(1899, 12, 30)
    try:
        return base + timedelta(days=days, seconds=seconds)
    except OverflowError:
        raise CellError(f"{stored} is beyond the last date") from None


def shower(num_fmt: int, code: str | None, epoch1904: bool) -> Callable[[str], str] | str:
    """How a number under a format is shown: a renderer, or why it cannot be shown exactly."""
    if code is None:
        code = BUILTIN.get(num_fmt)
        if code is None:
            return f"built-in number format {num_fmt} shows differently by language and locale"
    if code in ("General", "@"):
        return show_general
    made = _date_shower(code, epoch1904) if _is_date_code(code) else _number_shower(code)
    return made if made is not None else f"number format {code!r} is not one xchange shows exactly"


# -- the package --------------------------------------------------------------------------


class Package:
    """A workbook's zip, opened with its limits checked before anything is unpacked."""

    def __init__(self, stream: BinaryIO, origin: str, opts: XlsxOptions) -> None:
        self.origin = origin
        try:
            self.zip = zipfile.ZipFile(stream)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise DecodeError(
                f"{origin}: not an Excel workbook (.xlsx is a zip; a password-protected "
                f"workbook is not, and is refused): {exc}"
            ) from None
        infos = self.zip.infolist()
        if len(infos) > opts.max_parts:
            raise DecodeError(
                f"{origin}: the workbook holds {len(infos)} parts; max_parts is {opts.max_parts}"
                " (a zip bomb or not a workbook)"
            )
        total = 0
        for info in infos:
            if info.flag_bits & 0x1:
                raise DecodeError(f"{origin}: part {info.filename} is encrypted: refused")
            total += info.file_size
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > _MiB and ratio > opts.max_ratio:
                raise DecodeError(
                    f"{origin}: part {info.filename} unpacks {ratio:.0f} times larger than "
                    f"packed ({info.file_size} bytes); max_ratio is {opts.max_ratio} (a zip bomb)"
                )
        if total > opts.max_size:
            raise DecodeError(
                f"{origin}: the workbook unpacks to {total} bytes; max_size is {opts.max_size}"
            )
        self.names = {info.filename for info in infos}

    def open(self, name: str) -> BinaryIO:
        """One part, unpacked as read (sizes and checksums checked by the zip reader)."""
        try:
            return self.zip.open(name)  # type: ignore[return-value]
        except KeyError:
            raise DecodeError(f"{self.origin}: the workbook has no part {name}") from None

    def elements(self, name: str, *tags: str) -> Iterator[Any]:
        """The elements named ``tags`` of an XML part, each whole at its end."""
        with self.open(name) as part:
            try:
                for _, element in iter_tagged(part, f"{self.origin}: {name}", tags):
                    yield element
            except (zipfile.BadZipFile, EOFError) as exc:
                raise DecodeError(f"{self.origin}: part {name} is damaged: {exc}") from None


def _target(base: str, target: str) -> str:
    """A relationship's target as a part name (relative to ``base``'s folder)."""
    if target.startswith("/"):
        return target.lstrip("/")
    parts: list[str] = []
    for step in (str(PurePosixPath(base).parent) + "/" + target).split("/"):
        if step in ("", "."):
            continue
        if step == "..":
            if parts:
                parts.pop()
            continue
        parts.append(step)
    return "/".join(parts)


@dataclass
class Workbook:
    """What a sheet's reading needs of the workbook around it."""

    package: Package
    sheet_part: str
    sheet_name: str
    epoch1904: bool
    strings: list[str]
    #: Per cell style (``s``): its number format's id and custom code.
    formats: list[tuple[int, str | None]]
    showers: dict[int, Callable[[str], str] | str] = field(default_factory=dict)

    def shower(self, style: int) -> Callable[[str], str] | str:
        known = self.showers.get(style)
        if known is None:
            num_fmt, code = self.formats[style] if style < len(self.formats) else (0, None)
            made = shower(num_fmt, code, self.epoch1904)
            known = self.showers[style] = made if isinstance(made, str) else _remembered(made)
        return known


def _remembered(show: Callable[[str], str]) -> Callable[[str], str]:
    """``show`` with the texts it made kept (a sheet repeats its quantities and prices),
    up to a bound."""
    made: dict[str, str] = {}

    def remembered(stored: str) -> str:
        text = made.get(stored)
        if text is None:
            text = show(stored)
            if len(made) < 65536:
                made[stored] = text
        return text

    return remembered


def _rels(package: Package, name: str) -> dict[str, tuple[str, str, str | None]]:
    """A part's relationships: id -> (type, target, target mode)."""
    folder, _, file = name.rpartition("/")
    rels = f"{folder}/_rels/{file}.rels" if folder else f"_rels/{file}.rels"
    if rels not in package.names:
        return {}
    return {
        e.get("Id", ""): (e.get("Type", ""), e.get("Target", ""), e.get("TargetMode"))
        for e in package.elements(rels, f"{{{PACKAGE_RELS}}}Relationship")
    }


def open_workbook(stream: BinaryIO, origin: str, opts: XlsxOptions) -> Workbook:
    """The workbook's sheet the layout reads, hostile content refused.

    Raises:
        DecodeError: not a workbook, over a limit, macros or external links, no such sheet.
    """
    package = Package(stream, origin, opts)
    names = package.names
    if "[Content_Types].xml" not in names:
        raise DecodeError(f"{origin}: not an Excel workbook: no [Content_Types].xml")
    for element in package.elements(
        "[Content_Types].xml", f"{{{CONTENT_TYPES}}}Override", f"{{{CONTENT_TYPES}}}Default"
    ):
        kind = (element.get("ContentType") or "").lower()
        if any(h in kind for h in _HOSTILE_TYPES):
            raise DecodeError(
                f"{origin}: the workbook declares {element.get('ContentType')} "
                f"({element.get('PartName') or element.get('Extension')}): workbooks with "
                "macros, ActiveX or external links are refused"
            )
    for name in sorted(names):
        lower = name.lower()
        if lower.endswith("vbaproject.bin") or lower.startswith("xl/activex/"):
            raise DecodeError(f"{origin}: the workbook holds macros ({name}): refused")
        if lower.startswith("xl/externallinks/"):
            raise DecodeError(
                f"{origin}: the workbook links to another file ({name}): workbooks with "
                "external links are refused (their values come from elsewhere)"
            )
    office = [
        t for (kind, t, _) in _rels(package, "").values() if kind.endswith("/officeDocument")
    ] or ["xl/workbook.xml"]
    book = _target("", office[0])
    rels = _rels(package, book)
    for rid, (kind, target, mode) in rels.items():
        if mode == "External" or kind.endswith("/externalLink"):
            raise DecodeError(
                f"{origin}: the workbook refers outside itself ({rid}: {target}): workbooks "
                "with external links are refused"
            )
    sheets: list[tuple[str, str]] = []
    epoch1904 = False
    for element in package.elements(book, _q("sheet"), _q("workbookPr")):
        if element.tag == _q("workbookPr"):
            epoch1904 = element.get("date1904") in ("1", "true")
            continue
        rid = element.get(f"{{{OFFICE_RELS}}}id", "")
        sheets.append((element.get("name", ""), rid))
    want = opts.sheet
    if isinstance(want, int):
        if want > len(sheets):
            raise DecodeError(
                f"{origin}: the workbook has {len(sheets)} sheet(s); the layout reads sheet {want}"
            )
        name, rid = sheets[want - 1]
    else:
        found = [s for s in sheets if s[0] == want]
        if not found:
            shown = ", ".join(repr(s[0]) for s in sheets)
            raise DecodeError(f"{origin}: the workbook has no sheet {want!r} (it has {shown})")
        name, rid = found[0]
    if rid not in rels:
        raise DecodeError(f"{origin}: sheet {name!r} has no part in the workbook")
    sheet_part = _target(book, rels[rid][1])
    strings: list[str] = []
    styles: list[tuple[int, str | None]] = []
    for kind, target, _ in rels.values():
        part = _target(book, target)
        if kind.endswith("/sharedStrings") and part in names:
            strings = _shared_strings(package, part, opts.max_strings)
        elif kind.endswith("/styles") and part in names:
            styles = _styles(package, part)
    return Workbook(package, sheet_part, name, epoch1904, strings, styles)


def _shared_strings(package: Package, part: str, most: int) -> list[str]:
    """The shared strings, refused past ``most`` (counted as they come: a table of
    millions of tiny strings packs small, and would all be held in memory)."""
    strings: list[str] = []
    for si in package.elements(part, SI):
        if len(strings) == most:
            raise DecodeError(
                f"{package.origin}: {part} holds more than {most} shared strings; "
                f"max_strings is {most} (raise xlsx.max_strings for a sheet this large)"
            )
        t = si.find(T)
        if t is not None:
            strings.append(t.text or "")
        else:  # rich text: the runs' texts (not the phonetic guides)
            strings.append("".join(run.findtext(T) or "" for run in si.iterchildren(R)))
        si.clear()
    return strings


def _styles(package: Package, part: str) -> list[tuple[int, str | None]]:
    codes: dict[int, str] = {}
    xfs: list[tuple[int, str | None]] = []
    for element in package.elements(part, _q("numFmt"), _q("cellXfs")):
        if element.tag == _q("numFmt"):
            codes[int(element.get("numFmtId", "0"))] = element.get("formatCode", "")
            continue
        for xf in element.iterchildren(_q("xf")):
            num = int(xf.get("numFmtId", "0"))
            xfs.append((num, codes.get(num)))
    return xfs


def _merged_ranges(package: Package, part: str) -> list[tuple[int, int, int, int]]:
    """The sheet's merged ranges (first row, first column, last row, last column): they
    come after the rows in the XML, so the part is scanned for them first."""
    ranges: list[tuple[int, int, int, int]] = []
    tail = b""
    with package.open(part) as raw:
        while chunk := raw.read(1 << 20):
            window = tail + chunk
            for match in _MERGE.finditer(window):
                first, _, last = match.group(1).decode().partition(":")
                a = _CELL_REF.fullmatch(first)
                b = _CELL_REF.fullmatch(last or first)
                if a and b:
                    ranges.append(
                        (
                            int(a.group(2)),
                            column_index(a.group(1)),
                            int(b.group(2)),
                            column_index(b.group(1)),
                        )
                    )
            tail = window[-200:]
            # (a match in the overlap is found twice: kept once below)
    return sorted(set(ranges))


# -- reading --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Column:
    """A header cell of the sheet: where a field's values are."""

    index: int
    name: str
    spec: FieldSpec | None
    stored: bool


class XlsxCodec:
    """The xlsx codec."""

    def records(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report
    ) -> Iterator[Record]:
        opts = layout.xlsx
        book = open_workbook(stream, origin, opts)
        package, part = book.package, book.sheet_part
        merges = [m for m in _merged_ranges(package, part) if m[2] >= opts.header_row]
        fill: dict[tuple[int, int], tuple[int, int]] = {}
        for top, left, bottom, right in merges:
            where = f"{column_letters(left)}{top}:{column_letters(right)}{bottom}"
            if opts.merged == "reject":
                report.add(
                    f"row {top}",
                    "(cells)",
                    "merged",
                    where,
                    f"cells {where} are merged: which rows hold the value is unclear (unmerge "
                    'them, or say merged = "fill" in [xlsx] to give each cell the first\'s value)',
                )
                continue
            size = (bottom - top + 1) * (right - left + 1)
            if len(fill) + size > MAX_FILLED:
                raise DecodeError(
                    f"{origin}: merged cells {where} ({size} cells): more than {MAX_FILLED} "
                    'cells to fill with merged = "fill"; refused'
                )
            for row in range(top, bottom + 1):
                for col in range(left, right + 1):
                    if (row, col) != (top, left):
                        fill[(row, col)] = (top, left)
        if report:
            return
        hidden = _hidden_columns(package, part)
        columns: dict[int, _Column] | None = None
        unread: dict[int, str] = {}  # column -> first cell of a value outside the layout
        for row_number, cells in self._rows(book, origin, layout, report, fill):
            if row_number == opts.header_row:
                columns = self._header(cells, layout, origin, report, hidden)
                continue
            if columns is None:
                columns = self._header({}, layout, origin, report, hidden)
            if row_number < opts.data_row or not cells:
                continue
            where = f"row {row_number}"
            failed: set[str] = set()
            texts: dict[str, str | None] = {}
            for index, text in cells.items():
                column = columns.get(index)
                if column is None or column.spec is None:
                    if text and index not in unread:
                        unread[index] = f"{column_letters(index)}{row_number}"
                    continue
                texts[column.spec.name] = text
            values = {
                spec.name: parse_field(spec, texts.get(spec.name), where, report, failed)
                for spec in layout.fields
            }
            yield Record(where, values, failed=failed)
        if columns is None:
            raise DecodeError(
                f"{origin}: sheet {book.sheet_name!r} has no row {opts.header_row} (the header)"
            )
        for index, first in sorted(unread.items()):
            column = columns.get(index)
            policy = (
                layout.unknown_in.get(column.name, layout.unknown) if column else layout.unknown
            )
            if column is not None and column.name:
                continue  # said at the header (its policy)
            if policy == "ignore":
                continue
            what = (
                f"column {column_letters(index)}"
                + (" (hidden)" if index in hidden else "")
                + f" has values (the first in {first}) but no header"
            )
            if policy == "warn":
                report.warn(f'{what}: not read (unknown = "warn")')
                continue
            report.add(
                f"row {int(_CELL_REF.fullmatch(first).group(2))}",  # type: ignore[union-attr]
                "(cells)",
                "unknown",
                first,
                f"{what}: their values would be dropped (give the column a header the layout "
                'declares, or say unknown = "ignore" in the layout)',
            )

    def _header(
        self,
        cells: dict[int, str | None],
        layout: Layout,
        origin: str,
        report: Report,
        hidden: set[int],
    ) -> dict[int, _Column]:
        opts = layout.xlsx
        where = f"row {opts.header_row}"
        by_key = {spec.key: spec for spec in layout.fields}
        columns: dict[int, _Column] = {}
        seen: dict[str, list[int]] = {}
        for index, text in sorted(cells.items()):
            name = text or ""
            seen.setdefault(name, []).append(index)
            spec = by_key.get(name)
            columns[index] = _Column(index, name, spec, name in opts.stored)
        for key, places in seen.items():
            if key in by_key and len(places) > 1:
                report.add(
                    where,
                    key,
                    "column",
                    None,
                    f"column {key!r} appears {len(places)} times in the header (columns "
                    f"{', '.join(column_letters(i) for i in places)}): which one to read is "
                    "unclear",
                )
        for spec in layout.fields:
            if spec.key not in seen and spec.required:
                report.add(
                    where,
                    spec.key,
                    "column",
                    None,
                    f"required column {spec.key!r} is missing from the header (row "
                    f"{opts.header_row})",
                )
        unknown = [c for c in columns.values() if c.spec is None and c.name]
        by_policy: dict[str, list[_Column]] = {}
        for column in unknown:
            by_policy.setdefault(layout.unknown_in.get(column.name, layout.unknown), []).append(
                column
            )
        for policy, found in by_policy.items():
            if policy == "ignore":
                continue
            shown = ", ".join(
                f"{c.name!r} ({column_letters(c.index)}{', hidden' if c.index in hidden else ''})"
                for c in found[:10]
            )
            what = f"column(s) not in layout {layout.name}: {shown}"
            if policy == "warn":
                report.warn(f'{where}: {what}: not read (unknown = "warn")')
                continue
            report.add(
                where,
                "(header)",
                "unknown",
                None,
                f"{what} (their values would be dropped; declare them as fields, or say "
                'unknown = "ignore" or "warn" in the layout)',
            )
        return columns

    def _rows(
        self,
        book: Workbook,
        origin: str,
        layout: Layout,
        report: Report,
        fill: dict[tuple[int, int], tuple[int, int]],
    ) -> Iterator[tuple[int, dict[int, str | None]]]:
        """The header's and each data row's non-empty cells as text, as the cells show
        them (rows above the header and between it and the data are not read)."""
        opts = layout.xlsx
        stored_names = set(opts.stored)
        stored_columns: set[int] = set()
        tops = set(fill.values())
        filled: dict[int, list[tuple[int, tuple[int, int]]]] = {}
        for (fill_row, fill_column), top in fill.items():
            filled.setdefault(fill_row, []).append((fill_column, top))
        pending: dict[tuple[int, int], str | None] = {}  # merged ranges' first cells' texts
        strings = book.strings
        cached = opts.formulas == "cached"
        places: dict[str, int] = {}  # a cell reference's letters -> its column
        showers: dict[str, Callable[[str], str] | str] = {}  # by the cell's style attribute
        expected = 0
        for row in book.package.elements(book.sheet_part, ROW):
            r = row.get("r")
            number = int(r) if r is not None and r.isdigit() else expected + 1
            expected = number
            if number != opts.header_row and number < opts.data_row:
                row.clear()
                continue
            cells: dict[int, str | None] = {}
            position = 0
            for c in row:
                if c.tag != C:
                    continue
                ref = c.get("r")
                if ref is not None:
                    at = places.get(ref.rstrip("0123456789"))
                    if at is None:
                        match = _CELL_REF.fullmatch(ref)
                        if match is None:
                            raise DecodeError(f"{origin}: row {number}: a cell at {ref!r}")
                        at = places[match.group(1)] = column_index(match.group(1))
                    position = at
                else:
                    position += 1
                    ref = f"{column_letters(position)}{number}"
                kind = c.get("t", "n")
                formula = stored = inline = None
                for child in c:
                    tag = child.tag
                    if tag == V:
                        stored = child.text
                    elif tag == F:
                        formula = child
                    elif tag == IS:
                        inline = child
                if formula is not None:
                    shown_formula = formula.text or "(shared)"
                    if not cached:
                        report.add(
                            f"row {number}",
                            ref,
                            "formula",
                            f"={shown_formula}",
                            f"cell {ref} holds a formula: its value is what Excel last "
                            'computed (say formulas = "cached" in [xlsx] to read it)',
                        )
                        continue
                    if stored is None:
                        report.add(
                            f"row {number}",
                            ref,
                            "formula",
                            f"={shown_formula}",
                            f"cell {ref} holds a formula saved without its value "
                            "(open and save it in Excel, or enter the value)",
                        )
                        continue
                if kind == "s":
                    # (digits only: int() would take "-1", the last string, or "١")
                    if not (stored and stored.isascii() and stored.isdigit()) or int(stored) >= len(
                        strings
                    ):
                        raise DecodeError(
                            f"{origin}: cell {ref}: shared string {stored!r} does not exist"
                        )
                    text: str | None = strings[int(stored)]
                elif kind == "inlineStr":
                    text = (
                        None
                        if inline is None
                        else (
                            inline.findtext(T)
                            if inline.find(T) is not None
                            else "".join(run.findtext(T) or "" for run in inline.iterchildren(R))
                        )
                    )
                elif kind in ("str", "d"):
                    text = stored
                elif kind == "b":
                    text = None if stored is None else ("TRUE" if stored == "1" else "FALSE")
                elif kind == "e":
                    report.add(
                        f"row {number}",
                        ref,
                        "error",
                        stored,
                        f"cell {ref} holds the error {stored}",
                    )
                    continue
                elif stored is None:
                    text = None
                elif position in stored_columns:
                    text = stored
                else:
                    style = c.get("s", "0")
                    how = showers.get(style)
                    if how is None:
                        how = showers[style] = book.shower(int(style) if style.isdigit() else 0)
                    if isinstance(how, str):
                        report.add(
                            f"row {number}",
                            ref,
                            "format",
                            stored,
                            f"cell {ref}: {how} (list the column in stored = [...] in [xlsx] "
                            "to read its stored value)",
                        )
                        continue
                    try:
                        text = how(stored)
                    except CellError as exc:
                        report.add(f"row {number}", ref, "format", stored, f"cell {ref}: {exc}")
                        continue
                if number == opts.header_row and text in stored_names:
                    stored_columns.add(position)
                if (number, position) in tops:
                    pending[(number, position)] = text
                if text is not None and text != "":
                    if position in cells:
                        raise DecodeError(
                            f"{origin}: row {number}: cell {ref} is in the sheet twice with "
                            "a value (which one Excel would show is not known): refused"
                        )
                    cells[position] = text
            row.clear()
            for fill_column, top in filled.get(number, ()):
                if pending.get(top):
                    cells.setdefault(fill_column, pending[top])
            yield number, cells

    def write(self, docs: Iterable[Document], layout: Layout, origin: str, out: Any) -> int:
        template = _template(layout)
        return template.fill(docs, layout, origin, out)


def _hidden_columns(package: Package, part: str) -> set[int]:
    """Columns the sheet hides (their ``<col>`` comes before the rows)."""
    hidden: set[int] = set()
    with package.open(part) as raw:
        head = raw.read(1 << 16)
    for match in re.finditer(rb"<(?:\w+:)?col\b([^>]*)/?>", head.split(b"sheetData", 1)[0]):
        attrs = match.group(1)
        if re.search(rb'\bhidden=["\'](1|true)["\']', attrs):
            lo = re.search(rb'\bmin=["\'](\d+)', attrs)
            hi = re.search(rb'\bmax=["\'](\d+)', attrs)
            if lo and hi:
                # (clamped: a hostile max="300000000" would fill memory with columns)
                first, last = int(lo.group(1)), min(int(hi.group(1)), MAX_COLUMN)
                hidden.update(range(max(first, 1), last + 1))
    return hidden


# -- writing ------------------------------------------------------------------------------

_ROW_XML = re.compile(rb'<row\b[^>]*?\br="(\d+)"[^>]*?(?:/>|>.*?</row>)', re.S)
_CELL_XML = re.compile(rb'<c\b[^>]*?\br="([A-Z]+)\d+"[^>]*?(?:/>|>.*?</c>)', re.S)
_STYLE = re.compile(rb'\bs="(\d+)"')
_NUMBER_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
#: What XML 1.0 cannot hold: control characters, U+FFFE/U+FFFF and lone surrogates (a
#: JSON ``"\ud800"`` reads as one).
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass
class Template:
    """A workbook to fill: its parts as they are, and the filled sheet cut where its data
    rows go."""

    members: list[tuple[zipfile.ZipInfo, bytes]]
    sheet_part: str
    head: bytes
    tail: bytes
    #: (column letter, field, style attribute) of each field, in column order.
    columns: list[tuple[str, FieldSpec, str]]
    first_row: int
    first_column: str

    def fill(self, docs: Iterable[Document], layout: Layout, origin: str, out: Any) -> int:
        rows: list[bytes] = []
        number = self.first_row
        count = 0
        for doc in docs:
            if number > MAX_ROW:
                raise MappingError(
                    f"{origin}: more than {MAX_ROW - self.first_row + 1} rows from row "
                    f"{self.first_row}: a sheet ends at row {MAX_ROW}"
                )
            cells: list[str] = []
            for letter, spec, s in self.columns:
                ref = f"{letter}{number}"
                value = doc.header.get(spec.name)
                text = spec.render(value) if value is not None else ""
                if text == "":
                    if s:
                        cells.append(f'<c r="{ref}"{s}/>')
                    continue
                if _XML_BAD.search(text):
                    raise MappingError(
                        f"{origin}: row {number}, {spec.key}: a control character or a lone "
                        "surrogate cannot be written in a workbook"
                    )
                if len(text) > MAX_CELL_TEXT // 2 and len(text.encode("utf-16-le")) // 2 > (
                    MAX_CELL_TEXT
                ):
                    raise MappingError(
                        f"{origin}: row {number}, {spec.key}: {len(text)} characters; an Excel "
                        f"cell holds at most {MAX_CELL_TEXT} (Excel would cut it)"
                    )
                if spec.type in ("integer", "decimal") and _NUMBER_TEXT.fullmatch(text):
                    cells.append(f'<c r="{ref}"{s}><v>{text}</v></c>')
                else:
                    space = ' xml:space="preserve"' if text != text.strip() else ""
                    cells.append(
                        f'<c r="{ref}"{s} t="inlineStr"><is><t{space}>{_escape(text)}</t></is></c>'
                    )
            rows.append(f'<row r="{number}">{"".join(cells)}</row>'.encode())
            number += 1
            count += 1
        last_row = max(number - 1, self.first_row - 1)
        last_column = self.columns[-1][0] if self.columns else self.first_column
        head = re.sub(
            rb'(<dimension\b[^>]*?\bref=")[^"]*(")',
            lambda m: (
                m.group(1)
                + f"{self.first_column}1:{last_column}{max(last_row, 1)}".encode()
                + m.group(2)
            ),
            self.head,
            count=1,
        )
        sheet = head + b"".join(rows) + self.tail
        buf = io.BytesIO()  # (seekable: each entry's sizes in its own header, as Excel writes)
        with zipfile.ZipFile(buf, "w") as zipped:
            for info, data in self.members:
                # (a fresh entry each time, as the template's: the same bytes every time)
                entry = zipfile.ZipInfo(info.filename, info.date_time)
                entry.compress_type = info.compress_type
                entry.external_attr = info.external_attr
                entry.create_system = info.create_system
                zipped.writestr(entry, sheet if info.filename == self.sheet_part else data)
        out.write(buf.getvalue())
        return count


def template_problems(layout: Layout) -> list[str]:
    """What is wrong with a written layout's template (``check`` says it before any file
    is converted): missing, not a workbook, no such sheet, a field without its column."""
    try:
        _template(layout)
    except ConfigError as exc:
        return list(exc.problems)
    return []


@per_layout
def _template(layout: Layout) -> Template:
    """The layout's template, read once (a layout is frozen)."""
    opts = layout.xlsx
    shown = f"{layout.source_file}: xlsx.template"
    if opts.template is None:
        raise ConfigError([f"{shown}: an xlsx layout written needs a template workbook"])
    path = Path(layout.source_file).parent / opts.template
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{shown}: {path}: {exc.strerror or exc}"]) from None
    return load_template(data, layout, str(path))


def load_template(data: bytes, layout: Layout, shown: str) -> Template:
    """A template workbook, checked against the layout: each field's column found in its
    header row.

    Raises:
        ConfigError: not a workbook, no such sheet, a field without a column.
    """
    opts = layout.xlsx
    try:
        book = open_workbook(io.BytesIO(data), shown, opts)
    except DecodeError as exc:
        raise ConfigError([str(exc)]) from None
    zipped = book.package.zip
    members = [(info, zipped.read(info)) for info in zipped.infolist()]
    sheet = next(d for i, d in members if i.filename == book.sheet_part)
    start = sheet.find(b"<sheetData")
    end = sheet.find(b"</sheetData>")
    if start < 0:
        raise ConfigError([f"{shown}: sheet {book.sheet_name!r} has no sheetData"])
    open_end = sheet.find(b">", start) + 1
    if sheet[open_end - 2 : open_end] == b"/>":  # <sheetData/>: no rows at all
        body, head, tail = b"", sheet[: open_end - 2] + b">", b"</sheetData>" + sheet[open_end:]
    else:
        body, head, tail = sheet[open_end:end], sheet[:open_end], sheet[end:]
    kept: list[bytes] = []
    header: bytes | None = None
    sample: bytes | None = None
    for match in _ROW_XML.finditer(body):
        number = int(match.group(1))
        if number < opts.data_row:
            kept.append(match.group(0))
        if number == opts.header_row:
            header = match.group(0)
        if number == opts.data_row:
            sample = match.group(0)
    if header is None:
        raise ConfigError([f"{shown}: sheet {book.sheet_name!r} has no row {opts.header_row}"])
    names: dict[str, str] = {}
    for cell in _CELL_XML.finditer(header):
        xml = cell.group(0)
        text: str | None = None
        value = re.search(rb"<v>([^<]*)</v>", xml)
        if b't="s"' in xml and value:
            text = book.strings[int(value.group(1))]
        else:
            inline = re.search(rb"<t[^>]*>([^<]*)</t>", xml)
            text = html.unescape(inline.group(1).decode()) if inline else None
        if text:
            names[text] = cell.group(1).decode()
    styles: dict[str, str] = {}
    if sample is not None:
        for cell in _CELL_XML.finditer(sample):
            style = _STYLE.search(cell.group(0).split(b">", 1)[0])
            styles[cell.group(1).decode()] = f' s="{style.group(1).decode()}"' if style else ""
    missing = [spec.key for spec in layout.fields if spec.key not in names]
    if missing:
        raise ConfigError(
            [
                f"{shown}: row {opts.header_row} of sheet {book.sheet_name!r} has no column {key!r}"
                for key in missing
            ]
        )
    columns = sorted(
        ((names[spec.key], spec, styles.get(names[spec.key], "")) for spec in layout.fields),
        key=lambda c: column_index(c[0]),
    )
    first_column = "A"
    return Template(
        members, book.sheet_part, head + b"".join(kept), tail, columns, opts.data_row, first_column
    )

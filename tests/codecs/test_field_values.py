"""Every value is read in exactly one way, or it is a problem: digits are 0-9, each number
of a date has its width, digits are grouped only where the field says so, a value that
shows nothing is no value, an invisible character is not silently part of a value, and a
key that a field's type does not read is refused. Where a field relaxes a rule, what was
normalised is said in the report; the columnar fast path gives the same verdicts."""

from __future__ import annotations

import io
import shutil
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.columnar_routes import fast_and_slow, outcome, route_config
from tests.conftest import REPO
from xchange.cli import main
from xchange.layout import FieldSpec, FieldValueError, ascii_digit_pattern, parse_field
from xchange.pipeline import Pipeline
from xchange.report import Report
from xchange.sink import Sink

NOW = datetime(2026, 11, 21, 12, 0)


def field(**options: Any) -> FieldSpec:
    return FieldSpec.model_validate({"name": "f", **options})


def problem(spec: FieldSpec, text: str) -> FieldValueError:
    with pytest.raises(FieldValueError) as info:
        spec.parse(text)
    return info.value


# --------------------------------------------------------------------------- digits


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"type": "integer"}, "２"),  # fullwidth
        ({"type": "integer"}, "𝟏"),  # mathematical bold
        ({"type": "integer"}, "١٢"),  # Arabic-Indic
        ({"type": "integer"}, "1_000"),  # int() takes underscores
        ({"type": "decimal", "scale": 2}, "１.５"),
        ({"type": "decimal", "scale": 2}, "1_000.00"),  # so does Decimal()
        ({"type": "decimal", "scale": 2}, "1e3"),
        ({"type": "date", "formats": ["%Y-%m-%d"]}, "２０２６-11-21"),  # strptime takes them
        ({"pattern": r"EC\d{11}"}, "EC２０２６１１２１００１"),  # \d is any script's digit
        ({"pattern": r"1\d{10}"}, "1３８００１３８０００"),
    ],
)
def test_digits_are_0_to_9_unless_the_field_says_otherwise(
    options: dict[str, Any], text: str
) -> None:
    """A digit of another script is not silently a number's, a date's or a pattern's digit;
    the message says which digit and the key that reads them."""
    error = problem(field(**options), text)
    assert error.rule in ("type", "pattern")
    if not text.isascii():
        assert 'set digits = "unicode"' in error.message


@pytest.mark.parametrize(
    ("options", "text", "value"),
    [
        ({"type": "integer"}, "２", 2),
        ({"type": "integer"}, "𝟏٢3", 123),
        ({"type": "decimal", "scale": 2}, "１.５", Decimal("1.5")),
        ({"type": "date", "formats": ["%Y-%m-%d"]}, "２０２６-11-21", date(2026, 11, 21)),
        ({"pattern": r"EC\d{11}"}, "EC２０２６１１２１００１", "EC20261121001"),
    ],
)
def test_a_field_reads_digits_of_any_script_as_0_to_9_when_it_says_so_and_the_report_tells(
    options: dict[str, Any], text: str, value: object
) -> None:
    spec = field(digits="unicode", **options)
    report = Report("in")
    assert parse_field(spec, text, "line 2", report) == value
    assert parse_field(spec, text, "line 3", report) == value
    assert not report.problems
    (warning,) = report.warnings  # once per field and file
    assert warning.startswith('field f: digits of other scripts read as 0-9 (digits = "unicode")')
    assert "line 2" in warning and repr(text) in warning
    clean = Report("in")
    parse_field(spec, "2026-11-21" if "formats" in options else "12", "line 2", clean)
    assert not clean.warnings


@pytest.mark.parametrize(
    ("pattern", "ascii"),
    [
        (r"EC\d{11}", "EC[0-9]{11}"),
        (r"\D+", "[^0-9]+"),
        (r"[\dA-F]+", "[0-9A-F]+"),
        (r"[^\d]", "[^0-9]"),
        (r"[]\d]", "[]0-9]"),  # a ] first in a class is a character
        (r"[\]\d]", r"[\]0-9]"),
        (r"\\d", r"\\d"),  # a backslash, then d
        (r"\\\d", r"\\[0-9]"),
        (r"\w+\s\d", r"\w+\s[0-9]"),  # \w and \s keep their meaning
        ("(?x) \\d  # not [ a class \\d\n \\d", "(?x) [0-9]  # not [ a class \\d\n [0-9]"),
    ],
)
def test_a_patterns_digit_is_0_to_9_and_nothing_else_changes(pattern: str, ascii: str) -> None:
    assert ascii_digit_pattern(pattern) == ascii


def test_a_patterns_word_characters_stay_those_of_any_script() -> None:
    """``\\w`` still matches Chinese names (and digits of any script: a word character)."""
    assert field(pattern=r"\w{2,4}").parse("张三") == "张三"
    assert field(pattern=r"\w\d").parse("张1") == "张1"
    assert problem(field(pattern=r"\w\d"), "张１").rule == "pattern"


def test_not_a_digit_inside_a_class_is_refused_where_it_cannot_mean_not_0_to_9() -> None:
    with pytest.raises(ValueError, match=r"pattern: \\D inside \[...\]"):
        field(pattern=r"[\D.]+")


# --------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("formats", "text", "says"),
    [
        (["%Y%m%d"], "2026111", "(2026111 has 7 digits where %Y%m%d needs 8)"),
        (["%Y%m%d"], "202611211", "(202611211 has 9 digits where %Y%m%d needs 8)"),
        (["%Y-%m-%d"], "2026-1-2", "(1 has 1 digit where %m needs 2)"),
        (["%Y-%m-%d %H:%M:%S"], "2026-11-21 9:15:02", "(9 has 1 digit where %H needs 2)"),
        (["%Y-%m-%d"], "26-11-21", "(26 has 2 digits where %Y needs 4)"),
        (["%y%m%d"], "2026-11-21", ""),
        (["%Y-%m-%d %H:%M:%S"], "2026-11-21  09:15:02", "its whitespace is not the format's"),
        (["%Y-%m-%d %H:%M:%S"], "2026-11-21\u300009:15:02", "its whitespace"),
        (["%Y-%m-%d %H:%M:%S"], "2026-11-21\t09:15:02", "its whitespace"),
        (["T%Y"], "t2026", ""),  # the format's letters as written
    ],
)
def test_each_number_of_a_date_has_exactly_its_width(
    formats: list[str], text: str, says: str
) -> None:
    """strptime takes 2026111 for %Y%m%d (2026-11-01, or 2026-01-11?): a problem that
    says which number has the wrong width."""
    error = problem(field(type="datetime", formats=formats), text)
    assert error.rule == "type" and error.message.startswith("expected a datetime like")
    assert says in error.message


@pytest.mark.parametrize(
    ("fmt", "text", "value"),
    [
        ("%Y%m%d", "20261121", datetime(2026, 11, 21)),
        ("%d %b %Y", "21 Nov 2026", datetime(2026, 11, 21)),
        ("%d %B %Y", "21 november 2026", datetime(2026, 11, 21)),
        ("%a %d %b %Y", "Sat 21 Nov 2026", datetime(2026, 11, 21)),
        ("%Y-%m-%d %I:%M %p", "2026-11-21 09:15 PM", datetime(2026, 11, 21, 21, 15)),
        ("%Y-%m-%d %H:%M:%S.%f", "2026-11-21 09:15:02.5", datetime(2026, 11, 21, 9, 15, 2, 500000)),
        ("%Y-%m-%dT%H:%M:%S%z", "2026-11-21T09:15:02+0800", None),
        ("%Y-%m-%dT%H:%M:%S%z", "2026-11-21T09:15:02+08:00", None),
        ("%Y-%m-%dT%H:%M:%S%z", "2026-11-21T09:15:02Z", None),
        ("%Y年%m月%d日", "2026年11月21日", datetime(2026, 11, 21)),
        ("%j/%Y", "325/2026", datetime(2026, 11, 21)),
        ("100%%", "100%", datetime(1900, 1, 1)),
    ],
)
def test_formats_with_names_zones_fractions_and_literals_still_read(
    fmt: str, text: str, value: datetime | None
) -> None:
    parsed = field(type="datetime", formats=[fmt]).parse(text)
    assert parsed == (value or datetime.strptime(text, fmt))


@pytest.mark.parametrize(
    ("fmt", "says"),
    [("%Y-%e", "%e is not a directive"), ("%c", "%c depends on the locale"), ("%Y%", "ends in %")],
)
def test_a_format_that_cannot_be_read_exactly_is_refused_when_the_layout_loads(
    fmt: str, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        field(type="date", formats=[fmt])


# --------------------------------------------------------------------------- grouping


def test_digits_are_grouped_only_where_the_field_says_so() -> None:
    """1,500 is 1500 to one export and 1.5 to another: neither, unless the field says."""
    error = problem(field(type="decimal", scale=3), "1,500")
    assert error.rule == "type"
    assert "1500 with ',' between groups of three, or 1.500 with a decimal comma" in error.message
    assert 'group_separator = ","' in error.message and 'decimal_separator = ","' in error.message
    assert field(type="decimal", scale=3, group_separator=",").parse("1,500") == Decimal(1500)
    assert field(type="decimal", scale=3, decimal_separator=",").parse("1,500") == Decimal("1.5")
    grouped = problem(field(type="decimal", scale=2), "1,299.00")
    assert "set group_separator = ','" in grouped.message


@pytest.mark.parametrize(
    ("text", "options", "value"),
    [
        ("1,200", {"group_separator": ","}, 1200),
        ("-1,200,300", {"group_separator": ","}, -1200300),
        ("+1 200", {"group_separator": " "}, 1200),
        ("1.200", {"group_separator": "."}, 1200),
        ("1200", {"group_separator": ","}, 1200),
    ],
)
def test_an_integer_reads_the_group_separator_it_declares(
    text: str, options: dict[str, Any], value: int
) -> None:
    assert field(type="integer", **options).parse(text) == value


@pytest.mark.parametrize(
    ("text", "options", "says"),
    [
        ("1,200", {}, "set group_separator = ','"),
        ("1,20", {"group_separator": ","}, "only between groups of three digits"),
        ("1,200.5", {"group_separator": ","}, "(it has a fraction)"),
        ("1.5", {}, ""),
    ],
)
def test_an_integer_is_whole_digits_grouped_only_as_declared(
    text: str, options: dict[str, Any], says: str
) -> None:
    error = problem(field(type="integer", **options), text)
    assert error.rule == "type" and error.message.startswith("expected a whole number")
    assert says in error.message


def test_a_whole_number_too_long_for_int_is_a_problem_not_a_crash() -> None:
    assert problem(field(type="integer"), "9" * 5000).rule == "type"


# --------------------------------------------------------------------------- blank


INVISIBLE_ONLY = ["\u200b", "\u00ad", "\ufeff", "\u2060", "\u200e", "\u200b\u2060"]
WHITESPACE_TOO = ["\u3000", "\u00a0", "\u200b\u3000 ", " \u200b", "\u00a0\u00ad\u00a0"]


@pytest.mark.parametrize("text", INVISIBLE_ONLY + WHITESPACE_TOO)
@pytest.mark.parametrize("kind", ["string", "integer", "decimal", "date"])
def test_a_value_that_shows_nothing_is_no_value(text: str, kind: str) -> None:
    """Zero-width spaces, a soft hyphen, a BOM, a word joiner, a direction mark and
    whitespace of any script: "a value is required", or no value."""
    extra: dict[str, Any] = {"formats": ["%Y-%m-%d"]} if kind == "date" else {}
    error = problem(field(type=kind, required=True, **extra), text)
    assert error.rule == "required"
    assert field(type=kind, **extra).parse(text) is None


@pytest.mark.parametrize("text", INVISIBLE_ONLY)
def test_untrimmed_a_value_of_invisible_characters_is_no_value_and_spaces_are_a_value(
    text: str,
) -> None:
    """trim = false says whitespace is part of a value: a value of spaces is one."""
    assert problem(field(required=True, trim=False), text).rule == "required"
    assert field(trim=False).parse("   ") == "   "
    assert field(trim=False).parse("\u3000") == "\u3000"
    assert problem(field(trim=False), " \u200b").rule == "invisible"


def test_trim_removes_whitespace_of_any_script() -> None:
    assert field().parse("\u3000张三\u00a0 ") == "张三"
    assert field(trim=False).parse(" a ") == " a "


# --------------------------------------------------------------------------- invisible


@pytest.mark.parametrize("char", ["\u200b", "\u00ad", "\ufeff", "\u2060", "\u200d", "\u202e"])
def test_an_invisible_character_in_a_string_is_a_problem_naming_it(char: str) -> None:
    error = problem(field(), f"SKU{char}1001")
    assert error.rule == "invisible"
    assert f"U+{ord(char):04X}" in error.message and "at character 4" in error.message
    assert 'invisible = "remove" or "keep"' in error.message


def test_a_field_may_remove_or_keep_invisible_characters_and_removing_is_reported() -> None:
    report = Report("in")
    spec = field(invisible="remove")
    assert parse_field(spec, "SKU\u200b1001", "line 2", report) == "SKU1001"
    assert parse_field(spec, "\u200b SKU", "line 3", report) == "SKU"  # trimmed after
    (warning,) = report.warnings
    assert "invisible characters removed" in warning and "line 2" in warning
    family = "👨\u200d👩\u200d👧"
    assert field(invisible="keep").parse(family) == family


@pytest.mark.parametrize(
    ("options", "text", "rule"),
    [
        ({"type": "integer"}, "1\u200b2", "type"),
        ({"type": "decimal"}, "12.50\u200b", "type"),
        ({"type": "date", "formats": ["%Y-%m-%d"]}, "\u20602026-11-21", "type"),
        ({"type": "boolean"}, "true\u00ad", "type"),
        ({"type": "enum", "values": ["CNY"]}, "CNY\ufeff", "enum"),
    ],
)
def test_an_invisible_character_in_another_type_is_a_problem_naming_it(
    options: dict[str, Any], text: str, rule: str
) -> None:
    error = problem(field(**options), text)
    assert error.rule == rule and "it holds an invisible character, U+" in error.message


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("text", ["59.", ".5", "-.5", "+5.", "1,299.", "¥.5"])
def test_a_decimal_point_needs_digits_on_both_sides(text: str) -> None:
    spec = field(type="decimal", group_separator=",", currency=["¥"])
    error = problem(spec, text)
    assert error.rule == "type"
    assert "digits on both sides" in error.message or text in ("1,299.",)


@pytest.mark.parametrize("text", ["-0", "-0.00", "-0.0000", "-￥0.00"])
def test_negative_zero_is_read_and_written_as_zero(text: str) -> None:
    """A signed zero (an export's rounding of a small negative amount) is the zero it is:
    it passes min = 0 and is written without the sign."""
    spec = field(type="decimal", scale=2, min=0, currency=["￥"])
    value = spec.parse(text)
    assert value == 0 and not value.is_signed()
    assert spec.render(value) == "0.00"
    assert spec.render(spec.coerce(Decimal("-0.000"))) == "0.00"
    assert field(type="integer").parse("-0") == 0


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        ("integer", "+5", 5),
        ("integer", "007", 7),
        ("decimal", "+5.50", Decimal("5.50")),
        ("decimal", "007.50", Decimal("7.50")),
    ],
)
def test_a_plus_sign_and_leading_zeros_are_read_as_the_number(
    kind: str, text: str, value: object
) -> None:
    assert field(type=kind).parse(text) == value


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("kind", "key", "value"),
    [
        ("string", "group_separator", ","),
        ("string", "decimal_separator", ","),
        ("string", "currency", ["¥"]),
        ("string", "scale", 2),
        ("string", "min", 0),
        ("string", "max", 9),
        ("integer", "scale", 0),
        ("integer", "currency", ["¥"]),
        ("integer", "decimal_separator", ","),
        ("integer", "pattern", r"\d+"),
        ("decimal", "pattern", r"\d+"),
        ("decimal", "formats", ["%Y"]),
        ("decimal", "max_length", 10),
        ("string", "formats", ["%Y"]),
        ("string", "values", ["A"]),
        ("date", "min_length", 8),
        ("boolean", "digits", "unicode"),
        ("enum", "invisible", "keep"),
        ("integer", "invisible", "keep"),
    ],
)
def test_a_key_the_fields_type_does_not_read_is_refused(kind: str, key: str, value: Any) -> None:
    spec: dict[str, Any] = {"name": "qty", "type": kind, key: value}
    if kind == "date" and key != "formats":
        spec["formats"] = ["%Y-%m-%d"]
    if kind == "enum":
        spec["values"] = ["A"]
    with pytest.raises(ValueError, match=f"field 'qty': {key} does not apply to an? {kind} field"):
        FieldSpec.model_validate(spec)


def test_check_names_the_file_the_field_and_the_key(tmp_path: Path) -> None:
    folder = tmp_path / "formats"
    shutil.copytree(REPO / "formats", folder)
    config = (REPO / "config" / "demo.toml").read_text(encoding="utf-8")
    config = config.replace('formats = "../formats"', f'formats = "{folder}"')
    config = config.replace('"../var/', f'"{tmp_path}/var/')
    (tmp_path / "x.toml").write_text(config, encoding="utf-8")
    layout = folder / "shop-order-lines.toml"
    text = layout.read_text(encoding="utf-8")
    layout.write_text(
        text.replace('column = "收货人"\n', 'column = "收货人"\ngroup_separator = ","\n'),
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["check", "--config", str(tmp_path / "x.toml")])
    assert result.exit_code == 2, result.output
    assert (
        f"{layout}: fields[3]: field 'consignee': group_separator does not apply to a string "
        "field (it is for integer and decimal fields)"
    ) in result.output


def test_the_shipped_configuration_passes_check() -> None:
    result = CliRunner().invoke(main, ["check", "--config", str(REPO / "config" / "demo.toml")])
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- both paths


SOURCE = """
name = "relaxed"
codec = "csv"
[[fields]]
name = "code"
required = true
pattern = 'C\\d{{3}}'
{code}
[[fields]]
name = "note"
{note}
[[fields]]
name = "qty"
type = "integer"
min = 0
{qty}
[[fields]]
name = "amount"
type = "decimal"
scale = 2
min = 0
{amount}
[[fields]]
name = "day"
type = "date"
formats = ["%Y%m%d", "%Y-%m-%d"]
{day}
"""
TARGET = """
name = "plain"
codec = "csv"
[[fields]]
name = "Code"
[[fields]]
name = "Note"
invisible = "keep"
[[fields]]
name = "Qty"
type = "integer"
[[fields]]
name = "Amount"
type = "decimal"
scale = 2
[[fields]]
name = "Day"
type = "date"
formats = ["%Y%m%d"]
"""
MAPPING = """
name = "relaxed-to-plain"
source = "relaxed"
target = "plain"
output = "batch"
[header]
Code = "code"
Note = "note"
Qty = "qty"
Amount = "amount"
Day = "day"
"""
#: Each column's edge values: digits of other scripts, invisible characters, grouping,
#: signed zeros, points without digits, dates of the wrong width.
VALUES = [
    ["C123", "C１２３", "C12３", "\u200b", "C\u200b123", "C١٢٣", "C1234", "c123", ""],
    ["ok", "o\u200bk", "\u200b", "\u00a0", "  ", "張三", "a\u200d", "", "x\u3000y", " \u200b"],
    ["1", "1,000", "1,00", "１", "+2", "007", "-0", "1_000", "1\u200b", "", "１,０００"],
    ["1.50", "1,299.00", "-0.00", "59.", ".5", "１.５", "1_000", "+3", "0.5\u00ad", "", "12,99"],
    ["20261121", "2026111", "2026-11-21", "２０２６1121", "2026-1-21", "20261131", ""],
]
RELAXED = {
    "code": 'digits = "unicode"',
    "note": 'invisible = "remove"\ntrim = false',
    "qty": 'group_separator = ","\ndigits = "unicode"',
    "amount": 'group_separator = ","\ndigits = "unicode"',
    "day": 'digits = "unicode"',
}


def route_pipelines(folder: Path, relaxed: bool) -> tuple[Pipeline, Pipeline]:
    folder.mkdir()
    keys = RELAXED if relaxed else dict.fromkeys(RELAXED, "")
    (folder / "relaxed.toml").write_text(SOURCE.format(**keys), encoding="utf-8")
    (folder / "plain.toml").write_text(TARGET, encoding="utf-8")
    (folder / "relaxed-to-plain.toml").write_text(MAPPING, encoding="utf-8")
    route = route_config("relaxed", "relaxed-to-plain", "plain", "out.csv")
    fast, slow = fast_and_slow(route, folder)
    assert fast._plan is not None
    return fast, slow


def csv_of(rows: list[list[str]]) -> bytes:
    lines = ["code,note,qty,amount,day"]
    lines += [",".join(f'"{v}"' for v in row) for row in rows]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def both(fast: Pipeline, slow: Pipeline, data: bytes) -> tuple[object, object]:
    def run(pipeline: Pipeline) -> object:
        found = outcome(pipeline, data)
        if isinstance(found, list):
            conversion = pipeline.convert_stream(io.BytesIO(data), "in.csv", NOW, Sink())
            return found, conversion.warnings
        return found

    return run(fast), run(slow)


def _paths() -> dict[str, tuple[Pipeline, Pipeline]]:
    """The route with strict fields, and with fields that relax each rule (layouts loaded
    once, from a folder removed when the tests end)."""
    import atexit
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="xchange-field-values-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    return {name: route_pipelines(base / name, name == "relaxed") for name in ("strict", "relaxed")}


PATHS = _paths()


@pytest.mark.parametrize("fields", sorted(PATHS))
def test_every_edge_value_gives_the_same_verdict_on_both_paths(fields: str) -> None:
    """Bytes and warnings, or the problems: the same whether or not the columnar plan
    reads the chunk (strict fields, and fields that relax each rule)."""
    fast, slow = PATHS[fields]
    good = [column[0] for column in VALUES]
    assert both(fast, slow, csv_of([good] * 2))[0][0][0][2] == 2  # type: ignore[index]
    for i, column in enumerate(VALUES):
        for value in column:
            row = list(good)
            row[i] = value
            one, other = both(fast, slow, csv_of([good, row]))
            assert one == other, (i, value)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.sampled_from(column) for column in VALUES]), min_size=1, max_size=8))
def test_random_rows_give_the_same_verdict_on_both_paths(rows: list[tuple[str, ...]]) -> None:
    for fast, slow in PATHS.values():
        one, other = both(fast, slow, csv_of([list(r) for r in rows]))
        assert one == other

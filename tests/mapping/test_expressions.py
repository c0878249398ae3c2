"""Expressions in mapping rules: exact, bounded, and unable to reach anything but the
record's values. Compile errors name the position; run-time errors name the values."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xchange.expressions import Expression, ExpressionError, Names

NAMES = Names(
    frozenset({"qty", "price", "name", "day", "code", "status", "when"}),
    frozenset({"materials", "carriers"}),
    aggregates=True,
    line_fields=frozenset({"lqty", "lprice", "waybill", "sku"}),
)
RECORD = {
    "qty": Decimal("3"),
    "price": Decimal("19.90"),
    "name": " Ab c ",
    "day": date(2026, 11, 21),
    "code": "SKU-1234-X",
    "status": None,
    "when": datetime(2026, 11, 21, 1, 30),
}
LINES = [
    {"lqty": Decimal(2), "lprice": Decimal("1.50"), "waybill": "SF1", "sku": "A"},
    {"lqty": Decimal(3), "lprice": Decimal("2"), "waybill": "SF2", "sku": "B"},
    {"lqty": Decimal(1), "lprice": Decimal("0.10"), "waybill": "SF1", "sku": None},
]


def tables(name: str, key: object, column: object = None, default: object = None) -> object:
    table = {"materials": {"A": "MAT-A"}, "carriers": {"SF": "顺丰"}}[name]
    if key in table:
        return table[str(key)]
    if default is not None:
        return default
    raise ExpressionError(f"{key!r} is not in {name!r}")


def value(text: str) -> object:
    return Expression.compile(text, NAMES).evaluate(RECORD, lines=LINES, tables=tables)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("qty * price", Decimal("59.70")),
        ("0.1 + 0.2 == 0.3", True),
        ('round(price / qty, 2, "half-up")', Decimal("6.63")),
        ('round(2.5, 0, "half-even")', Decimal("2")),
        ('round(2.5, 0, "half-up")', Decimal("3")),
        ("qty - 5", Decimal("-2")),
        ("abs(qty - 5)", Decimal("2")),
        ("-qty", Decimal("-3")),
        ("qty % 2", Decimal("1")),
        ('if(qty > 2, "many", "few")', "many"),
        ('"many" if qty > 5 else "few"', "few"),
        ('case(qty > 5, "a", qty > 2, "b", "c")', "b"),
        ('case(qty > 5, "a")', None),
        ('coalesce(status, "none")', "none"),
        ("status == null", True),
        ('qty > 2 and not (name == "x")', True),
        ("upper(trim(name))", "AB C"),
        ("lower(name)", " ab c "),
        ("length(trim(name))", 4),
        ("left(code, 3)", "SKU"),
        ("right(code, 1)", "X"),
        ("slice(code, 4, 8)", "1234"),
        ('pad("7", 3, "0")', "007"),
        ('pad("7", 3, "-", "right")', "7--"),
        ('zfill("42", 5)', "00042"),
        ('replace(code, "-", "")', "SKU1234X"),
        (r'regex(code, "-(\d+)-", 1)', "1234"),
        ('regex(code, "nope")', None),
        ('split(code, "-", 2)', "X"),
        ('split(code, "-", 9)', None),
        ('concat("a", qty, day)', "a32026-11-21"),
        ('"a" + name', "a Ab c "),
        ('contains(code, "1234")', True),
        ('startswith(code, "SKU")', True),
        ('format_date(add_days(day, 10), "%Y%m%d")', "20261201"),
        ('parse_date("21/11/2026", "%d/%m/%Y")', date(2026, 11, 21)),
        ('format_date(to_timezone(when, "Asia/Shanghai"), "%H:%M")', "09:30"),
        ('decimal("12.50") * 2', Decimal("25.00")),
        ("text(qty)", "3"),
        ('lookup("materials", "A")', "MAT-A"),
        ('lookup("materials", "Z", null, "-")', "-"),
        ("sum(lqty * lprice)", Decimal("9.10")),
        ("count()", Decimal(3)),
        ("count(lqty > 1)", Decimal(2)),
        ("min(lprice)", Decimal("0.10")),
        ("max(lqty)", Decimal(3)),
        ("first(sku)", "A"),
        ("last(sku)", "B"),
        ('join(waybill, "|")', "SF1|SF2|SF1"),
        ('join(waybill, "|", true)', "SF1|SF2"),
        ("qty * price + sum(lqty)", Decimal("65.70")),
        ('"2" + "3"', "23"),
        ("status + 1", None),
    ],
)
def test_every_function_computes_exactly(text: str, expected: object) -> None:
    assert value(text) == expected


def test_division_keeps_60_digits_and_rounds_only_when_asked() -> None:
    got = value("price / qty")
    assert isinstance(got, Decimal) and len(got.as_tuple().digits) == 60
    assert str(got).startswith("6.6333333")


def test_numbers_never_pass_through_binary_floating_point() -> None:
    got = value("0.1 * 3")
    assert isinstance(got, Decimal) and got == Decimal("0.3")
    assert value("123456789012345678901234567890.12 + 0.01") == Decimal(
        "123456789012345678901234567890.13"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("qty / 0", "division by zero"),
        ("qty * name", "expected a number, got ' Ab c '"),
        ('lookup("materials", "Z")', "'Z' is not in 'materials'"),
        ('parse_date("2026-13-01", "%Y-%m-%d")', "is not a date like"),
        ('round(price, 2, "bankers")', "rounding mode 'bankers'"),
        ("pad(name, 2000000)", "up to 1,000,000"),
        ("qty > name", "expected a number, got ' Ab c '"),
        ('qty + "2"', "cannot add 3 and '2': use concat()"),
        ('to_timezone(when, "Mars/Base")', "unknown time zone"),
    ],
)
def test_run_time_errors_say_what_values_broke_them(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        value(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("qty +", "not a valid expression"),
        ("quantity * 2", "position 1: unknown field 'quantity'"),
        ("qty * prize", "position 7: unknown field 'prize'"),
        ("lqty * 2", "a line field: use it inside an aggregate"),
        ("total(qty)", "position 1: unknown function total()"),
        ("round()", "round() takes 1 to 3 argument(s), 0 given"),
        ("left(name)", "left() takes 2 argument(s), 1 given"),
        ('lookup("skus", qty)', "no table or lookup 'skus'"),
        ("sum(sum(lqty))", "inside another aggregate"),
        ("qty ** 2", "powers are not allowed"),
        ('qty * "abc"', "position 1: arithmetic on the text 'abc': numbers only"),
        ("name.upper()", "only the listed functions"),
        ("code[0]", "subscripts"),
        ('f"{qty}"', "f-strings"),
        ("(lambda: 1)()", "only the listed functions"),
        ("[x for x in name]", "not allowed"),
        ('__import__("os").system("id")', "only the listed functions"),
        ("().__class__.__bases__", "not allowed"),
        ('open("/etc/passwd")', "unknown function open()"),
        ('regex(code, "(a+)+$")', "nested repetition"),
        ("regex(code, name)", "the pattern must be a text literal"),
        ("1e999999", "a number out of range"),
        ("round(qty, places=2)", "by position"),
        ("qty " + "+ qty " * 150, "more than 200 parts"),
    ],
)
def test_broken_or_unsafe_rules_are_refused_at_compile_time(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        Expression.compile(text, NAMES)
    assert message in str(info.value)


def test_aggregates_belong_to_rules_of_documents_with_lines() -> None:
    flat = Names(frozenset({"qty"}), frozenset())
    with pytest.raises(ExpressionError, match="only for rules of documents with lines"):
        Expression.compile("sum(qty)", flat)


def test_a_line_rule_may_aggregate_its_document_but_not_nest_aggregates() -> None:
    line = Names(
        frozenset({"qty"}), frozenset(), aggregates=True, line_fields=frozenset({"qty"}), line=True
    )
    assert Expression.compile("qty / sum(qty)", line).evaluate(
        {"qty": 1}, lines=[{"qty": 1}, {"qty": 3}], position=0, cache={}
    ) == Decimal("0.25")
    with pytest.raises(ExpressionError, match="inside another aggregate"):
        Expression.compile("sum(qty / sum(qty))", line)
    with pytest.raises(ExpressionError, match=r"position\(\) inside an aggregate"):
        Expression.compile("sum(position())", line)


TOKENS = st.sampled_from(
    [
        "qty",
        "price",
        "name",
        "day",
        "lqty",
        "waybill",
        "status",
        "1",
        "0",
        "2.5",
        "-",
        "+",
        "*",
        "/",
        "%",
        "(",
        ")",
        ",",
        "==",
        "<",
        ">",
        "and",
        "or",
        "not",
        '"x"',
        '"%Y"',
        "if(",
        "round(",
        "sum(",
        "join(",
        "left(",
        "pad(",
        "concat(",
        "coalesce(",
        "case(",
        "upper(",
        "add_days(",
        "format_date(",
        "regex(",
        "lookup(",
        '"materials"',
        "allocate(",
        "position()",
        "is_last()",
        '"largest"',
        "9" * 70,
        "1e999",
        "**",
        ".",
        "[",
        "]",
        "lambda",
        ":",
        "__class__",
        "x",
        " ",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(TOKENS, min_size=1, max_size=25))
def test_random_expressions_never_crash_and_stay_bounded(tokens: list[str]) -> None:
    """Whatever is written in a rule: it compiles or is refused with a reason; it
    evaluates or fails with a reason; never another exception, never a huge value. Also
    as a line rule (positions, allocate(), aggregates once per document)."""
    text = " ".join(tokens)
    as_line = Names(NAMES.fields, NAMES.tables, True, NAMES.line_fields, line=True)
    for names, position in ((NAMES, None), (as_line, 1)):
        try:
            expression = Expression.compile(text, names)
        except ExpressionError:
            continue
        try:
            result = expression.evaluate(
                RECORD, lines=LINES, tables=tables, position=position, cache={}
            )
        except ExpressionError:
            continue
        check_bounded(result)


def check_bounded(result: object) -> None:
    if isinstance(result, str):
        assert len(result) <= 1 << 20
    if isinstance(result, Decimal):
        assert len(result.as_tuple().digits) <= 60

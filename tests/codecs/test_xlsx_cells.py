"""An xlsx sheet reads as its cells show: exact decimals, dates from serials, and every
cell accounted for (formulas, merges, columns outside the layout said, not guessed)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.xlsx_books import cell, layout, read, row, text_row, workbook
from xchange.errors import DecodeError

AMOUNT = [{"name": "amount", "type": "decimal", "scale": 2}]


def test_a_sum_stored_with_binary_noise_reads_as_the_cell_shows_it() -> None:
    """0.1+0.2 is stored as 0.30000000000000004: General shows 0.3, and so it reads."""
    book = workbook(text_row(1, "amount"), row(2, cell("A2", "0.30000000000000004")))
    values, report = read(book, layout(AMOUNT))
    assert not report
    assert values == [{"amount": Decimal("0.3")}]
    assert str(values[0]["amount"]) == "0.3"


def test_number_formats_show_fixed_places_groups_and_percent() -> None:
    """0.00, #,##0.00 and 0% round half away from zero on the 15-digit value, as Excel."""
    fields = [{"name": n} for n in ("a", "b", "c", "d")]
    book = workbook(
        text_row(1, "a", "b", "c", "d"),
        row(
            2,
            cell("A2", "1.0049999999999999", s=1),  # 1.005 typed: shows 1.01
            cell("B2", "1299", s=2),
            cell("C2", "0.125", s=3),
            cell("D2", "-2.5", s=1),
        ),
    )
    values, report = read(book, layout(fields))
    assert not report, report.problems
    assert values == [{"a": "1.01", "b": "1,299.00", "c": "13%", "d": "-2.50"}]


def test_general_shows_eleven_significant_digits_and_refuses_scientific() -> None:
    fields = [{"name": "a"}]
    book = workbook(
        text_row(1, "a"),
        row(2, cell("A2", "13800138000")),
        row(3, cell("A3", "0.1234567890123")),
        row(4, cell("A4", "123456789012345678")),
    )
    values, report = read(book, layout(fields))
    assert values[:2] == [{"a": "13800138000"}, {"a": "0.12345678901"}]
    [problem] = report.problems
    assert problem.location == "row 4" and problem.rule == "format"
    assert "scientific notation" in problem.message


def test_a_date_serial_reads_as_its_format_shows_it_in_both_date_systems() -> None:
    """46347 is 2026-11-21 in the 1900 system; the 1904 system counts 1462 days fewer."""
    fields = [
        {"name": "day", "type": "date", "formats": ["%Y-%m-%d"]},
        {"name": "at", "type": "datetime", "formats": ["%Y-%m-%d %H:%M:%S"]},
    ]
    rows = (
        text_row(1, "day", "at"),
        row(2, cell("A2", "46347", s=4), cell("B2", "46347.385439814815", s=5)),
    )
    values, report = read(workbook(*rows), layout(fields))
    assert not report, report.problems
    assert values == [{"day": date(2026, 11, 21), "at": datetime(2026, 11, 21, 9, 15, 2)}]
    rows1904 = (
        text_row(1, "day", "at"),
        row(2, cell("A2", str(46347 - 1462), s=4), cell("B2", "1", s=5)),
    )
    values, report = read(workbook(*rows1904, date1904=True), layout(fields))
    assert values == [{"day": date(2026, 11, 21), "at": datetime(1904, 1, 2)}]


def test_the_day_that_never_was_and_a_format_not_shown_exactly_are_refused() -> None:
    fields = [{"name": "a"}, {"name": "b"}, {"name": "c"}]
    book = workbook(
        text_row(1, "a", "b", "c"),
        row(2, cell("A2", "60", s=4), cell("B2", "1.5", s=6), cell("C2", "46347", s=7)),
    )
    _, report = read(book, layout(fields))
    messages = {p.field: p.message for p in report.problems}
    assert "1900-02-29" in messages["A2"]
    assert "'[h]:mm' is not one xchange shows exactly" in messages["B2"]
    assert "built-in number format 31" in messages["C2"]
    # ... unless the layout reads those columns' stored values
    _, report = read(book, layout(fields, stored=["b", "c"]))
    assert [p.field for p in report.problems] == ["A2"]


def test_shared_strings_and_inline_strings_are_text_exactly() -> None:
    book = workbook(
        row(1, cell("A1", "0", t="s"), cell("B1", "1", t="s")),
        row(2, cell("A2", "2", t="s"), cell("B2", " 00123 ", t="inlineStr")),
        shared=["订单号", "code", "EC001"],
    )
    values, report = read(book, layout([{"name": "订单号"}, {"name": "code", "trim": False}]))
    assert not report
    assert values == [{"订单号": "EC001", "code": " 00123 "}]


def test_a_formula_is_refused_unless_its_cached_value_is_allowed() -> None:
    book = workbook(
        text_row(1, "amount"),
        row(2, cell("A2", "0.30000000000000004", f="0.1+0.2")),
        row(3, cell("A3", None, f="A2*2")),
    )
    _, report = read(book, layout(AMOUNT))
    assert [(p.field, p.rule) for p in report.problems] == [("A2", "formula"), ("A3", "formula")]
    assert 'formulas = "cached"' in report.problems[0].message
    values, report = read(book, layout(AMOUNT, formulas="cached"))
    assert values[0] == {"amount": Decimal("0.3")}
    [problem] = report.problems  # a formula saved without its value is still refused
    assert problem.field == "A3" and "without its value" in problem.message


def test_merged_cells_in_the_rows_read_are_refused_or_filled() -> None:
    fields = [{"name": "order"}, {"name": "sku"}]
    rows = (
        text_row(1, "title"),
        text_row(2, "order", "sku"),
        row(3, cell("A3", "EC1", t="inlineStr"), cell("B3", "S1", t="inlineStr")),
        row(4, cell("B4", "S2", t="inlineStr")),
    )
    book = workbook(*rows, merges=["A1:B1", "A3:A4"])
    _, report = read(book, layout(fields, header_row=2))
    [problem] = report.problems  # (the title's merge, above the header, is not read)
    assert problem.rule == "merged" and "A3:A4" in problem.message
    values, report = read(book, layout(fields, header_row=2, merged="fill"))
    assert not report
    assert values == [{"order": "EC1", "sku": "S1"}, {"order": "EC1", "sku": "S2"}]


def test_a_hidden_column_with_a_value_is_a_problem_unless_declared_ignored() -> None:
    cols = '<cols><col min="3" max="3" hidden="1"/></cols>'
    book = workbook(
        text_row(1, "amount"),
        row(2, cell("A2", "5"), cell("C2", "cost 3.20", t="inlineStr")),
        cols=cols,
    )
    _, report = read(book, layout(AMOUNT))
    [problem] = report.problems
    assert problem.rule == "unknown" and "column C (hidden)" in problem.message
    assert "C2" in problem.message
    _, report = read(book, layout(AMOUNT, unknown="ignore"))
    assert not report


def test_a_header_column_outside_the_layout_and_an_error_cell_are_problems() -> None:
    book = workbook(
        text_row(1, "amount", "secret"),
        row(2, cell("A2", "#N/A", t="e"), cell("B2", "1")),
    )
    _, report = read(book, layout(AMOUNT))
    assert sorted(p.rule for p in report.problems) == ["error", "unknown"]
    assert any("'secret' (B)" in p.message for p in report.problems)


def test_the_sheet_is_found_by_name_or_position_and_a_missing_one_is_named() -> None:
    book = workbook(text_row(1, "amount"), row(2, cell("A2", "1")), sheet_name="销售")
    assert read(book, layout(AMOUNT, sheet="销售"))[0] == [{"amount": Decimal("1")}]
    with pytest.raises(DecodeError, match=r"no sheet 'Sheet9' \(it has '销售'\)"):
        read(book, layout(AMOUNT, sheet="Sheet9"))


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False))
def test_any_two_place_amount_stored_as_a_double_reads_back_exactly(amount: Decimal) -> None:
    """Whatever binary noise the double adds, 0.00 shows the amount typed."""
    stored = repr(float(amount))
    book = workbook(text_row(1, "amount"), row(2, cell("A2", stored, s=1)))
    values, report = read(book, layout(AMOUNT))
    assert not report
    assert values == [{"amount": amount}]

"""Mappings as data: grouping, flattening, value rules, and the problem cap."""

from __future__ import annotations

import io
from datetime import datetime
from decimal import Decimal

from hypothesis import example, given, settings
from hypothesis import strategies as st

from xchange.codecs.csv_codec import CsvCodec
from xchange.layout import Layout
from xchange.mapping import Mapping, Record, apply_mapping
from xchange.report import Report

NOW = datetime(2026, 11, 21)

NESTED = Layout.model_validate(
    {
        "name": "orders",
        "codec": "json",
        "shape": "nested",
        "fields": [{"name": "no"}, {"name": "day", "type": "date", "formats": ["%Y-%m-%d"]}],
        "line_fields": [{"name": "sku"}, {"name": "amount", "type": "decimal", "scale": 2}],
    }
)
ROWS = Layout.model_validate(
    {
        "name": "rows",
        "codec": "csv",
        "encoding": "gb18030",
        "fields": [
            {"name": "order", "required": True},
            {"name": "day", "type": "date", "formats": ["%Y%m%d"]},
            {"name": "sku"},
            {"name": "amount", "type": "decimal", "scale": 2},
            {"name": "label"},
        ],
    }
)


def test_flatten_turns_each_line_into_a_row_with_its_header() -> None:
    """A nested document becomes one row per line, header values repeated."""
    mapping = Mapping.model_validate(
        {
            "name": "m",
            "source": "orders",
            "target": "rows",
            "flatten": True,
            "header": {
                "order": "no",
                "day": "day",
                "sku": {"from": "sku", "case": "upper"},
                "amount": "amount",
                "label": {"join": ["no", "sku"], "sep": "/"},
            },
        }
    )
    records = [
        Record(
            "$[0]",
            {"no": "A1", "day": NOW.date()},
            [
                Record("$[0].l[0]", {"sku": "x1", "amount": Decimal("1.5")}),
                Record("$[0].l[1]", {"sku": "x2", "amount": Decimal("2")}),
            ],
        )
    ]
    report = Report("f")
    docs = list(apply_mapping(mapping, ROWS, records, report))
    assert not report
    assert [d.header for d in docs] == [
        {"order": "A1", "day": NOW.date(), "sku": "X1", "amount": Decimal("1.5"), "label": "A1/x1"},
        {"order": "A1", "day": NOW.date(), "sku": "X2", "amount": Decimal("2"), "label": "A1/x2"},
    ]
    out = io.BytesIO()
    CsvCodec().write(docs, ROWS, "out.csv", out)
    assert out.getvalue().decode("gb18030").splitlines()[1] == "A1,20261121,X1,1.50,A1/x1"


def test_rows_of_one_document_must_be_adjacent_unless_configured() -> None:
    """Streaming grouping reports a document whose rows are split; the opt-out groups all."""
    mapping = Mapping.model_validate(
        {
            "name": "m",
            "source": "rows",
            "target": "orders",
            "group_by": ["order"],
            "header": {"no": "order"},
            "lines": {"sku": "sku"},
        }
    )
    rows = [
        Record(f"line {i}", {"order": o, "sku": s})
        for i, (o, s) in enumerate([("A", "1"), ("B", "2"), ("A", "3")], start=2)
    ]
    report = Report("f")
    list(apply_mapping(mapping, NESTED, rows, report))
    (problem,) = report.problems
    assert (problem.location, problem.rule) == ("line 4", "grouping")
    assert "line 2" in problem.message
    mapping = mapping.model_copy(update={"group_adjacent": False})
    docs = list(apply_mapping(mapping, NESTED, rows, Report("f")))
    assert [[ln["sku"] for ln in d.lines] for d in docs] == [["1", "3"], ["2"]]


def test_decimals_are_never_rounded_silently() -> None:
    """A value with more decimals than the target scale is a problem, not a rounding."""
    mapping = Mapping.model_validate(
        {
            "name": "m",
            "source": "orders",
            "target": "rows",
            "flatten": True,
            "header": {"order": "no", "amount": "amount"},
        }
    )
    records = [Record("$[0]", {"no": "A"}, [Record("$[0].l[0]", {"amount": Decimal("1.005")})])]
    report = Report("f")
    list(apply_mapping(mapping, ROWS, records, report))
    (problem,) = report.problems
    assert (problem.field, problem.rule, problem.value) == ("amount", "scale", "1.005")
    assert "never rounded" in problem.message


def test_problems_beyond_the_cap_are_counted_not_listed() -> None:
    """A file with thousands of errors lists the first N and says how many more."""
    report = Report("f", cap=3)
    for i in range(10):
        report.add(f"line {i}", "x", "required", None, "a value is required")
    assert len(report.problems) == 3 and report.total == 10
    assert "and 7 more problem(s) not listed (cap 3)" in report.text()


cjk = st.text(
    alphabet=st.sampled_from(list('订单号张三李喆𠮷𠀀𪚥龘,"\n\r 　；abc123')), max_size=30
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(cjk, cjk), min_size=1, max_size=8))
@example(rows=[("三喆", "三三三三喆喆"), ("三三三三三三", "三三三三喆喆")])
def test_cjk_text_round_trips_byte_exact_through_gb18030_csv(rows: list[tuple[str, str]]) -> None:
    """Any CJK text, 4-byte GB18030 characters, quotes and newlines included, survives a
    write and a read through a GB18030 CSV unchanged."""
    layout = Layout.model_validate(
        {
            "name": "t",
            "codec": "csv",
            "encoding": "gb18030",
            "fields": [{"name": "a", "trim": False}, {"name": "b", "trim": False}],
        }
    )
    from xchange.mapping import Document

    out = io.BytesIO()
    CsvCodec().write([Document("", {"a": a, "b": b}) for a, b in rows], layout, "t.csv", out)
    report = Report("t.csv")
    back = list(CsvCodec().records(io.BytesIO(out.getvalue()), layout, "t.csv", report))
    assert not report, report.text()
    assert [(r.values["a"] or "", r.values["b"] or "") for r in back] == [(a, b) for a, b in rows]

"""JSON records read fields outside themselves: ``$.batch_no`` from the document's root and
``^.order_no`` from the object whose list holds the record (a line of an order read as a
record reads its order's number). What such a field reads is accounted for; everything
else beside the records is still a problem."""

from __future__ import annotations

import io
from typing import Any

import pytest

from xchange.codecs.json_codec import JsonCodec
from xchange.layout import Layout
from xchange.report import Report

LINES = {
    "name": "lines",
    "codec": "json",
    "json": {"records": "$.orders[*].lines[*]"},
    "fields": [
        {"name": "batch", "column": "$.batch_no", "required": True},
        {"name": "order", "column": "^.order_no", "required": True},
        {"name": "shop", "column": "^.shop.code"},
        {"name": "sku", "required": True},
        {"name": "qty", "type": "integer"},
    ],
}
DOC = b"""{"batch_no": "B7", "orders": [
  {"order_no": "SO1", "shop": {"code": "TM"},
   "lines": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]},
  {"order_no": "SO2", "lines": [{"sku": "C", "qty": 3}]}]}"""


def read(data: bytes, **changes: Any) -> tuple[list[dict[str, Any]], Report]:
    layout = Layout.model_validate({**LINES, **changes})
    report = Report("in")
    records = list(JsonCodec().records(io.BytesIO(data), layout, "in", report))
    return [r.values for r in records], report


def test_a_line_read_as_a_record_reads_its_order_and_the_documents_fields() -> None:
    values, report = read(DOC)
    assert not report, report.text()
    assert [(v["batch"], v["order"], v["shop"], v["sku"]) for v in values] == [
        ("B7", "SO1", "TM", "A"),
        ("B7", "SO1", "TM", "B"),
        ("B7", "SO2", None, "C"),
    ]


def test_what_the_outside_fields_do_not_read_is_still_unknown_input() -> None:
    data = DOC.replace(b'"order_no": "SO2",', b'"order_no": "SO2", "note": "x",')
    _, report = read(data.replace(b'"batch_no": "B7",', b'"batch_no": "B7", "by": "wms",'))
    assert sorted(p.field for p in report.ordered()) == ["$.by", "$.orders[1].note"]


def test_a_missing_outside_value_is_a_problem_at_the_record() -> None:
    _, report = read(DOC.replace(b'"order_no": "SO2", ', b""))
    (problem,) = report.ordered()
    assert (problem.location, problem.field, problem.rule) == (
        "$.orders[1].lines[0]",
        "^.order_no",
        "required",
    )


def test_outside_fields_work_in_ndjson_one_document_per_line() -> None:
    data = (
        b'{"batch_no": "B1", "orders": [{"order_no": "S1", "lines": [{"sku": "A"}]}]}\n'
        b'{"batch_no": "B2", "orders": [{"order_no": "S2", "lines": [{"sku": "B"}]}]}\n'
    )
    values, report = read(data, json={"records": "$.orders[*].lines[*]", "ndjson": True})
    assert not report, report.text()
    assert [(v["batch"], v["order"]) for v in values] == [("B1", "S1"), ("B2", "S2")]


def test_a_nested_layouts_record_reads_the_documents_header() -> None:
    nested = {
        "name": "orders",
        "codec": "json",
        "shape": "nested",
        "json": {"records": "$.orders[*]", "lines": "lines"},
        "fields": [{"name": "batch", "column": "$.batch_no"}, {"name": "order_no"}],
        "line_fields": [{"name": "sku"}, {"name": "qty", "type": "integer"}],
        "unknown_in": {"shop": "ignore"},
    }
    layout = Layout.model_validate(nested)
    report = Report("in")
    records = list(JsonCodec().records(io.BytesIO(DOC), layout, "in", report))
    assert not report, report.text()
    assert [r.values["batch"] for r in records] == ["B7", "B7"]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"fields": [{"name": "x", "column": "^^^.x"}]}, "goes up 3 object(s)"),
        ({"fields": [{"name": "x", "column": "^x"}]}, "after ^ comes a key path"),
        (
            {
                "shape": "nested",
                "json": {"records": "$.orders[*]", "lines": "lines"},
                "fields": [{"name": "o"}],
                "line_fields": [{"name": "x", "column": "^.order_no"}],
            },
            "only a record's fields read outside it",
        ),
    ],
)
def test_a_field_that_reads_above_the_document_or_from_a_line_is_refused(
    change: dict[str, Any], said: str
) -> None:
    with pytest.raises(ValueError) as caught:
        Layout.model_validate({**LINES, **change})
    assert said in str(caught.value)


def test_a_layout_that_is_written_cannot_have_fields_outside_its_documents() -> None:
    layout = Layout.model_validate(LINES)
    assert any("outside the document" in p for p in layout.write_collisions())

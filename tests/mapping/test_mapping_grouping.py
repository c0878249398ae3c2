"""A document formed from several rows takes each header value once: the rows agree on it,
or the mapping says which row wins. A value a table or a lookup does not know is reported
with the source field, its place in the source file and the row it came from."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FORMATS, REPO, SAMPLES
from xchange.config import load_config
from xchange.errors import ValidationFailed
from xchange.layout import Layout
from xchange.mapping import Mapping, Record, apply_mapping, check_mapping, compile_mapping
from xchange.pipeline import Pipeline
from xchange.report import Problem, Report

NOW = datetime(2026, 11, 21, 12)
DEMO = REPO / "config" / "demo.toml"
SHOP_ORDERS = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"

# --------------------------------------------------------------------------- real routes


def pipeline(route: str) -> Pipeline:
    return Pipeline(load_config(DEMO).route(route), FORMATS)


def shop_csv(change: dict[int, tuple[str, str]]) -> bytes:
    """The shipped shop export, with ``{row: (column, new text)}`` changed (row 0: the
    first data row, at line 2)."""
    text = SHOP_ORDERS.read_bytes().decode("gbk")
    lines = text.splitlines()
    header = lines[0].split(",")
    for row, (column, value) in change.items():
        cells = lines[row + 1].split(",")
        cells[header.index(column)] = value
        lines[row + 1] = ",".join(cells)
    return ("\r\n".join(lines) + "\r\n").encode("gbk")


def problems(route: str, data: bytes, name: str) -> list[Problem]:
    with pytest.raises(ValidationFailed) as info:
        pipeline(route).convert(data, name, NOW)
    return info.value.report.ordered()


def test_the_shipped_shop_orders_have_rows_that_agree() -> None:
    assert len(pipeline("shop-orders").convert(SHOP_ORDERS.read_bytes(), "o.csv", NOW)) == 3


def test_a_second_row_with_another_consignee_is_a_problem_naming_both_rows_and_values() -> None:
    """Order EC20261121001's second line (line 3) names 李四, its first (line 2) 张三: which
    one receives the parcel is not for the converter to guess."""
    (problem,) = problems("shop-orders", shop_csv({1: ("收货人", "李四")}), "orders_x.csv")
    assert (problem.location, problem.field, problem.rule, problem.value) == (
        "line 3",
        "ReceiverName",
        "agree",
        "李四",
    )
    assert "source field consignee, column 收货人" in problem.message
    assert "'李四' at line 3, '张三' at line 2" in problem.message
    assert 'row = "first" or "last"' in problem.message


def test_a_blank_remark_on_a_later_row_is_a_disagreement_too() -> None:
    (problem,) = problems("shop-orders", shop_csv({1: ("买家留言", "")}), "orders_x.csv")
    assert (problem.location, problem.field, problem.value) == ("line 3", "Remark", None)
    assert "no value at line 3, '请周末送货' at line 2" in problem.message


def test_rows_are_compared_by_typed_value_not_by_text() -> None:
    """The same time written two ways (both formats of the layout) is the same value."""
    data = shop_csv({1: ("下单时间", "2026/11/21 09:15:02")})
    assert len(pipeline("shop-orders").convert(data, "o.csv", NOW)) == 3
    (problem,) = problems(
        "shop-orders", shop_csv({1: ("下单时间", "2026/11/21 09:15:03")}), "orders_x.csv"
    )
    assert (problem.location, problem.field) == ("line 3", "OrderDate")
    assert "2026-11-21 09:15:03 at line 3, 2026-11-21 09:15:02 at line 2" in problem.message


@pytest.mark.parametrize(
    ("column", "text", "rule"),
    [("手机", "1380013800", "pattern"), ("收货人", "", "required")],
)
def test_a_field_that_failed_to_be_read_on_a_row_is_reported_once(
    column: str, text: str, rule: str
) -> None:
    found = problems("shop-orders", shop_csv({1: (column, text)}), "orders_x.csv")
    assert [(p.location, p.field, p.rule) for p in found] == [("line 3", column, rule)]


def test_a_template_compares_every_field_it_reads() -> None:
    found = problems(
        "shop-orders",
        shop_csv({1: ("城市", "苏州市"), 4: ("区县", "海淀区")}),
        "orders_x.csv",
    )
    assert [(p.location, p.field) for p in found] == [
        ("line 3", "ReceiverAddress"),
        ("line 6", "ReceiverAddress"),
    ]
    assert "source field city, column 城市" in found[0].message
    assert "source field district, column 区县" in found[1].message


def test_an_expression_compares_what_it_reads_outside_aggregates_only() -> None:
    """FNote = coalesce(trim(postscript), "") reads the remark once per order; the lines'
    amounts are summed, so they may differ (route shop-kingdee-orders)."""
    (problem,) = problems(
        "shop-kingdee-orders", shop_csv({1: ("买家留言", "别敲门")}), "orders_x.csv"
    )
    assert (problem.location, problem.field, problem.value) == ("line 3", "FNote", "别敲门")
    assert "source field postscript, column 买家留言" in problem.message


def test_a_value_table_miss_names_the_source_field_its_column_and_line() -> None:
    data = shop_csv({3: ("渠道", "抖音"), 4: ("渠道", "抖音")})
    (problem,) = problems("shop-orders", data, "orders_x.csv")
    assert (problem.location, problem.field, problem.rule) == ("line 5", "Channel", "table")
    assert (
        problem.message
        == "'抖音' is not in value table 'channels' (source field channel, column 渠道)"
    )


def test_a_table_miss_in_an_expression_names_the_fields_its_key_reads() -> None:
    """FCust = concat("SHOP-", table("sale_orgs", channel)): the key is the channel."""
    data = shop_csv({0: ("渠道", "抖音"), 1: ("渠道", "抖音")})
    found = {p.field: p for p in problems("shop-kingdee-orders", data, "orders_x.csv")}
    assert set(found) == {"FSaleOrg", "FCust"}
    for problem in found.values():
        assert problem.location == "line 2"
        assert problem.message.endswith(
            "'抖音' is not in 'sale_orgs' (source field channel, column 渠道)"
        ) or problem.message.endswith(
            "'抖音' is not in value table 'sale_orgs' (source field channel, column 渠道)"
        )


def test_an_xml_table_miss_names_the_element_path() -> None:
    source = SAMPLES / "purchase-inbound" / "in" / "inbound_20261121.xml"
    data = source.read_bytes().replace(b"<Warehouse>WH-GZ-01<", b"<Warehouse>WH-XX-09<")
    found = problems("purchase-inbound", data, "inbound_x.xml")
    assert [p.field for p in found] == ["FStock"]
    assert found[0].message == (
        "'WH-XX-09' is not in value table 'stocks' (source field warehouse, path Warehouse)"
    )
    assert found[0].location.startswith("line 19 ")  # the Item of the second Receipt


def test_a_json_table_miss_names_the_key() -> None:
    source = SAMPLES / "oms-kingdee-orders" / "in" / "sales_orders_20261121.json"
    data = json.loads(source.read_bytes())
    data["orders"][1]["customer_code"] = "C-KUAISHOU"
    found = problems("oms-kingdee-orders", json.dumps(data).encode(), "sales_orders_x.json")
    assert [p.field for p in found] == ["FCust"]
    assert found[0].message == (
        "'C-KUAISHOU' is not in value table 'customers' "
        "(source field customer_code, key customer_code)"
    )


# --------------------------------------------------------------------------- small layouts

SOURCE = Layout.model_validate(
    {
        "name": "src",
        "codec": "csv",
        "fields": [
            {"name": "order", "column": "单号"},
            {"name": "status"},
            {"name": "sku", "column": "商品"},
            {"name": "wh", "column": "仓库"},
            {"name": "qty", "type": "decimal"},
            {"name": "note", "column": "备注"},
        ],
    }
)
TARGET = Layout.model_validate(
    {
        "name": "dst",
        "codec": "json",
        "shape": "nested",
        "json": {"lines": "lines", "batch_key": "docs"},
        "fields": [{"name": "no"}, {"name": "wh"}, {"name": "note"}],
        "line_fields": [{"name": "sku"}, {"name": "qty", "type": "decimal"}],
    }
)


def mapping(tmp_path: Path, header: dict[str, Any] | None = None, **extra: Any) -> Mapping:
    return Mapping.model_validate(
        {
            "name": "m",
            "source": "src",
            "target": "dst",
            "group_by": ["order"],
            "header": {"no": "order", "wh": "wh", "note": "note", **(header or {})},
            "lines": {"sku": "sku", "qty": "qty"},
            "source_file": tmp_path / "m.toml",
            **extra,
        }
    )


def rows(*values: str, failed: dict[int, set[str]] | None = None) -> list[Record]:
    """Records from "order status sku wh qty note" texts ("-": no value), from line 2."""
    out = []
    for i, text in enumerate(values):
        order, status, sku, wh, qty, note = (None if v == "-" else v for v in text.split())
        out.append(
            Record(
                f"line {i + 2}",
                {
                    "order": order,
                    "status": status,
                    "sku": sku,
                    "wh": wh,
                    "qty": None if qty is None else Decimal(qty),
                    "note": note,
                },
                failed=(failed or {}).get(i, set()),
            )
        )
    return out


def run(m: Mapping, records: list[Record]) -> tuple[list[Any], Report]:
    compiled, found = compile_mapping(m, SOURCE, TARGET)
    assert found == [] and check_mapping(m, SOURCE, TARGET) == []
    report = Report("in")
    return list(apply_mapping(m, TARGET, records, report, compiled=compiled)), report


def where(report: Report) -> list[tuple[str, str, str]]:
    return [(p.location, p.field, p.rule) for p in report.problems]


ORDER = rows("A ok s1 W1 1 first", "A ok s2 W2 1 second", "A ok s3 W2 1 third")


def test_rows_that_disagree_are_a_problem_at_each_later_row_that_differs(tmp_path: Path) -> None:
    _, report = run(mapping(tmp_path), ORDER)
    assert where(report) == [
        ("line 3", "wh", "agree"),
        ("line 3", "note", "agree"),
        ("line 4", "wh", "agree"),
        ("line 4", "note", "agree"),
    ]
    assert "'W2' at line 4, 'W1' at line 2" in report.problems[2].message
    assert "source field wh, column 仓库" in report.problems[0].message


def test_the_rule_says_which_row_wins_and_the_others_are_still_compared(tmp_path: Path) -> None:
    header = {"note": {"from": "note", "row": "last"}, "wh": {"from": "wh", "row": "first"}}
    docs, report = run(mapping(tmp_path, header), ORDER)
    assert not report
    assert docs[0].header == {"no": "A", "wh": "W1", "note": "third"}
    changed = [*ORDER[:2], rows("B ok s3 W2 1 third")[0]]
    changed[2].values["order"], changed[2].location = "A", "line 4"
    changed[1].values["sku"] = "s9"  # lines differ freely
    docs, report = run(mapping(tmp_path, header), changed)
    assert not report and docs[0].header["note"] == "third"


def test_a_field_read_by_two_header_fields_is_one_problem_naming_both(tmp_path: Path) -> None:
    m = mapping(tmp_path, {"note": "wh", "wh": "wh"})
    _, report = run(m, rows("A ok s1 W1 1 x", "A ok s2 W2 1 x"))
    assert where(report) == [("line 3", "wh, note", "agree")]
    assert "header fields wh, note take one value" in report.problems[0].message


def test_aggregates_read_every_row_and_are_not_compared(tmp_path: Path) -> None:
    m = mapping(
        tmp_path,
        {"wh": {"expr": 'join(wh, "|", true)'}, "note": {"expr": 'concat(note, "/", count())'}},
    )
    docs, report = run(m, rows("A ok s1 W1 1 x", "A ok s2 W2 1 x"))
    assert not report and docs[0].header == {"no": "A", "wh": "W1|W2", "note": "x/2"}
    _, report = run(m, rows("A ok s1 W1 1 x", "A ok s2 W2 1 y"))
    assert where(report) == [("line 3", "note", "agree")]


def test_a_row_left_out_by_the_filter_is_not_part_of_the_document(tmp_path: Path) -> None:
    records = rows("A cancelled s1 W9 1 x", "A ok s2 W1 1 x", "A ok s3 W1 1 x")
    docs, report = run(mapping(tmp_path, filter='status != "cancelled"'), records)
    assert not report and docs[0].header["wh"] == "W1" and len(docs[0].lines) == 2
    docs, report = run(mapping(tmp_path, line_filter='status != "cancelled"'), records)
    assert not report and docs[0].header["wh"] == "W1" and len(docs[0].lines) == 2


def test_no_value_on_one_row_and_a_value_on_another_disagree(tmp_path: Path) -> None:
    _, report = run(mapping(tmp_path), rows("A ok s1 W1 1 -", "A ok s2 W1 1 x"))
    assert where(report) == [("line 3", "note", "agree")]
    assert "'x' at line 3, no value at line 2" in report.problems[0].message


def test_a_field_that_failed_on_a_row_is_not_compared_again(tmp_path: Path) -> None:
    records = rows("A ok s1 W1 1 x", "A ok s2 W2 1 x", "A ok s3 W1 1 x", failed={0: {"wh"}})
    docs, report = run(mapping(tmp_path), records)
    # The first row's wh was reported when it was read: the second row is the reference.
    assert where(report) == [("line 4", "wh", "agree")]
    assert docs[0].header["wh"] is None
    records = rows("A ok s1 W1 1 x", "A ok s2 W2 1 x", failed={1: {"*"}})
    _, report = run(mapping(tmp_path), records)
    assert not report


def test_unsorted_grouping_compares_the_rows_of_each_document(tmp_path: Path) -> None:
    records = rows("A ok s1 W1 1 x", "B ok s2 W5 1 y", "A ok s3 W1 1 z")
    _, report = run(mapping(tmp_path, group_adjacent=False), records)
    assert where(report) == [("line 4", "note", "agree")]
    assert "'z' at line 4, 'x' at line 2" in report.problems[0].message


def test_each_split_part_is_formed_from_its_own_rows(tmp_path: Path) -> None:
    records = rows("A ok s1 W1 1 x", "A ok s2 W2 1 y", "A ok s3 W2 1 z", "A ok s4 W1 1 x")
    docs, report = run(mapping(tmp_path, split_by=["wh"]), records)
    assert where(report) == [("line 4", "note", "agree")]
    assert "'z' at line 4, 'y' at line 3" in report.problems[0].message
    m = mapping(tmp_path, {"note": {"from": "note", "row": "last"}}, split_by=["wh"])
    docs, report = run(m, records)
    assert not report
    assert [(d.header["wh"], d.header["note"]) for d in docs] == [("W1", "x"), ("W2", "z")]


def test_a_miss_is_reported_at_the_row_the_value_came_from(tmp_path: Path) -> None:
    tables = {"whs": {"W1": "WH-1", "W2": "WH-2"}}
    records = rows("A ok s1 W1 1 x", "A ok s2 W1 1 x", "A ok s3 W9 1 x")
    # The last row wins: its value, its place.
    m = mapping(tmp_path, {"wh": {"from": "wh", "table": "whs", "row": "last"}}, tables=tables)
    _, report = run(m, records)
    assert where(report) == [("line 4", "wh", "table")]
    assert report.problems[0].message == (
        "'W9' is not in value table 'whs' (source field wh, column 仓库)"
    )
    # A split part's header is read at the part's first row, not the source document's.
    m = mapping(tmp_path, {"wh": {"from": "wh", "table": "whs"}}, tables=tables, split_by=["wh"])
    _, report = run(m, records)
    assert where(report) == [("line 4", "wh", "table")]


def test_a_miss_inside_an_aggregate_is_at_the_line_it_was_read_on(tmp_path: Path) -> None:
    expr = 'join(table("skus", concat(wh, "/", sku)), "|")'
    m = mapping(tmp_path, {"wh": {"expr": expr}}, tables={"skus": {"W1/s1": "1", "W1/s2": "2"}})
    _, report = run(m, rows("A ok s1 W1 1 x", "A ok s2 W1 1 x", "A ok s3 W1 1 x"))
    assert where(report) == [("line 4", "wh", "expr")]
    assert report.problems[0].message.endswith(
        "'W1/s3' is not in 'skus' (source field sku, column 商品; source field wh, column 仓库)"
    )


def test_a_miss_in_a_line_rule_names_the_source_field(tmp_path: Path) -> None:
    lines = {"sku": {"from": "sku", "table": "skus"}, "qty": "qty"}
    m = mapping(tmp_path, lines=lines, tables={"skus": {"s1": "S-1"}})
    _, report = run(m, rows("A ok s1 W1 1 x", "A ok s2 W1 1 x"))
    assert where(report) == [("line 3", "sku", "table")]
    assert report.problems[0].message.endswith("(source field sku, column 商品)")


@pytest.mark.parametrize(
    ("header", "extra", "expected"),
    [
        (
            {},
            {"lines": {"sku": {"from": "sku", "row": "first"}, "qty": "qty"}},
            "lines.sku.row: a line rule reads its own row",
        ),
        (
            {"note": {"from": "note", "row": "last"}},
            {"group_by": []},
            "header.note.row: each header is formed from one record here",
        ),
        (
            {"note": {"const": "-", "row": "first"}},
            {},
            "header.note.row: the rule reads no field",
        ),
        (
            {"note": {"expr": "join(note)", "row": "first"}},
            {},
            "header.note.row: the expression reads fields only inside aggregates",
        ),
    ],
)
def test_check_refuses_row_where_it_means_nothing(
    tmp_path: Path, header: dict[str, Any], extra: dict[str, Any], expected: str
) -> None:
    found = check_mapping(mapping(tmp_path, header, **extra), SOURCE, TARGET)
    assert any(expected in p for p in found), found


def test_row_takes_first_or_last_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="row"):
        mapping(tmp_path, {"note": {"from": "note", "row": "middle"}})

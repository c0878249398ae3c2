"""Nothing wrong is accepted: a file that is not what its layout says is a located problem
(exit 1 from validate/convert, quarantine in a run), never "0 documents, delivered"; no
amount is changed and no value dropped without a word. Where a lenient reading is
wanted, the layout must ask for it, and then it works."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import REPO, SAMPLES
from xchange.cli import main
from xchange.codecs.csv_codec import CsvCodec
from xchange.codecs.json_codec import JsonCodec
from xchange.codecs.xml_codec import XmlCodec
from xchange.errors import DecodeError
from xchange.layout import FieldSpec, FieldValueError, Layout
from xchange.report import Report

DEMO = REPO / "config" / "demo.toml"
SHOP_HEADER = (
    "订单号,下单时间,渠道,收货人,手机,省份,城市,区县,详细地址,"
    "商品编码,商品名称,数量,单价,发货仓,买家留言"
)
SHOP_ROW = (
    "EC20261121009,2026-11-21 09:00:00,天猫,赵六,13800000000,"
    "上海市,上海市,,人民路1号,SKU-1,杯子,1,9.90,上海仓,"
)


def validate(tmp_path: Path, route: str, name: str, data: bytes) -> tuple[int, str]:
    path = tmp_path / name
    path.write_bytes(data)
    result = CliRunner().invoke(
        main, ["validate", "--config", str(DEMO), "--route", route, str(path)]
    )
    return result.exit_code, result.output


def shop_csv(*lines: str, header: str = SHOP_HEADER) -> bytes:
    return ("\r\n".join([header, *lines]) + "\r\n").encode("gbk")


def read(codec: Any, data: bytes, layout: Layout) -> tuple[list[Any], Report]:
    report = Report("in")
    return list(codec.records(io.BytesIO(data), layout, "in", report)), report


def csv_layout(fields: list[str], **csv: object) -> Layout:
    return Layout.model_validate(
        {"name": "t", "codec": "csv", "fields": [{"name": f} for f in fields], "csv": csv}
    )


# --------------------------------------------------------------------------- CSV header


def test_a_csv_whose_only_line_is_not_the_header_is_a_problem_at_line_1(tmp_path: Path) -> None:
    """One line of anything on a CSV route is not "0 documents": it says the header is not
    the layout's, at line 1, and exits 1."""
    code, out = validate(tmp_path, "shop-orders", "orders_1.csv", b"hello world\r\n")
    assert code == 1, out
    assert "line 1: field (header): header: this is not the header of layout" in out
    assert "found 'hello world'" in out


def test_missing_required_columns_are_reported_whether_or_not_rows_follow(
    tmp_path: Path,
) -> None:
    """A header without 手机 is reported at line 1 with no data rows and with rows."""
    header = SHOP_HEADER.replace("手机,", "")
    row = SHOP_ROW.replace("13800000000,", "")
    for data in (shop_csv(header=header), shop_csv(row, header=header)):
        code, out = validate(tmp_path, "shop-orders", "orders_2.csv", data)
        assert code == 1, out
        assert "line 1: field 手机: column: required column '手机' is missing" in out


def test_ragged_rows_do_not_hide_a_wrong_header(tmp_path: Path) -> None:
    """A JSON document given to a CSV route: the header problem comes first, even when
    the rows beyond it fill the report's cap."""
    doc = json.dumps({"orders": [{"order_no": f"SO{i}", "items": [1, 2]} for i in range(300)]})
    data = doc.replace("}, {", "},\n{").encode("gbk")
    code, out = validate(tmp_path, "shop-orders", "orders_3.csv", data)
    assert code == 1
    first = out.splitlines()[2]
    assert "line 1: field (header): header: this is not the header" in first


def test_extra_and_missing_optional_columns_are_problems_unless_the_layout_allows_them() -> None:
    """A column the layout does not declare would have its values dropped: a problem,
    unless unknown = "ignore" (or "warn": read on, with a warning naming it; the older
    extra_columns = "ignore" still says the same); a missing optional column likewise,
    unless missing_columns = "allow"."""
    data = b"a,c,d\r\n1,3,4\r\n"
    _, strict = read(CsvCodec(), data, csv_layout(["a", "b", "c"]))
    assert [(p.field, p.rule) for p in strict.problems] == [
        ("b", "column"),
        ("(header)", "unknown"),
    ]
    assert "'d'" in strict.problems[1].message
    for relax in ({"unknown": "ignore"}, {"unknown": "warn"}, {"extra_columns": "ignore"}):
        layout = csv_layout(["a", "b", "c"], missing_columns="allow")
        if "unknown" in relax:
            layout = layout.model_copy(update=relax)
        else:
            layout = csv_layout(["a", "b", "c"], missing_columns="allow", **relax)
        records, relaxed = read(CsvCodec(), data, layout)
        assert not relaxed, relax
        assert records[0].values == {"a": "1", "b": None, "c": "3"}
        assert bool(relaxed.warnings) == (relax == {"unknown": "warn"})
    old = csv_layout(["a"], extra_columns="ignore")
    assert 'unknown = "ignore"' in old.superseded()[0]


def test_a_header_cell_with_spaces_around_a_name_is_not_that_column() -> None:
    """``数量 `` (a trailing space) is not the column ``数量``: a problem naming the cell,
    unless the layout says header_spaces = "trim"."""
    data = "订单号,数量 \r\nA1,3\r\n".encode()
    _, strict = read(CsvCodec(), data, csv_layout(["订单号", "数量"]))
    assert [(p.field, p.rule, p.value) for p in strict.problems] == [("数量", "header", "数量 ")]
    assert "header_spaces" in strict.problems[0].message
    records, relaxed = read(CsvCodec(), data, csv_layout(["订单号", "数量"], header_spaces="trim"))
    assert not relaxed
    assert records[0].values == {"订单号": "A1", "数量": "3"}


def test_a_column_named_twice_in_the_header_is_ambiguous() -> None:
    _, report = read(CsvCodec(), b"a,b,a\r\n1,2,3\r\n", csv_layout(["a", "b"]))
    assert [(p.field, p.rule) for p in report.problems] == [("a", "column")]
    assert "appears 2 times" in report.problems[0].message


# --------------------------------------------------------------------------- CSV quotes


def test_a_quote_inside_an_unquoted_field_is_reported_at_line_and_column() -> None:
    """`x, "y, z"` is not two fields silently split in three: RFC 4180 says the quote is
    bare; the layout may ask for skipinitialspace, and then it is two fields."""
    data = b'a,b\r\nx, "y, z"\r\n'
    records, report = read(CsvCodec(), data, csv_layout(["a", "b"]))
    assert records == []
    (problem,) = report.problems
    assert (problem.location, problem.rule) == ("line 2", "quote")
    assert problem.message.startswith("column 4: a quote inside a field")
    records, report = read(CsvCodec(), data, csv_layout(["a", "b"], skipinitialspace=True))
    assert not report, report.text()
    assert records[0].values == {"a": "x", "b": "y, z"}


# --------------------------------------------------------------------------- JSON


def json_layout(**opts: object) -> Layout:
    return Layout.model_validate(
        {
            "name": "t",
            "codec": "json",
            "fields": [{"name": "id"}],
            "json": {"records": "$.orders[*]", **opts},
        }
    )


@pytest.mark.parametrize(
    "document",
    [
        {"Result": {"ResponseStatus": {"IsSuccess": True}}},  # a Kingdee View response
        {"order": {"id": 450789469, "line_items": []}},  # a Shopify order
        {"data": {"orders": []}},
        [],
    ],
    ids=["kingdee-view", "shopify-order", "nested-elsewhere", "a-list"],
)
def test_a_json_document_without_its_records_path_is_a_problem(document: object) -> None:
    """ "The records path matches nothing" is a problem naming the path."""
    records, report = read(JsonCodec(), json.dumps(document).encode(), json_layout())
    assert records == []
    (problem,) = report.problems
    assert problem.rule == "records"
    assert "the records path $.orders[*] matches nothing in this document" in problem.message


def test_an_empty_records_array_is_nothing_to_do() -> None:
    records, report = read(JsonCodec(), b'{"orders": []}', json_layout())
    assert records == [] and not report


def test_the_oms_route_refuses_a_kingdee_view_response(tmp_path: Path) -> None:
    data = json.dumps({"Result": {"Result": {"FBillNo": "XSDD001"}}}).encode()
    code, out = validate(tmp_path, "oms-kingdee-orders", "sales_orders_x.json", data)
    assert code == 1
    assert "matches nothing in this document (its top-level keys: Result)" in out


@pytest.mark.parametrize(
    "text",
    [
        '{"orders": [{"id": "1"}], "orders": [{"id": "2"}]}',
        '{"meta": {"a": 1, "a": 2}, "orders": []}',
        '{"orders": [], "meta": 1, "meta": 2}',
        '{"orders": [{"id": "1", "id": "2"}]}',
    ],
    ids=["records-key", "before", "after", "inside-a-record"],
)
def test_duplicate_keys_are_refused_at_every_level_while_streaming(text: str) -> None:
    with pytest.raises(DecodeError, match="duplicate key"):
        read(JsonCodec(), text.encode(), json_layout())


def test_a_records_key_given_twice_is_refused_even_when_last_wins() -> None:
    """Under duplicate_keys = "last" the records cannot be taken from the last copy while
    streaming: which array holds them is ambiguous, so it is refused."""
    text = '{"orders": [{"id": "1"}], "orders": [{"id": "2"}]}'
    with pytest.raises(DecodeError, match="on the records path"):
        read(JsonCodec(), text.encode(), json_layout(duplicate_keys="last"))
    records, report = read(
        JsonCodec(),
        b'{"a": 1, "a": 2, "orders": [{"id": "1"}]}',
        json_layout(duplicate_keys="last"),
    )
    assert [r.values for r in records] == [{"id": "1"}]
    assert {(p.field, p.rule) for p in report.problems} == {("$.a", "unknown")}


@pytest.mark.parametrize(
    "text",
    [
        '{"id": 0,}',
        '{"orders": [{"id": "1"},]}',
        '{"orders": [], }',
        '{"x": [1,], "orders": []}',
        '{"orders": [] "x": 1}',
        '{"orders": []} {}',
        '{,"orders": []}',
        '{"x" 1, "orders": []}',
    ],
)
def test_the_streaming_reader_refuses_what_a_whole_document_parse_refuses(text: str) -> None:
    with pytest.raises(DecodeError):
        read(JsonCodec(), text.encode(), json_layout())


# --------------------------------------------------------------------------- XML


STOCK = SAMPLES / "wms-stock-count" / "in" / "stockcount_SC20261121001.xml"


def test_an_xml_records_path_that_matches_nothing_says_where_it_stopped(tmp_path: Path) -> None:
    data = STOCK.read_bytes().replace(b"Lines>", b"Items>")
    code, out = validate(tmp_path, "wms-stock-count", "stockcount_x.xml", data)
    assert code == 1
    assert (
        "the records path /StockCount/Lines/Line matches nothing in this document: "
        "under /StockCount there is no <Lines> (found <Header>, <Items>)"
    ) in out


def xml_layout(**field: object) -> Layout:
    return Layout.model_validate(
        {
            "name": "t",
            "codec": "xml",
            "xml": {"root": "Delivery", "records": "/Delivery/Order"},
            "fields": [{"name": "waybill", "column": "package/expressCode", **field}],
        }
    )


DELIVERY = (
    b"<Delivery><Order><package><expressCode>SF1</expressCode></package>"
    b"<package><expressCode>SF2</expressCode></package></Order></Delivery>"
)


def test_several_xml_matches_where_one_is_expected_is_a_problem() -> None:
    records, report = read(XmlCodec(), DELIVERY, xml_layout())
    (problem,) = report.problems
    assert problem.rule == "multiple"
    assert "path 'package/expressCode' matches 2 elements" in problem.message
    assert records[0].values == {"waybill": None}


@pytest.mark.parametrize(
    ("multiple", "value"), [("first", "SF1"), ("last", "SF2"), ("join", "SF1|SF2")]
)
def test_the_layout_says_what_several_xml_matches_mean(multiple: str, value: str) -> None:
    records, report = read(XmlCodec(), DELIVERY, xml_layout(multiple=multiple))
    assert not report
    assert records[0].values == {"waybill": value}


def test_an_empty_xml_file_is_the_file_is_empty(tmp_path: Path) -> None:
    code, out = validate(tmp_path, "wms-stock-count", "stockcount_e.xml", b"")
    assert code == 1
    assert "the file is empty" in out and "line 0" not in out


def test_an_xml_file_without_a_declaration_is_read_in_the_layouts_encoding(
    tmp_path: Path,
) -> None:
    """The stock count layout says GB18030: without an XML declaration, that applies."""
    data = STOCK.read_bytes().split(b"\n", 1)[1]
    assert not data.startswith(b"<?xml")
    code, out = validate(tmp_path, "wms-stock-count", "stockcount_nodecl.xml", data)
    assert code == 0, out


# --------------------------------------------------------------------------- decimals


def decimal(**options: object) -> FieldSpec:
    return FieldSpec.model_validate({"name": "price", "type": "decimal", "scale": 2, **options})


@pytest.mark.parametrize("text", ["12,99", "0,5", "1,2,9,9.00", "1.299,00", "1,2345.00", "¥12"])
def test_a_comma_is_a_group_separator_only_between_groups_of_three(text: str) -> None:
    """No amount is changed by removing commas: 12,99 is not 1299.00."""
    with pytest.raises(FieldValueError) as info:
        decimal(group_separator=",").parse(text)
    assert info.value.rule == "type"
    assert info.value.message.startswith("expected a decimal number")


def test_a_decimal_comma_gets_a_hint_not_a_misleading_scale_message() -> None:
    with pytest.raises(FieldValueError) as info:
        decimal().parse("1.299,00")
    assert "decimal_separator" in info.value.message and "decimal places" not in info.value.message


@pytest.mark.parametrize(
    ("text", "options", "value"),
    [
        ("1,299.00", {"group_separator": ","}, "1299.00"),
        ("-1,000", {"group_separator": ","}, "-1000"),
        ("1.299,00", {"decimal_separator": ",", "group_separator": "."}, "1299.00"),
        ("12,99", {"decimal_separator": ",", "group_separator": "."}, "12.99"),
        ("1 299,5", {"decimal_separator": ",", "group_separator": " "}, "1299.5"),
        ("¥12.30", {"currency": ["¥", "￥"]}, "12.30"),
        ("-￥1,299.00", {"currency": ["¥", "￥"], "group_separator": ","}, "-1299.00"),
        ("12.30元", {"currency": ["元"]}, "12.30"),
        ("1299", {"group_separator": ""}, "1299"),
    ],
)
def test_separators_and_currency_are_what_the_field_declares(
    text: str, options: dict[str, object], value: str
) -> None:
    from decimal import Decimal

    assert decimal(**options).parse(text) == Decimal(value)


def test_a_grouped_amount_is_refused_when_the_field_has_no_group_separator() -> None:
    with pytest.raises(FieldValueError):
        decimal(group_separator="").parse("1,299.00")


# --------------------------------------------------------------------------- all problems


def test_validate_reports_every_problem_of_a_row(tmp_path: Path) -> None:
    """A row with a bad price and an unknown channel reports both, each once."""
    row = SHOP_ROW.replace("天猫", "抖音").replace(",9.90,", ',"12,99",')
    code, out = validate(tmp_path, "shop-orders", "orders_4.csv", shop_csv(row))
    assert code == 1
    assert "line 2: field 单价: type: expected a decimal number" in out
    assert "line 2: field Channel: table: '抖音' is not in value table 'channels'" in out
    assert "2 problem(s)" in out
    assert "UnitPrice" not in out  # fed by the bad price: not reported a second time

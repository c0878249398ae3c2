"""An ERP's import template is filled in its layout: every part but the filled sheet's
data rows is written as the template has it, the same bytes every time."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import date
from decimal import Decimal

import openpyxl
import pytest

from tests.conftest import FORMATS, SAMPLES
from xchange.codecs import codec_for
from xchange.errors import ConfigError, MappingError
from xchange.layout import load_layout
from xchange.mapping import Document
from xchange.report import Report

TEMPLATE = FORMATS / "templates" / "kingdee-sale-order-import.xlsx"
OUTPUT = SAMPLES / "kingdee-excel-import" / "expected" / "SAL_SaleOrder_EC20261121003.xlsx"
SHEET = "xl/worksheets/sheet2.xml"


def parts(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        return {info.filename: zipped.read(info) for info in zipped.infolist()}


def test_the_filled_template_keeps_every_other_part_byte_for_byte() -> None:
    template, filled = parts(TEMPLATE.read_bytes()), parts(OUTPUT.read_bytes())
    assert list(filled) == list(template)
    assert {n for n in template if template[n] != filled[n]} == {SHEET}
    # the sheet: its rows above the data and everything after them as they were
    before, after = template[SHEET], filled[SHEET]
    assert after.startswith(before[: before.index(b'<row r="3"')].replace(b"A1:M3", b"A1:M4"))
    assert after.endswith(before[before.index(b"</sheetData>") :])


def test_the_filled_sheet_holds_the_payloads_lines_by_value() -> None:
    payload = json.loads(
        (SAMPLES / "kingdee-excel-import" / "in" / "kd_sale_order_EC20261121003.json").read_text()
    )["Model"]
    book = openpyxl.load_workbook(io.BytesIO(OUTPUT.read_bytes()))
    assert book.sheetnames == ["说明", "销售订单"]
    rows = list(book["销售订单"].iter_rows(min_row=3, values_only=True))
    assert len(rows) == len(payload["FSaleOrderEntry"])
    for values, entry in zip(rows, payload["FSaleOrderEntry"], strict=True):
        assert values[0] == payload["FBillNo"] and values[2] == payload["FDate"]
        assert values[7] == entry["FMaterialId"]["FNumber"]
        assert (values[8], Decimal(str(values[9]))) == (
            entry["FQty"],
            Decimal(str(entry["FTaxPrice"])),
        )
    # and the styles of the template's first data row are on each cell written
    sheet = book["销售订单"]
    assert sheet["J3"].number_format == sheet["J4"].number_format == "#,##0.00"


def test_a_filled_sheet_reads_back_as_what_was_written_and_the_bytes_repeat() -> None:
    lay = load_layout(FORMATS, "kingdee-sale-order-import")
    codec = codec_for(lay)
    doc = Document(
        "x",
        {
            "FBillNo": "EC1", "FBillTypeID": "XSDD01_SYS", "FDate": date(2026, 11, 21),
            "FSaleOrgId": "100", "FCustId": "C<&>1", "FSettleCurrId": "PRE001", "FNote": " 留言 ",
            "FMaterialId": "01.01", "FQty": 2, "FTaxPrice": Decimal("0.30"),
            "FAllAmount": Decimal("129.90"), "FEntryTaxRate": Decimal("13"),
            "FDeliveryDate": date(2026, 11, 23),
        },
        [],
    )  # fmt: skip
    first, second = io.BytesIO(), io.BytesIO()
    assert codec.write([doc], lay, "out.xlsx", first) == 1
    codec.write([doc], lay, "out.xlsx", second)
    assert first.getvalue() == second.getvalue()
    report = Report("out.xlsx")
    [record] = codec.records(io.BytesIO(first.getvalue()), lay, "out.xlsx", report)
    assert not report, report.problems
    assert record.values["FCustId"] == "C<&>1" and record.values["FNote"] == "留言"
    assert record.values["FTaxPrice"] == Decimal("0.30") and record.values["FQty"] == 2


def test_a_template_without_a_fields_column_is_refused_naming_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = (FORMATS / "kingdee-sale-order-import.toml").read_text(encoding="utf-8")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "kingdee-sale-order-import.xlsx").write_bytes(TEMPLATE.read_bytes())
    (tmp_path / "kingdee-sale-order-import.toml").write_text(
        text.replace('name = "FNote"', 'name = "FRemark"'), encoding="utf-8"
    )
    lay = load_layout(tmp_path, "kingdee-sale-order-import")
    doc = Document("x", {}, [])
    with pytest.raises(ConfigError, match="has no column 'FRemark'"):
        codec_for(lay).write([doc], lay, "out.xlsx", io.BytesIO())


def test_check_names_a_template_that_does_not_fit_the_layout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A route writing xlsx is refused at load (so by `xchange check`), not at its first file."""
    import shutil

    from tests.conftest import REPO
    from xchange.config import load_config
    from xchange.pipeline import Pipeline

    formats = tmp_path / "formats"
    shutil.copytree(FORMATS, formats)
    (formats / "templates" / "kingdee-sale-order-import.xlsx").write_bytes(b"not a workbook")
    route = load_config(REPO / "config" / "demo.toml").route("kingdee-excel-import")
    with pytest.raises(ConfigError, match=r"xlsx is a zip"):
        Pipeline(route, formats)


def test_text_that_looks_like_a_formula_is_written_as_text() -> None:
    lay = load_layout(FORMATS, "kingdee-sale-order-import")
    values = {spec.name: "x" for spec in lay.fields if spec.type == "string"}
    values.update(
        FNote='=HYPERLINK("http://evil.example/","x")',
        FDate=date(2026, 11, 21),
        FDeliveryDate=date(2026, 11, 21),
        FQty=1,
        FTaxPrice=Decimal("1.00"),
        FAllAmount=Decimal("1.00"),
        FEntryTaxRate=Decimal("13.00"),
    )
    out = io.BytesIO()
    codec_for(lay).write([Document("x", values, [])], lay, "out.xlsx", out)
    sheet = parts(out.getvalue())[SHEET]
    assert b"<f>" not in sheet and b"<f " not in sheet
    assert b'<t>=HYPERLINK("http://evil.example/","x")</t>' in sheet


def test_text_longer_than_an_excel_cell_holds_is_refused_not_cut() -> None:
    """An Excel cell holds 32767 characters (UTF-16 units: 𠀀 counts two); Excel would
    cut a longer text when it opens the workbook, and the ERP import read other data."""
    lay = load_layout(FORMATS, "kingdee-sale-order-import")
    values: dict[str, object] = {spec.name: "x" for spec in lay.fields if spec.type == "string"}
    values.update(
        FDate=date(2026, 11, 21),
        FDeliveryDate=date(2026, 11, 21),
        FQty=1,
        FTaxPrice=Decimal("1.00"),
        FAllAmount=Decimal("1.00"),
        FEntryTaxRate=Decimal("13.00"),
    )
    codec = codec_for(lay)
    for note, fits in (("a" * 32767, True), ("a" * 32768, False), ("\U00020000" * 16384, False)):
        values["FNote"] = note
        out = io.BytesIO()
        if fits:
            codec.write([Document("x", dict(values), [])], lay, "out.xlsx", out)
            continue
        with pytest.raises(MappingError, match="an Excel cell holds at most 32767"):
            codec.write([Document("x", dict(values), [])], lay, "out.xlsx", out)


def test_rows_past_excels_last_row_are_refused() -> None:
    """A sheet ends at row 1048576: a payload of more lines than fit from the template's
    first row is refused, not written into a workbook Excel would cut."""
    lay = load_layout(FORMATS, "kingdee-sale-order-import")
    late = lay.model_copy(update={"xlsx": lay.xlsx.model_copy(update={"first_row": 1_048_575})})
    values: dict[str, object] = {spec.name: "x" for spec in lay.fields if spec.type == "string"}
    values.update(
        FDate=date(2026, 11, 21),
        FDeliveryDate=date(2026, 11, 21),
        FQty=1,
        FTaxPrice=Decimal("1.00"),
        FAllAmount=Decimal("1.00"),
        FEntryTaxRate=Decimal("13.00"),
    )
    docs = [Document(str(i), dict(values), []) for i in range(3)]
    codec_for(late).write(docs[:2], late, "out.xlsx", io.BytesIO())
    with pytest.raises(MappingError, match="a sheet ends at row 1048576"):
        codec_for(late).write(docs, late, "out.xlsx", io.BytesIO())


def test_a_lone_surrogate_is_refused_with_its_row_and_field_not_an_internal_error() -> None:
    """JSON's ``"\\ud800"`` reads as a lone surrogate, which no XML can hold: the file is
    refused (and quarantined) naming where, instead of failing at every look."""
    lay = load_layout(FORMATS, "kingdee-sale-order-import")
    values: dict[str, object] = {spec.name: "x" for spec in lay.fields if spec.type == "string"}
    values.update(
        FDate=date(2026, 11, 21),
        FDeliveryDate=date(2026, 11, 21),
        FQty=1,
        FTaxPrice=Decimal("1.00"),
        FAllAmount=Decimal("1.00"),
        FEntryTaxRate=Decimal("13.00"),
        FNote="\ud800 note",
    )
    with pytest.raises(MappingError, match=r"row \d+, FNote: .*lone surrogate"):
        codec_for(lay).write([Document("x", values, [])], lay, "out.xlsx", io.BytesIO())

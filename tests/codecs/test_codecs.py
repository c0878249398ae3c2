"""Codec behaviours a partner relies on: encodings, paths, strictness, exact numbers."""

from __future__ import annotations

import io
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import FORMATS, REPO, SAMPLES
from xchange.codecs.json_codec import JsonCodec
from xchange.codecs.text import decode
from xchange.codecs.xml_codec import XmlCodec
from xchange.config import load_config
from xchange.errors import DecodeError, ValidationFailed, XchangeError
from xchange.layout import Layout, load_layout
from xchange.pipeline import Pipeline
from xchange.report import Report


def read_all(codec: object, data: bytes, layout: Layout, origin: str, report: Report) -> list:
    """All records of ``data`` (the codecs stream them)."""
    return list(codec.records(io.BytesIO(data), layout, origin, report))  # type: ignore[attr-defined]


NOW = datetime(2026, 11, 21, 12, 0)
DEMO = load_config(REPO / "config" / "demo.toml")


def pipeline(route: str) -> Pipeline:
    return Pipeline(DEMO.route(route), FORMATS)


def test_gb18030_four_byte_characters_survive_xml_in_and_csv_out() -> None:
    """𠮷 (4 bytes in GB18030) read from a GB18030 XML is written intact in UTF-8 CSV."""
    source = SAMPLES / "wms-stock-count" / "in" / "stockcount_SC20261121001.xml"
    assert "𠮷".encode("gb18030") in source.read_bytes()
    (out,) = pipeline("wms-stock-count").convert(source.read_bytes(), source.name, NOW)
    assert out.data.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM for Excel users
    assert "𠮷野家联名".encode() in out.data


def test_encoding_detection_order_is_bom_then_utf8_then_gb18030() -> None:
    """auto: a BOM wins, then strict UTF-8, then GB18030 - never GB18030 over valid UTF-8."""
    assert decode("订单".encode("utf-16"), "auto", "f") == ("订单", "utf-16")
    assert decode(b"\xef\xbb\xbf" + "订单".encode(), "auto", "f") == ("订单", "utf-8-sig")
    assert decode("订单".encode(), "auto", "f") == ("订单", "utf-8")
    assert decode("订单".encode("gbk"), "auto", "f") == ("订单", "gb18030")


def test_xml_with_a_doctype_is_quarantined_as_a_decode_error() -> None:
    """An otherwise valid stock count carrying a DOCTYPE is refused with a clear reason."""
    source = SAMPLES / "wms-stock-count" / "in" / "stockcount_SC20261121001.xml"
    data = source.read_bytes().replace(
        b"?>\n<StockCount", b'?>\n<!DOCTYPE StockCount [<!ENTITY x "y">]>\n<StockCount', 1
    )
    with pytest.raises(DecodeError, match="DOCTYPE"):
        pipeline("wms-stock-count").convert(data, source.name, NOW)


def test_xml_errors_name_the_line_and_element_path() -> None:
    """A bad value in an XML record is located by line and element path."""
    source = SAMPLES / "purchase-inbound" / "in" / "inbound_20261121.xml"
    data = source.read_bytes().replace(b"<Qty>50</Qty>", b"<Qty>fifty</Qty>")
    with pytest.raises(ValidationFailed) as info:
        pipeline("purchase-inbound").convert(data, source.name, NOW)
    (problem,) = info.value.report.problems
    assert problem.location == "line 19 /InboundConfirmations/Receipt[2]/Items/Item[1]"
    assert (problem.field, problem.rule, problem.value) == ("Qty", "type", "fifty")


def test_malformed_xml_reports_the_line() -> None:
    """Broken markup is a decode error naming the line."""
    with pytest.raises(DecodeError, match=r"line 3: XML not well-formed"):
        pipeline("purchase-inbound").convert(
            b"<InboundConfirmations>\n<Receipt no='1'>\n</Receip>\n", "x.xml", NOW
        )


def test_xml_root_element_must_match_the_layout() -> None:
    """A file of another kind is refused by its root element, not half-read."""
    with pytest.raises(DecodeError, match="root element is <Orders>"):
        pipeline("purchase-inbound").convert(b"<Orders/>", "x.xml", NOW)


def test_xsd_named_by_a_layout_is_enforced(tmp_path: Path) -> None:
    """When a layout names an XSD, schema violations are reported with their line."""
    (tmp_path / "inbound.xsd").write_text(
        """<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:element name="InboundConfirmations">
    <xs:complexType><xs:sequence>
      <xs:element name="Receipt" maxOccurs="unbounded">
        <xs:complexType><xs:sequence><xs:any processContents="skip" maxOccurs="unbounded"/>
        </xs:sequence><xs:attribute name="no" type="xs:string" use="required"/></xs:complexType>
      </xs:element>
    </xs:sequence></xs:complexType>
  </xs:element>
</xs:schema>"""
    )
    text = (FORMATS / "wms-purchase-inbound.toml").read_text(encoding="utf-8")
    (tmp_path / "wms-purchase-inbound.toml").write_text(
        text.replace('line = "Item"', 'line = "Item"\nxsd = "inbound.xsd"'), encoding="utf-8"
    )
    layout = load_layout(tmp_path, "wms-purchase-inbound")
    report = Report("in.xml")
    read_all(
        XmlCodec(),
        b"<InboundConfirmations>\n<Receipt/>\n</InboundConfirmations>",
        layout,
        "in.xml",
        report,
    )
    assert {(p.location, p.rule) for p in report.problems} == {("line 2", "xsd")}
    assert any("'no' is required" in p.message for p in report.problems)


def json_layout(**json_opts: object) -> Layout:
    return Layout.model_validate(
        {
            "name": "j",
            "codec": "json",
            "shape": "rows",
            "json": {"records": "$[*]", **json_opts},
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "amount", "type": "decimal"},
                {"name": "who", "column": "customer.name"},
            ],
        }
    )


def test_json_duplicate_keys_are_refused_by_default() -> None:
    """The stated rule: a key twice in one object is an error (or last wins, if chosen)."""
    data = b'[{"id": 1, "id": 2}]'
    with pytest.raises(DecodeError, match="duplicate key 'id'"):
        read_all(JsonCodec(), data, json_layout(), "d.json", Report("d.json"))
    (rec,) = read_all(
        JsonCodec(), data, json_layout(duplicate_keys="last"), "d.json", Report("d.json")
    )
    assert rec.values["id"] == 2


def test_json_amounts_and_big_integers_stay_exact() -> None:
    """Amounts are Decimal from the text, never float; big integers are not rounded."""
    data = b'[{"id": 123456789012345678901234567890, "amount": 0.1, "customer": {"name": "A"}}]'
    (rec,) = read_all(JsonCodec(), data, json_layout(), "d.json", Report("d.json"))
    assert rec.values == {
        "id": 123456789012345678901234567890,
        "amount": Decimal("0.1"),
        "who": "A",
    }


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("1" * 40, "1" * 40 + ".00"),
        ("1" * 40 + ".5", "1" * 40 + ".50"),
        ("-" + "9" * 30 + ".10", "-" + "9" * 30 + ".10"),
        ("0.000", "0.00"),
    ],
)
def test_amounts_of_any_length_are_read_and_written_exactly(text: str, written: str) -> None:
    """A decimal field's scale is checked digit by digit, not through an arithmetic
    context of 28 digits: a 40-digit amount is written exactly, never an internal error."""
    from xchange.layout import FieldSpec, FieldValueError

    spec = FieldSpec.model_validate({"name": "amount", "type": "decimal", "scale": 2})
    assert spec.render(spec.parse(text)) == written
    with pytest.raises(FieldValueError, match="more than 2 decimal places"):
        spec.parse(text.split(".")[0] + ".001")


def test_ndjson_records_are_located_by_line() -> None:
    """NDJSON: one record per line, problems say which line."""
    data = b'{"id": 1}\n{"id": "x"}\n'
    report = Report("d.ndjson")
    read_all(JsonCodec(), data, json_layout(ndjson=True, records="$"), "d.ndjson", report)
    (problem,) = report.problems
    assert problem.location == "line 2 $" and problem.rule == "type"


def test_invalid_utf8_json_is_refused_with_the_line() -> None:
    """Bytes that are not UTF-8 are refused, not decoded with replacement characters."""
    with pytest.raises(DecodeError, match="line 2: bytes ff are not valid utf-8"):
        read_all(JsonCodec(), b'[\n{"id": "\xff"}]', json_layout(), "d.json", Report("d.json"))


def test_kingdee_output_is_in_the_save_api_shape() -> None:
    """OMS orders become {"Model": {..., "FSaleOrderEntry": [...]}} with codes mapped."""
    import json

    source = SAMPLES / "oms-kingdee-orders" / "in" / "sales_orders_20261121.json"
    outputs = pipeline("oms-kingdee-orders").convert(source.read_bytes(), source.name, NOW)
    model = json.loads(outputs[1].data)["Model"]
    assert model["FCustId"] == {"FNumber": "CUST0002"}
    assert model["FDate"] == "2026-11-21"
    assert [e["FTaxPrice"] for e in model["FSaleOrderEntry"]] == [1299, 0.1]
    assert b'"FTaxPrice": 0.10' in outputs[1].data  # written digit for digit, not 0.1000000001


@pytest.mark.parametrize("route", [r.name for r in DEMO.routes])
@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=400), cut=st.integers(min_value=0, max_value=2000))
@example(data=b"}", cut=60)  # a root tag holding "}": the message must not crash
def test_arbitrary_and_mutated_bytes_give_an_output_or_a_reason(
    route: str, data: bytes, cut: int
) -> None:
    """Random bytes, and a valid sample cut short or spliced with them, never crash a codec:
    each yields outputs or an xchange error with a one-line reason."""
    sample = next((SAMPLES / route / "in").iterdir()).read_bytes()
    for candidate in (data, sample[:cut], sample[:cut] + data + sample[cut:]):
        try:
            pipeline(route).convert(candidate, "fuzz", NOW)
        except XchangeError as exc:
            assert str(exc).splitlines()[0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4), max_size=60), st.integers(1, 5))
def test_record_line_numbers_are_kept_exactly_in_little_memory(
    steps: list[int], first: int
) -> None:
    """The CSV line index gives back every record's line, storing only the irregular ones."""
    from xchange.codecs.csv_codec import LineIndex

    index, lines, line = LineIndex(), [], first
    for step in steps:
        line += step
        lines.append(line)
        index.add(line)
    assert [index[i] for i in range(len(lines))] == lines
    assert len(index._at) <= 1 + sum(1 for s in steps[1:] if s != 1)

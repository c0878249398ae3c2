"""Encodings as they really are: one GB18030 mapping (GB18030-2022, as the WHATWG index has
it) on every kind of route; ``auto`` says when its guess is weak and names the likely
encoding; mojibake is warned about (or refused when the layout asks)."""

from __future__ import annotations

import codecs
import io
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import REPO
from xchange.cli import main
from xchange.codecs.csv_codec import CsvCodec
from xchange.codecs.json_codec import JsonCodec
from xchange.codecs.text import GB18030_CODEC, decode, encode
from xchange.codecs.xml_codec import XmlCodec
from xchange.errors import DecodeError
from xchange.layout import Layout
from xchange.mapping import Document
from xchange.report import Report

#: The two-byte codes where Python's gb18030 codec (private-use code points) and the
#: WHATWG Encoding Standard's index-gb18030 (GB18030-2022; identifier ff1c9a92...,
#: 2024-09-18) disagree, with the index's code points.
WHATWG_FIXES = {
    "a3a0": 0x3000,
    "a6d9": 0xFE10,
    "a6da": 0xFE12,
    "a6db": 0xFE11,
    "a6dc": 0xFE13,
    "a6dd": 0xFE14,
    "a6de": 0xFE15,
    "a6df": 0xFE16,
    "a6ec": 0xFE17,
    "a6ed": 0xFE18,
    "a6f3": 0xFE19,
    "a8bc": 0x1E3F,
    "fe59": 0x9FB4,
    "fe61": 0x9FB5,
    "fe66": 0x9FB6,
    "fe67": 0x9FB7,
    "fe6d": 0x9FB8,
    "fe7e": 0x9FB9,
    "fe90": 0x9FBA,
    "fea0": 0x9FBB,
}


def two_byte_codes() -> list[bytes]:
    return [
        bytes([lead, trail])
        for lead in range(0x81, 0xFF)
        for trail in (*range(0x40, 0x7F), *range(0x80, 0xFF))
    ]


def layout(codec: str, encoding: str = "gb18030", **extra: Any) -> Layout:
    spec: dict[str, Any] = {
        "name": "t",
        "codec": codec,
        "encoding": encoding,
        "fields": [{"name": "v", "trim": False}],
        "check_text": False,  # every two-byte code at once is no Chinese text
        "mojibake": "warn",  # nor is it free of Latin-1 pairs
        **extra,
    }
    if codec == "xml":
        spec["xml"] = {"root": "R"}
    return Layout.model_validate(spec)


def read(codec: Any, data: bytes, lay: Layout) -> tuple[list[Any], Report]:
    report = Report("in")
    return list(codec.records(io.BytesIO(data), lay, "in", report)), report


def test_the_twenty_codes_python_gets_wrong_read_as_gb18030_2022() -> None:
    """Each code where Python's codec gives a private-use character is read as the WHATWG
    index says, and written back to the same two bytes."""
    for code, point in WHATWG_FIXES.items():
        data = bytes.fromhex(code)
        text, _ = decode(data, "gb18030", "t")
        assert text == chr(point), code
        if point != 0x3000:  # U+3000 has its own code, A1A1
            assert encode(text, "gb18030", "t") == data
    assert encode("\u3000", "gb18030", "t") == bytes.fromhex("a1a1")


def test_every_other_two_byte_code_reads_as_pythons_codec_does() -> None:
    for data in two_byte_codes():
        if data.hex() in WHATWG_FIXES:
            continue
        try:
            expected = data.decode("gb18030")
        except UnicodeDecodeError:
            continue
        assert data.decode(GB18030_CODEC) == expected


def test_csv_json_and_xml_routes_read_every_two_byte_code_alike() -> None:
    """All valid two-byte GB18030 codes in one value, through the CSV, JSON and XML codecs
    (XML is transcoded by xchange's codec, not libxml2's): the same text on every route."""
    chars = []
    for data in two_byte_codes():
        try:
            chars.append(data.decode(GB18030_CODEC))
        except UnicodeDecodeError:
            continue
    value = "".join(c for c in chars if c not in '<>&"\\')
    expected = value
    as_gb = encode(value, "gb18030", "t")
    csv_records, csv_report = read(CsvCodec(), b"v\r\n" + as_gb + b"\r\n", layout("csv"))
    json_records, json_report = read(JsonCodec(), b'{"v": "' + as_gb + b'"}', layout("json"))
    xml = b'<?xml version="1.0" encoding="GB18030"?>\n<R><v>' + as_gb + b"</v></R>"
    xml_records, xml_report = read(XmlCodec(), xml, layout("xml"))
    for records, report in (
        (csv_records, csv_report),
        (json_records, json_report),
        (xml_records, xml_report),
    ):
        assert not report, report.text()
        assert records[0].values["v"] == expected
    assert all(chr(p) in expected for p in WHATWG_FIXES.values())


def test_written_gb18030_uses_the_two_byte_codes_on_every_codec() -> None:
    out = io.BytesIO()
    CsvCodec().write([Document("", {"v": "\ufe10\u9fb4"})], layout("csv"), "t", out)
    assert out.getvalue().endswith(bytes.fromhex("a6d9fe59") + b"\r\n")
    out = io.BytesIO()
    XmlCodec().write([Document("", {"v": "\ufe10\u9fb4"})], layout("xml"), "t", out)
    assert bytes.fromhex("a6d9fe59") in out.getvalue()


# --------------------------------------------------------------------------- auto

TRADITIONAL = (
    "訂單號,下單時間,渠道,收貨人,手機,省份,城市,區縣,詳細地址,商品編碼,商品名稱,數量,單價\n"
    "臺北市,信義區,忠孝東路五段,純棉T恤 白色,保溫杯,藍牙耳機,限量帆布包,"
    "發票抬頭:北京某某貿易有限公司\n"
)
JAPANESE = (
    "注文番号,注文日時,チャネル,受取人,電話,都道府県,市区町村,住所,商品コード,商品名\n"
    "東京都,渋谷区,神南一丁目,綿Tシャツ 白,保温ボトル,ワイヤレスイヤホン,限定トートバッグ\n"
)


def text_layout(encoding: str, **extra: Any) -> Layout:
    return Layout.model_validate(
        {
            "name": "t",
            "codec": "csv",
            "encoding": encoding,
            "fields": [{"name": "v", "column": "v"}],
            "csv": {"header": False, "delimiter": "|", **extra.pop("csv", {})},
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("name", "data", "likely"),
    [
        ("big5", TRADITIONAL.encode("big5"), "big5"),
        ("euc-jp", JAPANESE.encode("euc_jp"), "euc-jis-2004"),
    ],
)
def test_auto_says_when_gb18030_is_a_weak_guess_and_names_the_likely_one(
    name: str, data: bytes, likely: str
) -> None:
    """Big5 and EUC-JP bytes are valid GB18030, but not Chinese in it: a problem that names
    the encoding used and the likely one."""
    _, report = read(CsvCodec(), data, text_layout("auto"))
    (problem,) = [p for p in report.problems if p.rule == "encoding"]
    assert "read the file as gb18030" in problem.message
    assert f"it looks like {likely}" in problem.message


def test_shift_jis_on_an_auto_route_names_the_likely_encoding() -> None:
    _, report = read(CsvCodec(), JAPANESE.encode("shift_jis"), text_layout("auto"))
    (problem,) = report.problems
    assert problem.rule == "encoding" and "it looks like cp932 (Japanese)" in problem.message


def test_a_big5_file_on_a_gbk_route_is_refused_naming_big5() -> None:
    with pytest.raises(DecodeError, match=r"not valid gbk .*it looks like big5"):
        read(CsvCodec(), TRADITIONAL.encode("big5"), text_layout("gbk"))


def test_a_big5_file_on_a_gb18030_route_is_a_problem_not_garbage() -> None:
    _, report = read(CsvCodec(), TRADITIONAL.encode("big5"), text_layout("gb18030"))
    (problem,) = report.problems
    assert problem.rule == "encoding"
    assert "does not look like Chinese in gb18030" in problem.message
    assert "it looks like big5" in problem.message


def test_traditional_characters_written_in_gbk_are_accepted() -> None:
    """GBK holds traditional characters too: rare in GB2312 terms, but GB text all the
    same (charset-normalizer agrees), so no problem."""
    records, report = read(CsvCodec(), TRADITIONAL.encode("gbk"), text_layout("gbk"))
    assert not report, report.text()
    assert records


def test_utf16_without_a_bom_is_read_as_utf16_by_auto_with_a_warning() -> None:
    data = "v\r\nSKU-1001\r\n".encode("utf-16-le")
    lay = text_layout("auto", csv={"header": True})
    records, report = read(CsvCodec(), data, lay)
    assert not report, report.text()
    assert report.encoding == "utf-16-le"
    assert records[0].values == {"v": "SKU-1001"}
    assert any("no byte-order mark" in w for w in report.warnings)


def test_utf16_without_a_bom_on_a_utf8_route_is_a_problem() -> None:
    data = "v\r\nSKU-1001\r\n".encode("utf-16-le")
    _, report = read(CsvCodec(), data, text_layout("utf-8", csv={"header": True}))
    assert any(
        "looks like UTF-16-LE without a byte-order mark" in p.message for p in report.problems
    )


def test_a_decode_error_suggests_the_likely_encoding() -> None:
    with pytest.raises(DecodeError, match=r"not valid gbk .*it looks like utf-8"):
        read(CsvCodec(), "v\r\n中文订单 € ü\r\n".encode(), text_layout("gbk", csv={"header": True}))


# --------------------------------------------------------------------------- mojibake

MOJIBAKE = "中文订单".encode().decode("cp1252", errors="replace").encode().decode("latin-1")


def test_mojibake_is_a_warning_when_the_layout_says_warn_and_a_problem_when_reject() -> None:
    data = f"v\r\n张三\r\n{MOJIBAKE}\r\n".encode()
    lenient = text_layout("utf-8", csv={"header": True}, mojibake="warn")
    records, report = read(CsvCodec(), data, lenient)
    assert len(records) == 2
    assert not [p for p in report.problems if p.rule == "encoding"]
    (warning,) = report.warnings
    assert warning.startswith("line 3: the text looks double-encoded (mojibake)")
    strict = text_layout("utf-8", csv={"header": True}, mojibake="reject")
    _, report = read(CsvCodec(), data, strict)
    (problem,) = report.problems
    assert (problem.location, problem.rule) == ("line 3", "encoding")


def test_gbk_read_as_latin1_and_saved_as_utf8_is_mojibake_too() -> None:
    text = "订单号 张三 上海市".encode("gbk").decode("latin-1")
    data = f"v\r\n{text}\r\n".encode()
    _, report = read(CsvCodec(), data, text_layout("utf-8", csv={"header": True}, mojibake="warn"))
    (warning,) = report.warnings
    assert "probably '订单号'" in warning and "read GBK as Latin-1" in warning


def test_latin_text_is_not_mojibake() -> None:
    data = "v\r\nMüller café\r\nrésumé naïve\r\nZoë 张三\r\n".encode()
    _, report = read(CsvCodec(), data, text_layout("utf-8", csv={"header": True}))
    assert not report.warnings and not report


def test_validate_prints_the_mojibake_found(tmp_path: Path) -> None:
    config = REPO / "config" / "demo.toml"
    source = (REPO / "samples" / "sales-returns" / "in").iterdir().__next__()
    text = source.read_text(encoding="utf-8").replace("\n", f" {MOJIBAKE}\n", 1)
    path = tmp_path / "returns_x.csv"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(
        main, ["validate", "--config", str(config), "--route", "sales-returns", str(path)]
    )
    assert "line 1: field (text): encoding: the text looks double-encoded" in result.output


def test_the_registered_codec_is_found_by_name() -> None:
    assert codecs.lookup(GB18030_CODEC).name == GB18030_CODEC

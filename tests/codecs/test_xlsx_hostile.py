"""Hostile workbooks are refused with a reason before anything in them is believed: macros,
external links, zip bombs, entities, a zip that is not a workbook or is cut short."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from decimal import Decimal

import pytest

from tests.xlsx_books import DOC, MAIN, cell, layout, read, row, text_row, workbook
from xchange.errors import DecodeError

AMOUNT = [{"name": "amount", "type": "decimal", "scale": 2}]
PLAIN = (text_row(1, "amount"), row(2, cell("A2", "1")))


def refused(data: bytes, match: str, **xlsx: object) -> None:
    with pytest.raises(DecodeError, match=match):
        read(data, layout(AMOUNT, **xlsx))


def test_a_workbook_with_an_external_link_is_refused() -> None:
    book = workbook(
        *PLAIN,
        extra_parts={"xl/externalLinks/externalLink1.xml": b"<externalLink/>"},
        extra_types=(
            '<Override PartName="/xl/externalLinks/externalLink1.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.externalLink+xml"/>'
        ),
    )
    refused(book, "external links are refused")


def test_an_external_relationship_of_the_workbook_is_refused() -> None:
    rel = (
        f'<Relationship Id="rId9" Type="{DOC}/externalLinkPath" '
        'Target="file:///C:/secret/prices.xlsx" TargetMode="External"/>'
    )
    refused(workbook(*PLAIN, extra_rels=rel), r"refers outside itself \(rId9")


def test_a_workbook_with_macros_is_refused_by_its_part_or_its_content_type() -> None:
    refused(
        workbook(*PLAIN, extra_parts={"xl/vbaProject.bin": b"\xd0\xcf\x11\xe0"}),
        r"holds macros \(xl/vbaProject.bin\)",
    )
    macro_type = (
        '<Override PartName="/xl/x.bin" ContentType="application/vnd.ms-excel.sheet.'
        'macroEnabled.main+xml"/>'
    )
    refused(workbook(*PLAIN, extra_types=macro_type), "macros, ActiveX or external links")


def test_a_zip_bomb_is_refused_before_it_is_unpacked() -> None:
    book = workbook(*PLAIN, extra_parts={"xl/media/pad.bin": b"\0" * (64 << 20)})
    refused(book, r"unpacks \d+ times larger than packed .* \(a zip bomb\)")
    refused(workbook(*PLAIN), r"unpacks to \d+ bytes; max_size is 1000", max_size=1000)
    refused(workbook(*PLAIN), "holds 7 parts; max_parts is 3", max_parts=3)


def test_an_entity_in_a_sheet_is_refused_not_expanded() -> None:
    book = workbook(*PLAIN)
    hostile = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(book)) as src, zipfile.ZipFile(hostile, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = data.replace(
                    b"<worksheet",
                    b'<!DOCTYPE w [<!ENTITY x SYSTEM "file:///etc/passwd">]><worksheet',
                ).replace(b"<v>1</v>", b"<v>&x;</v>")
            dst.writestr(info, data)
    refused(hostile.getvalue(), "DOCTYPE")


def test_a_file_that_is_not_a_workbook_or_is_cut_short_is_refused() -> None:
    refused(b"order,amount\n1,2\n", r"not an Excel workbook \(.xlsx is a zip; a password")
    book = workbook(*PLAIN)
    refused(book[: len(book) // 2], "not an Excel workbook")


def test_a_merged_range_over_the_whole_sheet_is_not_filled_cell_by_cell() -> None:
    book = workbook(*PLAIN, merges=["A2:XFD1048576"])
    refused(book, r"more than 1000000 cells to fill", merged="fill")


def with_part(book: bytes, part: str, change: Callable[[bytes], bytes]) -> bytes:
    """``book`` with one part's bytes changed."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(book)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, change(data) if info.filename == part else data)
    return out.getvalue()


@pytest.mark.parametrize(
    "part",
    [
        "[Content_Types].xml",
        "_rels/.rels",
        "xl/workbook.xml",
        "xl/_rels/workbook.xml.rels",
        "xl/styles.xml",
        "xl/sharedStrings.xml",
        "xl/worksheets/sheet1.xml",
    ],
)
def test_a_doctype_in_any_part_read_refuses_the_workbook(part: str) -> None:
    """Not only the sheet: every XML part xchange reads refuses a DOCTYPE, naming it."""
    doctype = b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">]>'
    book = with_part(workbook(*PLAIN, shared=["x"]), part, lambda data: doctype + data)
    refused(book, re.escape(f"{part}: the document has a DOCTYPE"))


def test_ten_million_tiny_shared_strings_are_refused_as_they_are_read() -> None:
    """Ten million shared strings ("0" .. "98967f", varied so that the part is no zip
    bomb) pack into some 25 MB but would take gigabytes in memory: refused once
    max_strings (2,000,000 by default) is passed, whatever the sheet uses."""
    count = 10_000_000
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(workbook(*PLAIN))) as src,
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            if info.filename != "xl/sharedStrings.xml":
                dst.writestr(info.filename, src.read(info))
        with dst.open("xl/sharedStrings.xml", "w") as part:
            part.write(f'<sst xmlns="{MAIN}">'.encode())
            for start in range(0, count, 100_000):
                block = range(start, start + 100_000)
                part.write("".join(f"<si><t>{i:x}</t></si>" for i in block).encode())
            part.write(b"</sst>")
    book = buf.getvalue()
    assert len(book) < 64 << 20
    refused(book, "holds more than 2000000 shared strings; max_strings is 2000000")
    refused(workbook(*PLAIN, shared=["a", "b", "c"]), "more than 2 shared strings", max_strings=2)
    values, _ = read(workbook(*PLAIN, shared=["a", "b"]), layout(AMOUNT, max_strings=2))
    assert values == [{"amount": Decimal("1")}]


TEXT = [{"name": "a", "type": "string"}]


def test_a_hidden_column_range_past_excels_last_column_is_not_expanded() -> None:
    """``<col min="2" max="300000000" hidden="1"/>`` in a part of a few hundred bytes:
    the range is clamped at XFD (16384), not made a set of 300 million columns (before:
    MemoryError, or the daemon killed)."""
    cols = '<cols><col min="2" max="300000000" hidden="1"/></cols>'
    book = workbook(text_row(1, "a"), row(2, cell("A2", "v", t="inlineStr")), cols=cols)
    values, _ = read(book, layout(TEXT))
    assert values == [{"a": "v"}]


@pytest.mark.parametrize("stored", ["-1", "\u0661", " 1", "1_0", "2"])
def test_a_shared_string_index_that_is_not_one_is_refused(stored: str) -> None:
    """``-1`` would read the last string (Python's negative index), ``١`` (an Arabic-Indic
    one) and `` 1`` would be taken by int(): only ASCII digits within the table count."""
    book = workbook(text_row(1, "a"), row(2, cell("A2", stored, t="s")), shared=["x", "LAST"])
    refused(book, "shared string .* does not exist")


def test_a_cell_twice_in_a_row_with_two_values_is_refused() -> None:
    """Two ``<c r="A2">`` with different values: which one a reader shows depends on the
    reader; refused rather than the last one read silently."""
    book = workbook(
        text_row(1, "a"),
        row(2, cell("A2", "shown", t="inlineStr"), cell("A2", "hidden", t="inlineStr")),
    )
    with pytest.raises(DecodeError, match="cell A2 is in the sheet twice with a value"):
        read(book, layout(TEXT))

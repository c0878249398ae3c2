"""Hostile workbooks are refused with a reason before anything in them is believed: macros,
external links, zip bombs, entities, a zip that is not a workbook or is cut short."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.xlsx_books import DOC, cell, layout, read, row, text_row, workbook
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

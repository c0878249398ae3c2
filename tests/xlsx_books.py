"""Workbooks for the xlsx codec's tests, written part by part: the stored text of each
cell (``<v>``), its style, formulas, merges and hostile parts exactly as a test needs
them (a library would write its own)."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from xchange.layout import Layout
from xchange.report import Report

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
TYPES = "application/vnd.openxmlformats"
RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
DOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"

#: Styles of the test workbooks (the ``s`` of a cell): 0 General, 1 ``0.00``, 2
#: ``#,##0.00``, 3 ``0%``, 4 ``yyyy-mm-dd``, 5 ``yyyy-mm-dd hh:mm:ss``, 6 ``[h]:mm`` (not
#: shown exactly), 7 built-in 31 (a locale's long date).
FORMATS = {164: "yyyy-mm-dd", 165: "yyyy-mm-dd hh:mm:ss", 166: "[h]:mm"}
XFS = [0, 2, 4, 9, 164, 165, 166, 31]


def cell(
    ref: str, value: str | None = None, *, s: int = 0, t: str | None = None, f: str | None = None
) -> str:
    """One cell's XML: ``value`` is its stored text (``<v>``), or an inline string's
    text when ``t="inlineStr"``."""
    attrs = f' r="{ref}"' + (f' s="{s}"' if s else "") + (f' t="{t}"' if t else "")
    body = f"<f>{f}</f>" if f is not None else ""
    if t == "inlineStr":
        body += f"<is><t>{value}</t></is>"
    elif value is not None:
        body += f"<v>{value}</v>"
    return f"<c{attrs}>{body}</c>"


def row(number: int, *cells: str) -> str:
    return f'<row r="{number}">{"".join(cells)}</row>'


def text_row(number: int, *texts: str) -> str:
    """A row of inline strings from column A."""
    return row(
        number,
        *(cell(f"{chr(65 + i)}{number}", t, t="inlineStr") for i, t in enumerate(texts) if t),
    )


def workbook(
    *rows: str,
    shared: list[str] | None = None,
    merges: list[str] | None = None,
    cols: str = "",
    date1904: bool = False,
    extra_parts: dict[str, bytes] | None = None,
    extra_types: str = "",
    extra_rels: str = "",
    sheet_name: str = "Sheet1",
) -> bytes:
    """An .xlsx of one sheet holding ``rows``."""
    merge_xml = (
        f'<mergeCells count="{len(merges)}">'
        + "".join(f'<mergeCell ref="{m}"/>' for m in merges)
        + "</mergeCells>"
        if merges
        else ""
    )
    sheet = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="{MAIN}">'
        f"{cols}<sheetData>{''.join(rows)}</sheetData>{merge_xml}</worksheet>"
    )
    num_fmts = "".join(f'<numFmt numFmtId="{k}" formatCode="{v}"/>' for k, v in FORMATS.items())
    styles = (
        f'<styleSheet xmlns="{MAIN}"><numFmts count="{len(FORMATS)}">{num_fmts}</numFmts>'
        f'<cellXfs count="{len(XFS)}">'
        + "".join(f'<xf numFmtId="{n}" applyNumberFormat="1"/>' for n in XFS)
        + "</cellXfs></styleSheet>"
    )
    strings = (
        f'<sst xmlns="{MAIN}">' + "".join(f"<si><t>{s}</t></si>" for s in shared or []) + "</sst>"
    )
    parts = {
        "[Content_Types].xml": (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="'
            f'{TYPES}-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="'
            f'{TYPES}-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="'
            f'{TYPES}-officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/styles.xml" ContentType="'
            f'{TYPES}-officedocument.spreadsheetml.styles+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" ContentType="'
            f'{TYPES}-officedocument.spreadsheetml.sharedStrings+xml"/>'
            f"{extra_types}</Types>"
        ),
        "_rels/.rels": (
            f'<Relationships xmlns="{RELS}"><Relationship Id="rId1" '
            f'Type="{DOC}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<workbook xmlns="{MAIN}" xmlns:r="{DOC}">'
            + ('<workbookPr date1904="1"/>' if date1904 else "<workbookPr/>")
            + f'<sheets><sheet name="{sheet_name}" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{RELS}">'
            f'<Relationship Id="rId1" Type="{DOC}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{DOC}/styles" Target="styles.xml"/>'
            f'<Relationship Id="rId3" Type="{DOC}/sharedStrings" Target="sharedStrings.xml"/>'
            f"{extra_rels}</Relationships>"
        ),
        "xl/worksheets/sheet1.xml": sheet,
        "xl/styles.xml": styles,
        "xl/sharedStrings.xml": strings,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, text in parts.items():
            zipped.writestr(name, text.encode("utf-8"))
        for name, data in (extra_parts or {}).items():
            zipped.writestr(name, data)
    return buf.getvalue()


def layout(fields: list[dict[str, Any]], **xlsx: Any) -> Layout:
    """A flat xlsx layout of ``fields`` (options of [xlsx] as keywords; ``unknown`` too)."""
    unknown = xlsx.pop("unknown", "reject")
    return Layout.model_validate(
        {"name": "sheet", "codec": "xlsx", "fields": fields, "xlsx": xlsx, "unknown": unknown}
    )


def read(data: bytes, lay: Layout) -> tuple[list[dict[str, Any]], Report]:
    """The records' values and the report of reading ``data``."""
    from xchange.codecs import codec_for

    report = Report("book.xlsx")
    values = [r.values for r in codec_for(lay).records(io.BytesIO(data), lay, "book.xlsx", report)]
    return values, report

"""Make the shipped workbooks: the shop's Excel sales sheet (samples/excel-kingdee-orders/in)
and the Kingdee sale-order import template (formats/templates). Both are committed; run
this again only to change them (it needs openpyxl, a test dependency):

    python tools/xlsx_samples.py
"""

from __future__ import annotations

import io
import zipfile
from datetime import datetime
from pathlib import Path

from openpyxl import Workbook
from openpyxl.comments import Comment
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.worksheet.datavalidation import DataValidation

REPO = Path(__file__).resolve().parent.parent
#: Every part of a shipped workbook is dated this (the bytes do not change with the day).
STAMP = (2026, 11, 21, 8, 0, 0)

SALES_HEADER = [
    "订单号", "下单时间", "渠道", "收货人", "手机", "省份", "城市", "区县", "详细地址",
    "商品编码", "商品名称", "数量", "单价", "发货仓", "买家留言",
]  # fmt: skip
SALES = [
    ["EC20261121101", datetime(2026, 11, 21, 9, 15, 2), "天猫", "张三", 13800138000, "上海市",
     "上海市", "浦东新区", "世纪大道100号8楼", "SKU-1001", "纯棉T恤 白色 L", 2, 59.9, "上海仓",
     "请周末送货"],
    ["EC20261121101", datetime(2026, 11, 21, 9, 15, 2), "天猫", "张三", 13800138000, "上海市",
     "上海市", "浦东新区", "世纪大道100号8楼", "SKU-2002", "保温杯 500ml", 1, 89, "上海仓",
     "请周末送货"],
    ["EC20261121102", datetime(2026, 11, 21, 10, 2, 45), "京东", "李四", 13912345678, "广东省",
     "深圳市", "南山区", "科技园路385号, 太古汇一层", "SKU-3003", "蓝牙耳机", 1, 1299, "广州仓",
     None],
    ["EC20261121103", datetime(2026, 11, 21, 11, 30), "官网", "王小明", 15000000001, "北京市",
     "北京市", "朝阳区", "建国路88号SOHO现代城", "sku-1001", "纯棉T恤 白色 L", 3, 59.9, "北京仓",
     "发票抬头:北京某某贸易有限公司"],
    ["EC20261121103", datetime(2026, 11, 21, 11, 30), "官网", "王小明", 15000000001, "北京市",
     "北京市", "朝阳区", "建国路88号SOHO现代城", "SKU-4004", '"静音"加湿器', 1, 129.5, "北京仓",
     "发票抬头:北京某某贸易有限公司"],
]  # fmt: skip

#: The Kingdee import sheet: field keys in row 1, captions in row 2, data from row 3.
IMPORT_COLUMNS = [
    ("FBillNo", "*单据编号", "@"),
    ("FBillTypeID", "*单据类型.编码", "@"),
    ("FDate", "*日期", "yyyy-mm-dd"),
    ("FSaleOrgId", "*销售组织.编码", "@"),
    ("FCustId", "*客户.编码", "@"),
    ("FSettleCurrId", "*结算币别.编码", "@"),
    ("FNote", "备注", "@"),
    ("FMaterialId", "*物料编码", "@"),
    ("FQty", "*销售数量", "0"),
    ("FTaxPrice", "含税单价", "#,##0.00"),
    ("FAllAmount", "价税合计", "#,##0.00"),
    ("FEntryTaxRate", "税率%", "0.00"),
    ("FDeliveryDate", "*要货日期", "yyyy-mm-dd"),
]


def stamped(data: bytes) -> bytes:
    """The workbook with every part dated ``STAMP`` and docProps/core.xml's times fixed."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "docProps/core.xml":
                text = body.decode()
                for tag in ("dcterms:created", "dcterms:modified"):
                    start = text.find(f"<{tag}")
                    if start >= 0:
                        end = text.find(f"</{tag}>", start)
                        open_end = text.find(">", start) + 1
                        text = text[:open_end] + "2026-11-21T08:00:00Z" + text[end:]
                body = text.encode()
            entry = zipfile.ZipInfo(info.filename, STAMP)
            entry.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(entry, body)
    return out.getvalue()


def saved(book: Workbook) -> bytes:
    buf = io.BytesIO()
    book.save(buf)
    return stamped(buf.getvalue())


def sales_sheet() -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "销售明细"
    sheet["A1"] = "店铺销售明细 2026-11-21(天猫/京东/官网)"
    sheet["A1"].font = Font(bold=True, size=14)
    sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=len(SALES_HEADER))
    for col, name in enumerate(SALES_HEADER, start=1):
        cell = sheet.cell(row=2, column=col, value=name)
        cell.font = Font(bold=True)
        cell.fill = PatternFill("solid", fgColor="DDEBF7")
    for r, row in enumerate(SALES, start=3):
        for col, value in enumerate(row, start=1):
            cell = sheet.cell(row=r, column=col, value=value)
            if col == 2:
                cell.number_format = "yyyy-mm-dd hh:mm:ss"
            elif col == 13:
                cell.number_format = "#,##0.00"
    sheet.freeze_panes = "A3"
    for letter, width in zip(
        "ABCDEFGHIJKLMNO", (16, 20, 8, 10, 14, 10, 10, 10, 28, 12, 18, 6, 10, 8, 30), strict=True
    ):
        sheet.column_dimensions[letter].width = width
    return saved(book)


def import_template() -> bytes:
    book = Workbook()
    notes = book.active
    assert notes is not None
    notes.title = "说明"
    notes["A1"] = "金蝶云星空 销售订单引入模板"
    notes["A1"].font = Font(bold=True, size=16)
    notes.merge_cells("A1:F1")
    for i, line in enumerate(
        [
            "1. 第1行为字段标识,请勿修改;第2行为字段名称,带*号的为必录项。",
            "2. 数据从第3行开始填写,同一单据编号的多行为同一张订单的多条分录。",
            "3. 日期格式为 yyyy-mm-dd;金额保留两位小数。",
            "4. 基础资料(组织、客户、物料、币别)请填写编码。",
        ],
        start=3,
    ):
        notes.cell(row=i, column=1, value=line)
    notes.column_dimensions["A"].width = 80
    sheet = book.create_sheet("销售订单")
    thin = Side(style="thin", color="999999")
    for col, (key, caption, fmt) in enumerate(IMPORT_COLUMNS, start=1):
        top = sheet.cell(row=1, column=col, value=key)
        top.font = Font(color="808080", size=9)
        top.fill = PatternFill("solid", fgColor="F2F2F2")
        head = sheet.cell(row=2, column=col, value=caption)
        head.font = Font(bold=True, color="C00000" if caption.startswith("*") else "000000")
        head.fill = PatternFill("solid", fgColor="FFF2CC")
        head.alignment = Alignment(horizontal="center")
        head.border = Border(top=thin, bottom=thin, left=thin, right=thin)
        sample = sheet.cell(row=3, column=col)
        sample.number_format = fmt
        sample.border = Border(bottom=thin, left=thin, right=thin)
        sheet.column_dimensions[sample.column_letter].width = 14 if col != 7 else 30
    sheet["A2"].comment = Comment("单据编号相同的行合并为一张订单", "xchange")
    sheet.freeze_panes = "A3"
    orgs = DataValidation(type="list", formula1='"100,101,102"', allow_blank=False)
    orgs.add("D3:D10000")
    sheet.add_data_validation(orgs)
    book.active = 1
    return saved(book)


def main() -> None:
    sales = REPO / "samples" / "excel-kingdee-orders" / "in" / "sales_20261121.xlsx"
    sales.parent.mkdir(parents=True, exist_ok=True)
    sales.write_bytes(sales_sheet())
    template = REPO / "formats" / "templates" / "kingdee-sale-order-import.xlsx"
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_bytes(import_template())
    print(f"wrote {sales.relative_to(REPO)} and {template.relative_to(REPO)}")


if __name__ == "__main__":
    main()

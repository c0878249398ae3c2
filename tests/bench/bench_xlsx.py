"""Excel: a 100,000-row sales sheet read, and the Kingdee import template filled.

    python tests/bench/bench_xlsx.py [--rows 100000] [--rounds 3]

Reading: the shop's sales sheet (15 columns, shared strings as Excel writes them, times
and prices under number formats) read by xchange (every cell shown as Excel shows it,
typed and checked by the layout ``shop-sales-sheet``) against pandas ``read_excel``
(openpyxl engine, every cell as text) and a plain openpyxl script (``read_only``,
``iter_rows(values_only=True)``: floats and datetimes, nothing checked).

Writing: the same number of order lines written into the Kingdee import template by
xchange (every part copied, the sheet's XML written) against openpyxl (the template
loaded, rows appended, saved: the whole workbook round-tripped through its model); for
each, how many of the template's parts come out byte for byte as they were.

Contenders alternate in one process, each round after the others; medians and mins.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import zipfile
from datetime import date, datetime, timedelta
from decimal import Decimal

from common import ROOT, alternate  # type: ignore[import-not-found]

sys.path.insert(0, str(ROOT))

from tests.xlsx_books import cell, row, text_row, workbook
from xchange.codecs import codec_for
from xchange.layout import load_layout
from xchange.mapping import Document
from xchange.report import Report

FORMATS = ROOT / "formats"
HEADER = [
    "订单号", "下单时间", "渠道", "收货人", "手机", "省份", "城市", "区县", "详细地址",
    "商品编码", "商品名称", "数量", "单价", "发货仓", "买家留言",
]  # fmt: skip


def sales_sheet(rows: int) -> bytes:
    """A sales sheet as Excel saves it: texts in the shared strings, numbers stored."""
    rng = random.Random(32)
    shared: dict[str, int] = {}

    def s(text: str) -> str:
        return str(shared.setdefault(text, len(shared)))

    channels = ["天猫", "京东", "官网", "拼多多"]
    places = [
        ("上海市", "上海市", "浦东新区"),
        ("广东省", "深圳市", "南山区"),
        ("北京市", "北京市", "朝阳区"),
    ]
    body = [text_row(1, "店铺销售明细"), text_row(2, *HEADER)]
    start = datetime(2026, 11, 21)
    for i in range(rows):
        n = 3 + i
        order = f"EC{20261120000 + i // 3}"
        at = start + timedelta(seconds=i * 7)
        serial = (at - datetime(1899, 12, 30)).total_seconds() / 86400
        province, city, district = places[i % 3]
        price = Decimal(rng.randrange(100, 500000)) / 100
        cells = [
            cell(f"A{n}", s(order), t="s"),
            cell(f"B{n}", repr(serial), s=5),
            cell(f"C{n}", s(channels[i % 4]), t="s"),
            cell(f"D{n}", s(f"客户{i % 977}"), t="s"),
            cell(f"E{n}", str(13800000000 + i % 100000)),
            cell(f"F{n}", s(province), t="s"),
            cell(f"G{n}", s(city), t="s"),
            cell(f"H{n}", s(district), t="s"),
            cell(f"I{n}", s(f"人民路{i % 500}号"), t="s"),
            cell(f"J{n}", s(f"SKU-{1000 + i % 4000}"), t="s"),
            cell(f"K{n}", s(f"商品{i % 4000}"), t="s"),
            cell(f"L{n}", str(1 + i % 5)),
            cell(f"M{n}", repr(float(price)), s=2),
            cell(f"N{n}", s("上海仓"), t="s"),
            cell(f"O{n}", s("请尽快发货"), t="s") if i % 7 == 0 else "",
        ]
        body.append(row(n, *cells))
    return workbook(*body, shared=list(shared), sheet_name="销售明细", merges=["A1:O1"])


def read_xchange(data: bytes) -> int:
    layout = load_layout(FORMATS, "shop-sales-sheet")
    report = Report("sales.xlsx", cap=10)
    count = sum(1 for _ in codec_for(layout).records(io.BytesIO(data), layout, "x", report))
    assert not report, report.problems
    return count


def read_pandas(data: bytes) -> int:
    import pandas as pd

    frame = pd.read_excel(io.BytesIO(data), sheet_name="销售明细", header=1, dtype=str)
    return len(frame)


def read_openpyxl(data: bytes) -> int:
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    rows = list(book["销售明细"].iter_rows(min_row=3, values_only=True))
    book.close()
    return len(rows)


def documents(rows: int) -> list[Document]:
    return [
        Document(
            "x",
            {
                "FBillNo": f"EC2026112{i // 3:06d}",
                "FBillTypeID": "XSDD01_SYS",
                "FDate": date(2026, 11, 21),
                "FSaleOrgId": "100",
                "FCustId": "SHOP-100",
                "FSettleCurrId": "PRE001",
                "FNote": "请周末送货" if i % 7 == 0 else None,
                "FMaterialId": f"01.01.{i % 4000:04d}",
                "FQty": 1 + i % 5,
                "FTaxPrice": Decimal(1000 + i % 9000) / 100,
                "FAllAmount": Decimal(i % 99999) / 100,
                "FEntryTaxRate": Decimal("13.00"),
                "FDeliveryDate": date(2026, 11, 23),
            },
        )
        for i in range(rows)
    ]


def write_xchange(docs: list[Document]) -> bytes:
    layout = load_layout(FORMATS, "kingdee-sale-order-import")
    out = io.BytesIO()
    codec_for(layout).write(docs, layout, "out.xlsx", out)
    return out.getvalue()


def write_openpyxl(docs: list[Document]) -> bytes:
    import openpyxl

    layout = load_layout(FORMATS, "kingdee-sale-order-import")
    book = openpyxl.load_workbook(FORMATS / "templates" / "kingdee-sale-order-import.xlsx")
    sheet = book["销售订单"]
    sheet.delete_rows(3)
    names = [spec.name for spec in layout.fields]
    for doc in docs:
        sheet.append([doc.header.get(n) for n in names])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def kept(data: bytes, template: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(template)) as a, zipfile.ZipFile(io.BytesIO(data)) as b:
        before = {i.filename: a.read(i) for i in a.infolist()}
        after = {i.filename: b.read(i) for i in b.infolist()}
    same = sum(1 for name, body in before.items() if after.get(name) == body)
    return f"{same} of {len(before)} parts byte for byte ({len(set(before) - set(after))} dropped)"


def show(title: str, rows: int, times: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    ours = statistics.median(times["xchange"])
    for name, ts in times.items():
        med, low = statistics.median(ts), min(ts)
        ratio = "" if name == "xchange" else f"   xchange: {med / ours:.2f}x its speed"
        runs = ", ".join(f"{t:.2f}" for t in ts)
        print(
            f"  {name:<22} {rows / med:>10,.0f} rows/s median ({med:.2f} s), min {low:.2f} s"
            f"  [{runs}]{ratio}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = sales_sheet(args.rows)
    print(f"sales sheet: {args.rows:,} rows x 15 columns, {len(data) / 1e6:.1f} MB")
    assert read_xchange(data) == read_pandas(data) == read_openpyxl(data) == args.rows
    times = alternate(
        args.rounds,
        {
            "xchange": lambda: read_xchange(data),
            "pandas read_excel": lambda: read_pandas(data),
            "openpyxl read_only": lambda: read_openpyxl(data),
        },
    )
    show("read (xchange: shown, typed, checked; the others: values only)", args.rows, times)
    docs = documents(args.rows)
    template = (FORMATS / "templates" / "kingdee-sale-order-import.xlsx").read_bytes()
    print("\nxchange:", kept(write_xchange(docs), template))
    print("openpyxl:", kept(write_openpyxl(docs), template))
    times = alternate(
        args.rounds,
        {
            "xchange": lambda: write_xchange(docs),
            "openpyxl load+append+save": lambda: write_openpyxl(docs),
        },
    )
    show("write into the import template", args.rows, times)


if __name__ == "__main__":
    main()

"""Benchmark 8 (XML): a large GB18030 WMS stock count parsed, validated, mapped and written
as the OMS inventory CSV (route ``wms-stock-count``), against plain lxml ``iterparse`` +
``findtext`` + ``csv.writer`` writing the same columns from the same file.

    python tests/bench/bench_xml.py [--lines 500000] [--rounds 3]

Each contender runs in a fresh process (alternating); prints lines per second, clock and
CPU seconds (median and min), the ratios and the peak memory (RSS) of each.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

from common import ROOT, convert_script  # type: ignore[import-not-found]
from cputime import alternate, show  # type: ignore[import-not-found]

# The same columns as the route writes: the header values repeated on each line, the SKU
# upper-cased and trimmed, the name trimmed, quantities without their trailing zeros, the
# date as 2026/11/21.
PLAIN = """
import csv, resource, time
from lxml import etree
start = time.perf_counter()
ns = "{{urn:example:wms:stockcount:1}}"
with open({out!r}, "w", encoding="utf-8-sig", newline="") as out:
    writer = csv.writer(out, lineterminator="\\r\\n")
    writer.writerow(["仓库编码", "商品编码", "商品名称", "批次", "账面数量", "实盘数量", "单位",
                     "盘点单号", "盘点日期"])
    head = {{}}
    for event, el in etree.iterparse({src!r}, events=("end",), tag=(ns + "Header", ns + "Line")):
        if el.tag == ns + "Header":
            wh = el.find(ns + "Warehouse")
            head = dict(no=el.findtext(ns + "CountNo"), wh=wh.get("code"),
                        date=el.findtext(ns + "CountDate").replace("-", "/"))
            continue
        book, qty = el.findtext(ns + "BookQty"), el.findtext(ns + "CountQty")
        writer.writerow([head["wh"], el.findtext(ns + "Sku").strip().upper(),
                         el.findtext(ns + "Name").strip(), el.findtext(ns + "Batch") or "",
                         book.split(".")[0], qty.split(".")[0], el.findtext(ns + "Unit"),
                         head["no"], head["date"]])
        el.clear(keep_tail=True)
        while el.getprevious() is not None:
            del el.getparent()[0]
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

NAMES = ["纯棉T恤 白色 L", "牛仔裤 蓝色 32", "运动鞋 黑色 42", "羽绒服 红色 M", "帆布包"]
UNITS = ["件", "条", "双", "个"]


def make_stock_count(path: Path, lines: int) -> None:
    """A GB18030 stock count in the WMS's layout, ``lines`` lines (about 200 bytes each)."""
    rnd = random.Random(8)
    with open(path, "w", encoding="gb18030", newline="\n") as fh:
        fh.write(
            '<?xml version="1.0" encoding="GB18030"?>\n'
            '<StockCount xmlns="urn:example:wms:stockcount:1">\n'
            "  <Header>\n    <CountNo>SC20261121001</CountNo>\n"
            '    <Warehouse code="WH-SH-01">上海浦东仓</Warehouse>\n'
            "    <CountDate>2026-11-21</CountDate>\n  </Header>\n  <Lines>\n"
        )
        for i in range(1, lines + 1):
            book = rnd.randint(0, 999)
            count = max(0, book + rnd.randint(-3, 3))
            batch = f"<Batch>B{rnd.randint(1, 99):04d}</Batch>" if i % 4 else "<Batch/>"
            fh.write(
                f'    <Line no="{i}"><Sku>sku-{rnd.randint(1, 999999):06d}</Sku>'
                f"<Name>{NAMES[i % len(NAMES)]}</Name>{batch}"
                f"<BookQty>{book}.000</BookQty><CountQty>{count}</CountQty>"
                f"<Unit>{UNITS[i % len(UNITS)]}</Unit></Line>\n"
            )
        fh.write("  </Lines>\n</StockCount>\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", help="write the source file here (and keep it)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xchange-bench-xml-"))
    src = Path(args.keep) if args.keep else work / "stockcount.xml"
    make_stock_count(src, args.lines)
    size_mb = src.stat().st_size / 1e6
    times, cpu, rss = alternate(
        args.rounds,
        {
            "xchange": lambda _: convert_script(
                ("wms-stock-count", "wms-stock-count-to-oms-inventory", "oms-inventory"),
                "out.csv",
                ROOT / "formats",
                src,
                work / "x",
                f"outputs == 1 and documents == {args.lines}",
            ),
            "lxml": lambda _: PLAIN.format(src=str(src), out=str(work / "plain.csv")),
        },
    )
    ours = (work / "x" / "out.csv").read_bytes()
    theirs = (work / "plain.csv").read_bytes()
    same = "the same bytes" if ours == theirs else "DIFFERENT bytes"
    print(f"\n8. {args.lines:,}-line GB18030 stock count ({size_mb:.0f} MB) -> OMS inventory CSV")
    what = {
        "xchange": "parse, validate, map, write",
        "lxml": "iterparse + findtext + csv.writer",
    }
    show(args.lines, "lines/s", what, times, cpu)
    print(f"  outputs: {same}")
    a, b = (statistics.median(rss[k]) / 1024 for k in ("xchange", "lxml"))
    print(f"  peak RSS: xchange {a:.0f} MiB, lxml {b:.0f} MiB")
    print(json.dumps({"lines": args.lines, "times": times, "cpu": cpu, "rss_kib": rss}))


if __name__ == "__main__":
    main()

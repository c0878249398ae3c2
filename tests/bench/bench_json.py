"""Benchmark 9 (JSON): an OMS order export (100,000 orders, one JSON array) parsed,
validated, mapped and written as one Kingdee SAL_SaleOrder JSON file per order (route
``oms-kingdee-orders``), against plain ``json.load`` + building the same payloads +
``json.dump`` per file.

    python tests/bench/bench_json.py [--orders 100000] [--rounds 3]

Two plain references: ``json.dump`` straight into each file (many small writes), and the
stronger ``json.dumps`` with one write of the whole text per file. Each contender runs in
a fresh process (alternating); prints documents per second, clock and CPU seconds
(median and min), the ratios, the peak memory (RSS) of each, and whether xchange and
the plain script wrote the same documents (compared as JSON, numbers as decimals: the
plain script writes 59.9 where the Kingdee layout's scale writes 59.90).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
from decimal import Decimal
from pathlib import Path

from common import ROOT, convert_script  # type: ignore[import-not-found]
from cputime import alternate, show  # type: ignore[import-not-found]

# The same payloads, built the obvious way: the whole export in memory, one dict per order.
PLAIN = """
import json, os, resource, time
start = time.perf_counter()
orgs = {{"TMALL01": "100", "JD01": "100", "WEB01": "101"}}
customers = {{"C-TMALL": "CUST0001", "C-JD": "CUST0002", "C-WEB": "CUST0003"}}
currencies = {{"CNY": "PRE001", "HKD": "PRE002", "USD": "PRE007"}}
with open({src!r}, encoding="utf-8") as fh:
    export = json.load(fh)
os.makedirs({out!r}, exist_ok=True)
for order in export["orders"]:
    day = order["order_time"][:10]
    model = {{
        "FBillTypeID": {{"FNUMBER": "XSDD01_SYS"}},
        "FBillNo": order["order_no"],
        "FDate": day,
        "FSaleOrgId": {{"FNumber": orgs[order["shop_code"]]}},
        "FCustId": {{"FNumber": customers[order["customer_code"]]}},
        "FSaleOrderFinance": {{"FSettleCurrId": {{"FNumber": currencies[order["currency"]]}}}},
    }}
    model["FNote"] = (order.get("remark") or "").strip() or None
    model["FSaleOrderEntry"] = [
        {{
            "FMaterialId": {{"FNumber": item["sku"].upper()}},
            "FQty": item["qty"],
            "FTaxPrice": round(float(item["price"]), 2),
            "FEntryTaxRate": round(float(item["tax_rate"]), 2),
            "FDeliveryDate": day,
        }}
        for item in order["items"]
    ]
    name = os.path.join({out!r}, "SAL_SaleOrder_" + order["order_no"] + ".json")
    with open(name, "w", encoding="utf-8") as out:
{write}
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

#: How the plain script writes each document: ``json.dump`` (many small writes), or the
#: stronger ``json.dumps`` and one write of the whole text.
DUMP = """\
        json.dump({"Model": model}, out, ensure_ascii=False, indent=2)
        out.write("\\n")"""
DUMPS = """\
        out.write(json.dumps({"Model": model}, ensure_ascii=False, indent=2) + "\\n")"""

SHOPS = [("TMALL01", "C-TMALL"), ("JD01", "C-JD"), ("WEB01", "C-WEB")]
REMARKS = [None, "双十一预售 尾款已付", "请周末送货", ""]


def make_export(path: Path, orders: int) -> None:
    """An OMS export of ``orders`` orders of one to four lines (about 550 bytes each)."""
    rnd = random.Random(9)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{\n  "export_id": 98231,\n  "generated_at": "2026-11-21T23:00:05",\n')
        fh.write('  "orders": [\n')
        for i in range(orders):
            shop, customer = SHOPS[i % 3]
            items = [
                {
                    "sku": f"sku-{rnd.randint(1, 99999):05d}",
                    "qty": rnd.randint(1, 9),
                    "price": f"{rnd.randint(100, 99999) / 100:.2f}",
                    "tax_rate": 13,
                }
                for _ in range(rnd.randint(1, 4))
            ]
            order = {
                "order_no": f"SO{20261121000000 + i:014d}",
                "order_time": f"2026-11-21 {i % 24:02d}:{i % 60:02d}:05",
                "shop_code": shop,
                "customer_code": customer,
                "currency": "CNY",
                "remark": REMARKS[i % len(REMARKS)],
                "items": items,
            }
            sep = ",\n" if i < orders - 1 else "\n"
            fh.write("    " + json.dumps(order, ensure_ascii=False) + sep)
        fh.write("  ]\n}\n")


def same_documents(ours: Path, theirs: Path) -> str:
    names = sorted(p.name for p in theirs.iterdir())
    if names != sorted(p.name for p in ours.iterdir()):
        return "DIFFERENT file names"
    for name in names[:: max(1, len(names) // 500)]:
        a = json.loads((ours / name).read_text("utf-8"), parse_float=Decimal)
        b = json.loads((theirs / name).read_text("utf-8"), parse_float=Decimal)
        if a != b:
            return f"DIFFERENT documents ({name})"
    return "the same documents"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tmp", help="where to write (default: the system's temporary folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xchange-bench-json-", dir=args.tmp))
    src = work / "sales_orders.json"
    make_export(src, args.orders)
    size_mb = src.stat().st_size / 1e6
    times, cpu, rss = alternate(
        args.rounds,
        {
            "xchange": lambda r: convert_script(
                ("oms-sales-order", "oms-to-kingdee-sale-order", "kingdee-sale-order"),
                "SAL_SaleOrder_{FBillNo}.json",
                ROOT / "formats",
                src,
                work / f"x{r}",
                f"outputs == {args.orders}",
            ),
            "json.dumps": lambda r: PLAIN.format(
                src=str(src), out=str(work / f"s{r}"), write=DUMPS
            ),
            "json.dump": lambda r: PLAIN.format(src=str(src), out=str(work / f"p{r}"), write=DUMP),
        },
    )
    same = same_documents(work / "x0", work / "p0")
    print(f"\n9. {args.orders:,}-order OMS export ({size_mb:.0f} MB) -> one Kingdee JSON per order")
    what = {
        "xchange": "parse, validate, map, write",
        "json.dumps": "load + build + dumps, one write per file",
        "json.dump": "load + build + dump per file",
    }
    show(args.orders, "documents/s", what, times, cpu)
    print(f"  outputs: {same} (xchange and json.dump)")
    peaks = ", ".join(f"{k} {statistics.median(v) / 1024:.0f} MiB" for k, v in rss.items())
    print(f"  peak RSS: {peaks}")
    print(json.dumps({"orders": args.orders, "times": times, "cpu": cpu, "rss_kib": rss}))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

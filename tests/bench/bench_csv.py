"""Benchmarks 4 and 5 (CSV): a large GBK order-line CSV parsed, validated, mapped and
written as CSV, against plain pandas `read_csv` -> `to_csv` of the same file.

    python tests/bench/bench_csv.py [--rows 1000000] [--rounds 3]

Prints rows per second for both and their ratio, and the peak memory (RSS) of each, each
measured in a fresh process so that one does not inherit the other's heap. pandas runs
twice: as written (``dtype=str``: with pyarrow installed, pandas 3 keeps such text in Arrow
arrays) and with ``dtype=object`` (Python strings, the quicker of the two here); the
ratio is against the quicker.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

from common import alternate_fresh, convert_script  # type: ignore[import-not-found]

HERE = Path(__file__).resolve().parent
HEADER = (
    "订单号,下单时间,渠道,收货人,手机,省份,城市,区县,详细地址,"
    "商品编码,商品名称,数量,单价,发货仓,买家留言"
)

PANDAS = """
import resource, time
import pandas as pd
start = time.perf_counter()
frame = pd.read_csv({src!r}, encoding="gbk", dtype={dtype}, keep_default_na=False)
frame.to_csv({out!r}, index=False, encoding="utf-8")
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_csv(path: Path, rows: int) -> None:
    rnd = random.Random(7)
    channels, warehouses = ["天猫", "京东", "官网"], ["上海仓", "广州仓", "北京仓"]
    with open(path, "w", encoding="gbk", newline="") as fh:
        fh.write(HEADER + "\r\n")
        order = 0
        for i in range(rows):
            if i % 3 == 0:
                order += 1
            fh.write(
                f"EC{20261121000000 + order:014d}"[:13] + f",2026-11-21 09:{i % 60:02d}:00,"
                f"{channels[order % 3]},张三{order % 97},138{order % 100000000:08d},上海市,上海市,"
                f"浦东新区,世纪大道{order % 1000}号,SKU-{rnd.randint(1, 99999):05d},纯棉T恤 白色 L,"
                f"{rnd.randint(1, 9)},{rnd.randint(100, 99999) / 100:.2f},"
                f"{warehouses[order % 3]},\r\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xchange-bench-csv-"))
    src = work / "orders.csv"
    make_csv(src, args.rows)
    size_mb = src.stat().st_size / 1e6
    times, rss = alternate_fresh(
        args.rounds,
        {
            "xchange": lambda _: convert_script(
                ("shop-order-lines", "shop-to-erp-lines", "erp-order-lines"),
                "out.csv",
                HERE / "formats",
                src,
                work / "x",
                f"documents == {args.rows}",  # batch output: one file
            ),
            "pandas": lambda _: PANDAS.format(src=str(src), out=str(work / "p.csv"), dtype="str"),
            "pandas-object": lambda _: PANDAS.format(
                src=str(src), out=str(work / "p.csv"), dtype="object"
            ),
        },
    )
    x = statistics.median(times["xchange"])
    p = min(statistics.median(times["pandas"]), statistics.median(times["pandas-object"]))
    print(f"\n4. {args.rows:,} GBK order lines ({size_mb:.0f} MB): parse, validate, map, write CSV")
    print(
        f"  xchange  {args.rows / x:>12,.0f} rows/s  (median of {args.rounds}: "
        f"{', '.join(f'{t:.2f}' for t in times['xchange'])} s)"
    )
    print(
        f"  pandas   {args.rows / statistics.median(times['pandas']):>12,.0f} rows/s  "
        "(read_csv -> to_csv, dtype=str: "
        f"{', '.join(f'{t:.2f}' for t in times['pandas'])} s)"
    )
    o = statistics.median(times["pandas-object"])
    print(
        f"  pandas object {args.rows / o:>7,.0f} rows/s  (dtype=object: "
        f"{', '.join(f'{t:.2f}' for t in times['pandas-object'])} s)"
    )
    print(f"  ratio    {p / x:.2f}x the quicker pandas' rows per second (medians)")
    best = {k: min(v) for k, v in times.items()}
    fastest = min(best["pandas"], best["pandas-object"])
    print(f"           {fastest / best['xchange']:.2f}x of the mins")
    ours, theirs, obj = (
        statistics.median(rss[k]) / 1024 for k in ("xchange", "pandas", "pandas-object")
    )
    print(
        f"\n5. peak RSS converting it: xchange {ours:.0f} MiB, pandas {theirs:.0f} MiB "
        f"(dtype=object: {obj:.0f} MiB)"
    )
    print(json.dumps({"rows": args.rows, "times": times, "rss_kib": rss}))


if __name__ == "__main__":
    main()

"""Benchmark 4b: benchmark 4's 1,000,000-row GBK CSV with three computed fields (a line
amount, a rounded net amount, a material code looked up in 100,000 master-data rows) and a
filter, against the same route without them, in the same run.

    python tests/bench/bench_csv_computed.py [--rows 1000000] [--rounds 3]

Target: at most 1.3x the time of the run without them. Each contender runs in a fresh
process, alternating; the master data is written beside a copy of the benchmark formats.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from bench_csv import HERE, make_csv
from common import alternate_fresh, convert_script  # type: ignore[import-not-found]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xchange-bench-computed-"))
    formats = work / "formats"
    shutil.copytree(HERE / "formats", formats)
    master = formats / "master" / "skus.csv"
    master.write_text(
        "sku,material\n" + "".join(f"SKU-{i:05d},M{i:06d}\n" for i in range(100_000)),
        encoding="utf-8",
    )
    src = work / "orders.csv"
    make_csv(src, args.rows)
    contenders = {
        "plain": ("shop-to-erp-lines", "erp-order-lines"),
        "computed": ("shop-to-erp-lines-computed", "erp-order-lines-computed"),
    }

    def code(name: str) -> str:
        mapping, target = contenders[name]
        return convert_script(
            ("shop-order-lines", mapping, target),
            "out.csv",
            formats,
            src,
            work / name,
            "outputs == 1",
        )

    times, _ = alternate_fresh(
        args.rounds, {name: lambda _, n=name: code(n) for name in contenders}
    )
    plain, computed = (statistics.median(times[k]) for k in ("plain", "computed"))
    print(
        f"\n4b. {args.rows:,} GBK order lines: three computed fields, a 100,000-row lookup "
        "and a filter"
    )
    for name in contenders:
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(
            f"  {name:<9} {args.rows / statistics.median(times[name]):>12,.0f} rows/s  "
            f"(median of {args.rounds}: {runs} s; min {min(times[name]):.2f} s)"
        )
    print(
        f"  ratio     {computed / plain:.2f}x the time without them (target <= 1.3x); "
        f"of the mins {min(times['computed']) / min(times['plain']):.2f}x"
    )


if __name__ == "__main__":
    main()

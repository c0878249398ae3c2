"""Why benchmark 4 reads with pyarrow directly, not pandas with Arrow-backed strings: the
reading and two of the plan's checks on benchmark 4's file, each way, interleaved.

    python tests/bench/bench_csv_strings.py [--rows 1000000] [--rounds 3]

Reading (1,000,000 GBK rows, in chunks as the codec reads them):
  pandas object   pandas' C reader, dtype=object (the standard reading: Python strings)
  pandas str      the same with dtype=str (pandas 3 with pyarrow: Arrow-backed strings)
  arrow direct    decode 2 MiB blocks, encode UTF-8, pyarrow.csv.read_csv (the fast reading)
Checking one text column of every row (trim, then a pattern), as each kind of column allows:
  object          a Python call per value (the columnar plan)
  pandas str      .str.strip() + .str.fullmatch() on the Arrow-backed column
  arrow direct    pyarrow.compute utf8_trim + match_substring_regex
"""

from __future__ import annotations

import argparse
import codecs
import io
import re
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from bench_csv import make_csv  # type: ignore[import-not-found]

SPACES = " \t\u3000"


def read_pandas(src: Path, dtype: object) -> list[pd.Series]:
    out = []
    reader = pd.read_csv(
        src, encoding="gbk", dtype=dtype, keep_default_na=False, na_filter=False, chunksize=50_000
    )
    with reader:
        for frame in reader:
            out.append(frame.iloc[:, 3])
    return out


def read_arrow(src: Path) -> list[pa.Array]:
    out = []
    decoder = codecs.getincrementaldecoder("gbk")()
    rest = ""
    header = None
    with open(src, "rb") as fh:
        while True:
            raw = fh.read(2 << 20)
            text = rest + decoder.decode(raw, final=not raw)
            cut = text.rfind("\n") + 1 if raw else len(text)
            block, rest = text[:cut], text[cut:]
            if header is None:
                end = block.index("\n") + 1
                header, block = block[:end].rstrip("\r\n").split(","), block[end:]
            if block:
                names = [f"c{i}" for i in range(len(header))]
                table = pcsv.read_csv(
                    io.BytesIO(block.encode("utf-8")),
                    read_options=pcsv.ReadOptions(column_names=names, use_threads=False),
                    parse_options=pcsv.ParseOptions(quote_char=False),
                    convert_options=pcsv.ConvertOptions(
                        column_types=dict.fromkeys(names, pa.string()), check_utf8=False
                    ),
                )
                out.append(table.column(3).combine_chunks())
            if not raw:
                return out


PATTERN = "张三[0-9]{1,2}"


def check_object(columns: list[pd.Series]) -> int:
    compiled = re.compile(PATTERN)
    bad = 0
    for col in columns:
        values = [v.strip(SPACES) for v in col.astype(object).tolist()]
        bad += sum(compiled.fullmatch(v) is None for v in values)
    return bad


def check_pandas_str(columns: list[pd.Series]) -> int:
    bad = 0
    for col in columns:
        bad += int((~col.str.strip(SPACES).str.fullmatch(PATTERN)).sum())
    return bad


def check_arrow(columns: list[pa.Array]) -> int:
    bad = 0
    for col in columns:
        ok = pc.match_substring_regex(pc.utf8_trim(col, SPACES), f"^(?:{PATTERN})$")
        bad += len(col) - pc.sum(ok).as_py()
    return bad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    src = Path(tempfile.mkdtemp(prefix="xchange-bench-strings-")) / "orders.csv"
    make_csv(src, args.rows)
    contenders = {
        "read: pandas object": lambda: read_pandas(src, object),
        "read: pandas str": lambda: read_pandas(src, str),
        "read: arrow direct": lambda: read_arrow(src),
    }
    kept = {}
    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            start = time.process_time()
            kept[name] = fn()
            times.setdefault(name, []).append(time.process_time() - start)
        checks = {
            "check: object": lambda: check_object(kept["read: pandas object"]),
            "check: pandas str": lambda: check_pandas_str(kept["read: pandas str"]),
            "check: arrow direct": lambda: check_arrow(kept["read: arrow direct"]),
        }
        found = set()
        for name, fn in checks.items():
            start = time.process_time()
            found.add(fn())
            times.setdefault(name, []).append(time.process_time() - start)
        assert len(found) == 1, found  # the same verdicts every way
    print(f"\n{args.rows:,} GBK rows, CPU seconds (median and min of {args.rounds}, interleaved)")
    for name, ts in times.items():
        print(f"  {name:<22} {statistics.median(ts):6.2f}  (min {min(ts):.2f})")


if __name__ == "__main__":
    main()

"""Archives in: a zip of N GBK order-line CSV files (entry names in GBK, no UTF-8 flag)
unpacked, each entry parsed, validated, mapped and written as CSV, against `unzip` and the
plain pandas script of bench_csv.py (`read_csv` -> `to_csv`, dtype=object) over the files
it extracted.

    python tests/bench/bench_archives.py [--files 10] [--rows 1000000] [--rounds 3]

``--rows`` is the total over the files. A third contender converts the same CSV files bare
(no archive), to show what unpacking adds. Each contender runs in a fresh process, the two
alternating; the times are of the whole job (unzip's process included). xchange unpacks
with every check of a route that unpacks (names decoded and judged, limits counted as bytes
come out, each entry hashed) into a private scratch folder, then converts entry by entry
(``xchange.archives.convert_file``, what ``xchange convert`` runs); the journal and the
delivery are not in it (as in bench_csv.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from bench_csv import HEADER, make_csv  # type: ignore[import-not-found]
from common import ROOT, alternate_fresh, ensure_tools  # type: ignore[import-not-found]

HERE = Path(__file__).resolve().parent

XCHANGE = """
import datetime, json, resource, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from xchange.archives import convert_file
from xchange.config import RouteConfig
from xchange.pipeline import Pipeline
from xchange.sink import Sink
route = RouteConfig.model_validate(json.loads({route!r}))
pipeline = Pipeline(route, Path({formats!r}))
out = Path({out!r})
out.mkdir(parents=True, exist_ok=True)
start = time.perf_counter()
with open({src!r}, "rb") as fh:
    done = convert_file(pipeline, route, fh, {name!r}, datetime.datetime.now(), Sink(out))
documents = sum(o.documents for o in done.outputs)
assert len(done.outputs) == {files} and documents == {rows}, (len(done.outputs), documents)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

#: The same CSV files converted bare (no archive): what unpacking adds.
BARE = """
import datetime, json, resource, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from xchange.config import RouteConfig
from xchange.pipeline import Pipeline
from xchange.sink import Sink
route = RouteConfig.model_validate(json.loads({route!r}))
pipeline = Pipeline(route, Path({formats!r}))
out = Path({out!r})
out.mkdir(parents=True, exist_ok=True)
start = time.perf_counter()
documents = 0
for path in sorted(Path({parts!r}).iterdir()):
    with open(path, "rb") as fh:
        done = pipeline.convert_stream(fh, path.name, datetime.datetime.now(), Sink(out))
    documents += sum(o.documents for o in done.outputs)
assert documents == {rows}, documents
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

REFERENCE = """
import resource, subprocess, time
from pathlib import Path
import pandas as pd
start = time.perf_counter()
subprocess.run(["unzip", "-q", "-o", {src!r}, "-d", {unzipped!r}], check=True)
rows = 0
for path in sorted(Path({unzipped!r}).iterdir()):
    frame = pd.read_csv(path, encoding="gbk", dtype=object, keep_default_na=False)
    frame.to_csv(Path({out!r}) / (path.stem + ".csv"), index=False, encoding="utf-8")
    rows += len(frame)
assert rows == {rows}, rows
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(time.perf_counter() - start, max(kids, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def make_zip(work: Path, files: int, rows: int) -> Path:
    """A zip of ``files`` order-line CSVs (``rows`` lines in all, GBK), its entry names
    in GBK without the UTF-8 flag, as a Windows shop system writes it."""
    sys.path.insert(0, str(ROOT))
    from xchange.archives import zipped
    from xchange.config import ArchiveSpec
    from xchange.sink import Output

    whole = work / "all.csv"
    make_csv(whole, rows)
    header = HEADER.encode("gbk") + b"\r\n"
    each = -(-rows // files)
    parts = []
    # Line by line (this process's peak RSS would be inherited by the fresh processes'
    # figures: ru_maxrss survives exec).
    with open(whole, "rb") as lines:
        lines.readline()
        for i in range(files):
            (work / "parts").mkdir(exist_ok=True)
            path = work / "parts" / f"part{i:03d}.csv"
            with open(path, "wb") as part:
                part.write(header)
                for _ in range(each):
                    line = lines.readline()
                    if not line:
                        break
                    part.write(line)
            data = path.read_bytes()
            name = f"门店订单_20261207_{i:03d}.csv"
            parts.append(Output(name, len(data), hashlib.sha256(data).hexdigest(), 1, path))
            del data
    spec = ArchiveSpec(name="shop_export_20261207.zip", names="gbk")
    made = zipped(parts, spec, spec.name, datetime(2026, 12, 7, 8, 30), work / "zip")
    whole.unlink()
    assert made.path is not None
    return made.path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_tools("unzip")
    work = Path(tempfile.mkdtemp(prefix="xchange-bench-archives-"))
    src = make_zip(work, args.files, args.rows)
    route = {
        "name": "bench",
        "source": {
            "endpoint": "x",
            "unpack": {"kind": "zip", "entries": "门店订单_*.csv", "names": "gbk"},
        },
        "source_layout": "shop-order-lines",
        "mapping": "shop-to-erp-lines",
        "target_layout": "erp-order-lines",
        "target": {"endpoint": "y", "name": "{source_stem}.csv"},
    }

    def ours(r: int) -> str:
        shutil.rmtree(work / "x", ignore_errors=True)
        return XCHANGE.format(
            root=str(ROOT),
            route=json.dumps(route),
            formats=str(HERE / "formats"),
            src=str(src),
            name=src.name,
            out=str(work / "x"),
            files=args.files,
            rows=args.rows,
        )

    def bare(r: int) -> str:
        shutil.rmtree(work / "b", ignore_errors=True)
        plain = {**route, "source": {"endpoint": "x"}}
        return BARE.format(
            root=str(ROOT),
            route=json.dumps(plain),
            formats=str(HERE / "formats"),
            parts=str(work / "parts"),
            out=str(work / "b"),
            rows=args.rows,
        )

    def theirs(r: int) -> str:
        for folder in ("u", "p"):
            shutil.rmtree(work / folder, ignore_errors=True)
        (work / "p").mkdir()
        return REFERENCE.format(
            src=str(src), unzipped=str(work / "u"), out=str(work / "p"), rows=args.rows
        )

    times, rss = alternate_fresh(
        args.rounds, {"xchange": ours, "unzip+pandas": theirs, "xchange bare CSVs": bare}
    )
    size_mb = src.stat().st_size / 1e6
    x, p = (statistics.median(times[k]) for k in ("xchange", "unzip+pandas"))
    print(
        f"\nA zip of {args.files} GBK order-line CSVs, {args.rows:,} rows ({size_mb:.0f} MB "
        "zipped): unpack, parse, validate, map, write CSV"
    )
    for name in ("xchange", "unzip+pandas", "xchange bare CSVs"):
        med, low = statistics.median(times[name]), min(times[name])
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(
            f"  {name:<17} {args.rows / med:>10,.0f} rows/s median, {args.rows / low:>10,.0f} "
            f"at the min  ({runs} s)  peak RSS {statistics.median(rss[name]) / 1024:.0f} MiB"
        )
    low_ratio = min(times["unzip+pandas"]) / min(times["xchange"])
    print(f"  ratio  {p / x:.2f}x unzip+pandas' rows per second (medians), {low_ratio:.2f}x (mins)")
    bare_ratio = statistics.median(times["xchange bare CSVs"]) / x
    print(f"  unpacking costs: the zip takes {1 / bare_ratio:.2f}x the time of the bare CSVs")
    print(json.dumps({"files": args.files, "rows": args.rows, "times": times, "rss_kib": rss}))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

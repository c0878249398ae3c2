"""Hostile inputs too big for the test suite: a single 500 MB line in a CSV and in an
NDJSON file, and a 500 MB JSON value. Each must be refused with a reason, in bounded time
and memory.

    python tests/bench/bench_hostile.py [--mb 500]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

PROBE = """
import io, resource, sys, time, datetime
sys.path.insert(0, {root!r})
from xchange.config import load_config
from xchange.pipeline import make_pipeline
from xchange.sink import Sink
from xchange.errors import XchangeError
from pathlib import Path
config = load_config({config!r})
pipeline = make_pipeline(config.route({route!r}), config.formats)
start = time.perf_counter()
try:
    with open({path!r}, "rb") as fh:
        pipeline.convert_stream(fh, "hostile", datetime.datetime.now(), Sink(Path({out!r})))
    outcome = "ACCEPTED"
except XchangeError as exc:
    outcome = str(exc).splitlines()[0][:160]
print(f"{{time.perf_counter() - start:.1f}} s, peak RSS "
      f"{{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}} MiB: {{outcome}}")
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xchange-hostile-"))
    big = args.mb * 1024 * 1024
    cases = {
        "shop-orders": (
            "one-line.csv",
            lambda fh: (
                fh.write("订单号,".encode("gbk")),
                [fh.write(b"x" * (1 << 20)) for _ in range(args.mb)],
            ),
        ),
        "oms-kingdee-orders": (
            "one-value.json",
            lambda fh: (
                fh.write(b'{"orders": [{"order_no": "'),
                [fh.write(b"x" * (1 << 20)) for _ in range(args.mb)],
                fh.write(b'"}]}'),
            ),
        ),
    }
    print(f"hostile inputs of {big / 1e6:.0f} MB each")
    for route, (name, fill) in cases.items():
        path = work / name
        with open(path, "wb") as fh:
            fill(fh)
        code = PROBE.format(
            root=str(ROOT),
            config=str(ROOT / "config" / "demo.toml"),
            route=route,
            path=str(path),
            out=str(work / "out"),
        )
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        print(
            f"  {name:<16} {done.stdout.strip() or done.stderr.strip()[-300:]}"
            f"  (process {time.perf_counter() - start:.1f} s)"
        )
        path.unlink()


if __name__ == "__main__":
    main()

"""The cost of control totals: the shop-orders route (flat GBK CSV -> one XML file per
order) on 200,000 rows, with its [totals] and without, in one process, alternating, 5
rounds. Run from the repository: python3 tests/bench/bench_totals.py"""

import io
import statistics
import sys
import time
from datetime import datetime

sys.path.insert(0, ".")
from tests.conftest import FORMATS, REPO, SAMPLES
from xchange.config import load_config
from xchange.pipeline import Pipeline
from xchange.sink import Sink

route = load_config(REPO / "config" / "demo.toml").route("shop-orders")
sample = (SAMPLES / "shop-orders" / "in" / "orders_20261121.csv").read_bytes().decode("gbk")
head, *rows = [line for line in sample.split("\r\n") if line]
out = [head]
for i in range(40000):
    for r in rows:
        f = r.split(",")
        f[0] = "EC" + f"{i:08d}" + f[0][-3:]
        out.append(",".join(f))
data = ("\r\n".join(out) + "\r\n").encode("gbk")
with_totals = Pipeline(route, FORMATS)
without = Pipeline(route, FORMATS)
without.mapping = without.mapping.model_copy(update={"totals": {}})
times = {"with": [], "without": []}
for _round in range(5):
    for name, p in (("without", without), ("with", with_totals)):
        t = time.perf_counter()
        c = p.convert_stream(io.BytesIO(data), "orders_x.csv", datetime(2026, 11, 21), Sink())
        times[name].append(time.perf_counter() - t)
rows_n = len(out) - 1
for name, ts in times.items():
    print(
        f"{name:8} median {statistics.median(ts):.2f} s  min {min(ts):.2f} s  "
        f"({rows_n:,} rows, {len(c.outputs):,} files)"
    )
median = statistics.median(times["with"]) / statistics.median(times["without"])
least = min(times["with"]) / min(times["without"])
print(f"cost: {median:.2f}x median, {least:.2f}x min")

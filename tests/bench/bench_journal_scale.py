"""Benchmark 7: a drop folder whose history is large. The cost of one look at a folder
with 100 new files should grow with the new files, not with the history.

    python tests/bench/bench_journal_scale.py [--history 100000] [--small 10000] [--new 100]

Both journals are filled with delivered records; the drop folder (left in place, as with
`after = "leave"`) holds the history's files plus `--new` new ones. Times one
`run --once` of a copy route to a local folder in each case.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from common import ROOT  # noqa: F401 - puts the repository on sys.path

from xchange.config import load_config
from xchange.journal import open_journal
from xchange.log import configure_logging
from xchange.runner import Runner

CONFIG = """
[journal]
path = "{work}/journal.sqlite"
[quarantine]
path = "{work}/q"
[endpoints.drop]
type = "local"
path = "{work}/drop"
[endpoints.out]
type = "local"
path = "{work}/out"
[[routes]]
name = "r"
source = {{ endpoint = "drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "out", name = "{{source_name}}" }}
after = {{ action = "leave" }}
ready = {{ settle = 0 }}
"""


def setup(work: Path, history: int, new: int) -> Path:
    (work / "drop").mkdir(parents=True)
    (work / "out").mkdir()
    config = work / "x.toml"
    config.write_text(CONFIG.format(work=work))
    journal = open_journal(load_config(config).journal)  # creates the schema
    journal.close()
    now = datetime.now(UTC).isoformat()
    db = sqlite3.connect(work / "journal.sqlite")
    rows = []
    for i in range(history):
        path = work / "drop" / f"old{i:07d}.dat"
        path.write_bytes(b"x")
        st = path.stat()
        rows.append(
            ("r", "drop", path.name, 1, st.st_mtime_ns, f"{i:064x}", "delivered", 1, now, now)
        )
    db.executemany(
        "INSERT INTO files (route, endpoint, path, size, mtime_ns, sha256, state, attempts, "
        "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    db.commit()
    db.close()
    for i in range(new):
        (work / "drop" / f"new{i:05d}.dat").write_bytes(f"new {i}".encode())
    return config


def looks(config: Path) -> tuple[float, float, float]:
    """The first look (new files delivered) and a later one, as a running daemon makes."""
    cfg = load_config(config)
    journal = open_journal(cfg.journal)
    runner = Runner(cfg, journal)
    start = time.perf_counter()
    runner.run_once(wait_to_settle=False)
    first = time.perf_counter() - start
    for i in range(3):
        (config.parent / "drop" / f"later{i}.dat").write_bytes(f"later{i}".encode())
    start = time.perf_counter()
    runner.run_once(wait_to_settle=False)
    later = time.perf_counter() - start
    # What the daemon does for a watched folder: a look at the names its file events gave.
    names = {f"event{i}.dat" for i in range(3)}
    for name in names:
        (config.parent / "drop" / name).write_bytes(name.encode())
    start = time.perf_counter()
    (route_result,) = [runner.run_route(cfg.routes[0], only=names)]
    evented = time.perf_counter() - start
    assert route_result.count("delivered") == 3
    runner.close()
    journal.close()
    return first, later, evented


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging(json=True, level="warning")
    first: dict[int, list[float]] = {args.small: [], args.history: []}
    later: dict[int, list[float]] = {args.small: [], args.history: []}
    evented: dict[int, list[float]] = {args.small: [], args.history: []}
    for _ in range(args.rounds):
        for history in (args.small, args.history):
            work = Path(tempfile.mkdtemp(prefix="xchange-bench-journal-"))
            config = setup(work, history, args.new)
            a, b, c = looks(config)
            first[history].append(a)
            later[history].append(b)
            evented[history].append(c)
            shutil.rmtree(work, ignore_errors=True)
    print("\n7. a drop folder holding a delivered history (left in place) plus new files")
    for label, data, new in (
        ("first look", first, args.new),
        ("later look", later, 3),
        ("file-event look", evented, 3),
    ):
        small, large = (statistics.median(data[h]) for h in (args.small, args.history))
        print(
            f"  {label} ({new} new): history {args.small:,}: {small:.3f} s, "
            f"history {args.history:,}: {large:.3f} s -> {large / small:.2f}x "
            f"for {args.history / args.small:.0f}x the history"
        )


if __name__ == "__main__":
    main()

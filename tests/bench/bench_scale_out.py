"""Benchmark 13: several daemons sharing one PostgreSQL journal, against one daemon with
its SQLite journal, on the same work; and what a claim costs per file.

    python tests/bench/bench_scale_out.py [--files 2000] [--rounds 3]

Part 1: FILES small files in an SFTP drop folder, a copy route to an SFTP target (the real
sshd), taken by `run --once` processes started together: SQLite with 1 daemon, PostgreSQL
with 1, 2 and 3 daemons (each its own configuration and local state). Files per second,
median of the rounds, contenders alternating.

PostgreSQL runs durable (fsync, synchronous commit), as SQLite runs with synchronous=FULL.

Part 2: the journal time of one file's life (claim, delivering, output + delivered,
archive announced and done) measured in-process, per backend, median per file.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, sshd_server  # type: ignore[import-not-found]

sys.path.insert(0, str(ROOT))

from tests import pg
from tests.procs import xchange_argv, xchange_env
from tests.sftp_routes import endpoint_toml
from xchange.journal import FileKey, OutputRecord, State, Step
from xchange.journal.postgres import PostgresJournal
from xchange.journal.sqlite import SQLiteJournal


def config(root: Path, journal: str, drop: str, target: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "xchange.toml"
    path.write_text(
        f"""
[journal]
path = "{root / "state" / "journal.sqlite"}"
{journal}

[quarantine]
path = "{root / "quarantine"}"
{drop}
{target}
[[routes]]
name = "bulk"
source = {{ endpoint = "drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "inbox", name = "{{source_stem}}.out" }}
after = {{ action = "archive", folder = "archive" }}
ready = {{ settle = 0 }}
transfers = 2
"""
    )
    return path


def run_files_per_second(args: argparse.Namespace) -> None:
    server = pg.start_postgres(durable=True)
    try:
        with sshd_server() as sshd:
            contenders = ["sqlite x1", "postgres x1", "postgres x2", "postgres x3"]
            times: dict[str, list[float]] = {c: [] for c in contenders}
            for round_ in range(args.rounds):
                for name in contenders:
                    backend, count = name.split(" x")
                    work = Path(tempfile.mkdtemp(prefix="xchange-bench-scale-"))
                    drop = sshd.folder(f"drop-{round_}-{name.replace(' ', '')}")
                    target = sshd.folder(f"inbox-{round_}-{name.replace(' ', '')}")
                    for i in range(args.files):
                        (drop / f"f{i:05d}.dat").write_bytes(os.urandom(2048))
                    if backend == "postgres":
                        url = server.create_database(f"b_{secrets.token_hex(5)}")
                        journal = f'url = "{url}"\npassword_env = "XCHANGE_PG_PASSWORD"'
                    else:
                        journal = ""
                    configs = [
                        config(
                            work / f"host{n}",
                            journal,
                            endpoint_toml("drop", sshd, drop),
                            endpoint_toml("inbox", sshd, target),
                        )
                        for n in range(int(count))
                    ]
                    env = xchange_env(XCHANGE_PG_PASSWORD=server.password)
                    start = time.perf_counter()
                    procs = [
                        subprocess.Popen(
                            xchange_argv(c, "run", "--once"),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env=env,
                        )
                        for c in configs
                    ]
                    for proc in procs:
                        proc.wait(timeout=600)
                    elapsed = time.perf_counter() - start
                    delivered = len([n for n in os.listdir(target) if n.endswith(".out")])
                    assert delivered == args.files, (name, delivered)
                    times[name].append(elapsed)
                    shutil.rmtree(work, ignore_errors=True)
            base = statistics.median(times["sqlite x1"])
            print(f"\n13. {args.files:,} files of 2 KB, SFTP drop -> SFTP target, run --once")
            for name in contenders:
                t = statistics.median(times[name])
                print(
                    f"  {name:<12} {args.files / t:>8,.0f} files/s  (median of {args.rounds}: "
                    f"{', '.join(f'{x:.2f}' for x in times[name])} s)   "
                    f"{base / t:.2f}x the SQLite daemon"
                )
    finally:
        server.stop("immediate")
        shutil.rmtree(server.base, ignore_errors=True)


def one_life(journal: object, n: int) -> float:
    """The journal calls of one delivered and archived file; seconds."""
    start = time.perf_counter()
    claim = journal.claim(  # type: ignore[attr-defined]
        FileKey("r", "drop", f"f{n}.dat", 2048, n, f"{n:064x}"),
        layout_version="l",
        mapping_version="m",
    )
    fid = claim.record.id
    journal.transition(fid, State.DELIVERING, note=f"f{n}.out")  # type: ignore[attr-defined]
    output = OutputRecord("inbox", f"f{n}.out", 2048, f"{n:064x}", claim.record.created_at)
    journal.record_steps([Step(fid, State.DELIVERED, output=output)])  # type: ignore[attr-defined]
    journal.record_steps([Step(fid, State.ARCHIVED, "archive into archive", "archive")])  # type: ignore[attr-defined]
    journal.record_steps([Step(fid, State.ARCHIVED, f"archive/f{n}.dat", f"archive/f{n}.dat")])  # type: ignore[attr-defined]
    return time.perf_counter() - start


def batched_lives(journal: object, n0: int, count: int) -> float:
    """The journal calls of ``count`` small files taken through as one batch; seconds."""
    start = time.perf_counter()
    keys = [FileKey("r", "drop", f"f{n}.dat", 2048, n, f"{n:064x}") for n in range(n0, n0 + count)]
    with journal.batch():  # type: ignore[attr-defined]
        claims = journal.claim_many(keys, layout_version="l", mapping_version="m")  # type: ignore[attr-defined]
        journal.record_steps([Step(c.record.id, State.DELIVERING, "out") for c in claims])  # type: ignore[attr-defined]
    steps = []
    for c in claims:
        output = OutputRecord("inbox", c.record.path, 2048, c.record.sha256, c.record.created_at)
        steps += [
            Step(c.record.id, State.DELIVERED, output=output),
            Step(c.record.id, State.ARCHIVED, "archive into archive", "archive"),
        ]
    with journal.batch():  # type: ignore[attr-defined]
        journal.record_steps(steps)  # type: ignore[attr-defined]
    journal.record_steps(  # type: ignore[attr-defined]
        [Step(c.record.id, State.ARCHIVED, "moved", f"archive/{c.record.path}") for c in claims]
    )
    return time.perf_counter() - start


def run_claim_cost(args: argparse.Namespace) -> None:
    server = pg.start_postgres(durable=True)
    work = Path(tempfile.mkdtemp(prefix="xchange-bench-claim-"))
    try:
        url = server.create_database("claims")
        backends = {
            "sqlite": SQLiteJournal(work / "j.sqlite"),
            "postgres": PostgresJournal(url, password=server.password),
        }
        print(f"\n13b. journal time of one file's life ({args.files:,} files, one thread)")
        for name, journal in backends.items():
            costs = [one_life(journal, n) for n in range(args.files)]
            costs.sort()
            print(
                f"  {name:<9} median {statistics.median(costs) * 1000:.2f} ms, "
                f"p99 {costs[int(len(costs) * 0.99)] * 1000:.2f} ms per file "
                "(claim, delivering, output + delivered, archive announced, archived)"
            )
            per = [
                batched_lives(journal, 1_000_000 + b * 256, 256) / 256
                for b in range(max(1, args.files // 256))
            ]
            print(
                f"  {name:<9} batched: median {statistics.median(per) * 1000:.2f} ms per file "
                "(256 small files a batch: claims, delivering, delivered + announced, archived)"
            )
            journal.close()  # type: ignore[attr-defined]
    finally:
        server.stop("immediate")
        shutil.rmtree(server.base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    run_claim_cost(args)
    run_files_per_second(args)


if __name__ == "__main__":
    main()

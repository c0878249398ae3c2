"""Benchmark 14: a huge drop folder over a slow link. An SFTP drop folder holding 100,000
old files (a delivered history left in place), reached through the latency proxy
(tests/latencyproxy.py) at 40 and 150 ms of round trip:

- a look's cost: one look at the route with nothing new (and with one new file), against
  OpenSSH's `sftp -b` ``ls -1`` of the folder and lftp's ``cls -1``, alternating;
- arrival to delivery: the daemon polling the route every ``--interval`` seconds, a new
  file renamed into the folder, the time until it is in the target folder;
- peak memory: a fresh process making a first look and three more at folders of
  ``--small`` and ``--files`` files (loopback).

    python tests/bench/bench_listing.py [--files 100000] [--rtt-ms 40,150] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from common import (  # type: ignore[import-not-found]
    ROOT,
    alternate,
    ensure_tools,
    over_link,
    ssh_options,
    sshd_server,
)

sys.path.insert(0, str(ROOT))

from tests.sshd import SshServer
from xchange.config import load_config
from xchange.journal import open_journal
from xchange.log import configure_logging

CONFIG = """
[journal]
path = "{work}/journal.sqlite"
[quarantine]
path = "{work}/q"
[daemon]
poll_interval = {interval}
[endpoints.drop]
type = "sftp"
host = "{server.host}"
port = {server.port}
user = "{server.user}"
path = "{drop}"
key_file = "{server.client_key}"
known_hosts = "{server.known_hosts}"
[endpoints.out]
type = "local"
path = "{work}/out"
[[routes]]
name = "r"
source = {{ endpoint = "drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "out", name = "{{source_name}}", if_exists = "overwrite" }}
after = {{ action = "leave" }}
ready = {{ settle = {settle} }}
"""


def history(drop: Path, count: int) -> list[tuple[str, int, int]]:
    """``count`` old files in the drop folder: (name, size, mtime_ns) of each."""
    drop.mkdir(parents=True, exist_ok=True)
    drop.chmod(0o777)
    out = []
    for i in range(count):
        path = drop / f"old{i:07d}.dat"
        path.write_bytes(b"x")
        out.append((path.name, 1, int(path.stat().st_mtime) * 1_000_000_000))
    return out


def configure(
    work: Path, server: SshServer, drop: Path, old: list[tuple[str, int, int]], **knobs: object
) -> Path:
    """A configuration and a journal in which every old file is delivered."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "out").mkdir(parents=True)
    config = work / "x.toml"
    config.write_text(
        CONFIG.format(work=work, server=server, drop=drop, **{"interval": 1, "settle": 0, **knobs})
    )
    open_journal(load_config(config).journal).close()  # creates the schema
    now = datetime.now(UTC).isoformat()
    db = sqlite3.connect(work / "journal.sqlite")
    db.executemany(
        "INSERT INTO files (route, endpoint, path, size, mtime_ns, sha256, state, attempts, "
        "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [
            ("r", "drop", name, size, mtime, f"{i:064x}", "delivered", 1, now, now)
            for i, (name, size, mtime) in enumerate(old)
        ],
    )
    db.commit()
    db.close()
    return config


def arrive(drop: Path, name: str) -> float:
    """A new file renamed into the drop folder (whole at once); when it arrived."""
    temp = drop / f".{name}.tmp"
    temp.write_bytes(f"new file {name}\n".encode())
    os.rename(temp, drop / name)
    return time.monotonic()


def looks(config: Path, drop: Path, rounds: int, references: dict[str, object]) -> None:
    """A look's cost beside the references' listings, alternating."""
    from xchange.runner import Runner

    cfg = load_config(config)
    journal = open_journal(cfg.journal)
    runner = Runner(cfg, journal)
    route = cfg.routes[0]
    start = time.perf_counter()
    runner.run_route(route)  # the first look: the history is looked up once
    first = time.perf_counter() - start
    counter = iter(range(1_000_000))

    def one_new() -> None:
        name = f"new-look-{next(counter):04d}.dat"
        arrive(drop, name)
        result = runner.run_route(route)
        assert result.count("delivered") == 1, result.summary()

    contenders: dict[str, object] = {
        "xchange look (nothing new)": lambda: runner.run_route(route),
        "xchange look (1 new file)": one_new,
        **references,
    }
    times = alternate(rounds, contenders)  # type: ignore[arg-type]
    runner.close()
    journal.close()
    print(f"  first look (the history looked up once): {first:.3f} s")
    base = statistics.median(times["xchange look (nothing new)"])
    for name, ts in times.items():
        median = statistics.median(ts)
        runs = ", ".join(f"{t:.3f}" for t in ts)
        ratio = "" if name.startswith("xchange") else f"   {median / base:.1f}x xchange's look"
        print(f"  {name:<30} median {median:8.3f} s, min {min(ts):8.3f} s  ({runs}){ratio}")


def latency(config: Path, drop: Path, out: Path, arrivals: int) -> list[float]:
    """The daemon polling the route; seconds from each new file's arrival to delivery."""
    from xchange.daemon import Daemon

    cfg = load_config(config)
    journal = open_journal(cfg.journal)
    stop = threading.Event()
    looked = threading.Event()
    daemon = Daemon(cfg, journal, stop=stop, on_result=lambda result: looked.set())
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    looked.wait(600)  # the first look (history looked up) is behind us
    waits = []
    for i in range(arrivals):
        time.sleep(0.37 + 0.61 * (i % 3))  # arrivals at different points of the cycle
        name = f"new-daemon-{i:04d}.dat"
        arrived = arrive(drop, name)
        while not (out / name).exists():
            time.sleep(0.01)
        waits.append(time.monotonic() - arrived)
    stop.set()
    thread.join(60)
    journal.close()
    return waits


MEMORY = """
import resource, sys, time
sys.path.insert(0, {root!r})
from xchange.config import load_config
from xchange.journal import open_journal
from xchange.log import configure_logging
from xchange.runner import Runner
configure_logging(json=True, level="debug")
cfg = load_config({config!r})
journal = open_journal(cfg.journal)
runner = Runner(cfg, journal)
for _ in range({looks}):
    runner.run_route(cfg.routes[0])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
runner.close()
journal.close()
print(peak)
"""


def peak_memory(config: Path, looks: int = 4) -> int:
    """Peak RSS (KiB) of a fresh process making a first look and three more (``looks``;
    0: the process set up, no look)."""
    code = MEMORY.format(root=str(ROOT), config=str(config), looks=looks)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return int(proc.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--rtt-ms", default="40,150")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arrivals", type=int, default=6)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=0.0)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--latency-only", action="store_true", help="no looks, no references")
    args = parser.parse_args()
    ensure_tools("lftp")
    configure_logging(json=True, level="debug")
    scratch = Path(tempfile.mkdtemp(prefix="xchange-bench-listing-"))
    print(f"\n14. a drop folder of {args.files:,} old files (delivered, left in place)")
    with sshd_server() as local:
        drop = local.folder("huge-drop")
        old = history(drop, args.files)
        for rtt in [float(r) for r in args.rtt_ms.split(",") if r]:
            with over_link(local, rtt, scratch) as server:
                work = scratch / f"rtt{rtt:g}"
                target = f"{server.user}@{server.host}"

                def sftp_ls(server: SshServer = server, target: str = target) -> None:
                    subprocess.run(
                        ["sftp", *ssh_options(server), "-b", "-", target],
                        input=f"ls -1 {drop}\n".encode(),
                        check=True,
                        capture_output=True,
                    )

                def lftp_cls(server: SshServer = server) -> None:
                    connect = (
                        f"ssh -a -x -i {server.client_key} -o UserKnownHostsFile="
                        f"{server.known_hosts} -o StrictHostKeyChecking=yes -o BatchMode=yes"
                    )
                    script = (
                        f"set sftp:connect-program '{connect}'; "
                        f"open -u {server.user}, -p {server.port} sftp://{server.host}; "
                        f"cls -1 {drop}/ > /dev/null"
                    )
                    subprocess.run(["lftp", "-c", script], check=True, capture_output=True)

                print(f"{rtt:g} ms round trip:")
                if not args.latency_only:
                    config = configure(work, server, drop, old, settle=args.settle)
                    looks(
                        config,
                        drop,
                        args.rounds,
                        {"OpenSSH sftp -b ls -1": sftp_ls, "lftp cls -1": lftp_cls},
                    )
                config = configure(
                    work, server, drop, old, interval=args.interval, settle=args.settle
                )
                waits = latency(config, drop, work / "out", args.arrivals)
                print(
                    f"  arrival -> delivered (daemon, every {args.interval:g} s, settle "
                    f"{args.settle:g} s): median {statistics.median(waits):.2f} s, max "
                    f"{max(waits):.2f} s  ({', '.join(f'{w:.2f}' for w in waits)})"
                )
                for path in drop.glob("new-*"):
                    path.unlink()
        if not args.no_memory:
            peaks = {}
            base = 0.0
            for count in (args.small, args.files):
                folder = local.folder(f"memory-{count}")
                config = configure(
                    scratch / f"memory-{count}", local, folder, history(folder, count)
                )
                peaks[count] = peak_memory(config) / 1024
                base = base or peak_memory(config, looks=0) / 1024
                shutil.rmtree(folder, ignore_errors=True)
            print(
                "  peak RSS, a first look and three more (loopback): "
                + ", ".join(f"{count:,} files {mib:.0f} MiB" for count, mib in peaks.items())
                + f"; the same process without a look: {base:.0f} MiB"
            )
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


if __name__ == "__main__":
    main()

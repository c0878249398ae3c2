"""Benchmark 6: drop -> delivered latency, one small file at a time, with the daemon running
(local folder watched, SFTP target).

    python tests/bench/bench_latency.py [--files 200]

Producers publish by rename (write a hidden name, then rename), so the route takes files at
first sight (`ready.settle = 0`). Prints p50, p90, p99 and max.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import time

from common import sshd_server
from soak import start_daemon


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    with sshd_server() as server:
        work, target, proc, log = start_daemon(server, "latency", settle=0)
        latencies = []
        try:
            time.sleep(3)  # started, connected
            for i in range(args.files):
                name = f"f{i:05d}.dat"
                tmp = work / "drop" / f".{name}"
                tmp.write_bytes(os.urandom(2048))
                start = time.perf_counter()
                tmp.rename(work / "drop" / name)
                deadline = start + 30
                while not (target / name).exists() and time.perf_counter() < deadline:
                    time.sleep(0.002)
                latencies.append(time.perf_counter() - start)
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            log.close()
        ms = sorted(1000 * x for x in latencies)
        q = statistics.quantiles(ms, n=100, method="inclusive")
        print(f"\n6. drop -> delivered, {len(ms)} files one at a time (local watch -> SFTP)")
        print(
            f"  p50 {q[49]:.0f} ms   p90 {q[89]:.0f} ms   p99 {q[98]:.0f} ms   max {ms[-1]:.0f} ms"
        )


if __name__ == "__main__":
    main()

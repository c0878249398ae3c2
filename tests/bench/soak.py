"""Soak: a steady stream of files through the running daemon (local watch -> SFTP), with
the daemon's memory, open file descriptors and threads sampled; they must stay flat.

    python tests/bench/soak.py [--minutes 10] [--every 0.2] [--sample 10]

Prints one line per sample and a verdict comparing the last quarter with the second.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, sshd_server

CONFIG = """
[journal]
path = "{work}/journal.sqlite"
[quarantine]
path = "{work}/quarantine"
[daemon]
poll_interval = 2
rescan = 30
[endpoints.drop]
type = "local"
path = "{work}/drop"
[endpoints.partner]
type = "sftp"
host = "{host}"
port = {port}
user = "{user}"
path = "{target}"
key_file = "{key}"
known_hosts = "{known_hosts}"
[[routes]]
name = "stream"
source = {{ endpoint = "drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "partner", name = "{{source_name}}" }}
after = {{ action = "delete" }}
ready = {{ settle = 0.3 }}
"""


def sample(pid: int) -> tuple[int, int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS")))
    threads = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("Threads")))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, threads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--every", type=float, default=0.2, help="seconds between new files")
    parser.add_argument("--sample", type=float, default=10, help="seconds between samples")
    args = parser.parse_args()
    with sshd_server() as server:
        work = Path(tempfile.mkdtemp(prefix="xchange-soak-"))
        (work / "drop").mkdir()
        target = server.folder("soak")
        config = work / "soak.toml"
        config.write_text(
            CONFIG.format(
                work=work,
                host=server.host,
                port=server.port,
                user=server.user,
                target=target,
                key=server.client_key,
                known_hosts=server.known_hosts,
            )
        )
        log = open(work / "daemon.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "xchange",
                "--log-format",
                "json",
                "run",
                "--config",
                str(config),
            ],
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
        samples: list[tuple[float, int, int, int]] = []
        start = time.monotonic()
        next_sample = start + 5
        written = 0
        try:
            while time.monotonic() - start < args.minutes * 60:
                name = work / "drop" / f"f{written:07d}.dat"
                tmp = name.with_name("." + name.name)
                tmp.write_bytes(os.urandom(2048))
                tmp.rename(name)  # producers publish atomically
                written += 1
                if time.monotonic() >= next_sample:
                    rss, fds, threads = sample(proc.pid)
                    elapsed = time.monotonic() - start
                    samples.append((elapsed, rss, fds, threads))
                    delivered = len(os.listdir(target))
                    print(
                        f"{elapsed:7.0f} s  written {written:6d}  delivered {delivered:6d}  "
                        f"RSS {rss / 1024:6.1f} MiB  fds {fds:3d}  threads {threads:3d}",
                        flush=True,
                    )
                    next_sample += args.sample
                time.sleep(args.every)
            deadline = time.monotonic() + 60
            while len(os.listdir(target)) < written and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
            log.close()
        delivered = len(os.listdir(target))
        quarter = max(1, len(samples) // 4)
        early, late = samples[quarter : 2 * quarter], samples[-quarter:]
        print(f"\nwritten {written}, delivered {delivered}, daemon exit {code}")
        for index, label in ((1, "RSS KiB"), (2, "fds"), (3, "threads")):
            a = statistics.mean(s[index] for s in early)
            b = statistics.mean(s[index] for s in late)
            print(
                f"  {label:<8} second quarter {a:10.1f}   last quarter {b:10.1f}   "
                f"change {100 * (b - a) / a:+.1f}%"
            )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

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
import tempfile
import time
from pathlib import Path
from typing import IO

from common import ROOT, sshd_server

from tests.procs import xchange_argv, xchange_env
from tests.sshd import SshServer

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
ready = {{ settle = {settle} }}
"""


def start_daemon(
    server: SshServer, label: str, *, settle: float
) -> tuple[Path, Path, subprocess.Popen[bytes], IO[bytes]]:
    """The daemon on a watched local folder delivering copies to the test sshd: its work
    folder, the receiver's folder, the process and its log file (the caller closes it)."""
    work = Path(tempfile.mkdtemp(prefix=f"xchange-{label}-"))
    (work / "drop").mkdir()
    target = server.folder(label)
    config = work / f"{label}.toml"
    config.write_text(
        CONFIG.format(
            work=work,
            host=server.host,
            port=server.port,
            user=server.user,
            target=target,
            key=server.client_key,
            known_hosts=server.known_hosts,
            settle=settle,
        )
    )
    log = open(work / "daemon.log", "wb")  # noqa: SIM115 - the caller closes it
    proc = subprocess.Popen(
        xchange_argv(config, "run"), stdout=log, stderr=log, cwd=ROOT, env=xchange_env()
    )
    return work, target, proc, log


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
        work, target, proc, log = start_daemon(server, "soak", settle=0.3)
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

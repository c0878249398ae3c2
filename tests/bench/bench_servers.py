"""Benchmark 12: the small-file batch on every SFTP server kind, beside OpenSSH's.

    python tests/bench/bench_servers.py [--files 2000] [--rounds 3]

Benchmark 3's copy route (its configuration) (2,000 files of 2 KB from a local drop, each under a
hidden name, renamed, its size checked, journaled, the source archived) delivered to each
server of the interop matrix in turn, alternating, each round starting from the same files.
The figure is each server's time beside OpenSSH's, measured in the same run: the target is
"within 1.5x of OpenSSH". A server that differs costs what its difference needs (rclone: a
look at each name before its rename; no posix-rename: nothing, as nothing is overwritten).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench_small_files import CONFIG
from common import alternate, random_files, run_xchange_once

from tests import sftpservers
from xchange.log import configure_logging

KINDS = ["openssh", "openssh-noext", "gesftpserver", "rclone", "proftpd"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging(json=True, level="warning")
    base = Path(tempfile.mkdtemp(prefix="xchange-bench-servers-"))
    base.chmod(0o755)  # the ProFTPD user must reach its folders
    # rclone with its default directory cache: nothing changes its folder behind its back
    # here (without it, each lookup lists the folder, and 2,000 files take a minute).
    servers = {kind: sftpservers.start(kind, base / kind, dir_cache="5m") for kind in KINDS}
    try:
        work = base / "work"
        originals = random_files(work / "originals", args.files)
        drop = work / "drop"
        configs = {kind: work / f"{kind}.toml" for kind in KINDS}
        resets = [0]

        def reset() -> None:
            # A new target folder each time (rclone caches what it listed: a folder emptied
            # behind its back would still look full to it).
            resets[0] += 1
            for kind, server in servers.items():
                target = server.folder(f"bench-{resets[0]}")
                configs[kind].write_text(
                    CONFIG.format(
                        work=work,
                        drop=drop,
                        host=server.host,
                        port=server.port,
                        user=server.user,
                        target=server.remote_path(target),
                        key=server.client_key,
                        known_hosts=server.known_hosts,
                        transfers=1,
                    )
                )
            shutil.rmtree(drop, ignore_errors=True)
            shutil.copytree(originals, drop)
            (work / "journal.sqlite").unlink(missing_ok=True)
            os.sync()

        contenders = {
            kind: (lambda c=configs[kind]: run_xchange_once(c, args.files)) for kind in KINDS
        }
        times = alternate(args.rounds, contenders, reset)
        print(f"\n{args.files} files of 2 KB through a copy route, by target server")
        reference = statistics.median(times["openssh"])
        for kind in KINDS:
            median = statistics.median(times[kind])
            runs = ", ".join(f"{t:.3f}" for t in times[kind])
            print(
                f"  {kind:<16} {args.files / median:>8.0f} files/s  "
                f"(median of {len(times[kind])}: {runs} s)   "
                f"{median / reference:.2f}x OpenSSH's time"
            )
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

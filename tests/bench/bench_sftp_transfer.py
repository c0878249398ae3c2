"""Benchmarks 1 and 2: one large file delivered to, and picked up from, the local sshd.

    python tests/bench/bench_sftp_transfer.py [--size-mb 300] [--rounds 3]

Reference in the same run: OpenSSH's `sftp -b` (put and get) and `rclone copyto` (put).
xchange's figure is its real delivery path: hidden temporary name, pipelined upload,
size check, atomic rename, size check after the rename; and its real pickup path:
prefetching download into a local file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

from common import alternate, ensure_tools, rclone_remote, report, ssh_options, sshd_server

from xchange.config import SFTPEndpoint
from xchange.remote.sftp import SFTPRemote


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_tools("rclone")
    with sshd_server() as server:
        work = server.folder("bench")
        src = work / "big.bin"
        with open(src, "wb") as fh:
            for _ in range(args.size_mb):
                fh.write(os.urandom(1 << 20))
        size = src.stat().st_size
        target = server.folder("bench-target")
        cfg = SFTPEndpoint.model_validate(
            {
                "host": server.host,
                "port": server.port,
                "user": server.user,
                "path": str(target),
                "key_file": server.client_key,
                "known_hosts": server.known_hosts,
            }
        )
        remote = SFTPRemote("bench", cfg)
        remote.list()  # connect once, as the daemon keeps its connection warm

        def xchange_put() -> None:
            with open(src, "rb") as fh:
                remote.put_atomic(
                    "big.out", fh, size, temp_name=".big.out.x.xchange-part", overwrite=True
                )

        def sftp_put() -> None:
            batch = work / "put.batch"
            batch.write_text(f"put {src} {target}/big.sftp\n")
            subprocess.run(
                ["sftp", *ssh_options(server), "-b", str(batch), f"{server.user}@{server.host}"],
                check=True,
                capture_output=True,
            )

        def rclone_put() -> None:
            subprocess.run(
                ["rclone", "copyto", str(src), f"{rclone_remote(server)}{target}/big.rclone"],
                check=True,
                capture_output=True,
            )

        mb = size / 1e6

        def clean_target() -> None:
            # Every contender writes a new file (rclone would otherwise skip an identical one),
            # after the previous one's data is written back to disk.
            for leftover in target.iterdir():
                leftover.unlink()
            os.sync()

        times = alternate(
            args.rounds,
            {"xchange": xchange_put, "OpenSSH sftp -b put": sftp_put, "rclone copyto": rclone_put},
            reset=clean_target,
        )
        report(f"1. one {args.size_mb} MiB file delivered over SFTP", "MB/s", mb, times)

        with open(src, "rb") as fh:
            remote.put_atomic(
                "pickup.bin", fh, size, temp_name=".pickup.x.xchange-part", overwrite=True
            )
        src_remote = SFTPRemote("bench", cfg.model_copy(update={"path": str(target)}))
        local = work / "got.bin"

        def xchange_get() -> None:
            with open(local, "wb") as fh:
                src_remote.download("pickup.bin", fh)

        def sftp_get() -> None:
            batch = work / "get.batch"
            batch.write_text(f"get {target}/pickup.bin {work}/got-sftp.bin\n")
            subprocess.run(
                ["sftp", *ssh_options(server), "-b", str(batch), f"{server.user}@{server.host}"],
                check=True,
                capture_output=True,
            )

        src_remote.list()
        # Each contender starts with the previous one's 300 MB written back to disk.
        times = alternate(
            args.rounds, {"xchange": xchange_get, "OpenSSH sftp -b get": sftp_get}, reset=os.sync
        )
        report(f"2. one {args.size_mb} MiB file picked up from SFTP", "MB/s", mb, times)
        assert Path(local).stat().st_size == size
        remote.close()
        src_remote.close()


if __name__ == "__main__":
    main()

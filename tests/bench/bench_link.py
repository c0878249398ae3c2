"""Benchmark 11c: one big file over a link with a 40 ms round trip (the latency proxy,
tests/latencyproxy.py, in front of the local sshd): xchange's put_atomic against OpenSSH
`sftp -b` put, each through the same proxy in the same run.

    python tests/bench/bench_link.py [--big-mb 50] [--rounds 3] [--rtt-ms 40]

Small files over the same link (11a): bench_small_files.py --files 200 --rtt-ms 40;
converted outputs (11b): bench_outputs.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (  # type: ignore[import-not-found]
    ROOT,
    alternate,
    over_link,
    report,
    ssh_options,
    sshd_server,
)

sys.path.insert(0, str(ROOT))

from xchange.config import SFTPEndpoint
from xchange.log import configure_logging
from xchange.remote.sftp import SFTPRemote


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=40)
    args = parser.parse_args()
    configure_logging(json=True, level="warning")
    work = Path(tempfile.mkdtemp(prefix="xchange-bench-link-"))
    with sshd_server() as local, over_link(local, args.rtt_ms, work) as server:
        target = local.folder("link-target")
        big = work / "big.bin"
        big.write_bytes(os.urandom(args.big_mb << 20))
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

        def xchange() -> None:
            remote = SFTPRemote("far", cfg)
            with open(big, "rb") as fh:
                remote.put_atomic(
                    "big.bin",
                    fh,
                    big.stat().st_size,
                    temp_name=".big.bin.t.xchange-part",
                    overwrite=True,
                )
            remote.close()

        def sftp_put() -> None:
            subprocess.run(
                ["sftp", *ssh_options(server), "-b", "-", f"{server.user}@{server.host}"],
                input=f"put {big} {target}/big-ref.bin\n".encode(),
                check=True,
                capture_output=True,
            )

        def clean() -> None:
            for name in ("big.bin", "big-ref.bin"):
                (target / name).unlink(missing_ok=True)

        times = alternate(args.rounds, {"xchange": xchange, "OpenSSH sftp -b put": sftp_put}, clean)
        report(
            f"11c. one {args.big_mb} MiB file over a {args.rtt_ms:g} ms round trip",
            "MB/s",
            (args.big_mb << 20) / 1e6,
            times,
        )


if __name__ == "__main__":
    main()

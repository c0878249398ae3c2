"""Benchmark 16: what a target's ``verify`` costs, beside ``verify = "size"`` (the default).

    python tests/bench/bench_verify.py [--rounds 3] [--small 200] [--big 2]

Deliveries straight through the SFTP remote (no journal, no conversion: only the transfer
and its check), to OpenSSH (no digest of its own: "hash" reads back) and to ProFTPD
(``check-file``: its sha512), on loopback and through the latency proxy (40 ms round
trip): ``--small`` files of 100 KB in pipelined flights of 64 (``put_many``, as small
outputs and batches go) and ``--big`` files of 50 MB one at a time (``put_atomic``,
through paramiko: under ``accelerate_mb``). Rounds interleave the three verifications;
medians and minimums are printed, each beside "size" measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from common import alternate, over_link

from tests import sftpservers
from tests.sftp_routes import sftp_endpoint
from xchange.log import configure_logging
from xchange.remote.base import SmallPut, Verify
from xchange.remote.sftp import SFTPRemote

KINDS = ["openssh", "proftpd"]
WAYS = ["size", "hash", "readback"]
SMALL, BIG = 100_000, 50_000_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--big", type=int, default=2)
    args = parser.parse_args()
    configure_logging(json=True, level="warning")
    base = Path(tempfile.mkdtemp(prefix="xchange-bench-verify-"))
    base.chmod(0o755)  # the ProFTPD user must reach its folders
    small = [os.urandom(SMALL) for _ in range(args.small)]
    big = base / "big.bin"
    big.write_bytes(os.urandom(BIG))
    servers = {kind: sftpservers.start(kind, base / kind) for kind in KINDS}
    try:
        for rtt in (0, 40):
            for kind, server in servers.items():
                with over_link(server, rtt, base) as linked:  # type: ignore[arg-type]
                    measure(args, linked, kind, rtt, small, big)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def measure(
    args: argparse.Namespace,
    server: sftpservers.SftpServer,
    kind: str,
    rtt: int,
    small: list[bytes],
    big: Path,
) -> None:
    folder = server.folder(f"verify-{rtt}")
    remote = SFTPRemote("bench", sftp_endpoint(server, folder, accelerate_mb=1024))
    remote.connect()
    round_ = [0]

    def reset() -> None:
        round_[0] += 1
        for p in folder.iterdir():
            p.unlink()

    def smalls(how: str) -> Callable[[], object]:
        verify = Verify(how, readback_max=64 << 20)

        def run() -> None:
            puts = [
                SmallPut(f"s{i}-{round_[0]}.dat", data, f".s{i}.part", False, 0o644, verify)
                for i, data in enumerate(small)
            ]
            for start in range(0, len(puts), 64):
                assert remote.put_many(puts[start : start + 64]) == [None] * len(
                    puts[start : start + 64]
                )

        return run

    def bigs(how: str) -> Callable[[], object]:
        verify = Verify(how, readback_max=64 << 20)

        def run() -> None:
            for i in range(args.big):
                with open(big, "rb") as fh:
                    remote.put_atomic(
                        f"b{i}-{round_[0]}.bin",
                        fh,
                        BIG,
                        temp_name=f".b{i}.part",
                        overwrite=False,
                        mode=0o644,
                        verify=verify,
                    )

        return run

    try:
        remote.put_atomic(  # warm: the session, the rename probe, the server's digests
            "warm", io.BytesIO(b"w"), 1, temp_name=".warm", overwrite=False, verify=Verify("hash")
        )
        link = "loopback" if not rtt else f"{rtt} ms round trip"
        hashes = remote.capabilities().server_hashes
        said = f"hash = {hashes[0]} computed by the server" if hashes else "hash = read back"
        for what, amount, unit, make in (
            (f"{args.small} x 100 KB, pipelined", args.small, "files/s", smalls),
            (f"{args.big} x 50 MB, one at a time", args.big * BIG / 1e6, "MB/s", bigs),
        ):
            times = alternate(args.rounds, {how: make(how) for how in WAYS}, reset)
            show(f"{kind}, {link}, {what} ({said})", unit, amount, times)
    finally:
        remote.close()


def show(title: str, unit: str, amount: float, times: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    reference = statistics.median(times["size"])
    for how, ts in times.items():
        median = statistics.median(ts)
        runs = ", ".join(f"{t:.3f}" for t in ts)
        print(
            f"  verify = {how:<9} {amount / median:>9.1f} {unit}  median {median:.3f} s, "
            f"min {min(ts):.3f} s  ({runs})   {median / reference:.2f}x size's time"
        )


if __name__ == "__main__":
    main()

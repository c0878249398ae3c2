"""Benchmark 11 (first figures): over a link with a 40 ms round trip (the latency proxy,
tests/latencyproxy.py, in front of the local sshd), small files of a copy route and one
big file, each contender through the same proxy in the same run.

    python tests/bench/bench_link.py [--files 200] [--big-mb 50] [--rounds 3] [--rtt-ms 40]

Small files: xchange `run --once` (journal, temporary name + rename + size check, archive)
against OpenSSH `sftp -b` (one put per file) and `lftp mirror -R --parallel=8`.
Big file: xchange's put_atomic against OpenSSH `sftp -b` put.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_small_files import CONFIG  # type: ignore[import-not-found]
from common import (  # type: ignore[import-not-found]
    ROOT,
    alternate,
    ensure_tools,
    random_files,
    report,
    run_xchange_once,
    ssh_options,
    sshd_server,
)

sys.path.insert(0, str(ROOT))

from tests.latencyproxy import LatencyProxy
from xchange.config import SFTPEndpoint
from xchange.log import configure_logging
from xchange.remote.sftp import SFTPRemote


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--big-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=40)
    args = parser.parse_args()
    ensure_tools("lftp")
    configure_logging(json=True, level="warning")
    with sshd_server() as real, LatencyProxy(real.port, delay=args.rtt_ms / 2000) as proxy:
        work = Path(tempfile.mkdtemp(prefix="xchange-bench-link-"))
        known = work / "known_hosts"
        known.write_text(
            real.known_hosts.read_text().replace(
                f"[127.0.0.1]:{real.port}", f"[127.0.0.1]:{proxy.port}"
            )
        )
        server = dataclasses.replace(real, port=proxy.port, known_hosts=known)
        originals = random_files(work / "originals", args.files)
        target = real.folder("link-target")
        drop = work / "drop"

        def reset() -> None:
            shutil.rmtree(target)
            target.mkdir()
            target.chmod(0o777)
            shutil.rmtree(drop, ignore_errors=True)
            shutil.copytree(originals, drop)
            (work / "journal.sqlite").unlink(missing_ok=True)
            os.sync()

        config_file = work / "bench.toml"
        config_file.write_text(
            CONFIG.format(
                work=work,
                drop=drop,
                host=server.host,
                port=server.port,
                user=server.user,
                target=target,
                key=server.client_key,
                known_hosts=known,
                transfers=8,
            )
        )

        def xchange() -> None:
            run_xchange_once(config_file, args.files)

        def sftp_put() -> None:
            batch = work / "put.batch"
            batch.write_text(
                "".join(f"put {p} {target}/{p.name}\n" for p in sorted(drop.iterdir()))
            )
            subprocess.run(
                ["sftp", *ssh_options(server), "-b", str(batch), f"{server.user}@{server.host}"],
                check=True,
                capture_output=True,
            )

        def lftp_mirror() -> None:
            script = (
                f"set sftp:connect-program 'ssh -a -x -i {server.client_key} "
                f"-o UserKnownHostsFile={known}'; "
                f"open sftp://{server.user}:x@{server.host}:{server.port}; "
                f"mirror -R --parallel=8 {drop} {target}"
            )
            subprocess.run(["lftp", "-c", script], check=True, capture_output=True)

        times = alternate(
            args.rounds,
            {
                "xchange": xchange,
                "OpenSSH sftp -b put": sftp_put,
                "lftp mirror -R --parallel=8": lftp_mirror,
            },
            reset,
        )
        report(
            f"11a. {args.files} files of 2 KB over a {args.rtt_ms:g} ms round trip",
            "files/s",
            args.files,
            times,
        )

        big = work / "big.bin"
        big.write_bytes(os.urandom(args.big_mb << 20))
        cfg = SFTPEndpoint.model_validate(
            {
                "host": server.host,
                "port": server.port,
                "user": server.user,
                "path": str(target),
                "key_file": server.client_key,
                "known_hosts": known,
            }
        )

        def xchange_big() -> None:
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

        def sftp_big() -> None:
            subprocess.run(
                ["sftp", *ssh_options(server), "-b", "-", f"{server.user}@{server.host}"],
                input=f"put {big} {target}/big-ref.bin\n".encode(),
                check=True,
                capture_output=True,
            )

        def clean() -> None:
            for name in ("big.bin", "big-ref.bin"):
                (target / name).unlink(missing_ok=True)

        big_times = alternate(
            args.rounds, {"xchange": xchange_big, "OpenSSH sftp -b put": sftp_big}, clean
        )
        report(
            f"11c. one {args.big_mb} MiB file over a {args.rtt_ms:g} ms round trip",
            "MB/s",
            (args.big_mb << 20) / 1e6,
            big_times,
        )


if __name__ == "__main__":
    main()

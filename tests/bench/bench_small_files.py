"""Benchmark 3: 2,000 files of 2 KB, each delivered under a temporary name and renamed.

    python tests/bench/bench_small_files.py [--files 2000] [--transfers 8] [--rounds 3]
        [--rtt-ms 0]   (row 11a: --files 200 --rtt-ms 40, through the latency proxy)

xchange runs a real `mapping = "copy"` route from a local drop folder to the local sshd
(journal, readiness, temporary name + rename + size checks, archive of the source); new small
files go in pipelined batches. Every contender starts with all files written back to disk
(`os.sync()`), as files that have waited in a drop folder are. References in the same run,
none of which renames: OpenSSH `sftp -b` (one `put` per file), `lftp mirror -R --parallel=8`,
and `rclone copy --transfers 8 --sftp-disable-hashcheck`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from common import (
    alternate,
    ensure_tools,
    over_link,
    random_files,
    rclone_remote,
    report,
    run_xchange_once,
    ssh_options,
    sshd_server,
)

from xchange.log import configure_logging

CONFIG = """
[journal]
path = "{work}/journal.sqlite"
[quarantine]
path = "{work}/quarantine"
[endpoints.drop]
type = "local"
path = "{drop}"
[endpoints.partner]
type = "sftp"
host = "{host}"
port = {port}
user = "{user}"
path = "{target}"
key_file = "{key}"
known_hosts = "{known_hosts}"
[alerts]
sinks = [{{ type = "log" }}]
[[routes]]
name = "small"
source = {{ endpoint = "drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "partner", name = "{{source_name}}" }}
after = {{ action = "archive", folder = "archive" }}
ready = {{ settle = 0 }}
transfers = {transfers}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--transfers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=0, help="a link's round trip")
    args = parser.parse_args()
    ensure_tools("rclone", "lftp")
    configure_logging(json=True, level="warning")
    work = Path(tempfile.mkdtemp(prefix="xchange-bench-"))
    with sshd_server() as local, over_link(local, args.rtt_ms, work) as server:
        originals = random_files(work / "originals", args.files)
        target = local.folder("small-target")
        drop = work / "drop"

        def reset() -> None:
            shutil.rmtree(target)
            target.mkdir()
            target.chmod(0o777)
            shutil.rmtree(drop, ignore_errors=True)
            shutil.copytree(originals, drop)
            (work / "journal.sqlite").unlink(missing_ok=True)
            # Each contender starts once the previous one's files (and this reset) are
            # written back: otherwise whoever runs next pays for the other's write-back.
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
                known_hosts=server.known_hosts,
                transfers=args.transfers,
            )
        )

        def xchange() -> None:
            run_xchange_once(config_file, args.files)

        def sftp_put() -> None:
            batch = work / "put.batch"
            files = sorted(drop.iterdir())
            batch.write_text("".join(f"put {p} {target}/{p.name}\n" for p in files))
            subprocess.run(
                ["sftp", *ssh_options(server), "-b", str(batch), f"{server.user}@{server.host}"],
                check=True,
                capture_output=True,
            )

        def lftp_mirror() -> None:
            script = (
                f"set sftp:connect-program 'ssh -a -x -i {server.client_key} "
                f"-o UserKnownHostsFile={server.known_hosts}'; "
                f"open sftp://{server.user}:x@{server.host}:{server.port}; "
                f"mirror -R --parallel=8 {drop} {target}"
            )
            subprocess.run(["lftp", "-c", script], check=True, capture_output=True)

        def rclone_copy() -> None:
            subprocess.run(
                [
                    "rclone",
                    "copy",
                    "--transfers",
                    "8",
                    "--sftp-disable-hashcheck",
                    str(drop),
                    f"{rclone_remote(server)}{target}",
                ],
                check=True,
                capture_output=True,
            )

        times = alternate(
            args.rounds,
            {
                "xchange": xchange,
                "OpenSSH sftp -b put": sftp_put,
                "lftp mirror -R --parallel=8": lftp_mirror,
                "rclone copy --transfers 8": rclone_copy,
            },
            reset=reset,
        )
        link = f", over a {args.rtt_ms:g} ms round trip" if args.rtt_ms else ""
        report(
            f"3. {args.files} files of 2 KB (xchange: temp name + rename, "
            f"transfers={args.transfers}){link}",
            "files/s",
            args.files,
            times,
        )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

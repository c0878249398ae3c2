"""Beyond the table: 2,000 files of 2 KB picked up from an SFTP drop folder.

    python tests/bench/bench_sftp_drop.py [--files 2000] [--rounds 3]

xchange runs a real `mapping = "copy"` route from an SFTP drop folder on the local sshd to a
local folder (journal, readiness, each source archived on the server). The reference in the
same run is OpenSSH `sftp -b` with one `get` and one `rename` into the archive per file
(what a script that picks files up and archives them does). Every contender starts with
the files written back to disk and a minute old, as files waiting in a drop are.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import alternate, random_files, report, run_xchange_once, ssh_options, sshd_server

from xchange.log import configure_logging

CONFIG = """
[journal]
path = "{work}/journal.sqlite"
[quarantine]
path = "{work}/quarantine"
[endpoints.drop]
type = "sftp"
host = "{host}"
port = {port}
user = "{user}"
path = "{drop}"
key_file = "{key}"
known_hosts = "{known_hosts}"
[endpoints.here]
type = "local"
path = "{work}/received"
[alerts]
sinks = [{{ type = "log" }}]
[[routes]]
name = "pickup"
source = {{ endpoint = "drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "here", name = "{{source_name}}" }}
after = {{ action = "archive", folder = "archive" }}
ready = {{ settle = 0 }}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging(json=True, level="warning")
    with sshd_server() as server:
        work = Path(tempfile.mkdtemp(prefix="xchange-bench-drop-"))
        originals = random_files(work / "originals", args.files)
        drop = server.folder("drop")
        received = work / "received"

        def reset() -> None:
            shutil.rmtree(drop)
            shutil.copytree(originals, drop)
            drop.chmod(0o777)
            (drop / "archive").mkdir()
            old = time.time() - 60
            for path in drop.glob("*.dat"):
                os.utime(path, (old, old))
            shutil.rmtree(received, ignore_errors=True)
            received.mkdir()
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
                key=server.client_key,
                known_hosts=server.known_hosts,
            )
        )

        def xchange() -> None:
            run_xchange_once(config_file, args.files)

        def sftp_get() -> None:
            batch = work / "get.batch"
            names = sorted(p.name for p in originals.iterdir())
            batch.write_text(
                "".join(
                    f"get {drop}/{n} {received}/{n}\nrename {drop}/{n} {drop}/archive/{n}\n"
                    for n in names
                )
            )
            subprocess.run(
                ["sftp", *ssh_options(server), "-b", str(batch), f"{server.user}@{server.host}"],
                check=True,
                capture_output=True,
            )

        times = alternate(
            args.rounds,
            {"xchange": xchange, "OpenSSH sftp -b get + rename": sftp_get},
            reset=reset,
        )
        report(
            f"{args.files} files of 2 KB picked up from an SFTP drop and archived there",
            "files/s",
            args.files,
            times,
        )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

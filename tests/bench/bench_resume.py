"""Issue 30, row 5: a big file whose connection is cut every so many MB, resumed.

    python tests/bench/bench_resume.py [--size-mb 300] [--every-mb 50] [--cuts 5] [--rounds 3]
                                       [--rate-mb 0]

Everything goes through the fault proxy (tests/faultproxy.py) in front of a throwaway
OpenSSH sshd: the clean transfers with the proxy passing bytes through, the cut ones with
the proxy dropping the connection once ``--every-mb`` MB went through it (upstream for an
upload, downstream for a download), ``--cuts`` times in all; ``--rate-mb`` paces the
proxy as a link of that bandwidth. Each cut transfer is tried
again at once until it succeeds (no back-off wait: the policy's wait is not the
transfer's cost).

Contenders, interleaved, per direction:
- xchange clean: ``put_atomic`` / ``local_copy`` (OpenSSH's client moves the bytes);
- xchange cut: the same, cut ``--cuts`` times, each next try resuming from the proven
  prefix (docs/resume.md);
- OpenSSH clean: ``sftp -b`` put / get;
- OpenSSH cut: ``put`` then ``reput`` after each cut (``get`` / ``reget``): it resumes from
  the partial's size without any check of its bytes;
- rclone cut: ``rclone copyto`` tried again after each cut (it cannot resume: each try
  starts over).

The bytes of every result are compared with the source's (sha256).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path

from common import alternate, ensure_tools, rclone_remote, sshd_server

from tests.faultproxy import FaultProxy
from tests.sshd import SshServer
from xchange.config import SFTPEndpoint
from xchange.errors import RemoteError
from xchange.remote.sftp import SFTPRemote


def digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--every-mb", type=int, default=50)
    parser.add_argument("--cuts", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rate-mb", type=float, default=0, help="MB/s of the link (0: loopback's, unlimited)"
    )
    args = parser.parse_args()
    ensure_tools("rclone")
    with sshd_server() as server, FaultProxy(server.port, rate=args.rate_mb * 1e6) as proxy:
        run(server, proxy, args)


def run(server: SshServer, proxy: FaultProxy, args: argparse.Namespace) -> None:
    work = server.folder("bench-resume")
    src = work / "big.bin"
    with open(src, "wb") as fh:
        for _ in range(args.size_mb):
            fh.write(os.urandom(1 << 20))
    size, sha = src.stat().st_size, digest(src)
    target = server.folder("bench-resume-target")
    local = work / "got"
    local.mkdir(exist_ok=True)
    known = work / "known_hosts"
    known.write_text(
        server.known_hosts.read_text().replace(
            f"[127.0.0.1]:{server.port}", f"[127.0.0.1]:{proxy.port}"
        )
    )
    cfg = SFTPEndpoint.model_validate(
        {
            "host": server.host,
            "port": proxy.port,
            "user": server.user,
            "path": str(target),
            "key_file": server.client_key,
            "known_hosts": known,
            "accelerate_mb": 1,
        }
    )
    remote = SFTPRemote("bench", cfg)
    remote.keep_partials(work / "partials")
    remote.list()  # the daemon's connection is warm (and never cut: it moves little)
    options = [
        "-i",
        str(server.client_key),
        "-P",
        str(proxy.port),
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-R",
        "128",
    ]
    rclone_at = rclone_remote(server).replace(f"port={server.port}", f"port={proxy.port}")
    rclone_at = rclone_at.replace(
        f"known_hosts_file={server.known_hosts}", f"known_hosts_file={known}"
    )
    failed: dict[str, int] = {}
    checks: list[tuple[str, Path]] = []

    def faults(down: bool, cut: bool) -> None:
        proxy.mode = "drop_after" if cut else "pass"
        proxy.limit = args.every_mb * 1_000_000
        proxy.cuts, proxy.cut = args.cuts, 0
        proxy.count = "down" if down else "up"

    def until_done(name: str, attempt: Callable[[], bool]) -> None:
        tries = 0
        while not attempt():
            tries += 1
            if tries > args.cuts + 3:
                raise SystemExit(f"{name}: still failing after {tries} tries")
        failed[name] = tries

    def sftp(batch: str) -> bool:
        done = subprocess.run(
            ["sftp", *options, "-b", "-", f"{server.user}@{server.host}"],
            input=batch.encode(),
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    # ---------------------------------------------------------------- uploads

    def x_put(cut: bool) -> Callable[[], None]:
        def go() -> None:
            faults(False, cut)

            def attempt() -> bool:
                try:
                    with open(src, "rb") as fh:
                        remote.put_atomic(
                            "big.x",
                            fh,
                            size,
                            temp_name=".big.x.t.xchange-part",
                            overwrite=True,
                            sha256=sha,
                        )
                except RemoteError as exc:
                    assert exc.retryable, exc
                    return False
                return True

            until_done(f"xchange put {'cut' if cut else 'clean'}", attempt)
            checks.append(("xchange put", target / "big.x"))

        return go

    def ssh_put(cut: bool) -> Callable[[], None]:
        def go() -> None:
            faults(False, cut)
            dest = f"{target}/big.ssh"
            first = [True]

            def attempt() -> bool:
                command = "put" if first[0] else "reput"
                first[0] = False
                return sftp(f'{command} "{src}" "{dest}"\n')

            until_done(f"OpenSSH put {'cut' if cut else 'clean'}", attempt)
            checks.append(("OpenSSH reput", target / "big.ssh"))

        return go

    def rclone_put() -> None:
        faults(False, True)
        dest = f"{rclone_at}{target}/big.rclone"

        def attempt() -> bool:
            done = subprocess.run(
                ["rclone", "copyto", "--retries", "1", "--low-level-retries", "1", str(src), dest],
                capture_output=True,
                check=False,
            )
            return done.returncode == 0

        until_done("rclone put cut", attempt)
        checks.append(("rclone", target / "big.rclone"))

    # ---------------------------------------------------------------- downloads

    def x_get(cut: bool) -> Callable[[], None]:
        def go() -> None:
            faults(True, cut)

            def attempt() -> bool:
                try:
                    with remote.local_copy("big.bin", local / "x") as path:
                        os.replace(path, local / "big.x")
                except RemoteError as exc:
                    assert exc.retryable, exc
                    return False
                return True

            until_done(f"xchange get {'cut' if cut else 'clean'}", attempt)
            checks.append(("xchange get", local / "big.x"))

        return go

    def ssh_get(cut: bool) -> Callable[[], None]:
        def go() -> None:
            faults(True, cut)
            first = [True]

            def attempt() -> bool:
                command = "get" if first[0] else "reget"
                first[0] = False
                return sftp(f'{command} "{target}/big.bin" "{local}/big.ssh"\n')

            until_done(f"OpenSSH get {'cut' if cut else 'clean'}", attempt)
            checks.append(("OpenSSH reget", local / "big.ssh"))

        return go

    def rclone_get() -> None:
        faults(True, True)
        there = f"{rclone_at}{target}/big.bin"

        def attempt() -> bool:
            done = subprocess.run(
                [
                    "rclone",
                    "copyto",
                    "--retries",
                    "1",
                    "--low-level-retries",
                    "1",
                    there,
                    str(local / "big.rclone"),
                ],
                capture_output=True,
                check=False,
            )
            return done.returncode == 0

        until_done("rclone get cut", attempt)
        checks.append(("rclone get", local / "big.rclone"))

    def clean() -> None:
        for folder in (target, local):
            for leftover in folder.iterdir():
                if leftover.is_file() and leftover.name != "big.bin":
                    leftover.unlink()
        os.sync()

    mb = size / 1e6
    link = f"a {args.rate_mb:g} MB/s link" if args.rate_mb else "loopback"
    print(
        f"{mb:.0f} MB, the connection cut every {args.every_mb} MB, {args.cuts} cuts; "
        f"{args.rounds} rounds, interleaved, through the fault proxy ({link})"
    )
    ups = alternate(
        args.rounds,
        {
            "xchange clean": x_put(False),
            f"xchange {args.cuts} cuts (resumed)": x_put(True),
            "OpenSSH put clean": ssh_put(False),
            f"OpenSSH reput {args.cuts} cuts": ssh_put(True),
            f"rclone {args.cuts} cuts (restarts)": rclone_put,
        },
        reset=clean,
    )
    verify(checks, sha)
    # The download's source: the file in the target folder.
    os.link(src, target / "big.bin")
    downs = alternate(
        args.rounds,
        {
            "xchange clean": x_get(False),
            f"xchange {args.cuts} cuts (resumed)": x_get(True),
            "OpenSSH get clean": ssh_get(False),
            f"OpenSSH reget {args.cuts} cuts": ssh_get(True),
            f"rclone {args.cuts} cuts (restarts)": rclone_get,
        },
        reset=clean,
    )
    verify(checks, sha)
    table("Upload", ups, mb, "xchange clean", f"xchange {args.cuts} cuts (resumed)")
    table("Download", downs, mb, "xchange clean", f"xchange {args.cuts} cuts (resumed)")
    print("\ntries that failed (a cut each), last round:", failed)


def verify(checks: list[tuple[str, Path]], sha: str) -> None:
    """Each result has the source's bytes (checked after each contender's rounds)."""
    for name, path in checks:
        if path.exists() and digest(path) != sha:
            raise SystemExit(f"{name}: {path} is not the source's bytes")
    checks.clear()


def table(title: str, times: dict[str, list[float]], mb: float, clean: str, cut: str) -> None:
    print(f"\n{title} ({mb:.0f} MB): seconds, median (min) of {len(times[clean])} rounds")
    for name, ts in times.items():
        med, low = statistics.median(ts), min(ts)
        vs = statistics.median(ts) / statistics.median(times[clean])
        print(
            f"  {name:<28} {med:6.2f} s ({low:5.2f})  {mb / med:7.1f} MB/s  "
            f"{vs:4.2f}x xchange clean   [{', '.join(f'{t:.2f}' for t in ts)}]"
        )
    base = {n: statistics.median(t) for n, t in times.items()}
    mins = {n: min(t) for n, t in times.items()}
    ssh_clean = next(n for n in times if n.startswith("OpenSSH") and "clean" in n)
    ssh_cut = next(n for n in times if n.startswith("OpenSSH") and "cuts" in n)
    ours = f"{base[cut] / base[clean]:.2f}x (mins {mins[cut] / mins[clean]:.2f}x)"
    print(
        f"  xchange cut / clean: {ours}; OpenSSH cut / its clean: "
        f"{base[ssh_cut] / base[ssh_clean]:.2f}x; xchange cut is "
        f"{base[ssh_cut] / base[cut]:.2f}x OpenSSH cut's speed"
    )


if __name__ == "__main__":
    main()

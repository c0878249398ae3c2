"""Shared pieces of the benchmarks: a throwaway sshd, tool installation, timing, tables.

Benchmarks are scripts, not tests: run them by hand (see RESULTS.md) on a quiet machine.
Each prints xchange's figure, the reference measured in the same run, and the ratio.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.sshd import SshServer, start_sshd  # noqa: E402


def ensure_tools(*commands: str) -> None:
    """Install the reference tools with apt-get when they are missing."""
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing],
            check=True,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/bin:/bin"},
        )


@contextmanager
def sshd_server() -> Iterator[SshServer]:
    base = Path(tempfile.mkdtemp(prefix="xchange-bench-sshd-"))
    server = start_sshd(base)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(
    rounds: int,
    contenders: dict[str, Callable[[], object]],
    reset: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Run each contender once per round, alternating, and collect their times."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            if reset is not None:
                reset()
            times[name].append(timed(fn))
    return times


def report(
    title: str, unit: str, amount: float, times: dict[str, list[float]], ours: str = "xchange"
) -> None:
    """Print throughput per contender (median of the rounds) and ratios to xchange."""
    print(f"\n{title}")
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    for name, seconds in medians.items():
        rate = amount / seconds
        ratio = medians[name] / medians[ours]
        extra = "" if name == ours else f"   xchange is {ratio:.2f}x its speed"
        runs = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"  {name:<28} {rate:>10.1f} {unit}  (median of {len(times[name])}: {runs} s){extra}")


def random_files(folder: Path, count: int, size: int = 2048) -> Path:
    """``count`` files of ``size`` random bytes, f00000.dat ... (the folder is created)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"f{i:05d}.dat").write_bytes(os.urandom(size))
    return folder


def run_xchange_once(config_file: Path, files: int) -> None:
    """One `run --once` of a configuration's single route, in this process; every file
    must be delivered."""
    from xchange.config import load_config
    from xchange.journal import open_journal
    from xchange.runner import Runner

    config = load_config(config_file)
    journal = open_journal(config.journal)
    runner = Runner(config, journal)
    (result,) = runner.run_once()
    runner.close()
    journal.close()
    assert result.count("delivered") == files, result.summary()


def ssh_options(server: SshServer) -> list[str]:
    return [
        "-i",
        str(server.client_key),
        "-P",
        str(server.port),
        "-o",
        f"UserKnownHostsFile={server.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
    ]


def rclone_remote(server: SshServer) -> str:
    return (
        f":sftp,host={server.host},port={server.port},user={server.user},"
        f"key_file={server.client_key},known_hosts_file={server.known_hosts}:"
    )


@contextmanager
def over_link(server: SshServer, rtt_ms: float, work: Path) -> Iterator[SshServer]:
    """The server as a partner across a link with ``rtt_ms`` of round trip (the latency
    proxy in front of it, its host key pinned for the proxy's port); 0: the server itself."""
    if not rtt_ms:
        yield server
        return
    import dataclasses

    from tests.latencyproxy import LatencyProxy

    with LatencyProxy(server.port, delay=rtt_ms / 2000) as proxy:
        known = work / f"known_hosts-{proxy.port}"
        known.write_text(
            server.known_hosts.read_text().replace(
                f"[127.0.0.1]:{server.port}", f"[127.0.0.1]:{proxy.port}"
            )
        )
        yield dataclasses.replace(server, port=proxy.port, known_hosts=known)

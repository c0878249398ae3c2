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


#: A conversion through the library in a fresh process: prints its seconds and peak RSS.
CONVERT = """
import datetime, json, resource, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from xchange.config import RouteConfig
from xchange.pipeline import Pipeline
from xchange.sink import Sink
route = RouteConfig.model_validate(json.loads({route!r}))
pipeline = Pipeline(route, Path({formats!r}))
start = time.perf_counter()
with open({src!r}, "rb") as fh:
    now = datetime.datetime.now()
    done = pipeline.convert_stream(fh, {name!r}, now, Sink(Path({out!r})))
outputs, documents = len(done.outputs), sum(o.documents for o in done.outputs)
assert {check}, (outputs, documents)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def convert_script(
    layouts: tuple[str, str, str],
    target_name: str,
    formats: Path,
    src: Path,
    out: Path,
    check: str,
) -> str:
    """The code of a fresh process converting ``src`` by (source layout, mapping, target
    layout) into ``out``; ``check`` is an assertion on ``outputs`` and ``documents``."""
    import json

    source, mapping, target = layouts
    route = {
        "name": "bench",
        "source": {"endpoint": "x"},
        "source_layout": source,
        "mapping": mapping,
        "target_layout": target,
        "target": {"endpoint": "y", "name": target_name},
    }
    return CONVERT.format(
        root=str(ROOT),
        route=json.dumps(route),
        formats=str(formats),
        src=str(src),
        name=src.name,
        out=str(out),
        check=check,
    )


def fresh_process(code: str) -> tuple[float, int]:
    """Run Python code in a new interpreter; it prints seconds and peak RSS (KiB) last."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    out = proc.stdout.split()
    return float(out[-2]), int(out[-1])


def alternate_fresh(
    rounds: int, contenders: dict[str, Callable[[int], str]]
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Each contender's code (given the round) in a fresh process, alternating: seconds
    and peak RSS per round."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    rss: dict[str, list[int]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name, code in contenders.items():
            seconds, peak = fresh_process(code(r))
            times[name].append(seconds)
            rss[name].append(peak)
    return times, rss


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

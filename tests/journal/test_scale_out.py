"""Several daemons sharing one PostgreSQL journal, one SFTP drop folder and one SFTP target,
each with its own configuration file and local state (as on separate hosts), one of them
killed with SIGKILL every second or so and started again, and the PostgreSQL server
restarted once under them, while 2,000 files arrive.
Afterwards every content is delivered exactly once (the receiver saw each final name appear
once), byte-identical, nothing is left under a hidden name, and the journal agrees. Real
sshd, real PostgreSQL, real processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers import Observer

from tests.daemons import Arrivals
from tests.procs import xchange_argv, xchange_env
from tests.sftp_routes import endpoint_toml
from tests.sshd import SshServer
from xchange.journal import State
from xchange.journal.postgres import PostgresJournal

pytestmark = pytest.mark.sftp

#: A longer run for RESULTS.md: XCHANGE_SCALE_OUT_FILES=20000 (read when the module loads).
FILES = int(os.environ.get("XCHANGE_SCALE_OUT_FILES", "2000"))
DAEMONS = 3


def daemon_config(root: Path, url: str, drop: str, target: str) -> Path:
    """One host's configuration: its own local state, the shared journal and folders."""
    root.mkdir(parents=True)
    config = root / "xchange.toml"
    config.write_text(
        f"""
[journal]
path = "{root / "state" / "journal.sqlite"}"
url = "{url}"
password_env = "XCHANGE_PG_PASSWORD"
lease = 2

[quarantine]
path = "{root.parent / "quarantine"}"
{drop}
{target}
[[routes]]
name = "bulk"
source = {{ endpoint = "drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "inbox", name = "{{source_stem}}.out" }}
after = {{ action = "archive", folder = "archive" }}
ready = {{ settle = 0 }}
retry = {{ attempts = 3, initial = 0.05, maximum = 0.2, later = 0 }}
transfers = 2
""",
        encoding="utf-8",
    )
    return config


def test_three_daemons_one_killed_again_and_again_deliver_everything_exactly_once(
    sshd: SshServer, postgres: Any, tmp_path: Path
) -> None:
    rnd = random.Random(20261203)
    drop, target = sshd.folder("scale-drop"), sshd.folder("scale-inbox")
    url = postgres.create_database("scale_out")
    configs = [
        daemon_config(
            tmp_path / f"host{n}",
            url,
            endpoint_toml("drop", sshd, drop),
            endpoint_toml("inbox", sshd, target),
        )
        for n in range(DAEMONS)
    ]
    env = xchange_env(XCHANGE_PG_PASSWORD=postgres.password)
    expected: dict[str, bytes] = {}

    def arrive() -> None:
        """The partner drops the files in eight waves while the daemons work."""
        for wave in range(8):
            for i in range(wave * FILES // 8, (wave + 1) * FILES // 8):
                data = os.urandom(rnd.randint(1, 8_000))
                part = drop / f".f{i:04d}.part"
                part.write_bytes(data)
                part.rename(drop / f"f{i:04d}.dat")
                expected[f"f{i:04d}.out"] = data
            time.sleep(0.5)

    def start(n: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            xchange_argv(configs[n], "run", "--once"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )

    arrivals = Arrivals()
    observer = Observer()
    observer.schedule(arrivals, str(target))
    observer.start()
    writer = threading.Thread(target=arrive)
    writer.start()
    procs = [start(n) for n in range(DAEMONS)]
    kills = rounds = 0
    deadline = time.monotonic() + 50 * max(1, FILES // 2000)
    try:
        while time.monotonic() < deadline:
            time.sleep(rnd.uniform(0.3, 0.8))
            rounds += 1
            if rounds % 40 == 6:
                postgres.restart()  # the database goes away under all three, and comes back
            victim = rnd.randrange(DAEMONS)
            if procs[victim].poll() is None:
                procs[victim].send_signal(signal.SIGKILL)
                kills += 1
            procs[victim].wait(timeout=30)
            for n in range(DAEMONS):  # each host's cron or systemd starts it again
                if procs[n].poll() is not None:
                    procs[n] = start(n)
            if not writer.is_alive() and not any(drop.glob("*.dat")):
                break
        writer.join(timeout=30)
        for proc in procs:
            proc.wait(timeout=120)
        # Whatever a killed daemon held is free once its lease (2 s) runs out.
        for _ in range(6):
            if not any(drop.glob("*.dat")):
                break
            time.sleep(2.2)
            subprocess.run(
                xchange_argv(configs[0], "run", "--once"),
                env=env,
                capture_output=True,
                timeout=120,
            )
        time.sleep(1.0)  # the last file events
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        observer.stop()
        observer.join(timeout=10)
    print(f"{kills} kills")
    assert kills >= 4, "the daemons finished too quickly for the kills to test anything"
    visible = {n: (target / n).read_bytes() for n in os.listdir(target) if not n.startswith(".")}
    assert len(visible) == FILES
    assert visible == expected
    assert [n for n in os.listdir(target) if n.startswith(".")] == []
    assert {n: c for n, c in arrivals.count.items() if c != 1} == {}
    journal = PostgresJournal(url, password=postgres.password)
    try:
        records = journal.query(limit=10 * FILES)
        assert len(records) == FILES
        for r in records:
            if r.state != State.ARCHIVED:
                print(r.id, r.path, r.archive_path, r.owner)
                for h in journal.history(r.id):
                    print("   ", h.at.time(), h.from_state, h.to_state, h.note)
        assert {r.state for r in records} == {State.ARCHIVED}
        assert all(len(r.outputs) == 1 for r in records)
        # Archived into the archive folder (a daemon killed between the move and its
        # journal write leaves the announced folder, as a single daemon's crash does).
        assert all((r.archive_path or "").startswith("archive") for r in records)
    finally:
        journal.close()
    assert not [p for p in drop.iterdir() if p.is_file() and not p.name.startswith(".")]
    assert len(list((drop / "archive").iterdir())) == FILES
    print(f"{FILES} files, {kills} kills, {rounds // 40 + 1} database restarts: exactly once")

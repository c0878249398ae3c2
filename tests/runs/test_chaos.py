"""1,500 files over SFTP while the process is killed with SIGKILL at random moments, 20 times.
Among them, twins: copies of early files dropped late, so that they fall in later batches.
Afterwards every content is delivered exactly once (the receiver's folder saw each final name
appear once), byte-identical, no temporary file is visible, nothing is quarantined, and the
journal agrees."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest
from watchdog.observers import Observer

from tests.conftest import Exchange
from tests.daemons import Arrivals
from tests.procs import xchange_argv, xchange_env
from tests.sftp_routes import sftp_target_toml
from tests.sshd import SshServer
from xchange.config import load_config
from xchange.journal import State, open_journal

pytestmark = pytest.mark.sftp

ROUTE = """
[[routes]]
name = "bulk"
source = { endpoint = "shop-drop", pattern = "*.dat" }
mapping = "copy"
target = { endpoint = "wms-outbox", name = "{source_stem}.out" }
after = { action = "archive", folder = "archive" }
ready = { settle = 0 }
retry = { attempts = 3, initial = 0.05, maximum = 0.2, later = 0 }
transfers = 2
"""


def run_once(exchange: Exchange) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        xchange_argv(exchange.config, "run", "--once", "--route", "bulk"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=xchange_env(),
    )


def test_random_sigkills_never_lose_or_double_a_file(exchange: Exchange, sshd: SshServer) -> None:
    """20 SIGKILLs at random moments while 1,500 files move; then everything exactly once."""
    rnd = random.Random(20261121)
    target = sshd.folder("chaos")
    exchange.write_config(target=sftp_target_toml(sshd, target))
    exchange.config.write_text(exchange.config.read_text() + ROUTE)
    expected = {}
    for i in range(1500):
        data = os.urandom(rnd.randint(1, 20_000))
        (exchange.inbox / f"f{i:04d}.dat").write_bytes(data)
        expected[f"f{i:04d}.out"] = data
    # Twins across batches: copies of early files, listed last (a later time).
    later = time.time() + 1
    for n, i in enumerate(rnd.sample(range(200), 10)):
        twin = exchange.inbox / f"twin{n:02d}.dat"
        twin.write_bytes(expected[f"f{i:04d}.out"])
        os.utime(twin, (later, later))
    arrivals = Arrivals()
    observer = Observer()
    observer.schedule(arrivals, str(target))
    observer.start()
    try:
        kills = 0
        for _ in range(60):  # until 20 kills have landed on a working process
            if kills == 20 or not any(exchange.inbox.glob("*.dat")):
                break
            arrived = arrivals.total()
            proc = run_once(exchange)
            # Kill mid-work however fast the machine is: once files have started to
            # arrive, at a random instant within the next 60 ms.
            deadline = time.monotonic() + 30
            while (
                arrivals.total() == arrived and proc.poll() is None and time.monotonic() < deadline
            ):
                time.sleep(0.002)
            time.sleep(rnd.uniform(0, 0.06))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=60)
        for _ in range(5):  # then run to completion
            proc = run_once(exchange)
            if proc.wait(timeout=300) == 0 and not any(exchange.inbox.glob("*.dat")):
                break
        time.sleep(1.0)  # let the last file events arrive
    finally:
        observer.stop()
        observer.join(timeout=10)
    print(f"{kills} kills landed mid-work")
    assert kills >= 8, "the process finished too quickly for the kills to test anything"
    visible = {n: (target / n).read_bytes() for n in os.listdir(target) if not n.startswith(".")}
    assert visible == expected
    assert [n for n in os.listdir(target) if n.startswith(".")] == []
    assert {n: c for n, c in arrivals.count.items() if c != 1} == {}
    assert set(arrivals.count) == set(expected)
    journal = open_journal(load_config(exchange.config).journal)
    records = journal.query(limit=10_000)
    assert len(records) == 1500  # one per content: the twins are duplicates of theirs
    assert {r.state for r in records} == {State.ARCHIVED}
    assert all(len(r.outputs) == 1 for r in records)
    journal.close()
    assert len(list((exchange.inbox / "archive").iterdir())) == 1510
    assert not any(exchange.quarantine.glob("**/*.dat"))

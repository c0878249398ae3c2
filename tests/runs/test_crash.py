"""Exactly once across crashes: SIGKILL at each dangerous instant, restart, and check that
every output arrives once, byte-identical, with nothing half-written in sight."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, Exchange
from tests.procs import run_once
from tests.sftp_routes import sftp_target_toml
from tests.sshd import SshServer
from xchange.config import load_config
from xchange.journal import State, open_journal

EXPECTED = {p.name: p.read_bytes() for p in (SAMPLES / "shop-orders" / "expected").iterdir()}
POINTS = ["after-claim", "before-rename", "after-rename", "after-output", "before-archive"]


def run(exchange: Exchange, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_once(exchange.config, crash_at)


def check_exactly_once(exchange: Exchange, delivered: Path) -> None:
    visible = sorted(p.name for p in delivered.iterdir() if not p.name.startswith("."))
    assert visible == sorted(EXPECTED)
    for name, data in EXPECTED.items():
        assert (delivered / name).read_bytes() == data
    assert [p.name for p in delivered.iterdir() if p.name.startswith(".")] == []
    journal = open_journal(load_config(exchange.config).journal)
    (record,) = journal.query()
    assert record.state == State.ARCHIVED
    assert sorted(o.path for o in record.outputs) == sorted(EXPECTED)  # each output once
    journal.close()
    assert not (exchange.inbox / "orders_20261121.csv").exists()
    assert (exchange.inbox / "archive" / "orders_20261121.csv").exists()


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_point_then_restart_delivers_exactly_once_locally(
    exchange: Exchange, point: str
) -> None:
    """A local delivery killed at any point completes on restart, each output once."""
    exchange.drop_sample()
    crashed = run(exchange, point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    resumed = run(exchange)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check_exactly_once(exchange, exchange.outbox)
    assert run(exchange).returncode == 0  # and a further run changes nothing
    check_exactly_once(exchange, exchange.outbox)


@pytest.mark.sftp
@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_point_then_restart_delivers_exactly_once_over_sftp(
    exchange: Exchange, sshd: SshServer, point: str
) -> None:
    """The same over SFTP: the receiver ends with each file once and never a partial one."""
    folder = sshd.folder(f"crash-{point}")
    exchange.write_config(target=sftp_target_toml(sshd, folder))
    exchange.drop_sample()
    crashed = run(exchange, point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    for name in os.listdir(folder):  # whatever is visible under a final name is complete
        if not name.startswith("."):
            assert (folder / name).read_bytes() == EXPECTED[name]
    resumed = run(exchange)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check_exactly_once(exchange, folder)


def test_a_quarantined_file_still_in_the_drop_folder_is_taken_out_not_judged_again(
    exchange: Exchange,
) -> None:
    """Killed after the journal says quarantined, before the file left the drop folder
    (the moment in which, in a group, another daemon claimed it again and quarantined it a
    second time): the next look takes it out; no second claim, no second copy."""
    data = SAMPLES.joinpath("shop-orders", "in", "orders_20261121.csv").read_bytes()
    broken = data.decode("gbk").replace("京东", "抖音").encode("gbk")  # an unknown channel
    (exchange.inbox / "orders_20261121.csv").write_bytes(broken)
    crashed = run(exchange, "after-quarantine")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert (exchange.inbox / "orders_20261121.csv").exists()
    again = run(exchange)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (exchange.inbox / "orders_20261121.csv").exists()
    journal = open_journal(load_config(exchange.config).journal)
    try:
        (record,) = journal.query()
        assert record.state == State.QUARANTINED
        moves = [(t.from_state, t.to_state) for t in journal.history(record.id)]
        assert moves == [(None, "processing"), ("processing", "quarantined")], moves
    finally:
        journal.close()
    kept = [p for p in (exchange.quarantine / "shop-orders").iterdir() if p.is_file()]
    assert [p.name for p in kept if not p.name.endswith((".txt", ".json"))] == [
        "000001_orders_20261121.csv"
    ]

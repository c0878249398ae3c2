"""A target that goes away: retried within the run, then at later runs, delivered once it
is back, and quarantined only after the configured number of runs."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner, Result

from tests.conftest import SAMPLES, Exchange
from tests.sftp_routes import sftp_target_toml
from tests.sshd import SshServer
from xchange.cli import main

pytestmark = pytest.mark.sftp
EXPECTED = sorted(p.name for p in (SAMPLES / "shop-orders" / "expected").iterdir())


def run(exchange: Exchange) -> Result:
    return CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])


def test_target_down_then_back_is_retried_and_delivered_once(
    exchange: Exchange, own_sshd: SshServer
) -> None:
    """While sshd is down the file waits (exit 3, kept in the drop folder); once it is back
    the next run delivers every output once."""
    folder = own_sshd.folder("outage")
    exchange.write_config(target=sftp_target_toml(own_sshd, folder))
    exchange.drop_sample()
    own_sshd.stop()
    down = run(exchange)
    assert down.exit_code == 3, down.output
    assert "1 retry-later" in down.stdout and "connection refused" in down.stdout
    assert (exchange.inbox / "orders_20261121.csv").exists()
    own_sshd.restart()
    back = run(exchange)
    assert back.exit_code == 0, back.output
    assert sorted(os.listdir(folder)) == EXPECTED
    listed = CliRunner().invoke(main, ["journal", "show", "1", "--config", str(exchange.config)])
    assert "delivering -> retrying" in listed.stdout
    assert "delivering -> delivered" in listed.stdout


def test_a_waiting_file_is_not_tried_before_its_time(
    exchange: Exchange, own_sshd: SshServer
) -> None:
    """After a transient failure the file waits `later` seconds; a run before that skips it."""
    exchange.write_config(
        target=sftp_target_toml(own_sshd, own_sshd.folder("waiting")),
        retry="attempts = 1, later = 3600",
    )
    exchange.drop_sample()
    own_sshd.stop()
    assert run(exchange).exit_code == 3
    waiting = run(exchange)
    assert waiting.exit_code == 3
    assert "1 waiting" in waiting.stdout


def test_transient_failures_are_quarantined_after_give_up_after_runs(
    exchange: Exchange, own_sshd: SshServer
) -> None:
    """A target down for longer than the retry budget: the file is quarantined, kept whole."""
    exchange.write_config(
        target=sftp_target_toml(own_sshd, own_sshd.folder("gone")),
        retry="attempts = 1, later = 0, give_up_after = 2",
    )
    exchange.drop_sample()
    own_sshd.stop()
    assert run(exchange).exit_code == 3
    last = run(exchange)
    assert last.exit_code == 1, last.output
    assert "gave up after 2 attempts" in last.stdout
    kept = exchange.quarantine / "shop-orders" / "000001_orders_20261121.csv"
    assert kept.read_bytes() == (SAMPLES / "shop-orders/in/orders_20261121.csv").read_bytes()

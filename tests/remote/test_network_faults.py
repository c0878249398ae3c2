"""Network faults between xchange and sshd: connections cut mid-transfer, paths that stall,
servers that refuse. xchange recovers, never hangs beyond its timeouts, loses and doubles
nothing."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import Exchange
from tests.faultproxy import FaultProxy
from tests.sftp_routes import copy_with_partner
from tests.sshd import SshServer
from xchange.cli import main

pytestmark = pytest.mark.sftp


@pytest.fixture
def proxy(sshd: SshServer) -> Iterator[FaultProxy]:
    p = FaultProxy(sshd.port).start()
    yield p
    p.stop()


def configure(exchange: Exchange, sshd: SshServer, proxy: FaultProxy, attempts: int = 3) -> Path:
    folder = sshd.folder(f"faults-{proxy.port}")
    # The host key is pinned for the proxy's port too: it is the same server.
    copy_with_partner(
        exchange,
        sshd,
        folder,
        port=proxy.port,
        login=2,
        operation=2,
        retry=f"attempts = {attempts}, initial = 0.05, maximum = 0.2, later = 0",
        accelerate_mb=64,
    )
    return folder


def run(exchange: Exchange) -> Result:
    return CliRunner().invoke(
        main, ["run", "--once", "--route", "copy", "--config", str(exchange.config)]
    )


def test_a_connection_cut_mid_transfer_is_retried_and_delivered_once(
    exchange: Exchange, sshd: SshServer, proxy: FaultProxy
) -> None:
    """The first connection dies after 1 MB of a 6 MB upload; the retry delivers it whole."""
    folder = configure(exchange, sshd, proxy)
    payload = os.urandom(6 * 1024 * 1024)
    (exchange.inbox / "big.bin").write_bytes(payload)
    proxy.mode, proxy.limit, proxy.faulty_connections = "drop_after", 1024 * 1024, 1
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(folder)) == ["big.bin"]  # no temporary file left behind
    assert (folder / "big.bin").read_bytes() == payload
    assert proxy.connections >= 2


def test_a_stalled_path_times_out_instead_of_hanging(
    exchange: Exchange, sshd: SshServer, proxy: FaultProxy
) -> None:
    """A connection that forwards nothing after 256 KB fails within the configured timeouts;
    the file waits for a later run, and is delivered once the path works."""
    folder = configure(exchange, sshd, proxy, attempts=1)
    payload = os.urandom(2 * 1024 * 1024)
    (exchange.inbox / "slow.bin").write_bytes(payload)
    proxy.mode, proxy.limit, proxy.faulty_connections = "stall_after", 256 * 1024, 1
    started = time.monotonic()
    stalled = run(exchange)
    assert time.monotonic() - started < 30
    assert stalled.exit_code == 3, stalled.output
    assert "retry-later" in stalled.stdout
    assert not (folder / "slow.bin").exists()
    healed = run(exchange)
    assert healed.exit_code == 0, healed.output
    assert (folder / "slow.bin").read_bytes() == payload


def test_a_server_that_accepts_but_never_answers_times_out(
    exchange: Exchange, sshd: SshServer, proxy: FaultProxy
) -> None:
    """No SSH banner: the banner timeout ends the attempt; exit 3, file kept."""
    configure(exchange, sshd, proxy, attempts=1)
    (exchange.inbox / "a.bin").write_bytes(b"x" * 100)
    proxy.mode = "stall"
    started = time.monotonic()
    result = run(exchange)
    assert time.monotonic() - started < 30
    assert result.exit_code == 3
    assert (exchange.inbox / "a.bin").exists()


def test_a_refused_connection_is_transient(
    exchange: Exchange, sshd: SshServer, proxy: FaultProxy
) -> None:
    """Connections closed at once: retried, then left for later with exit 3."""
    configure(exchange, sshd, proxy, attempts=2)
    (exchange.inbox / "a.bin").write_bytes(b"x" * 100)
    proxy.mode = "refuse"
    result = run(exchange)
    assert result.exit_code == 3
    assert proxy.connections == 2  # tried again within the run
    assert (exchange.inbox / "a.bin").exists()


def test_a_failed_warm_up_is_retried_once_not_once_per_batch(
    exchange: Exchange, sshd: SshServer, proxy: FaultProxy
) -> None:
    """The first connection is refused while the first batch is read: that batch tries
    again and delivers; the batches after it do not pay for that old failure."""
    folder = configure(exchange, sshd, proxy, attempts=3)
    for i in range(600):  # three batches
        (exchange.inbox / f"f{i:04d}.bin").write_bytes(os.urandom(100))
    proxy.mode, proxy.faulty_connections = "refuse", 1
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert len(os.listdir(folder)) == 600
    assert result.output.count('"retry.waiting"') == 1, result.output[-3000:]
    assert proxy.connections == 2

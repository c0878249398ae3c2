"""A big file delivered to, or picked up from, an SFTP partner whose connection is cut
every so many bytes: each try of the run goes on from the partial the cut left (the
upload's temporary file, the download in scratch) instead of starting over, and the file
arrives with the source's bytes. Real OpenSSH sshd behind a fault proxy; 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import os
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

SIZE = 40 << 20
EVERY = 12 << 20


@pytest.fixture
def proxy(sshd: SshServer) -> Iterator[FaultProxy]:
    p = FaultProxy(sshd.port).start()
    yield p
    p.stop()


def configure(
    exchange: Exchange, sshd: SshServer, proxy: FaultProxy, *, pickup: bool = False
) -> Path:
    """A copy route of ``*.bin`` between the local folders and ``partner`` (the test sshd
    through the proxy: its target, or with ``pickup`` its source); the partner's folder."""
    folder = sshd.folder(f"resumed-{proxy.port}")
    copy_with_partner(
        exchange,
        sshd,
        folder,
        port=proxy.port,
        pickup=pickup,
        retry="attempts = 6, initial = 0.01, maximum = 0.05, later = 0",
    )
    return folder


def run(exchange: Exchange) -> Result:
    return CliRunner().invoke(
        main, ["run", "--once", "--route", "copy", "--config", str(exchange.config)]
    )


def test_a_big_delivery_cut_three_times_resumes_within_the_run(
    exchange: Exchange, sshd: SshServer, proxy: FaultProxy
) -> None:
    """Three cuts, three tries that each send the rest: one run delivers the file whole;
    no temporary file and no record of a partial are left."""
    folder = configure(exchange, sshd, proxy)
    payload = os.urandom(SIZE)
    (exchange.inbox / "big.bin").write_bytes(payload)
    proxy.mode, proxy.limit, proxy.cuts = "drop_after", EVERY, 3
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert proxy.cut == 3
    assert result.output.count("remote.resumed") == 3, result.output
    assert sorted(os.listdir(folder)) == ["big.bin"]
    assert hashlib.sha256((folder / "big.bin").read_bytes()).digest() == (
        hashlib.sha256(payload).digest()
    )
    partials = exchange.journal.parent / "scratch" / "partials"
    assert not partials.exists() or os.listdir(partials) == []


def test_a_big_pickup_cut_three_times_resumes_at_each_next_run(
    exchange: Exchange, sshd: SshServer, proxy: FaultProxy
) -> None:
    """A download cut short leaves its partial in scratch; each next run reads only the
    rest: after three cuts the fourth run delivers the file whole and scratch is empty."""
    folder = configure(exchange, sshd, proxy, pickup=True)
    payload = os.urandom(SIZE)
    (folder / "big.bin").write_bytes(payload)
    proxy.mode, proxy.limit, proxy.cuts, proxy.count = "drop_after", EVERY, 3, "down"
    outputs = []
    for _ in range(4):
        result = run(exchange)
        outputs.append(result.output)
        if (exchange.outbox / "big.bin").exists():
            break
    assert proxy.cut == 3
    assert "".join(outputs).count("remote.resumed") == 3, outputs
    assert (exchange.outbox / "big.bin").read_bytes() == payload
    assert os.listdir(folder) == []  # taken: deleted after delivery
    assert os.listdir(exchange.journal.parent / "scratch" / "downloads") == []


def test_a_big_delivery_given_up_on_leaves_no_partial_behind(
    exchange: Exchange, sshd: SshServer, proxy: FaultProxy
) -> None:
    """Cut at every try until the route gives up: the file is quarantined, and the partial
    upload kept for a resume is removed from the target with its record (a hidden file of
    40 MB would otherwise stay there for good, unsaid)."""
    folder = configure(exchange, sshd, proxy)
    text = exchange.config.read_text()
    exchange.config.write_text(
        text.replace(
            "attempts = 6, initial = 0.01, maximum = 0.05, later = 0",
            "attempts = 2, initial = 0.01, maximum = 0.05, later = 0, give_up_after = 1",
        )
    )
    (exchange.inbox / "big.bin").write_bytes(os.urandom(SIZE))
    proxy.mode, proxy.limit, proxy.cuts = "drop_after", EVERY, -1
    result = run(exchange)
    assert "1 quarantined" in result.output, result.output
    assert proxy.cut >= 2
    assert os.listdir(folder) == [], os.listdir(folder)
    partials = exchange.journal.parent / "scratch" / "partials"
    assert not partials.exists() or os.listdir(partials) == []

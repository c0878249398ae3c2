"""The latency proxy the speed benchmarks use over a real-world link: each round trip
costs the set delay twice, bytes keep their order, and an SFTP session through it works."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.latencyproxy import LatencyProxy
from tests.sftp_routes import endpoint, put
from tests.sshd import SshServer
from xchange.remote.sftp import SFTPRemote

pytestmark = pytest.mark.sftp


def test_a_round_trip_through_the_proxy_costs_twice_its_delay(
    sshd: SshServer, tmp_path: Path
) -> None:
    folder = sshd.folder("latency")
    with LatencyProxy(sshd.port, delay=0.02) as proxy:
        known = tmp_path / "known_hosts"
        known.write_text(
            sshd.known_hosts.read_text().replace(
                f"[127.0.0.1]:{sshd.port}", f"[127.0.0.1]:{proxy.port}"
            )
        )
        remote = SFTPRemote("far", endpoint(sshd, folder, port=proxy.port, known_hosts=known))
        try:
            remote.connect()
            started = time.perf_counter()
            for _ in range(5):
                assert remote.stat("missing.txt") is None
            per_trip = (time.perf_counter() - started) / 5
            assert 0.04 <= per_trip < 0.2, per_trip
            data = os.urandom(3 << 20)  # many chunks in flight: their order must hold
            put(remote, "big.bin", data, temp_name=".big.t.xchange-part", overwrite=False)
            assert (folder / "big.bin").read_bytes() == data
        finally:
            remote.close()

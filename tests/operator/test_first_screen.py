"""What a person sees running xchange at a terminal (a real pseudo-terminal): the summary
first, not a screen of per-file events; and no field that says nothing (``cause=None``)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

from tests.conftest import Exchange
from tests.faultproxy import FaultProxy
from tests.sshd import SshServer


def at_a_terminal(*args: str) -> str:
    """Run xchange with its output on a pseudo-terminal; what the terminal showed."""
    main, other = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "xchange", *args],
        stdin=subprocess.DEVNULL,
        stdout=other,
        stderr=other,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    os.close(other)
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the other end closed: the process is done
            break
        if not chunk:
            break
        shown += chunk
    process.wait(timeout=30)
    os.close(main)
    return shown.decode("utf-8", "replace").replace("\r\n", "\n")


def test_a_run_at_a_terminal_shows_the_summary_first_and_no_empty_fields(
    exchange: Exchange,
) -> None:
    exchange.drop_sample()
    (exchange.inbox / "orders_broken.csv").write_bytes(b"\xff\xfe not a csv at all\n")
    shown = at_a_terminal("run", "--once", "--config", str(exchange.config))
    lines = [line for line in shown.splitlines() if line.strip()]
    # The broken file is a warning worth seeing; the delivered one is in the summary.
    assert "file.delivered" not in shown
    assert any("file.quarantined" in line for line in lines)
    assert lines[-2].startswith("shop-orders: 1 delivered (3 documents), 1 quarantined"), shown
    assert lines[-1].startswith("  quarantined: orders_broken.csv (#2): ")
    assert "=None" not in shown


def test_verbose_at_a_terminal_shows_each_files_events_without_empty_fields(
    exchange: Exchange,
) -> None:
    exchange.drop_sample()
    shown = at_a_terminal("run", "--once", "-v", "--config", str(exchange.config))
    assert "file.delivered" in shown
    assert "=None" not in shown and "cause=" not in shown


def test_a_long_upload_at_a_terminal_shows_how_far_it_got(
    exchange: Exchange, sshd: SshServer
) -> None:
    """A 20 MB file whose upload stalls after 4 MB (a proxy that stops forwarding): the
    terminal's progress line says what is being uploaded and how far it got."""
    folder = sshd.folder("progress")
    with FaultProxy(sshd.port) as proxy:
        proxy.mode, proxy.limit = "stall_after", 4 << 20
        known = exchange.root / "known_hosts"
        known.write_text(
            sshd.known_hosts.read_text().replace(
                f"[127.0.0.1]:{sshd.port}", f"[127.0.0.1]:{proxy.port}"
            )
        )
        exchange.config.write_text(
            f"""
[journal]
path = "{exchange.journal}"
[quarantine]
path = "{exchange.quarantine}"
[endpoints.drop]
type = "local"
path = "{exchange.inbox}"
[endpoints.far]
type = "sftp"
host = "127.0.0.1"
port = {proxy.port}
user = "{sshd.user}"
path = "{folder}"
key_file = "{sshd.client_key}"
known_hosts = "{known}"
accelerate_mb = 0
timeouts = {{ connect = 5, banner = 5, auth = 5, operation = 8 }}
[[routes]]
name = "big"
source = {{ endpoint = "drop", pattern = "*.bin" }}
mapping = "copy"
target = {{ endpoint = "far", name = "{{source_name}}" }}
ready = {{ settle = 0 }}
retry = {{ attempts = 1, later = 0 }}
""",
            encoding="utf-8",
        )
        (exchange.inbox / "big.bin").write_bytes(os.urandom(20 << 20))
        shown = at_a_terminal("run", "--once", "--config", str(exchange.config))
    lines = [part for part in shown.split("\r") if "uploading big.bin: " in part]
    assert lines, shown
    assert " of 21.0 MB" in lines[-1] and "big.bin on big (21.0 MB, " in lines[-1]

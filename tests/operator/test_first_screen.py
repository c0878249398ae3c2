"""What a person sees running xchange at a terminal (a real pseudo-terminal): the summary
first, not a screen of per-file events; and no field that says nothing (``cause=None``)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

from tests.conftest import Exchange


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

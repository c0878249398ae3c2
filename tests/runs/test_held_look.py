"""A file held to settle in an SFTP drop folder is looked at again by its name, not by a
new listing of the whole folder (which over a slow link takes seconds for a big folder):
once old enough, it is delivered without the folder being listed again; the scheduled
look still lists it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.conftest import SAMPLES, Exchange
from tests.procs import log_events, wait_for, xchange_argv, xchange_env
from tests.sftp_routes import sftp_source
from tests.sshd import SshServer

SAMPLE = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"


def test_a_held_file_is_looked_at_again_by_name_not_by_listing_the_folder(
    exchange: Exchange, sshd: SshServer
) -> None:
    drop = sshd.folder("held-look")
    # Long enough that the file is still young when first seen, however busy the machine.
    exchange.write_config(ready="settle = 5")
    sftp_source(exchange, sshd, drop)
    text = exchange.config.read_text()
    exchange.config.write_text(
        text.replace("[[routes]]", "[daemon]\npoll_interval = 60\n\n[[routes]]", 1)
    )
    log = exchange.root / "daemon.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            xchange_argv(exchange.config, "-v", "run"), stdout=out, stderr=out, env=xchange_env()
        )
        try:
            wait_for(lambda: log_events(log, "route.listed"), what="the first listing")
            (drop / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
            # The file is seen at the next listing: ask for one (as a rescan would).
            subprocess.run(
                xchange_argv(exchange.config, "reload"),
                env=xchange_env(),
                check=True,
                capture_output=True,
            )
            wait_for(
                lambda: len(list(exchange.outbox.glob("*.xml"))) == 3,
                timeout=30,
                what="the held file delivered",
            )
            time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    listed = log_events(log, "route.listed")
    delivered = log_events(log, "file.delivered")
    assert delivered, log.read_text()
    # The folder was listed to find the file; the look that took it once settled asked
    # for its name only (no listing between the file held and the file delivered).
    events = _events(log)
    held_at = min(
        i
        for i, e in enumerate(events)
        if e.get("event") == "route.summary" and (e.get("held") or 0) >= 1
    )
    taken_at = min(i for i, e in enumerate(events) if e.get("event") == "file.delivered")
    between = [e for e in events[held_at:taken_at] if e.get("event") == "route.listed"]
    assert between == [], between
    assert listed


def _events(log: Path) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]

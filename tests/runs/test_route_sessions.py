"""A daemon's looks at a route keep one session to its SFTP drop folder, whichever of the
scheduler's threads runs them: an SFTP login costs several round trips (seconds over a slow
link), so a look must not open a new one because it landed on another thread."""

from __future__ import annotations

import subprocess

from tests.conftest import SAMPLES, Exchange
from tests.procs import log_events, wait_for, xchange_argv, xchange_env
from tests.sftp_routes import sftp_source
from tests.sshd import SshServer

SAMPLE = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"


def test_every_look_of_a_route_uses_the_one_session_it_opened(
    exchange: Exchange, sshd: SshServer
) -> None:
    drop = sshd.folder("one-session")
    exchange.write_config(ready="settle = 0")
    sftp_source(exchange, sshd, drop)
    text = exchange.config.read_text()
    # A second route on the same schedule: the two looks of each tick run at once, on
    # whichever scheduler threads are free.
    other = sshd.folder("one-session-other")
    text += f"""
[endpoints.other-drop]
type = "sftp"
host = "{sshd.host}"
port = {sshd.port}
user = "{sshd.user}"
path = "{other}"
key_file = "{sshd.client_key}"
known_hosts = "{sshd.known_hosts}"

[[routes]]
name = "other-orders"
source = {{ endpoint = "other-drop", pattern = "orders_*.csv" }}
source_layout = "shop-order-lines"
mapping = "shop-to-wms-outbound"
target_layout = "wms-outbound-order"
target = {{ endpoint = "wms-outbox", name = "OTHER_{{OrderDate}}_{{OrderNo}}.xml" }}
ready = {{ settle = 0 }}
"""
    exchange.config.write_text(
        text.replace("[[routes]]", "[daemon]\npoll_interval = 0.2\nworkers = 4\n\n[[routes]]", 1)
    )
    log = exchange.root / "daemon.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            xchange_argv(exchange.config, "-v", "run"), stdout=out, stderr=out, env=xchange_env()
        )
        try:
            wait_for(lambda: len(log_events(log, "route.listed")) >= 30, what="looks")
            (drop / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
            wait_for(
                lambda: len(list(exchange.outbox.glob("*.xml"))) == 3,
                what="the file delivered",
            )
            seen = len(log_events(log, "route.listed"))
            wait_for(lambda: len(log_events(log, "route.listed")) >= seen + 4, what="more looks")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    for endpoint in ("shop-drop", "other-drop"):
        connected = log_events(log, "remote.connected", endpoint=endpoint)
        assert len(connected) == 1, connected

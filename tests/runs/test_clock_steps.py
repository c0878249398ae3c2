"""The wall clock stepped under a running daemon (NTP, a person, a resumed VM), back an
hour and forward again: the daemon says `clock_stepped`, looks at every route at once
and goes on delivering (before: a step back of an hour held every look for an hour, with
no line of log). A real daemon process whose wall clock the test steps
(tests/clockshift: time.time and datetime.now shifted, the monotonic clock left alone,
as a real step leaves it); a real sshd drop folder, polled."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.procs import log_events, wait_for, xchange_argv, xchange_env
from tests.sshd import SshServer

pytestmark = pytest.mark.sftp

CLOCKSHIFT = Path(__file__).parents[1] / "clockshift"


def config_for(root: Path, sshd: SshServer, drop: Path, out: Path) -> Path:
    config = root / "xchange.toml"
    config.write_text(
        f"""
[journal]
path = "{root / "state" / "journal.sqlite"}"

[quarantine]
path = "{root / "quarantine"}"

[daemon]
poll_interval = 1

[endpoints.drop]
type = "sftp"
host = "{sshd.host}"
port = {sshd.port}
user = "{sshd.user}"
path = "{drop}"
key_file = "{sshd.client_key}"
known_hosts = "{sshd.known_hosts}"

[endpoints.out]
type = "local"
path = "{out}"

[[routes]]
name = "bulk"
source = {{ endpoint = "drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "out", name = "{{source_name}}" }}
ready = {{ settle = 0.5 }}
""",
        encoding="utf-8",
    )
    return config


def test_a_daemon_goes_on_through_wall_clock_steps_back_and_forward(
    sshd: SshServer, tmp_path: Path
) -> None:
    drop, out = sshd.folder("clock-drop"), tmp_path / "out"
    out.mkdir()
    shift = tmp_path / "shift"
    shift.write_text("0")
    config = config_for(tmp_path, sshd, drop, out)
    log = tmp_path / "daemon.log"
    env = xchange_env(PYTHONPATH=f"{CLOCKSHIFT}", XCHANGE_TEST_CLOCK_SHIFT=str(shift))
    with open(log, "ab") as writer:
        proc = subprocess.Popen(xchange_argv(config, "run"), stdout=writer, stderr=writer, env=env)
        try:
            (drop / "a.dat").write_bytes(b"before")
            wait_for(lambda: (out / "a.dat").exists(), 30, "the first delivery")
            shift.write_text("-3600")  # the clock goes back an hour
            time.sleep(1.5)
            (drop / "b.dat").write_bytes(b"after the step back")
            wait_for(lambda: (out / "b.dat").exists(), 20, "a delivery after the step back")
            shift.write_text("0")  # and forward again
            time.sleep(1.5)
            (drop / "c.dat").write_bytes(b"after the step forward")
            wait_for(lambda: (out / "c.dat").exists(), 20, "a delivery after the step forward")
            steps = [e["step_s"] for e in log_events(log, "clock_stepped")]
            assert len(steps) == 2, steps
            assert -3610 < steps[0] < -3590 and 3590 < steps[1] < 3610
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

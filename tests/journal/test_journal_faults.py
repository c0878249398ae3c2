"""A PostgreSQL journal whose server stops answering (a network partition, a hung server),
restarts under a running daemon, or is reached from a host whose clock steps: the daemon
says so within its deadline, never waits on it, and never renames a file another daemon
took over. Faults are real: a TCP proxy between xchange and a real PostgreSQL server that
stops forwarding, and real server restarts."""

from __future__ import annotations

import functools
import io
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faultproxy import FaultProxy
from tests.procs import log_events, wait_for, xchange_argv, xchange_env
from xchange.errors import JournalUnavailable, LeaseLost
from xchange.journal import FileKey, State
from xchange.journal.postgres import PostgresJournal
from xchange.remote.local import LocalRemote


@pytest.fixture
def database(postgres: Any) -> str:
    return str(postgres.create_database(f"f_{secrets.token_hex(6)}"))


@pytest.fixture
def proxy(postgres: Any) -> Iterator[FaultProxy]:
    """A path to the server that the test can cut."""
    path = FaultProxy(postgres.port).start()
    yield path
    path.stop()


def through(url: str, proxy: FaultProxy) -> str:
    """The database's URL, reached through the proxy."""
    return url.replace(f":{url.split(':')[2].split('/')[0]}/", f":{proxy.port}/")


def key(n: int = 0) -> FileKey:
    return FileKey("r", "drop", f"f{n}.csv", 10, 123, f"{n:064d}")


def claim(journal: PostgresJournal, n: int = 0) -> Any:
    return journal.claim(key(n), layout_version="l", mapping_version="m")


def test_a_server_that_stops_answering_is_unavailable_within_the_deadline(
    postgres: Any, database: str, proxy: FaultProxy
) -> None:
    """Before: a statement on a server that took the bytes and never answered waited for
    ever. Now each wait ends after the deadline (a quarter of the lease) as
    JournalUnavailable, saying what happened; once the path is back, work resumes."""
    journal = PostgresJournal(through(database, proxy), password=postgres.password, lease=4)
    try:
        assert journal.deadline == 1.0
        claim(journal, 1)
        proxy.freeze()
        started = time.monotonic()
        with pytest.raises(JournalUnavailable) as raised:
            claim(journal, 2)
        assert time.monotonic() - started < 6
        assert "did not answer within" in str(raised.value) or "timeout" in str(raised.value)
        proxy.thaw()
        end = time.monotonic() + 20
        while True:
            try:
                assert claim(journal, 2).held_by is None
                break
            except JournalUnavailable:
                assert time.monotonic() < end, "the journal did not come back"
                time.sleep(0.2)
    finally:
        proxy.thaw()
        journal.close()


def test_a_journal_closes_promptly_while_its_server_is_silent(
    postgres: Any, database: str, proxy: FaultProxy
) -> None:
    """A stop while the server is silent: the renewer and the release of this daemon's
    leases wait a deadline at most, then the journal closes (before: the renewer and the
    release each waited on the dead path, over 30 s, and a stop was not obeyed)."""
    journal = PostgresJournal(through(database, proxy), password=postgres.password, lease=4)
    claim(journal)
    proxy.freeze()
    time.sleep(1.5)  # the renewer is waiting on the path now
    started = time.monotonic()
    try:
        journal.close()
        assert time.monotonic() - started < 8
    finally:
        proxy.thaw()


def test_a_daemon_whose_file_was_taken_over_while_it_was_cut_off_renames_nothing(
    postgres: Any, database: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A daemon cut off from the journal for longer than its lease goes on uploading; a
    daemon of the group takes the file over. When the first comes back, it asks before it
    renames: LeaseLost, the temporary file removed, the target name untouched."""
    cut = PostgresJournal(through(database, proxy), password=postgres.password, lease=3)
    other = PostgresJournal(database, password=postgres.password, lease=3)
    (tmp_path / "target").mkdir()
    target = LocalRemote("target", tmp_path / "target")
    try:
        mine = claim(cut).record
        cut.confirm(mine.id)  # renewed lately: free, nothing asked
        proxy.freeze()
        time.sleep(3.5)  # the lease runs out
        taken = claim(other)
        assert taken.held_by is None and taken.record.state == State.PROCESSING
        proxy.thaw()
        # Its renewer gets through again before the rename (renewing nothing of that
        # file): a late renewal is no proof the file stayed its own.
        end = time.monotonic() + 20
        while True:
            try:
                cut.renew_leases()
                break
            except JournalUnavailable:
                assert time.monotonic() < end
                time.sleep(0.2)
        with pytest.raises(LeaseLost) as raised:
            target.put_atomic(
                "out.csv",
                io.BytesIO(b"abc"),
                3,
                temp_name=".out.csv.tmp",
                overwrite=False,
                before_rename=functools.partial(cut.confirm, mine.id),
            )
        assert "another daemon took it over" in str(raised.value)
        assert sorted(p.name for p in (tmp_path / "target").iterdir()) == []
        assert other.get(mine.id).owner == other.owner  # type: ignore[union-attr]
    finally:
        proxy.thaw()
        cut.close()
        other.close()


def test_a_lapsed_lease_nobody_took_is_confirmed_and_renewed(
    postgres: Any, database: str, proxy: FaultProxy
) -> None:
    """Renewals failed but no other daemon took the file: the check asks the server, finds
    the file still this daemon's, and renews its lease (the rename goes ahead)."""
    cut = PostgresJournal(through(database, proxy), password=postgres.password, lease=3)
    try:
        mine = claim(cut).record
        proxy.freeze()
        time.sleep(3.5)
        proxy.thaw()
        end = time.monotonic() + 20
        while True:
            try:
                cut.confirm(mine.id)
                break
            except JournalUnavailable:
                assert time.monotonic() < end
                time.sleep(0.2)
        renewed = cut.get(mine.id)
        assert renewed is not None and renewed.owner == cut.owner
        assert renewed.lease_until is not None
    finally:
        proxy.thaw()
        cut.close()


# --------------------------------------------------------------------------- daemons


def daemon_config(root: Path, url: str, drop: Path, out: Path) -> Path:
    """One host: two copy routes from one local folder, the shared journal (lease 4 s)."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "xchange.toml"
    routes = "".join(
        f"""
[[routes]]
name = "{name}"
source = {{ endpoint = "drop", pattern = "{name}-*.dat" }}
mapping = "copy"
target = {{ endpoint = "out", name = "{{source_name}}" }}
ready = {{ settle = 0 }}
retry = {{ attempts = 2, initial = 0.05, maximum = 0.1, later = 0 }}
"""
        for name in ("orders", "stock")
    )
    config.write_text(
        f"""
[journal]
path = "{root / "state" / "journal.sqlite"}"
url = "{url}"
password_env = "XCHANGE_PG_PASSWORD"
lease = 4

[quarantine]
path = "{root / "quarantine"}"

[daemon]
poll_interval = 0.5
rescan = 1

[alerts]
window = 60

[endpoints.drop]
type = "local"
path = "{drop}"

[endpoints.out]
type = "local"
path = "{out}"
{routes}""",
        encoding="utf-8",
    )
    return config


class Host:
    """One daemon as its own process, its JSON log kept."""

    def __init__(self, config: Path, password: str) -> None:
        self.log = config.parent / "daemon.log"
        self.writer = open(self.log, "ab")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            xchange_argv(config, "run"),
            stdout=subprocess.DEVNULL,
            stderr=self.writer,
            env=xchange_env(XCHANGE_PG_PASSWORD=password),
        )

    def events(self, name: str, **fields: str) -> list[dict[str, Any]]:
        return log_events(self.log, name, **fields)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.writer.close()
        return self.proc.returncode


@pytest.fixture
def hosts(postgres: Any, database: str, proxy: FaultProxy, tmp_path: Path) -> Iterator[Any]:
    drop, out = tmp_path / "drop", tmp_path / "out"
    drop.mkdir()
    out.mkdir()
    started: list[Host] = []

    def start(n: int) -> Host:
        config = daemon_config(tmp_path / f"host{n}", through(database, proxy), drop, out)
        started.append(Host(config, postgres.password))
        return started[-1]

    yield start, drop, out
    proxy.thaw()
    for host in started:
        host.stop()


def test_a_silent_journal_is_said_once_per_episode_and_recovery_once_for_the_group(
    hosts: Any, proxy: FaultProxy
) -> None:
    """The journal's path goes dead under two daemons of a group, each with two routes.
    Each daemon says `journal-unavailable` within seconds (before: no line, no alert, for
    as long as it lasted), once for the episode whatever the number of routes and looks;
    once the path is back the files go, and the group says "recovered" once (before:
    never, or every host its own)."""
    start, drop, out = hosts
    group = [start(0), start(1)]
    (drop / "orders-1.dat").write_bytes(b"one")
    wait_for(lambda: (out / "orders-1.dat").exists(), 30, "the first delivery")
    proxy.freeze()
    (drop / "stock-2.dat").write_bytes(b"two")
    wait_for(
        lambda: all(h.events("alert.sent", kind="failure") for h in group),
        20,
        "each daemon's journal-unavailable alert",
    )
    time.sleep(4)  # many looks of both routes while the path is dead
    for host in group:
        failures = host.events("alert.sent", kind="failure")
        assert [a["cause"] for a in failures] == ["journal-unavailable"], failures
        assert host.events("route.journal_failed") or host.events("route.summary")
    proxy.thaw()
    wait_for(lambda: (out / "stock-2.dat").exists(), 30, "the delivery after the episode")
    wait_for(
        lambda: sum(len(h.events("alert.sent", kind="recovered")) for h in group) >= 1,
        20,
        "the recovered notice",
    )
    time.sleep(3)  # every host has looked again since
    recovered = [a for h in group for a in h.events("alert.sent", kind="recovered")]
    assert len(recovered) == 1, recovered
    assert "journal-unavailable" in recovered[0]["cause"]
    assert all(h.proc.poll() is None for h in group)
    for host in group:  # the pool's own chatter (each reconnect, each dropped connection)
        assert '"logger": "psycopg.pool"' not in host.log.read_text()
        # The lease renewer said it could not renew, once, and that it could again.
        assert len(host.events("journal.lease_renewal_failed")) == 1
        assert host.events("journal.lease_renewal_resumed")


def test_a_stop_is_obeyed_while_the_journal_is_silent(hosts: Any, proxy: FaultProxy) -> None:
    """SIGTERM while every journal statement would wait on a dead path: the daemon says
    it stops and exits within seconds (before: it waited on the path for as long as the
    partition lasted)."""
    start, drop, out = hosts
    host = start(0)
    (drop / "orders-1.dat").write_bytes(b"one")
    wait_for(lambda: (out / "orders-1.dat").exists(), 30, "the first delivery")
    proxy.freeze()
    (drop / "orders-2.dat").write_bytes(b"two")
    time.sleep(2)
    began = time.monotonic()
    host.proc.send_signal(signal.SIGTERM)
    host.proc.wait(timeout=25)
    host.writer.close()
    assert time.monotonic() - began < 20
    assert host.events("daemon.stopped")


def test_a_database_restart_under_a_running_daemon_is_retried_not_fatal(
    hosts: Any, postgres: Any
) -> None:
    """PostgreSQL restarted under a working daemon, three times (its connections closed
    under it; "fast" mode: the test server runs without fsync, so an immediate stop would
    lose its last commits, which a real server keeps): the
    daemon stays up and delivers what arrives after each (before: it sometimes exited 3,
    "server closed the connection unexpectedly")."""
    start, drop, out = hosts
    host = start(0)
    for n in range(3):
        (drop / f"orders-{n}.dat").write_bytes(b"x" * (n + 1))
        wait_for(lambda n=n: (out / f"orders-{n}.dat").exists(), 30, f"delivery {n}")
        postgres.restart()
        assert host.proc.poll() is None, host.log.read_text()[-3000:]
    (drop / "stock-9.dat").write_bytes(b"after")
    wait_for(lambda: (out / "stock-9.dat").exists(), 30, "the delivery after the restarts")
    assert host.proc.poll() is None


def test_a_daemon_started_while_its_journal_is_away_waits_for_it(
    hosts: Any, proxy: FaultProxy
) -> None:
    """The daemon starts while the database cannot be reached (a restart, a cut): it says
    so and alerts, keeps trying, and works once the server answers (before: it exited 3
    at once, "could not run")."""
    start, drop, out = hosts
    proxy.freeze()
    (drop / "orders-1.dat").write_bytes(b"one")
    host = start(0)
    wait_for(lambda: bool(host.events("journal.unavailable")), 30, "the journal.unavailable line")
    assert host.proc.poll() is None, host.log.read_text()[-2000:]
    assert host.events("alert.sent", kind="failure")
    proxy.thaw()
    wait_for(lambda: (out / "orders-1.dat").exists(), 40, "the delivery once the server answers")
    assert host.proc.poll() is None
    assert len(host.events("alert.sent", kind="failure")) == 1  # one for the episode
    assert len(host.events("alert.sent", kind="recovered")) == 1

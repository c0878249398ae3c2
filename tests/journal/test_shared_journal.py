"""A PostgreSQL journal shared by several daemons: exclusive claims with leases, a dead
daemon's files taken over, connection loss as a transient error. Against a real
PostgreSQL server started by the tests on 127.0.0.1."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xchange.errors import JournalUnavailable
from xchange.journal import FileKey, State
from xchange.journal.postgres import PostgresJournal

REPO = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def database(postgres: Any) -> str:
    return str(postgres.create_database(f"s_{secrets.token_hex(6)}"))


@pytest.fixture
def daemons(postgres: Any, database: str) -> Iterator[list[PostgresJournal]]:
    """Three daemons' journals on one database (each its own owner)."""
    opened = [PostgresJournal(database, password=postgres.password, lease=30) for _ in range(3)]
    yield opened
    for journal in opened:
        journal.close()


def key(n: int = 0) -> FileKey:
    return FileKey("r", "drop", f"f{n}.csv", 10, 123, f"{n:064d}")


def claim(journal: PostgresJournal, n: int = 0):  # type: ignore[no-untyped-def]
    return journal.claim(key(n), layout_version="l", mapping_version="m")


def test_a_file_claimed_by_one_daemon_is_skipped_by_the_others(
    daemons: list[PostgresJournal],
) -> None:
    """While its owner works on it, another daemon's claim says who holds it and changes
    nothing; once the owner lets it go (retry later), the next claim takes it."""
    a, b, _ = daemons
    first = claim(a)
    assert first.held_by is None and first.record.owner == a.owner
    second = claim(b)
    assert second.held_by == a.owner and not second.already_delivered
    record = b.get(first.record.id)
    assert record is not None and record.attempts == 1 and record.owner == a.owner
    a.transition(first.record.id, State.DELIVERING)
    assert claim(b).held_by == a.owner
    a.transition(first.record.id, State.RETRYING, error=("connection", "cut"))
    taken = claim(b)
    assert taken.held_by is None and taken.record.owner == b.owner
    assert taken.record.attempts == 2


def test_many_daemons_claiming_the_same_files_at_once_take_each_exactly_once(
    postgres: Any, database: str
) -> None:
    """Six daemons, 200 contents offered to all of them at once: every content is granted
    to exactly one claim; the others are told it is held. (A daemon's own threads are
    kept apart by the daemon: one content is taken by one of its workers at a time.)"""
    daemons = [PostgresJournal(database, password=postgres.password, lease=30) for _ in range(6)]
    granted: Counter[int] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(len(daemons))

    def work(journal: PostgresJournal) -> None:
        start.wait()
        for n in range(200):
            c = claim(journal, n)
            if c.held_by is None and not c.already_delivered:
                with lock:
                    granted[n] += 1

    threads = [threading.Thread(target=work, args=(j,)) for j in daemons]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert granted == Counter(range(200))
    assert all(r.attempts == 1 for r in daemons[0].query(limit=1000))
    for journal in daemons:
        journal.close()


def test_a_killed_daemons_files_are_taken_over_once_its_lease_runs_out(
    postgres: Any, database: str
) -> None:
    """A daemon claims a file and is killed (SIGKILL): its lease is not renewed; another
    daemon is refused the file until the lease runs out, then takes it over from its
    last committed state, and the history says from whom."""
    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "from xchange.journal import FileKey, State\n"
        "from xchange.journal.postgres import PostgresJournal\n"
        "j = PostgresJournal(sys.argv[1], password=sys.argv[2], lease=1.5)\n"
        "c = j.claim(FileKey('r', 'drop', 'f0.csv', 10, 123, '0' * 64), "
        "layout_version='l', mapping_version='m')\n"
        "j.transition(c.record.id, State.DELIVERING)\n"
        "print(j.owner, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, database, postgres.password],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        dead_owner = child.stdout.readline().strip()
        assert dead_owner
        time.sleep(2)  # renewed while it lives: still held
        other = PostgresJournal(database, password=postgres.password, lease=30)
        assert claim(other).held_by == dead_owner
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        deadline = time.monotonic() + 10
        taken = claim(other)
        while taken.held_by is not None and time.monotonic() < deadline:
            time.sleep(0.2)
            taken = claim(other)
        assert taken.held_by is None
        assert taken.record.owner == other.owner and taken.record.attempts == 2
        (last,) = other.history(taken.record.id)[-1:]
        assert last.from_state == "delivering" and f"taken over from {dead_owner}" in str(last.note)
        other.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_losing_the_database_is_a_transient_error_and_work_resumes(
    postgres: Any, database: str
) -> None:
    """The server stops: a claim raises JournalUnavailable (retryable, no password in
    it); the server is back: the journal works again without being reopened."""
    journal = PostgresJournal(database, password=postgres.password, lease=30)
    try:
        claim(journal, 1)
        postgres.stop()
        try:
            with pytest.raises(JournalUnavailable) as raised:
                claim(journal, 2)
            assert raised.value.retryable
            assert postgres.password not in str(raised.value)
        finally:
            postgres.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                done = claim(journal, 2)
                break
            except JournalUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert done.held_by is None
        assert {r.path for r in journal.query()} == {"f1.csv", "f2.csv"}
    finally:
        journal.close()


def test_a_single_daemons_journal_moves_into_postgresql_with_its_guarantees(
    exchange: Any, postgres: Any
) -> None:
    """`journal migrate --to URL` copies the SQLite journal (records, outputs, history,
    operators' actions, the journal's id); with [journal] url set, the file delivered
    before is recognised as delivered, not sent again; a non-empty database is refused."""
    from click.testing import CliRunner

    from xchange.cli import main

    exchange.drop_sample()
    env = {"XCHANGE_PG_PASSWORD": postgres.password}
    runner = CliRunner()
    first = runner.invoke(main, ["run", "--once", "--config", str(exchange.config)], env=env)
    assert first.exit_code == 0, first.output
    pruned = runner.invoke(
        main,
        [
            "journal",
            "prune",
            "--older-than",
            "30",
            "--reason",
            "tidy",
            "--config",
            str(exchange.config),
        ],
    )
    assert pruned.exit_code == 0, pruned.output
    sqlite_id = open_sqlite_id(exchange)
    url = postgres.create_database(f"m_{secrets.token_hex(6)}")
    moved = runner.invoke(
        main,
        [
            "journal",
            "migrate",
            "--config",
            str(exchange.config),
            "--to",
            url,
            "--password-env",
            "XCHANGE_PG_PASSWORD",
        ],
        env=env,
    )
    assert moved.exit_code == 0, moved.output
    assert "1 files" in moved.output and "transitions" in moved.output
    text = exchange.config.read_text()
    exchange.config.write_text(
        text.replace(
            "[journal]\n", f'[journal]\nurl = "{url}"\npassword_env = "XCHANGE_PG_PASSWORD"\n'
        )
    )
    journal = PostgresJournal(url, password=postgres.password)
    try:
        (record,) = journal.query()
        assert record.state == State.ARCHIVED and len(record.outputs) == 3
        assert journal.journal_id == sqlite_id
        # The operators' actions came along, and new ones follow them.
        journal.actions.record("reload", who="li", reason=None)
        assert [(a.action, a.reason) for a in journal.actions.recent()] == [
            ("reload", "no reason given"),
            ("journal prune", "tidy"),
        ]
        assert [h.to_state for h in journal.history(record.id)][:3] == [
            "processing",
            "delivering",
            "delivered",
        ]
    finally:
        journal.close()
    exchange.drop_sample(name="orders_20261121.csv")
    again = runner.invoke(main, ["run", "--once", "--config", str(exchange.config)], env=env)
    assert again.exit_code == 0, again.output
    assert "1 duplicate" in again.output
    refused = runner.invoke(
        main,
        [
            "journal",
            "migrate",
            "--config",
            str(exchange.config),
            "--to",
            url,
            "--password-env",
            "XCHANGE_PG_PASSWORD",
        ],
        env=env,
    )
    assert refused.exit_code == 3 and "empty database" in refused.output
    assert postgres.password not in refused.output + moved.output


def open_sqlite_id(exchange: Any) -> str:
    from xchange.journal.sqlite import SQLiteJournal

    journal = SQLiteJournal(exchange.journal)
    try:
        return journal.journal_id
    finally:
        journal.close()


def test_a_scheduled_slot_is_run_by_one_daemon_of_the_group(
    daemons: list[PostgresJournal],
) -> None:
    """Three daemons reach the 02:00 run of a cron route: one takes it, the others are
    told it is taken; the next slot is free again."""
    taken = [j.slots.take("wms-stock-count", "2026-12-04T02:00") for j in daemons]
    assert taken.count(True) == 1
    assert daemons[2].slots.take("wms-stock-count", "2026-12-05T02:00")
    assert daemons[0].slots.take("other-route", "2026-12-04T02:00")


def test_a_wrong_database_name_is_a_configuration_error_at_once(postgres: Any) -> None:
    """It was reported after 30 s as "pool initialization incomplete"."""
    from xchange.errors import ConfigError

    started = time.monotonic()
    with pytest.raises(ConfigError, match=r'database "no_such_db" does not exist'):
        PostgresJournal(postgres.url("no_such_db"), password=postgres.password)
    with pytest.raises(ConfigError, match="password authentication failed"):
        PostgresJournal(postgres.url(), password="wrong")
    assert time.monotonic() - started < 10


def test_an_unreachable_server_is_transient_and_said_at_once() -> None:
    from tests.sshd import free_port

    started = time.monotonic()
    with pytest.raises(JournalUnavailable, match="cannot connect"):
        PostgresJournal(f"postgresql://x@127.0.0.1:{free_port()}/db", password="p")
    assert time.monotonic() - started < 10


def test_daemons_saving_what_they_saw_of_one_route_at_once_do_not_collide(
    daemons: list[PostgresJournal],
) -> None:
    """Observations were replaced by DELETE then INSERT: two daemons doing it at once broke
    the primary key (observations_pkey) and failed whole looks."""
    from datetime import UTC, datetime

    from xchange.journal import Observation

    now = datetime.now(UTC)
    held = [Observation(f"f{n}.csv", n, n, now, now, "settling") for n in range(20)]
    errors: list[BaseException] = []

    def save(journal: PostgresJournal) -> None:
        try:
            for _ in range(40):
                journal.observations.save("r", held)
        except BaseException as exc:  # (the test reports it)
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(j,)) for j in daemons]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(daemons[0].observations.held("r")) == sorted(o.path for o in held)

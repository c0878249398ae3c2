"""Small files in batches: pipelined SFTP uploads (put_many), one journal transaction per
step, and the same guarantees as one file at a time (refused names, twins, crashes)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import Exchange, fill_disk, mounted_tmpfs
from tests.faultproxy import FaultProxy
from tests.procs import xchange_argv, xchange_env
from tests.sftp_routes import endpoint, sftp_target_toml
from tests.sshd import SshServer
from xchange.batch import BATCH_FILE_MAX
from xchange.cli import main
from xchange.config import Endpoint, SFTPEndpoint, load_config
from xchange.errors import ConnectionLost, RemoteError
from xchange.journal import FileKey, State, Step, open_journal
from xchange.journal.sqlite import SQLiteJournal
from xchange.remote import Remote, SmallPut, open_remote
from xchange.remote.local import LocalRemote
from xchange.remote.sftp import SFTPRemote
from xchange.remote.sftp_wire import REQUEST_BYTES
from xchange.runner import Runner
from xchange.sessions import RemoteFactory

ROUTE = """
[[routes]]
name = "copy"
source = {{ endpoint = "shop-drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "wms-outbox", name = "{{source_stem}}.out" }}
after = {{ action = "{after}"{folder} }}
ready = {{ settle = 0 }}
retry = {{ attempts = 2, initial = 0.01, maximum = 0.05, later = 0 }}
transfers = {transfers}
"""


def configure(
    exchange: Exchange,
    target: str | None = None,
    *,
    after: str = "archive",
    transfers: int = 1,
) -> None:
    exchange.write_config(target=target)
    folder = ', folder = "archive"' if after == "archive" else ""
    exchange.config.write_text(
        exchange.config.read_text() + ROUTE.format(after=after, folder=folder, transfers=transfers)
    )


def drop(exchange: Exchange, count: int, size: int = 2048) -> dict[str, bytes]:
    """``count`` files of random bytes; returns the expected deliveries by name."""
    expected = {}
    for i in range(count):
        data = os.urandom(size)
        (exchange.inbox / f"f{i:04d}.dat").write_bytes(data)
        expected[f"f{i:04d}.out"] = data
    return expected


def run(exchange: Exchange) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["run", "--once", "--route", "copy", "--config", str(exchange.config)]
    )
    return result.exit_code, result.output


def delivered(folder: Path) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in os.listdir(folder) if not n.startswith(".")}


def temporaries(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".")]


def puts(items: dict[str, bytes], overwrite: bool = False) -> list[SmallPut]:
    return [SmallPut(n, d, f".{n}.t.xchange-part", overwrite) for n, d in items.items()]


def through(proxy: FaultProxy, sshd: SshServer, folder: Path, tmp_path: Path) -> SFTPEndpoint:
    """An endpoint reaching the test sshd through the fault proxy (its key pinned there)."""
    known = tmp_path / "known_hosts"
    known.write_text(
        sshd.known_hosts.read_text().replace(
            f"[127.0.0.1]:{sshd.port}", f"[127.0.0.1]:{proxy.port}"
        )
    )
    return endpoint(sshd, folder, port=proxy.port, known_hosts=known)


# ---------------------------------------------------------------------- put_many


@pytest.mark.sftp
def test_put_many_delivers_every_file_whole_under_its_name(sshd: SshServer) -> None:
    """300 files, empty to several write requests long, into a folder that does not exist
    yet: each arrives byte for byte, nothing temporary is left, and each result is None."""
    folder = sshd.folder("many") / "not" / "yet"
    sizes = [0, 1, REQUEST_BYTES - 1, REQUEST_BYTES, REQUEST_BYTES + 1, 5 * REQUEST_BYTES + 7]
    items = {f"f{i:03d}.bin": os.urandom(sizes[i % len(sizes)]) for i in range(300)}
    remote = SFTPRemote("wms", endpoint(sshd, folder))
    try:
        assert remote.put_many(puts(items)) == [None] * 300
    finally:
        remote.close()
    assert delivered(folder) == items
    assert temporaries(folder) == []


@pytest.mark.sftp
def test_put_many_refuses_a_taken_name_for_that_file_alone(sshd: SshServer) -> None:
    """Without overwrite, a name already on the server is left as it was and only that file
    reports an error (its temporary removed); with overwrite, it is replaced atomically."""
    folder = sshd.folder("taken")
    (folder / "b.xml").write_bytes(b"theirs")
    items = {"a.xml": b"A", "b.xml": b"ours", "c.xml": b"C"}
    remote = SFTPRemote("wms", endpoint(sshd, folder))
    try:
        first = remote.put_many(puts(items))
        assert first[0] is None and first[2] is None
        assert isinstance(first[1], RemoteError)
        assert "b.xml" in str(first[1])
        assert (folder / "b.xml").read_bytes() == b"theirs"
        assert temporaries(folder) == []
        assert remote.put_many(puts({"b.xml": b"ours"}, overwrite=True)) == [None]
    finally:
        remote.close()
    assert delivered(folder) == {"a.xml": b"A", "b.xml": b"ours", "c.xml": b"C"}


@pytest.mark.sftp
def test_put_many_on_a_cut_connection_reports_what_is_not_known_to_be_in_place(
    sshd: SshServer, tmp_path: Path
) -> None:
    """The connection dies midway: every file reported delivered is on the server whole,
    the others carry a retryable error, and the next call reconnects and finishes them."""
    proxy = FaultProxy(sshd.port).start()
    try:
        folder = sshd.folder("cut-many")
        items = {f"f{i:03d}.bin": os.urandom(20_000) for i in range(200)}
        remote = SFTPRemote("wms", through(proxy, sshd, folder, tmp_path))
        # The first connection is cut after 1 MB: the handshake passes, the uploads do not.
        proxy.mode, proxy.limit, proxy.faulty_connections = "drop_after", 1_000_000, 1
        results = remote.put_many(puts(items))
        done = {n for n, r in zip(items, results, strict=True) if r is None}
        failed = [r for r in results if r is not None]
        assert failed, "the cut came too late to test anything"
        assert all(isinstance(r, ConnectionLost) and r.retryable for r in failed), failed[:2]
        on_server = delivered(folder)
        assert {n: items[n] for n in done} == {n: on_server[n] for n in done}
        assert all(on_server[n] == items[n] for n in on_server)  # nothing partial is visible
        rest = {n: d for n, d in items.items() if n not in done}
        again = remote.put_many(puts(rest, overwrite=True))
        remote.close()
    finally:
        proxy.stop()
    assert again == [None] * len(rest)
    assert delivered(folder) == items


@pytest.mark.sftp
def test_put_many_on_a_stalled_path_gives_up_within_the_operation_timeout(
    sshd: SshServer, tmp_path: Path
) -> None:
    """The path stops forwarding midway: the call returns within the timeout instead of
    hanging, every file not in place carries a retryable timeout, none is partial."""
    proxy = FaultProxy(sshd.port).start()
    try:
        folder = sshd.folder("stall-many")
        cfg = through(proxy, sshd, folder, tmp_path)
        cfg = cfg.model_copy(update={"timeouts": cfg.timeouts.model_copy(update={"operation": 2})})
        remote = SFTPRemote("wms", cfg)
        items = {f"f{i:03d}.bin": os.urandom(20_000) for i in range(200)}
        proxy.mode, proxy.limit = "stall_after", 1_000_000
        started = time.monotonic()
        results = remote.put_many(puts(items))
        assert time.monotonic() - started < 15
        remote.close()
    finally:
        proxy.stop()
    failed = [r for r in results if r is not None]
    assert failed and all(r.retryable for r in failed), failed[:1]
    on_server = delivered(folder)
    assert all(on_server[n] == items[n] for n in on_server)


def test_put_many_on_a_local_folder_reports_each_file(tmp_path: Path) -> None:
    """The local endpoint does the same one file at a time: a taken name is that file's
    error, the others arrive."""
    (tmp_path / "b.xml").write_bytes(b"theirs")
    results = LocalRemote("out", tmp_path).put_many(puts({"a.xml": b"A", "b.xml": b"B"}))
    assert results[0] is None and isinstance(results[1], RemoteError)
    assert delivered(tmp_path) == {"a.xml": b"A", "b.xml": b"theirs"}


# ---------------------------------------------------------------------- the journal


def test_a_journal_batch_commits_together_or_not_at_all(tmp_path: Path) -> None:
    """Writes in a batch are invisible to other connections until it ends, and an error
    inside rolls every one of them back."""
    path = tmp_path / "journal.sqlite"
    journal, observer = SQLiteJournal(path), SQLiteJournal(path)

    def key(name: str) -> FileKey:
        return FileKey("r", "e", name, 1, 1, name * 8)

    with journal.batch():
        claim = journal.claim(key("a"), layout_version="1", mapping_version="1")
        journal.transition(claim.record.id, State.DELIVERING)
        assert observer.query() == []  # not committed yet
    assert [r.state for r in observer.query()] == [State.DELIVERING]
    with pytest.raises(RuntimeError), journal.batch():
        journal.claim(key("b"), layout_version="1", mapping_version="1")
        journal.transition(claim.record.id, State.DELIVERED)
        raise RuntimeError("stop")
    assert [(r.path, r.state) for r in observer.query()] == [("a", State.DELIVERING)]
    journal.close()
    observer.close()


def test_other_threads_wait_for_a_journal_batch(tmp_path: Path) -> None:
    """A write from another thread does not slip into the middle of a batch."""
    journal = SQLiteJournal(tmp_path / "journal.sqlite")
    order: list[str] = []

    def other() -> None:
        journal.claim(
            FileKey("r", "e", "other", 1, 1, "o" * 64), layout_version="1", mapping_version="1"
        )
        order.append("other")

    with journal.batch():
        journal.claim(
            FileKey("r", "e", "mine", 1, 1, "m" * 64), layout_version="1", mapping_version="1"
        )
        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.2)
        order.append("batch")
    thread.join(timeout=10)
    assert order == ["batch", "other"]
    journal.close()


# ---------------------------------------------------------------------- routes


@pytest.mark.sftp
def test_a_batch_journals_each_file_as_one_at_a_time_would(
    exchange: Exchange, sshd: SshServer
) -> None:
    """300 small files (two batches) plus one bigger than a batch takes: all arrive once,
    and each record tells the same story: processing, delivering, delivered, archived."""
    folder = sshd.folder("batch-journal")
    configure(exchange, sftp_target_toml(sshd, folder))
    expected = drop(exchange, 300)
    big = os.urandom(BATCH_FILE_MAX + 1)
    (exchange.inbox / "big.dat").write_bytes(big)
    expected["big.out"] = big
    code, output = run(exchange)
    assert code == 0, output
    assert delivered(folder) == expected
    assert temporaries(folder) == []
    journal = open_journal(load_config(exchange.config).journal)
    records = journal.query(limit=1000)
    assert len(records) == 301
    for record in records:
        assert record.state == State.ARCHIVED
        assert [o.path for o in record.outputs] == [Path(record.path).stem + ".out"]
        assert record.archive_path == f"archive/{record.path}"
        steps = [t.to_state for t in journal.history(record.id)]
        assert (
            steps == [State.PROCESSING, State.DELIVERING, State.DELIVERED] + [State.ARCHIVED] * 2
        ), (record.path, steps)
    journal.close()
    assert sorted(p.name for p in (exchange.inbox / "archive").iterdir()) == sorted(
        [f"f{i:04d}.dat" for i in range(300)] + ["big.dat"]
    )
    assert [p.name for p in exchange.inbox.glob("*.dat")] == []


@pytest.mark.sftp
def test_a_taken_name_in_a_batch_is_settled_alone(exchange: Exchange, sshd: SshServer) -> None:
    """One name is taken by other bytes (quarantined, the receiver's file untouched), one by
    the very same bytes (recognised as delivered); the rest of the batch arrives."""
    folder = sshd.folder("batch-taken")
    configure(exchange, sftp_target_toml(sshd, folder), after="delete")
    expected = drop(exchange, 40)
    (folder / "f0003.out").write_bytes(b"someone else's")
    (folder / "f0007.out").write_bytes(expected["f0007.out"])
    original = expected["f0003.out"]
    code, output = run(exchange)
    assert code == 1, output  # one file quarantined
    assert (folder / "f0003.out").read_bytes() == b"someone else's"
    expected["f0003.out"] = b"someone else's"
    assert delivered(folder) == expected
    assert temporaries(folder) == []
    journal = open_journal(load_config(exchange.config).journal)
    records = {r.path: r for r in journal.query(limit=100)}
    journal.close()
    refused = records.pop("f0003.dat")
    assert refused.state == State.QUARANTINED
    assert refused.error_kind == "target-exists"
    assert Path(refused.quarantine_path or "").read_bytes() == original
    assert {r.state for r in records.values()} == {State.DELETED}
    assert list(exchange.inbox.glob("*.dat")) == []


def test_twins_in_one_batch_are_delivered_once(exchange: Exchange) -> None:
    """Two files with the same bytes in one batch: the first is delivered, the second is
    recognised as the same content and not sent again."""
    configure(exchange, after="delete")
    (exchange.inbox / "a.dat").write_bytes(b"same")
    (exchange.inbox / "b.dat").write_bytes(b"same")
    (exchange.inbox / "c.dat").write_bytes(b"other")
    code, output = run(exchange)
    assert code == 0, output
    assert "2 delivered" in output and "1 duplicate" in output
    assert len(delivered(exchange.outbox)) == 2
    assert (exchange.outbox / "c.out").read_bytes() == b"other"


def test_a_batch_read_by_two_routes_is_archived_after_the_second(exchange: Exchange) -> None:
    """Two copy routes read the same drop folder: the files stay until both delivered."""
    configure(exchange)
    text = exchange.config.read_text()
    second = text[text.rindex("[[routes]]") :].replace('name = "copy"', 'name = "copy-2"')
    second = second.replace("{source_stem}.out", "{source_stem}.second")
    exchange.config.write_text(text + second)
    expected = drop(exchange, 10)
    first = CliRunner().invoke(
        main, ["run", "--once", "--route", "copy", "--config", str(exchange.config)]
    )
    assert first.exit_code == 0, first.output
    assert len(list(exchange.inbox.glob("*.dat"))) == 10  # copy-2 has not taken them yet
    both = CliRunner().invoke(
        main, ["run", "--once", "--route", "copy-2", "--config", str(exchange.config)]
    )
    assert both.exit_code == 0, both.output
    assert list(exchange.inbox.glob("*.dat")) == []
    assert len(list((exchange.inbox / "archive").iterdir())) == 10
    out = delivered(exchange.outbox)
    assert {n: out[n] for n in expected} == expected
    assert len(out) == 20


POINTS = ["after-claim", "before-rename", "after-rename", "after-output", "before-archive"]


@pytest.mark.sftp
@pytest.mark.parametrize("point", POINTS)
def test_a_batch_killed_at_each_point_delivers_each_file_exactly_once(
    exchange: Exchange, sshd: SshServer, point: str
) -> None:
    """SIGKILL mid-batch at each dangerous instant, then a restart: every file arrives
    once, whole, nothing temporary is left, and every record is archived."""
    folder = sshd.folder(f"batch-crash-{point}")
    configure(exchange, sftp_target_toml(sshd, folder))
    expected = drop(exchange, 30)

    def once(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            xchange_argv(exchange.config, "run", "--once", "--route", "copy"),
            env=xchange_env(**env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    crashed = once(XCHANGE_CRASH_AT=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    on_server = delivered(folder)
    assert all(on_server[n] == expected[n] for n in on_server)  # nothing partial
    resumed = once()
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert delivered(folder) == expected
    assert temporaries(folder) == []
    journal = open_journal(load_config(exchange.config).journal)
    records = journal.query(limit=100)
    journal.close()
    assert len(records) == 30
    assert {r.state for r in records} == {State.ARCHIVED}
    assert all(len(r.outputs) == 1 for r in records)
    assert list(exchange.inbox.glob("*.dat")) == []


def test_a_journal_failure_mid_batch_leaves_the_files_for_a_later_run(
    exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal refuses to record a batch's delivery: the run reports the files as not
    delivered yet (exit 3) instead of failing, and the next run recognises each file on
    the target and records it, once."""
    from xchange.errors import JournalError
    from xchange.journal.sqlite import SQLiteJournal as Backend

    configure(exchange, after="delete")
    expected = drop(exchange, 20)
    real = Backend.record_steps
    calls = {"n": 0}

    def failing(self: Backend, steps: list[Step]) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the first records the claims; the second the deliveries
            raise JournalError("journal: disk I/O error")
        real(self, steps)

    monkeypatch.setattr(Backend, "record_steps", failing)
    code, output = run(exchange)
    assert code == 3, output
    assert "retry-later" in output
    monkeypatch.setattr(Backend, "record_steps", real)
    code, output = run(exchange)
    assert code == 0, output
    assert delivered(exchange.outbox) == expected
    journal = open_journal(load_config(exchange.config).journal)
    records = journal.query(limit=100)
    journal.close()
    assert {r.state for r in records} == {State.DELETED}
    assert all(len(r.outputs) == 1 for r in records)
    assert list(exchange.inbox.glob("*.dat")) == []


def filling_after_upload(disk: Path) -> RemoteFactory:
    """Remotes as the daemon opens them, but the target fills ``disk`` (the journal's file
    system) once a batch's files are in place: the journal cannot record them."""

    def remotes(name: str, config: Endpoint) -> Remote:
        remote = open_remote(name, config)
        if name == "wms-outbox":
            put_many = remote.put_many

            def put_then_fill(puts: Sequence[SmallPut]) -> list[RemoteError | None]:
                errors = put_many(puts)
                fill_disk(disk)
                return errors

            remote.put_many = put_then_fill  # type: ignore[method-assign]
        return remote

    return remotes


@pytest.mark.sftp
def test_a_file_sent_again_after_a_journal_failure_is_found_on_the_target_not_renamed_over(
    exchange: Exchange, sshd: SshServer, tmp_path: Path
) -> None:
    """An overwrite route; the journal's disk fills up right after a batch's 200 files
    landed, so none is recorded. Space is made, and the partner sends the 200 files again
    (same bytes, a new time): each is a retried record, found on the target with its very
    bytes and recorded delivered once; none is sent or renamed over its target again."""
    folder = sshd.folder("batch-journal-full")
    (tmp_path / "small").mkdir()
    with mounted_tmpfs(tmp_path / "small", "size=8m,mode=0700") as disk:
        configure(exchange, sftp_target_toml(sshd, folder))
        exchange.config.write_text(
            exchange.config.read_text()
            .replace(str(exchange.journal), str(disk / "journal.sqlite"))
            .replace(
                'name = "{source_stem}.out"', 'name = "{source_stem}.out", if_exists = "overwrite"'
            )
        )
        expected = drop(exchange, 200)
        config = load_config(exchange.config)
        journal = open_journal(config.journal)
        runner = Runner(config, journal, remotes=filling_after_upload(disk))
        try:
            failed = runner.run_route(config.route("copy"))
        finally:
            runner.close()
            (disk / "filler").unlink()
            journal.close()
        assert failed.count("retry-later") == 200, failed.error
        assert "disk is full" in (failed.error or "")
        assert delivered(folder) == expected
        landed = {n: (folder / n).stat().st_ino for n in expected}
        later = time.time() + 60
        for source in exchange.inbox.glob("*.dat"):
            os.utime(source, (later, later))  # sent again by the partner
        code, output = run(exchange)
        assert code == 0, output
        assert "200 delivered" in output, output
        assert {n: (folder / n).stat().st_ino for n in expected} == landed  # none renamed over
        assert delivered(folder) == expected
        journal = open_journal(config.journal)
        try:
            records = journal.query(limit=1000)
            assert len(records) == 200
            assert {r.state for r in records} == {State.ARCHIVED}
            assert all(len(r.outputs) == 1 for r in records)
            assert all(
                [t.to_state for t in journal.history(r.id)].count(State.DELIVERED) == 1
                for r in records
            )
        finally:
            journal.close()


@pytest.mark.sftp
def test_a_batch_stopped_on_one_file_tells_each_file_its_own_story(
    exchange: Exchange, sshd: SshServer
) -> None:
    """A 256 KiB target disk takes 15 of 30 files of 16 KiB: the first that does not fit
    fails alone with its own error; each one after it is told it was not sent because the
    batch stopped on that file, and waits for a later run (before: each was given the
    first one's error, naming the first one's output)."""
    with mounted_tmpfs(sshd.folder("batch-small-disk"), "size=256k,mode=0777") as folder:
        configure(exchange, sftp_target_toml(sshd, folder))
        drop(exchange, 30, size=16 * 1024)
        code, output = run(exchange)
        assert code == 3, output
        journal = open_journal(load_config(exchange.config).journal)
        try:
            waiting = sorted(
                (r for r in journal.query(limit=100) if r.state == State.RETRYING),
                key=lambda r: r.path,
            )
        finally:
            journal.close()
    assert 5 < len(waiting) < 30
    stopper, rest = waiting[0], waiting[1:]
    own = Path(stopper.path).stem + ".out"
    assert own in (stopper.error_message or "")
    assert "disk is full" in (stopper.error_message or "")
    for record in rest:
        message = record.error_message or ""
        assert message.startswith(f"not sent: the batch stopped on {stopper.path}"), message
        assert own not in message and "tried again at a later run" in message
        assert record.error_kind == stopper.error_kind  # one cause, one alert


def test_files_left_in_place_with_their_markers_are_taken_once(exchange: Exchange) -> None:
    """after = leave with done-markers: each file is delivered once; neither it nor its
    marker is taken again at the next looks (the marker is never an input)."""
    exchange.write_config()
    exchange.config.write_text(
        exchange.config.read_text()
        + ROUTE.format(after="leave", folder="", transfers=1)
        .replace('pattern = "*.dat"', 'pattern = "*"')
        .replace("ready = { settle = 0 }", 'ready = { settle = 0, marker = "{name}.ok" }')
    )
    (exchange.inbox / "a.dat").write_bytes(b"A")
    (exchange.inbox / "a.dat.ok").write_bytes(b"")
    (exchange.inbox / "b.dat").write_bytes(b"B")  # no marker yet: held
    config = load_config(exchange.config)
    journal = open_journal(config.journal)
    runner = Runner(config, journal)  # one runner, as the daemon: it remembers what it left
    try:
        for _ in range(3):
            (result,) = runner.run_once(["copy"], wait_to_settle=False)
            assert result.error is None and not result.count("quarantined")
            assert [h.path for h in result.held] == ["b.dat"]  # never a marker
        assert delivered(exchange.outbox) == {"a.out": b"A"}
        (exchange.inbox / "b.dat.ok").write_bytes(b"")
        (result,) = runner.run_once(["copy"], wait_to_settle=False)
        assert result.count("delivered") == 1
        (result,) = runner.run_once(["copy"], wait_to_settle=False)
        assert result.count("delivered") == 0 and result.held == []
    finally:
        runner.close()
    assert delivered(exchange.outbox) == {"a.out": b"A", "b.out": b"B"}
    assert sorted(r.path for r in journal.query()) == ["a.dat", "b.dat"]
    journal.close()


# ---------------------------------------------------------------------- get_many


@pytest.mark.sftp
def test_get_many_reads_every_file_whole_or_says_why(sshd: SshServer) -> None:
    """Files of every size come back byte for byte; a missing one is RemoteNotFound; one
    that is not the size it was listed with (grown or shrunk) is an error, never bytes."""
    from xchange.errors import RemoteNotFound
    from xchange.remote import FileInfo

    folder = sshd.folder("get-many")
    sizes = [0, 1, REQUEST_BYTES - 1, REQUEST_BYTES, REQUEST_BYTES + 1, 5 * REQUEST_BYTES + 7]
    items = {f"f{i:03d}.bin": os.urandom(sizes[i % len(sizes)]) for i in range(150)}
    for name, data in items.items():
        (folder / name).write_bytes(data)
    (folder / "grown.bin").write_bytes(b"x" * 100)
    (folder / "shrunk.bin").write_bytes(b"x" * 10)
    infos = [FileInfo(n, len(d), 0) for n, d in items.items()] + [
        FileInfo("gone.bin", 5, 0),
        FileInfo("grown.bin", 50, 0),
        FileInfo("shrunk.bin", 20, 0),
    ]
    remote = SFTPRemote("drop", endpoint(sshd, folder))
    try:
        results = remote.get_many(infos)
    finally:
        remote.close()
    assert results[: len(items)] == list(items.values())
    gone, grown, shrunk = results[len(items) :]
    assert isinstance(gone, RemoteNotFound)
    assert isinstance(grown, RemoteError) and "not 50 bytes" in str(grown)
    assert isinstance(shrunk, RemoteError) and "not 20 bytes" in str(shrunk)


@pytest.mark.sftp
def test_a_batch_from_an_sftp_drop_is_read_in_one_go_and_delivered_once(
    exchange: Exchange, sshd: SshServer
) -> None:
    """300 small files picked up from an SFTP drop folder: each delivered once, byte for
    byte, and archived on the server (one whose name the archive already holds next to
    it, as name.1)."""
    from tests.sftp_routes import sftp_source

    drop = sshd.folder("batch-sftp-drop")
    configure(exchange)
    sftp_source(exchange, sshd, drop)
    expected = {}
    old = time.time() - 60  # waiting in the drop for a minute (SFTP times are whole seconds)
    for i in range(300):
        data = os.urandom(1000 + i)
        (drop / f"f{i:04d}.dat").write_bytes(data)
        os.utime(drop / f"f{i:04d}.dat", (old, old))
        expected[f"f{i:04d}.out"] = data
    (drop / "archive").mkdir()
    (drop / "archive" / "f0005.dat").write_bytes(b"archived yesterday")
    code, output = run(exchange)
    assert code == 0, output
    assert "300 delivered" in output, output[-2000:]
    assert delivered(exchange.outbox) == expected
    assert [n for n in os.listdir(drop) if n.endswith(".dat")] == []
    assert len(os.listdir(drop / "archive")) == 301
    assert (drop / "archive" / "f0005.dat").read_bytes() == b"archived yesterday"
    assert (drop / "archive" / "f0005.dat.1").read_bytes() == expected["f0005.out"]
    journal = open_journal(load_config(exchange.config).journal)
    places = {r.path: r.archive_path for r in journal.query(limit=1000)}
    journal.close()
    assert places["f0005.dat"] == "archive/f0005.dat.1"
    assert places["f0006.dat"] == "archive/f0006.dat"
    code, output = run(exchange)
    assert code == 0 and "0 delivered" in output, output


@pytest.mark.sftp
def test_remove_many_deletes_each_file_and_a_missing_one_is_no_error(sshd: SshServer) -> None:
    """Deletes go together; a file already gone is fine; the folder is left empty."""
    folder = sshd.folder("remove-many")
    for i in range(50):
        (folder / f"f{i}.dat").write_bytes(b"x")
    remote = SFTPRemote("drop", endpoint(sshd, folder))
    try:
        results = remote.remove_many([f"f{i}.dat" for i in range(50)] + ["gone.dat"])
    finally:
        remote.close()
    assert results == [None] * 51
    assert os.listdir(folder) == []


@pytest.mark.sftp
def test_a_batch_from_an_sftp_drop_with_delete_leaves_it_empty(
    exchange: Exchange, sshd: SshServer
) -> None:
    """after = delete on an SFTP drop: every file delivered once, and deleted there."""
    from tests.sftp_routes import sftp_source

    drop = sshd.folder("batch-sftp-delete")
    configure(exchange, after="delete")
    sftp_source(exchange, sshd, drop)
    expected = {}
    old = time.time() - 60
    for i in range(120):
        data = os.urandom(500 + i)
        (drop / f"f{i:04d}.dat").write_bytes(data)
        os.utime(drop / f"f{i:04d}.dat", (old, old))
        expected[f"f{i:04d}.out"] = data
    code, output = run(exchange)
    assert code == 0 and "120 delivered" in output, output[-2000:]
    assert delivered(exchange.outbox) == expected
    assert os.listdir(drop) == []
    journal = open_journal(load_config(exchange.config).journal)
    assert {r.state for r in journal.query(limit=200)} == {State.DELETED}
    journal.close()


def test_a_local_archive_name_already_taken_gets_a_free_one(exchange: Exchange) -> None:
    """Archiving a batch locally: a name the archive already holds is never overwritten;
    that file goes in as name.1 and the journal says so."""
    configure(exchange)
    expected = drop(exchange, 10)
    (exchange.inbox / "archive").mkdir()
    (exchange.inbox / "archive" / "f0003.dat").write_bytes(b"archived yesterday")
    code, output = run(exchange)
    assert code == 0, output
    assert delivered(exchange.outbox) == expected
    archive = exchange.inbox / "archive"
    assert (archive / "f0003.dat").read_bytes() == b"archived yesterday"
    assert (archive / "f0003.dat.1").read_bytes() == expected["f0003.out"]
    journal = open_journal(load_config(exchange.config).journal)
    places = {r.path: r.archive_path for r in journal.query(limit=100)}
    journal.close()
    assert places["f0003.dat"] == "archive/f0003.dat.1"
    assert places["f0004.dat"] == "archive/f0004.dat"


def test_identical_big_files_taken_at_once_are_delivered_once(exchange: Exchange) -> None:
    """Six files with the same bytes, too big for a batch, four workers at a time: the
    content is delivered once; the others are duplicates (at once, or at the next look)."""
    configure(exchange, transfers=4)
    same = os.urandom(BATCH_FILE_MAX + 1)
    for i in range(6):
        (exchange.inbox / f"twin{i}.dat").write_bytes(same)
    code, output = run(exchange)
    assert code == 0, output
    code, output = run(exchange)
    assert code == 0, output
    assert list(delivered(exchange.outbox).values()) == [same]
    assert list(exchange.inbox.glob("*.dat")) == []
    journal = open_journal(load_config(exchange.config).journal)
    (record,) = journal.query()
    journal.close()
    assert record.state == State.ARCHIVED and len(record.outputs) == 1

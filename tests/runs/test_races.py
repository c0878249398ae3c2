"""Races and damaged states that used to lose or resend files: a source replaced right
after its delivery, files vanishing mid-listing or mid-hash, bad names, clocks in the
future, Windows names, and more. Each test states the case it proves."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import SAMPLES, Exchange, fill_disk, mounted_tmpfs
from tests.sftp_routes import sftp_target_toml
from tests.sshd import SshServer
from xchange.cli import main
from xchange.config import load_config
from xchange.journal import open_journal

COPY_ROUTE = """
[[routes]]
name = "copy"
source = {{ endpoint = "shop-drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "wms-outbox", name = "{{source_stem}}.{{date:%H%M%S%f}}.out" }}
after = {{ action = "{after}"{folder} }}
ready = {{ settle = 0 }}
retry = {{ attempts = 2, initial = 0.01, maximum = 0.05, later = 0 }}
"""


def run(exchange: Exchange, route: str | None = None) -> Result:
    args = ["--log-format", "json", "run", "--once", "--config", str(exchange.config)]
    if route:
        args += ["--route", route]
    return CliRunner().invoke(main, args)


def events(result: Result, name: str) -> list[dict[str, object]]:
    found = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return [e for e in found if e.get("event") == name]


def at_checkpoint(monkeypatch: pytest.MonkeyPatch, point: str, action: Callable[[], None]) -> None:
    """Run ``action`` once when a run reaches ``point`` (in both delivery paths)."""
    import xchange.batch
    import xchange.delivery
    import xchange.transfer

    done = []

    def hook(name: str) -> None:
        if name == point and not done:
            done.append(name)
            action()

    for module in (xchange.transfer, xchange.delivery, xchange.batch):
        monkeypatch.setattr(module, "checkpoint", hook)


def rewrite(path: Path, data: bytes) -> Callable[[], None]:
    """A partner writing a new version under the same name (a later time)."""

    def write() -> None:
        path.write_bytes(data)
        later = time.time() + 5
        os.utime(path, (later, later))

    return write


def copy_config(exchange: Exchange, after: str, target: str | None = None) -> None:
    exchange.write_config(target=target)
    folder = ', folder = "archive"' if after == "archive" else ""
    exchange.config.write_text(
        exchange.config.read_text() + COPY_ROUTE.format(after=after, folder=folder)
    )


def outputs(folder: Path) -> list[bytes]:
    return sorted(p.read_bytes() for p in folder.iterdir() if p.is_file())


@pytest.mark.parametrize("after", ["archive", "delete"])
@pytest.mark.parametrize("size", [2048, 2 << 20], ids=["batch", "single"])
def test_a_source_replaced_right_after_delivery_is_left_and_taken_as_new(
    exchange: Exchange, monkeypatch: pytest.MonkeyPatch, after: str, size: int
) -> None:
    """The partner rewrites orders.dat (same name, new content) the moment the first
    version's output lands: the new version is neither archived nor deleted undelivered;
    it stays, and the next run delivers it."""
    copy_config(exchange, after)
    exchange.outbox.mkdir(exist_ok=True)
    source = exchange.inbox / "orders.dat"
    first, second = os.urandom(size), os.urandom(size)
    source.write_bytes(first)
    at_checkpoint(monkeypatch, "before-archive", rewrite(source, second))
    result = run(exchange, "copy")
    assert result.exit_code == 0, result.output
    assert source.read_bytes() == second  # still there, undelivered so far
    assert outputs(exchange.outbox) == [first]
    assert events(result, "file.replaced")
    monkeypatch.undo()
    later = run(exchange, "copy")
    assert later.exit_code == 0, later.output
    assert "copy: 1 delivered" in later.stdout
    assert outputs(exchange.outbox) == sorted([first, second])
    assert not source.exists()


@pytest.mark.sftp
@pytest.mark.parametrize("after", ["archive", "delete"])
def test_an_sftp_source_replaced_right_after_delivery_is_left_and_taken_as_new(
    exchange: Exchange, sshd: SshServer, monkeypatch: pytest.MonkeyPatch, after: str
) -> None:
    """The same on an SFTP drop (size and time from the listing)."""
    drop = sshd.folder(f"replaced-{after}")
    copy_config(exchange, after)
    text = exchange.config.read_text().replace(
        f'[endpoints.shop-drop]\ntype = "local"\npath = "{exchange.inbox}"\n',
        sftp_target_toml(sshd, drop).replace("wms-outbox", "shop-drop"),
    )
    exchange.config.write_text(text)
    exchange.outbox.mkdir(exist_ok=True)
    source = drop / "orders.dat"
    first, second = b"first version", b"second version, longer"
    source.write_bytes(first)
    old = time.time() - 60
    os.utime(source, (old, old))
    at_checkpoint(monkeypatch, "before-archive", rewrite(source, second))
    result = run(exchange, "copy")
    assert result.exit_code == 0, result.output
    assert source.read_bytes() == second
    assert outputs(exchange.outbox) == [first]
    monkeypatch.undo()
    os.utime(source, (old + 10, old + 10))
    later = run(exchange, "copy")
    assert later.exit_code == 0, later.output
    assert outputs(exchange.outbox) == sorted([first, second])
    assert not source.exists()


def test_a_file_grown_after_it_settled_is_not_archived(
    exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that appends after the settle time (descriptor kept open): the grown file
    is not archived with only its first part delivered; it is taken again as new."""
    copy_config(exchange, "archive")
    exchange.outbox.mkdir(exist_ok=True)
    source = exchange.inbox / "feed.dat"
    source.write_bytes(b"x" * 3000)

    def append() -> None:
        with open(source, "ab") as fh:
            fh.write(b"y" * 1000)

    at_checkpoint(monkeypatch, "before-archive", append)
    result = run(exchange, "copy")
    assert result.exit_code == 0, result.output
    assert source.stat().st_size == 4000
    assert not (exchange.inbox / "archive" / "feed.dat").exists()
    monkeypatch.undo()
    later = run(exchange, "copy")
    assert later.exit_code == 0, later.output
    assert outputs(exchange.outbox) == sorted([b"x" * 3000, b"x" * 3000 + b"y" * 1000])


def journal_of(exchange: Exchange):  # type: ignore[no-untyped-def]
    return open_journal(load_config(exchange.config).journal)


SAMPLE = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"


def test_a_source_removed_while_it_is_hashed_is_delivered_from_the_open_handle(
    exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The partner takes the file back while it is being hashed: no traceback, no record
    stuck in processing; the bytes read are the bytes delivered, once."""
    import xchange.transfer

    exchange.drop_sample()
    source = exchange.inbox / SAMPLE.name
    real = xchange.transfer.fingerprint

    def removing(fh):  # type: ignore[no-untyped-def]
        source.unlink()
        return real(fh)

    monkeypatch.setattr(xchange.transfer, "fingerprint", removing)
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert "shop-orders: 1 delivered (3 documents)" in result.stdout
    assert "Traceback" not in result.output
    journal = journal_of(exchange)
    (record,) = journal.query()
    journal.close()
    assert str(record.state) == "delivered"


def test_a_file_removed_while_the_folder_is_listed_does_not_fail_the_listing(
    exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One entry vanishes between the folder's listing and its stat: the others are
    listed; no false failure, no alert."""
    import xchange.remote.local as local_module
    from xchange.remote.local import LocalRemote

    for name in ("a.csv", "b.csv", "c.csv"):
        (exchange.inbox / name).write_text(name)
    real = os.scandir

    class Vanishing:
        def __init__(self, path):  # type: ignore[no-untyped-def]
            self.inner = real(path)

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc):  # type: ignore[no-untyped-def]
            self.inner.close()

        def __iter__(self):  # type: ignore[no-untyped-def]
            for entry in self.inner:
                if entry.name == "b.csv":
                    os.unlink(entry.path)
                yield entry

    monkeypatch.setattr(local_module.os, "scandir", Vanishing)
    listed = LocalRemote("drop", exchange.inbox).list()
    assert sorted(f.name for f in listed) == ["a.csv", "c.csv"]


@pytest.mark.parametrize("settle", [0, 1])
def test_a_file_with_a_time_in_the_future_is_taken_and_the_skew_is_said(
    exchange: Exchange, settle: int
) -> None:
    """The writer's clock is a day ahead: the file is judged as age 0 and by its size
    staying the same (not held as "too young: -86398 s"), and the skew is logged."""
    exchange.write_config(ready=f"settle = {settle}, min_age = 0")
    source = exchange.drop_sample()
    ahead = time.time() + 86_400
    os.utime(source, (ahead, ahead))
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert "shop-orders: 1 delivered (3 documents)" in result.stdout
    (skew,) = events(result, "file.clock_skew")[:1]
    assert int(skew["ahead_s"]) > 86_000  # type: ignore[call-overload]


# --------------------------------------------------------------------------- names


def test_a_source_name_too_long_for_its_quarantine_copy_does_not_stop_the_route(
    exchange: Exchange,
) -> None:
    """A 247-byte source name that fails: its quarantine copy gets a bounded name, and the
    good files behind it are delivered (before: a traceback at every look)."""
    exchange.config.write_text(
        exchange.config.read_text().replace('pattern = "orders_*.csv"', 'pattern = "*.csv"')
    )
    long = "orders_" + "x" * 236 + ".csv"
    assert len(long.encode()) == 247
    (exchange.inbox / long).write_bytes(b"not the header\r\n")
    for i in range(5):
        data = SAMPLE.read_bytes().replace(b"EC20261121", f"EC2026112{i}".encode())
        (exchange.inbox / f"orders_{i}.csv").write_bytes(data)
    result = run(exchange)
    assert result.exit_code == 1, result.output
    assert "5 delivered" in result.stdout and "1 quarantined" in result.stdout
    kept = [p for p in exchange.quarantine.rglob("*") if p.is_file()]
    assert all(len(p.name.encode()) <= 255 for p in kept)
    assert any(p.read_bytes() == b"not the header\r\n" for p in kept)


def test_an_unexpected_error_on_one_file_does_not_stop_the_others(
    exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug met on one file (not an error xchange knows): that file waits, with a reason
    and the traceback in the log; the other files of the look are delivered."""
    import xchange.transfer

    real = xchange.transfer.Transfer._read

    def failing(self, route, source, info, *rest):  # type: ignore[no-untyped-def]
        if info.name == "orders_1.csv":
            raise KeyError("surprise")
        return real(self, route, source, info, *rest)

    monkeypatch.setattr(xchange.transfer.Transfer, "_read", failing)
    for i in range(3):
        data = SAMPLE.read_bytes().replace(b"EC20261121", f"EC2026112{i}".encode())
        (exchange.inbox / f"orders_{i}.csv").write_bytes(data)
    result = run(exchange)
    assert "2 delivered" in result.stdout, result.output
    assert "unexpected error (KeyError: 'surprise')" in result.stdout
    (event,) = events(result, "file.unexpected_error")
    assert "Traceback" in str(event.get("exception"))


def test_output_names_windows_would_refuse_are_cleaned(exchange: Exchange) -> None:
    """Many partner and Kingdee SFTP servers run on Windows: CON.xml, NUL.xml, COM1.xml
    and names ending in dots or spaces become names Windows accepts."""
    from xchange.names import render_name

    assert render_name("{x}.xml", {"x": "CON"}) == "_CON.xml"
    assert render_name("{x}.xml", {"x": "nul"}) == "_nul.xml"
    assert render_name("{x}", {"x": "COM1.txt"}) == "_COM1.txt"
    assert render_name("{x}", {"x": "LPT9.csv"}) == "_LPT9.csv"
    assert render_name("{x}", {"x": "report. . "}) == "report"
    assert render_name("{x}.xml", {"x": "CONSOLE"}) == "CONSOLE.xml"


def test_a_name_the_target_cannot_hold_is_quarantined_at_once(
    exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target's file system refuses the name (ENAMETOOLONG): that cannot get better
    with time, so the file is quarantined at once, not "retry later" until give-up."""
    import errno

    import xchange.remote.local as local_module

    real = local_module.os.link

    def refusing(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "WMS_OUT" in str(dst):
            raise OSError(errno.ENAMETOOLONG, "File name too long")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(local_module.os, "link", refusing)
    exchange.drop_sample()
    result = run(exchange)
    assert result.exit_code == 1, result.output
    assert "1 quarantined" in result.stdout and "name cannot be written" in result.stdout


# --------------------------------------------------------------------------- environment


def test_openssh_children_get_no_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The OpenSSH client started for big files sees no password variable (nor any other
    variable but what it needs to run)."""
    from xchange.remote.openssh import child_environment

    monkeypatch.setenv("XCHANGE_WMS_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "other-secret")
    env = child_environment()
    assert "s3cret-pw" not in env.values() and "other-secret" not in env.values()
    assert set(env) <= {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME"}


def test_folders_xchange_creates_are_owner_only_whatever_the_umask(exchange: Exchange) -> None:
    """Under umask 000, the journal's folder, scratch, staging and the quarantine are 0700
    (before: 0777)."""
    import stat

    exchange.write_config()
    (exchange.inbox / "orders_bad.csv").write_bytes(b"bad\r\n")
    exchange.drop_sample()
    old = os.umask(0)
    try:
        run(exchange)
    finally:
        os.umask(old)
    for folder in (exchange.journal.parent, exchange.quarantine):
        for path in [folder, *[p for p in folder.rglob("*") if p.is_dir()]]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_library_logging_is_json_in_a_json_log() -> None:
    """APScheduler's warnings and tracebacks come out as JSON lines like every other
    event (before: plain text in the middle of the JSON log)."""
    import io
    import logging

    from xchange.log import configure_logging

    out = io.StringIO()
    configure_logging(json=True, stream=out)
    logging.getLogger("apscheduler.executors.default").warning(
        "Run time of job %r was missed by %s", "route", "0:00:05"
    )
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("apscheduler.scheduler").exception("Job raised an exception")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["logger"] == "apscheduler.executors.default"
    assert lines[0]["level"] == "warning" and "was missed by" in lines[0]["event"]
    assert "RuntimeError: boom" in lines[1]["exception"]


# --------------------------------------------------------------------------- journal trouble


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 1 MiB tmpfs (root only): room for a new journal, then filled by the test."""
    (tmp_path / "small").mkdir()
    with mounted_tmpfs(tmp_path / "small", "size=1m,mode=0700") as folder:
        yield folder


def test_a_journal_on_a_full_disk_is_one_clear_error_an_alert_and_exit_3(
    exchange: Exchange, small_disk: Path
) -> None:
    """The journal's disk fills up mid-run: one clear error for the route, an alert sent
    without the journal, exit 3, no traceback; the files wait in the drop folder."""
    exchange.config.write_text(
        exchange.config.read_text()
        .replace(str(exchange.journal), str(small_disk / "journal.sqlite"))
        .replace("[journal]", '[alerts]\nsinks = [{ type = "log" }]\n\n[journal]')
    )
    assert run(exchange).exit_code == 0  # the journal exists
    fill_disk(small_disk)
    for i in range(5):
        data = SAMPLE.read_bytes().replace(b"EC20261121", f"EC2026112{i}".encode())
        (exchange.inbox / f"orders_{i}.csv").write_bytes(data)
    result = run(exchange)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output, result.output
    assert "journal" in result.output.lower()
    assert events(result, "alert.sent")
    assert len(list(exchange.inbox.glob("orders_*.csv"))) >= 4


def test_a_journal_on_a_read_only_file_system_is_exit_3_with_a_reason(
    exchange: Exchange, tmp_path: Path
) -> None:
    """The journal's file system is mounted read-only: a clear reason and exit 3 (before:
    a traceback at the run lock and exit 1, which means "quarantined")."""
    (tmp_path / "readonly").mkdir()
    with mounted_tmpfs(tmp_path / "readonly", "ro,size=64k") as folder:
        exchange.config.write_text(
            exchange.config.read_text().replace(
                str(exchange.journal), str(folder / "journal.sqlite")
            )
        )
        exchange.drop_sample()
        result = run(exchange)
        assert result.exit_code == 3, result.output
        assert "Traceback" not in result.output
        assert "read-only file system" in result.output.lower()


# --------------------------------------------------------------------------- known_hosts


@pytest.mark.sftp
def test_a_revoked_host_key_is_refused_and_said(
    exchange: Exchange, sshd: SshServer, tmp_path: Path
) -> None:
    """known_hosts marks the server's key @revoked: run and trust refuse it, saying so
    (before: an InvalidHostKey traceback from paramiko); other lines still count."""
    key_line = sshd.known_hosts.read_text().split(maxsplit=1)[1].strip()
    known = tmp_path / "known_hosts"
    known.write_text(f"# partner keys\n@revoked * {key_line}\n{sshd.known_hosts.read_text()}")
    folder = sshd.folder("revoked")
    exchange.write_config(target=sftp_target_toml(sshd, folder, known_hosts=known))
    exchange.drop_sample()
    result = run(exchange)
    assert result.exit_code == 3, result.output
    assert "@revoked" in result.output and "Traceback" not in result.output
    trusted = CliRunner().invoke(
        main, ["trust", "wms-outbox", "--yes", "--config", str(exchange.config)]
    )
    assert trusted.exit_code != 0 and "@revoked" in trusted.output
    assert "@revoked" in known.read_text()  # the file is left as it was


def test_a_broken_known_hosts_line_is_named_by_file_and_line(tmp_path: Path) -> None:
    from xchange.errors import HostKeyUnknown
    from xchange.remote.sftp import KnownHosts

    known = tmp_path / "known_hosts"
    known.write_text("# comment\n[127.0.0.1]:22 ssh-ed25519 !!!notbase64!!!\n")
    with pytest.raises(HostKeyUnknown, match=r"known_hosts: line 2: not a valid"):
        KnownHosts.read(known, "x", "x")
    known.write_text("@weird host ssh-ed25519 AAAA\n")
    with pytest.raises(HostKeyUnknown, match=r"line 1: unknown marker '@weird'"):
        KnownHosts.read(known, "x", "x")

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

from tests.conftest import SAMPLES, Exchange
from tests.sshd import SshServer
from tests.test_sftp import sftp_target_toml
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
    import xchange.runner

    done = []

    def hook(name: str) -> None:
        if name == point and not done:
            done.append(name)
            action()

    monkeypatch.setattr(xchange.runner, "checkpoint", hook)
    monkeypatch.setattr(xchange.batch, "checkpoint", hook)


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
    import xchange.runner

    exchange.drop_sample()
    source = exchange.inbox / SAMPLE.name
    real = xchange.runner._fingerprint

    def removing(fh):  # type: ignore[no-untyped-def]
        source.unlink()
        return real(fh)

    monkeypatch.setattr(xchange.runner, "_fingerprint", removing)
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

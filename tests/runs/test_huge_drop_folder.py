"""A drop folder on a real OpenSSH server holding 20,000 files that are not the route's
and a delivered history left in place: a look keeps only the route's files (and their
markers) as the listing comes, remembers what it saw delivered, takes each new file once
and a changed one again, and never takes a file twice."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.sftp_routes import endpoint_toml
from tests.sshd import SshServer
from xchange.config import load_config
from xchange.journal import open_journal
from xchange.runner import Runner

OTHERS = 20_000
HISTORY = 1_500

CONFIG = """
[journal]
path = "{work}/journal.sqlite"
[quarantine]
path = "{work}/q"
{drop}
[endpoints.out]
type = "local"
path = "{work}/out"
[[routes]]
name = "r"
source = {{ endpoint = "drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "out", name = "{{source_name}}", if_exists = "overwrite" }}
after = {{ action = "leave" }}
ready = {{ settle = 0{marker} }}
"""


@pytest.fixture(scope="module")
def crowded(sshd: SshServer) -> Path:
    """A folder of 20,000 files of another partner's (``*.bak``), made on disk directly."""
    folder = sshd.folder("huge-drop")
    for path in folder.iterdir():
        path.unlink()
    for i in range(OTHERS):
        (folder / f"other{i:06d}.bak").write_bytes(b"b")
    return folder


def runner_for(tmp_path: Path, sshd: SshServer, folder: Path, marker: str = "") -> Runner:
    (tmp_path / "out").mkdir(exist_ok=True)
    config = tmp_path / "x.toml"
    config.write_text(
        CONFIG.format(
            work=tmp_path,
            drop=endpoint_toml("drop", sshd, folder),
            marker=f', marker = "{marker}"' if marker else "",
        )
    )
    cfg = load_config(config)
    return Runner(cfg, open_journal(cfg.journal))


def arrive(folder: Path, name: str, data: bytes) -> None:
    """A file renamed into the folder whole, with a time a few seconds ago."""
    temp = folder / f".{name}.tmp"
    temp.write_bytes(data)
    then = time.time() - 5
    os.utime(temp, (then, then))
    os.rename(temp, folder / name)


def clear(folder: Path, pattern: str) -> None:
    for path in folder.glob(pattern):
        path.unlink()


def test_new_files_are_taken_once_among_a_history_and_another_partners_files(
    tmp_path: Path, sshd: SshServer, crowded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xchange import scan

    monkeypatch.setattr(scan, "LOOKUP_CHUNK", 400)  # the history in four look-ups
    clear(crowded, "*.dat")
    for i in range(HISTORY):
        (crowded / f"hist{i:05d}.dat").write_bytes(f"history {i}".encode())
    runner = runner_for(tmp_path, sshd, crowded)
    route = runner.config.routes[0]
    out = tmp_path / "out"
    try:
        (first,) = runner.run_once()
        assert first.count("delivered") == HISTORY
        # The look keeps the route's files only; every one of them is seen.
        # A history left in place is looked up by state alone: no record is made of it.
        asked: list[int] = []
        made: list[int] = []
        states_many, lookup_many = runner.journal.states_many, runner.journal.lookup_many

        def counted(route_name, endpoint, keys):  # type: ignore[no-untyped-def]
            asked.append(len(keys))
            return states_many(route_name, endpoint, keys)

        def records(route_name, endpoint, keys):  # type: ignore[no-untyped-def]
            made.append(len(keys))
            return lookup_many(route_name, endpoint, keys)

        runner.journal.states_many = counted  # type: ignore[method-assign]
        runner.journal.lookup_many = records  # type: ignore[method-assign]
        look = runner.scanner.look(route)
        assert asked == [400, 400, 400, 300] and made == []
        # What the daemon times a listing by is the listing alone (None: names only).
        assert look.listed_in is not None and look.listed_in > 0
        assert runner.scanner.look(route, only=set()).listed_in is None
        assert look.names == {f"hist{i:05d}.dat" for i in range(HISTORY)}
        assert not look.unknown and look.verdict is not None and not look.verdict.ready
        # Delivered and left in place: remembered, no journal look-up for them any more.
        asked.clear()
        arrive(crowded, "new-1.dat", b"new one")
        result = runner.run_route(route)
        assert [f.source for f in result.files] == ["new-1.dat"]
        assert result.files[0].outcome == "delivered"
        assert asked == [1]  # the new file alone was looked up
        assert (out / "new-1.dat").read_bytes() == b"new one"
        # Nothing is taken twice: the next looks find nothing to do.
        for _ in range(2):
            again = runner.run_route(route)
            assert again.files == [] and again.error is None
        # A file of the history written again (new size and time) is taken again.
        arrive(crowded, "hist00007.dat", b"history 7, corrected")
        changed = runner.run_route(route)
        assert [(f.source, f.outcome) for f in changed.files] == [("hist00007.dat", "delivered")]
        assert (out / "hist00007.dat").read_bytes() == b"history 7, corrected"
        records = runner.journal.query(route="r", limit=100_000)
        assert len(records) == HISTORY + 2
        assert len({(r.path, r.size, r.mtime_ns) for r in records}) == len(records)
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [f"hist{i:05d}.dat" for i in range(HISTORY)] + ["new-1.dat"]
        )
    finally:
        runner.close()
        runner.journal.close()
        clear(crowded, "*.dat")


def test_done_markers_are_kept_from_the_listing_and_history_markers_are_no_input(
    tmp_path: Path, sshd: SshServer, crowded: Path
) -> None:
    clear(crowded, "*.dat")
    clear(crowded, "*.ok")
    for i in range(50):
        (crowded / f"hist{i:03d}.dat").write_bytes(f"history {i}".encode())
        (crowded / f"hist{i:03d}.dat.ok").write_bytes(b"")
    runner = runner_for(tmp_path, sshd, crowded, marker="{name}.ok")
    route = runner.config.routes[0]
    try:
        (first,) = runner.run_once()
        assert first.count("delivered") == 50
        arrive(crowded, "late.dat", b"late")
        held = runner.run_route(route)
        assert held.files == []
        assert [h.path for h in held.held] == ["late.dat"]
        assert "waiting for marker late.dat.ok" in held.held[0].reason
        (crowded / "late.dat.ok").write_bytes(b"")
        taken = runner.run_route(route)
        assert [(f.source, f.outcome) for f in taken.files] == [("late.dat", "delivered")]
        assert runner.run_route(route).files == []
    finally:
        runner.close()
        runner.journal.close()
        clear(crowded, "*.dat")
        clear(crowded, "*.ok")

"""The Remote contract: what every endpoint backend must do, run against each of them.

Backends: a local folder, the in-memory folder, and every SFTP server partners run
(OpenSSH, OpenSSH without extensions, gesftpserver, rclone, ProFTPD), each started once
per session on 127.0.0.1. A new backend joins by adding one parameter to ``KINDS`` and
one branch to the ``endpoint`` fixture (how to open it, and a view of its files).

Whatever the server's rename does (refuse or replace), a name that exists is never
overwritten without overwrite; whatever order it answers in, uploads finish; every file
gets the mode asked for where the backend says it keeps modes."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from tests.sftp_routes import sftp_endpoint
from tests.sftpservers import SftpServer
from xchange.errors import CannotVerify, RemoteNotFound, SourceChanged, TargetExists
from xchange.remote import Capabilities, DropOwner, Remote, SmallPut
from xchange.remote.base import Verify, temp_name_for
from xchange.remote.local import LocalRemote
from xchange.remote.memory import MemoryRemote, MemoryStore
from xchange.remote.sftp import SFTPRemote

KINDS = ["local", "memory", "openssh", "openssh-noext", "gesftpserver", "rclone", "proftpd"]


class View(Protocol):
    """The backend's files as a person (or the partner) sees them, beside the Remote."""

    def write(self, name: str, data: bytes) -> None: ...

    def files(self, folder: str = "") -> dict[str, bytes]:
        """The files directly in ``folder``, hidden ones included."""
        ...

    def mode(self, name: str) -> int: ...


@dataclass
class FolderView:
    folder: Path

    def write(self, name: str, data: bytes) -> None:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def files(self, folder: str = "") -> dict[str, bytes]:
        where = self.folder / folder
        return {p.name: p.read_bytes() for p in where.iterdir() if p.is_file()}

    def mode(self, name: str) -> int:
        return stat.S_IMODE((self.folder / name).stat().st_mode)


@dataclass
class StoreView:
    store: MemoryStore

    def write(self, name: str, data: bytes) -> None:
        self.store.write(name, data)

    def files(self, folder: str = "") -> dict[str, bytes]:
        return self.store.folder(folder)

    def mode(self, name: str) -> int:
        return self.store.files[name].mode


@dataclass
class Endpoint:
    """A remote, a view of its files, and how to open another session on the same folder."""

    remote: Remote
    view: View
    kind: str
    reopen: Callable[[], Remote]


@pytest.fixture(params=KINDS)
def endpoint(
    request: pytest.FixtureRequest, sftp_servers: dict[str, SftpServer], tmp_path: Path
) -> Iterator[Endpoint]:
    kind = request.param
    opened: list[Remote] = []

    def track(remote: Remote) -> Remote:
        opened.append(remote)
        return remote

    if kind == "local":
        folder = tmp_path / "folder"
        folder.mkdir()
        view: View = FolderView(folder)
        make: Callable[[], Remote] = lambda: track(LocalRemote("local", folder))  # noqa: E731
    elif kind == "memory":
        store = MemoryStore()
        view = StoreView(store)
        make = lambda: track(MemoryRemote("memory", store))  # noqa: E731
    else:
        server = sftp_servers[kind]
        name = f"contract-{request.node.name}".replace("[", "-").replace("]", "")
        folder = server.folder(name)
        view = FolderView(folder)
        cfg = sftp_endpoint(server, folder, accelerate_mb=0)
        make = lambda: track(SFTPRemote(kind, cfg))  # noqa: E731
    yield Endpoint(make(), view, kind, make)
    for remote in opened:
        remote.close()


def put(ep: Endpoint, name: str, data: bytes, *, overwrite: bool = False, mode: int | None = None):
    temp = temp_name_for(name, "t0k3n")
    return ep.remote.put_atomic(
        name, io.BytesIO(data), len(data), temp_name=temp, overwrite=overwrite, mode=mode
    )


def test_every_backend_declares_what_it_can_do(endpoint: Endpoint) -> None:
    """Capabilities are declared (learned from the server for SFTP): every backend here
    delivers by rename; whether a rename refuses or replaces a taken name is known."""
    caps = endpoint.remote.capabilities()
    assert isinstance(caps, Capabilities)
    assert caps.atomic_rename
    assert caps.rename_refuses in (True, False)
    if endpoint.kind == "rclone":
        assert caps.rename_refuses is False and caps.keeps_modes is False
    if endpoint.kind == "openssh":
        assert caps.posix_rename and caps.hard_links
    if endpoint.kind == "openssh-noext":
        assert not caps.posix_rename


def test_a_new_name_is_delivered_whole_with_nothing_hidden_left(endpoint: Endpoint) -> None:
    info = put(endpoint, "a.txt", b"hello")
    assert info.size == 5
    assert endpoint.view.files() == {"a.txt": b"hello"}


def test_a_taken_name_is_never_overwritten_without_overwrite(endpoint: Endpoint) -> None:
    """The partner's file stays byte for byte, on servers whose rename would replace it
    too (rclone), and nothing hidden is left."""
    endpoint.view.write("a.txt", b"partner's file")
    with pytest.raises(TargetExists):
        put(endpoint, "a.txt", b"ours")
    assert endpoint.view.files() == {"a.txt": b"partner's file"}


def test_overwrite_replaces_the_file_and_leaves_nothing_aside(endpoint: Endpoint) -> None:
    """With or without posix-rename on the server."""
    endpoint.view.write("a.txt", b"old")
    put(endpoint, "a.txt", b"new content", overwrite=True)
    assert endpoint.view.files() == {"a.txt": b"new content"}
    put(endpoint, "b.txt", b"no old one", overwrite=True)
    assert endpoint.view.files()["b.txt"] == b"no old one"


def test_every_file_gets_the_mode_asked_for(endpoint: Endpoint) -> None:
    """Where the backend keeps modes at all (rclone says it does not)."""
    put(endpoint, "a.txt", b"x", mode=0o640)
    put(endpoint, "b.txt", b"y", mode=0o604)
    if not endpoint.remote.capabilities().keeps_modes:
        pytest.skip(f"{endpoint.kind} keeps no modes (its files are always 0644)")
    assert endpoint.view.mode("a.txt") == 0o640
    assert endpoint.view.mode("b.txt") == 0o604


def test_names_with_cjk_characters_and_spaces(endpoint: Endpoint) -> None:
    name = "订单 2026 11 21 (副本).csv"
    put(endpoint, name, "中文".encode())
    assert endpoint.view.files() == {name: "中文".encode()}
    assert [f.name for f in endpoint.remote.list()] == [name]


def test_a_big_file_is_delivered_whole(endpoint: Endpoint) -> None:
    """16 MiB through the pipelined writes (a server answering out of order included)."""
    data = os.urandom(16 << 20)
    put(endpoint, "big.bin", data)
    assert endpoint.view.files() == {"big.bin": data}


def test_list_stat_download_and_remove(endpoint: Endpoint) -> None:
    endpoint.view.write("a.csv", b"1")
    endpoint.view.write(".hidden.xchange-part", b"2")
    endpoint.view.write("sub/b.csv", b"22")
    assert [f.name for f in endpoint.remote.list()] == ["a.csv"]
    assert sorted(f.name for f in endpoint.remote.list(recursive=True)) == ["a.csv", "sub/b.csv"]
    assert [f.name for f in endpoint.remote.list(recursive=True, skip_dirs=("sub",))] == ["a.csv"]
    info = endpoint.remote.stat("sub/b.csv")
    assert info is not None and info.size == 2
    assert endpoint.remote.stat("missing.csv") is None
    out = io.BytesIO()
    assert endpoint.remote.download("sub/b.csv", out) == 2 and out.getvalue() == b"22"
    with pytest.raises(RemoteNotFound):
        endpoint.remote.download("missing.csv", io.BytesIO())
    with endpoint.remote.local_copy("sub/b.csv", endpoint_scratch(endpoint)) as copy:
        assert copy.read_bytes() == b"22"
    endpoint.remote.remove("a.csv")
    endpoint.remote.remove("a.csv")  # gone already: no error
    assert "a.csv" not in endpoint.view.files()


def endpoint_scratch(endpoint: Endpoint) -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"xchange-scratch-{endpoint.kind}-"))


def test_archiving_never_replaces_an_archived_file(endpoint: Endpoint) -> None:
    """A second file of the same name goes to a free name; a batch move refuses the taken
    name (and ``move`` then finds a free one)."""
    for content in (b"first", b"second"):
        endpoint.view.write("orders.csv", content)
        endpoint.remote.move("orders.csv", "archive")
    assert endpoint.view.files("archive") == {"orders.csv": b"first", "orders.csv.1": b"second"}
    endpoint.view.write("orders.csv", b"third")
    endpoint.view.write("new.csv", b"new")
    results = endpoint.remote.move_many(["orders.csv", "new.csv"], "archive")
    assert not isinstance(results[0], str)
    assert results[1] == "archive/new.csv"
    assert endpoint.view.files("archive") == {
        "orders.csv": b"first",
        "orders.csv.1": b"second",
        "new.csv": b"new",
    }
    assert endpoint.view.files()["orders.csv"] == b"third"


def test_a_file_rewritten_since_it_was_taken_is_neither_archived_nor_deleted(
    endpoint: Endpoint,
) -> None:
    """``expect`` (the file as it was taken): a file written again under the name stays,
    to be taken as a new file; the file taken is moved or deleted."""
    endpoint.view.write("a.csv", b"first version")
    taken = endpoint.remote.stat("a.csv")
    assert taken is not None
    endpoint.view.write("a.csv", b"second, longer version")
    with pytest.raises(SourceChanged):
        endpoint.remote.move("a.csv", "archive", expect=taken)
    with pytest.raises(SourceChanged):
        endpoint.remote.remove("a.csv", expect=taken)
    (result,) = endpoint.remote.move_many(["a.csv"], "archive", expect=[taken])
    assert isinstance(result, SourceChanged)
    assert endpoint.view.files()["a.csv"] == b"second, longer version"
    now = endpoint.remote.stat("a.csv")
    assert now is not None
    assert endpoint.remote.move("a.csv", "archive", expect=now) == "archive/a.csv"
    endpoint.view.write("b.csv", b"b")
    endpoint.remote.remove("b.csv", expect=endpoint.remote.stat("b.csv"))
    assert set(endpoint.view.files()) <= {".xchange-drop"}


def test_put_many_refuses_taken_names_and_delivers_the_rest(endpoint: Endpoint) -> None:
    endpoint.view.write("taken.txt", b"partner's")
    puts = [
        SmallPut(f"f{i}.txt", f"data {i}".encode(), temp_name_for(f"f{i}.txt", "t"), False, 0o640)
        for i in range(50)
    ]
    puts.append(SmallPut("taken.txt", b"ours", temp_name_for("taken.txt", "t"), False, 0o640))
    results = endpoint.remote.put_many(puts)
    assert results[:50] == [None] * 50
    assert isinstance(results[50], TargetExists)
    got = endpoint.view.files()
    assert got["taken.txt"] == b"partner's"
    assert {n: got[n] for n in got if n != "taken.txt"} == {
        f"f{i}.txt": f"data {i}".encode() for i in range(50)
    }
    if endpoint.remote.capabilities().keeps_modes:
        assert endpoint.view.mode("f7.txt") == 0o640


@pytest.mark.parametrize("how", ["hash", "readback"])
def test_verified_deliveries_single_many_overwritten_and_sent_by_openssh(
    endpoint: Endpoint, how: str, tmp_path: Path
) -> None:
    """verify = hash or readback on every backend: streamed, pipelined, over an existing
    file (posix-rename, or the old file moved aside), and a file from disk (sent by
    OpenSSH's client on SFTP endpoints here: accelerate_mb = 0), the digest computed from
    the same file."""
    verify = Verify(how)
    data = os.urandom(300_000)
    endpoint.view.write("old.bin", b"old")
    for name, overwrite in (("new.bin", False), ("old.bin", True)):
        endpoint.remote.put_atomic(
            name,
            io.BytesIO(data),
            len(data),
            temp_name=temp_name_for(name, "t0k3n"),
            overwrite=overwrite,
            verify=verify,
        )
    local = tmp_path / "disk.bin"
    local.write_bytes(data[:200_001])
    with open(local, "rb") as fh:
        endpoint.remote.put_atomic(
            "disk.bin",
            fh,
            200_001,
            temp_name=temp_name_for("disk.bin", "t"),
            overwrite=False,
            verify=verify,
        )
    puts = [
        SmallPut(f"f{i}.txt", data[: 1000 * i], temp_name_for(f"f{i}.txt", "t"), True, None, verify)
        for i in range(20)
    ]
    assert endpoint.remote.put_many(puts) == [None] * 20
    expected = {"new.bin": data, "old.bin": data, "disk.bin": data[:200_001]}
    expected |= {f"f{i}.txt": data[: 1000 * i] for i in range(20)}
    assert endpoint.view.files() == expected


def test_a_file_too_big_to_read_back_is_not_sent(endpoint: Endpoint) -> None:
    verify = Verify("readback", readback_max=10)
    with pytest.raises(CannotVerify):
        endpoint.remote.put_atomic(
            "big.txt",
            io.BytesIO(b"x" * 11),
            11,
            temp_name=temp_name_for("big.txt", "t"),
            overwrite=False,
            verify=verify,
        )
    results = endpoint.remote.put_many(
        [
            SmallPut("big.txt", b"x" * 11, temp_name_for("big.txt", "t"), False, None, verify),
            SmallPut("ok.txt", b"x" * 10, temp_name_for("ok.txt", "t"), False, None, verify),
        ]
    )
    assert isinstance(results[0], CannotVerify) and results[1] is None
    assert endpoint.view.files() == {"ok.txt": b"x" * 10}


def test_put_many_overwrites_when_asked(endpoint: Endpoint) -> None:
    for i in range(5):
        endpoint.view.write(f"f{i}.txt", b"old")
    puts = [
        SmallPut(f"f{i}.txt", f"new {i}".encode(), temp_name_for(f"f{i}.txt", "t"), True)
        for i in range(10)
    ]
    assert endpoint.remote.put_many(puts) == [None] * 10
    assert endpoint.view.files() == {f"f{i}.txt": f"new {i}".encode() for i in range(10)}


def test_get_many_and_remove_many(endpoint: Endpoint) -> None:
    for i in range(20):
        endpoint.view.write(f"f{i}.dat", bytes([i]) * (i * 1000))
    infos = endpoint.remote.list()
    data = endpoint.remote.get_many(infos)
    assert {i.name: d for i, d in zip(infos, data, strict=True)} == {
        f"f{i}.dat": bytes([i]) * (i * 1000) for i in range(20)
    }
    results = endpoint.remote.remove_many([i.name for i in infos] + ["missing.dat"])
    assert results == [None] * 21
    assert endpoint.view.files() == {}


def test_a_drop_folder_is_one_journals_while_it_runs(endpoint: Endpoint) -> None:
    """The first journal's mark makes a second one see it (and whose it is); released,
    the folder is free for the second."""
    first, second = DropOwner("journal-a", "host-a", 1, 0), DropOwner("journal-b", "host-b", 2, 0)
    other = endpoint.reopen()
    assert endpoint.remote.claim_drop(first, 600) is None
    holder = other.claim_drop(second, 600)
    assert holder is not None and holder.journal_id == "journal-a"
    endpoint.remote.release_drop(first)
    assert other.claim_drop(second, 600) is None
    other.release_drop(second)

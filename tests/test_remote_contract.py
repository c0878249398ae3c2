"""The Remote contract: what every endpoint kind must do, tried on a local folder and on
every SFTP server partners run (OpenSSH, OpenSSH without extensions, gesftpserver, rclone,
ProFTPD), each started once per session on 127.0.0.1.

Whatever the server's rename does (refuse or replace), a name that exists is never
overwritten without overwrite; whatever order it answers in, uploads finish; every file
gets the mode asked for (where the server keeps modes at all)."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.sftpservers import SftpServer
from xchange.config import SFTPEndpoint, Timeouts
from xchange.errors import RemoteNotFound, TargetExists
from xchange.remote import Remote, SmallPut
from xchange.remote.base import temp_name_for
from xchange.remote.local import LocalRemote
from xchange.remote.sftp import SFTPRemote

KINDS = ["local", "openssh", "openssh-noext", "gesftpserver", "rclone", "proftpd"]


@dataclass
class Endpoint:
    """A remote and the local folder it shows, with what its server does differently."""

    remote: Remote
    folder: Path
    kind: str
    keeps_modes: bool = True


def sftp_endpoint(server: SftpServer, folder: Path, **overrides: object) -> SFTPEndpoint:
    values: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "path": server.remote_path(folder),
        "key_file": server.client_key,
        "known_hosts": server.known_hosts,
        "timeouts": Timeouts(connect=5, banner=5, auth=5, operation=10),
    }
    values.update(overrides)
    return SFTPEndpoint.model_validate(values)


@pytest.fixture(params=KINDS)
def endpoint(
    request: pytest.FixtureRequest, sftp_servers: dict[str, SftpServer], tmp_path: Path
) -> Iterator[Endpoint]:
    kind = request.param
    if kind == "local":
        folder = tmp_path / "folder"
        folder.mkdir()
        yield Endpoint(LocalRemote("local", folder), folder, kind)
        return
    server = sftp_servers[kind]
    folder = server.folder(f"contract-{request.node.name}".replace("[", "-").replace("]", ""))
    remote = SFTPRemote(kind, sftp_endpoint(server, folder, accelerate_mb=0))
    yield Endpoint(remote, folder, kind, keeps_modes=server.keeps_modes)
    remote.close()


def put(ep: Endpoint, name: str, data: bytes, *, overwrite: bool = False, mode: int | None = None):
    temp = temp_name_for(name, "t0k3n")
    return ep.remote.put_atomic(
        name, io.BytesIO(data), len(data), temp_name=temp, overwrite=overwrite, mode=mode
    )


def visible(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_new_name_is_delivered_whole_with_nothing_hidden_left(endpoint: Endpoint) -> None:
    info = put(endpoint, "a.txt", b"hello")
    assert info.size == 5
    assert visible(endpoint.folder) == {"a.txt": b"hello"}


def test_a_taken_name_is_never_overwritten_without_overwrite(endpoint: Endpoint) -> None:
    """The partner's file stays byte for byte, on servers whose rename would replace it
    too (rclone), and nothing hidden is left."""
    (endpoint.folder / "a.txt").write_bytes(b"partner's file")
    with pytest.raises(TargetExists):
        put(endpoint, "a.txt", b"ours")
    assert visible(endpoint.folder) == {"a.txt": b"partner's file"}


def test_overwrite_replaces_the_file_and_leaves_nothing_aside(endpoint: Endpoint) -> None:
    """With or without posix-rename on the server."""
    (endpoint.folder / "a.txt").write_bytes(b"old")
    put(endpoint, "a.txt", b"new content", overwrite=True)
    assert visible(endpoint.folder) == {"a.txt": b"new content"}
    put(endpoint, "b.txt", b"no old one", overwrite=True)
    assert visible(endpoint.folder)["b.txt"] == b"no old one"


def test_every_file_gets_the_mode_asked_for(endpoint: Endpoint) -> None:
    if not endpoint.keeps_modes:
        pytest.skip(f"{endpoint.kind} keeps no modes (its files are always 0644)")
    put(endpoint, "a.txt", b"x", mode=0o640)
    put(endpoint, "b.txt", b"y", mode=0o604)
    assert stat.S_IMODE((endpoint.folder / "a.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((endpoint.folder / "b.txt").stat().st_mode) == 0o604


def test_names_with_cjk_characters_and_spaces(endpoint: Endpoint) -> None:
    name = "订单 2026 11 21 (副本).csv"
    put(endpoint, name, "中文".encode())
    assert visible(endpoint.folder) == {name: "中文".encode()}
    assert [f.name for f in endpoint.remote.list()] == [name]


def test_a_big_file_is_delivered_whole(endpoint: Endpoint) -> None:
    """16 MiB through the pipelined writes (a server answering out of order included)."""
    data = os.urandom(16 << 20)
    put(endpoint, "big.bin", data)
    assert visible(endpoint.folder) == {"big.bin": data}


def test_list_stat_download_and_remove(endpoint: Endpoint) -> None:
    (endpoint.folder / "a.csv").write_bytes(b"1")
    (endpoint.folder / ".hidden.xchange-part").write_bytes(b"2")
    (endpoint.folder / "sub").mkdir()
    (endpoint.folder / "sub" / "b.csv").write_bytes(b"22")
    assert [f.name for f in endpoint.remote.list()] == ["a.csv"]
    assert sorted(f.name for f in endpoint.remote.list(recursive=True)) == ["a.csv", "sub/b.csv"]
    info = endpoint.remote.stat("sub/b.csv")
    assert info is not None and info.size == 2
    assert endpoint.remote.stat("missing.csv") is None
    out = io.BytesIO()
    assert endpoint.remote.download("sub/b.csv", out) == 2 and out.getvalue() == b"22"
    with pytest.raises(RemoteNotFound):
        endpoint.remote.download("missing.csv", io.BytesIO())
    endpoint.remote.remove("a.csv")
    endpoint.remote.remove("a.csv")  # gone already: no error
    assert not (endpoint.folder / "a.csv").exists()


def test_archiving_never_replaces_an_archived_file(endpoint: Endpoint) -> None:
    """A second file of the same name goes to a free name; a batch move refuses the taken
    name (and ``move`` then finds a free one)."""
    for content in (b"first", b"second"):
        (endpoint.folder / "orders.csv").write_bytes(content)
        endpoint.remote.move("orders.csv", "archive")
    archive = endpoint.folder / "archive"
    assert visible(archive) == {"orders.csv": b"first", "orders.csv.1": b"second"}
    (endpoint.folder / "orders.csv").write_bytes(b"third")
    (endpoint.folder / "new.csv").write_bytes(b"new")
    results = endpoint.remote.move_many(["orders.csv", "new.csv"], "archive")
    assert not isinstance(results[0], str)
    assert results[1] == "archive/new.csv"
    assert visible(archive) == {
        "orders.csv": b"first",
        "orders.csv.1": b"second",
        "new.csv": b"new",
    }
    assert (endpoint.folder / "orders.csv").read_bytes() == b"third"


def test_put_many_refuses_taken_names_and_delivers_the_rest(endpoint: Endpoint) -> None:
    (endpoint.folder / "taken.txt").write_bytes(b"partner's")
    puts = [
        SmallPut(f"f{i}.txt", f"data {i}".encode(), temp_name_for(f"f{i}.txt", "t"), False, 0o640)
        for i in range(50)
    ]
    puts.append(SmallPut("taken.txt", b"ours", temp_name_for("taken.txt", "t"), False, 0o640))
    results = endpoint.remote.put_many(puts)
    assert results[:50] == [None] * 50
    assert isinstance(results[50], TargetExists)
    got = visible(endpoint.folder)
    assert got["taken.txt"] == b"partner's"
    assert {n: got[n] for n in got if n != "taken.txt"} == {
        f"f{i}.txt": f"data {i}".encode() for i in range(50)
    }
    if endpoint.keeps_modes:
        assert stat.S_IMODE((endpoint.folder / "f7.txt").stat().st_mode) == 0o640


def test_put_many_overwrites_when_asked(endpoint: Endpoint) -> None:
    for i in range(5):
        (endpoint.folder / f"f{i}.txt").write_bytes(b"old")
    puts = [
        SmallPut(f"f{i}.txt", f"new {i}".encode(), temp_name_for(f"f{i}.txt", "t"), True)
        for i in range(10)
    ]
    assert endpoint.remote.put_many(puts) == [None] * 10
    assert visible(endpoint.folder) == {f"f{i}.txt": f"new {i}".encode() for i in range(10)}


def test_get_many_and_remove_many(endpoint: Endpoint) -> None:
    for i in range(20):
        (endpoint.folder / f"f{i}.dat").write_bytes(bytes([i]) * (i * 1000))
    infos = endpoint.remote.list()
    data = endpoint.remote.get_many(infos)
    assert {i.name: d for i, d in zip(infos, data, strict=True)} == {
        f"f{i}.dat": bytes([i]) * (i * 1000) for i in range(20)
    }
    results = endpoint.remote.remove_many([i.name for i in infos] + ["missing.dat"])
    assert results == [None] * 21
    assert visible(endpoint.folder) == {}

"""A folder's listing with many READDIR requests in flight on its open handle, on every
SFTP server partners run: every regular file is listed once, with its size and time, and
nothing else (hidden and temporary names, sub-folders unless recursive, symlinks); files
the caller does not keep are left out as the listing comes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.sftp_routes import endpoint, sftp_endpoint
from tests.sftpservers import SftpServer
from tests.sshd import SshServer
from xchange.remote.sftp import SFTPRemote
from xchange.remote.sftp_wire import LIST_START

SERVERS = ["openssh", "openssh-noext", "gesftpserver", "rclone", "proftpd"]
#: Enough files for the window to open fully (OpenSSH answers 100 names a request).
FILES = 3000


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, sftp_servers: dict[str, SftpServer]) -> SftpServer:
    return sftp_servers[request.param]


def fill(folder: Path, count: int) -> dict[str, tuple[int, int]]:
    """``count`` files of different sizes and times: name -> (size, mtime in seconds)."""
    expected = {}
    base = 1_700_000_000
    for i in range(count):
        path = folder / f"file{i:05d}.dat"
        path.write_bytes(b"x" * (i % 13))
        os.utime(path, (base + i, base + i))
        expected[path.name] = (i % 13, base + i)
    return expected


def test_every_file_is_listed_once_with_its_size_and_time(server: SftpServer) -> None:
    folder = server.folder(f"listing-{server.kind}")
    expected = fill(folder, FILES)
    (folder / ".hidden").write_bytes(b"h")
    (folder / ".orders.csv.abc.xchange-part").write_bytes(b"t")
    (folder / "sub").mkdir()
    (folder / "sub" / "inner.dat").write_bytes(b"inner")
    (folder / "link.dat").symlink_to(folder / "file00001.dat")
    remote = SFTPRemote("drop", sftp_endpoint(server, folder))
    try:
        listed = remote.list()
        names = [f.name for f in listed]
        assert len(names) == len(set(names)) == FILES
        assert {f.name: (f.size, f.mtime_ns // 1_000_000_000) for f in listed} == expected
        assert names == sorted(names)  # oldest first (the times follow the names)
        deep = remote.list(recursive=True)
        assert {f.name for f in deep} == set(expected) | {"sub/inner.dat"}
        assert [f.name for f in remote.list(recursive=True, skip_dirs=("sub",))] == names
    finally:
        remote.close()


def test_files_not_kept_are_left_out_as_the_listing_comes(server: SftpServer) -> None:
    folder = server.folder(f"listing-keep-{server.kind}")
    expected = fill(folder, FILES)
    seen: list[tuple[str, int, int]] = []

    def keep(name: str, size: int, mtime_ns: int) -> bool:
        seen.append((name, size, mtime_ns))
        return name.endswith("7.dat")

    remote = SFTPRemote("drop", sftp_endpoint(server, folder))
    try:
        listed = remote.list(keep=keep)
    finally:
        remote.close()
    assert {f.name for f in listed} == {n for n in expected if n.endswith("7.dat")}
    # Every file was offered once, with what the listing says of it.
    assert sorted(seen) == sorted(
        (name, size, mtime * 1_000_000_000) for name, (size, mtime) in expected.items()
    )


def test_a_small_and_an_empty_folder(sshd: SshServer, tmp_path: Path) -> None:
    """Fewer names than the requests first sent: the unanswered ones end at the folder's
    end, and the session serves the next request."""
    folder = sshd.folder("listing-small")
    for path in folder.iterdir():
        path.unlink()
    remote = SFTPRemote("drop", endpoint(sshd, folder))
    try:
        assert remote.list() == []
        (folder / "one.dat").write_bytes(b"1")
        assert [f.name for f in remote.list()] == ["one.dat"]
        assert remote.stat("one.dat") is not None
        assert LIST_START > 1
    finally:
        remote.close()


def test_a_name_that_is_not_utf8_is_skipped_said_and_the_rest_listed(sshd: SshServer) -> None:
    from structlog.testing import capture_logs

    folder = sshd.folder("listing-undecodable")
    for path in folder.iterdir():
        path.unlink()
    os.close(os.open(os.path.join(os.fsencode(folder), b"\xb6\xa9\xb5\xa5.dat"), os.O_CREAT, 0o644))
    (folder / "orders.dat").write_bytes(b"ok")
    remote = SFTPRemote("drop", endpoint(sshd, folder))
    try:
        with capture_logs() as logs:
            assert [f.name for f in remote.list()] == ["orders.dat"]
    finally:
        remote.close()
    (said,) = [e for e in logs if e["event"] == "remote.names_undecodable"]
    assert said["files"] == 1


def test_a_missing_folder_is_said_missing(sshd: SshServer) -> None:
    from xchange.errors import RemoteNotFound

    folder = sshd.folder("listing-missing")
    remote = SFTPRemote("drop", endpoint(sshd, folder / "gone"))
    try:
        with pytest.raises(RemoteNotFound):
            remote.list()
    finally:
        remote.close()

"""Reading from a drop folder learns nothing it does not need: the rename probe (which
writes two hidden files and first lists the whole folder for stale ones, seconds for a big
folder over a slow link) is made for deliveries and moves only, not for reading."""

from __future__ import annotations

from pathlib import Path

from tests.sshd import start_sshd
from xchange.config import SFTPEndpoint, Timeouts
from xchange.remote import open_remote
from xchange.remote.base import FileInfo


def test_reading_files_makes_no_rename_probe(tmp_path: Path) -> None:
    # A server of this test's own: what a process learns of a server is kept per server.
    server = start_sshd(tmp_path / "sshd")
    try:
        drop = server.folder("probe-free")
        (drop / "a.csv").write_bytes(b"one")
        (drop / "b.csv").write_bytes(b"two two")
        endpoint = SFTPEndpoint.model_validate(
            {
                "host": server.host,
                "port": server.port,
                "user": server.user,
                "path": str(drop),
                "key_file": server.client_key,
                "known_hosts": server.known_hosts,
                "timeouts": Timeouts(connect=5, banner=5, auth=5, operation=10),
            }
        )
        remote = open_remote("drop", endpoint)
        try:
            listed = {f.name: f for f in remote.list()}
            files = [listed["a.csv"], listed["b.csv"]]
            assert all(isinstance(f, FileInfo) for f in files)
            assert remote.get_many(files) == [b"one", b"two two"]
            remote.remove_many(["a.csv"])
            assert remote.traits.rename_overwrites is None  # type: ignore[attr-defined]
            assert sorted(p.name for p in drop.iterdir()) == ["b.csv"]
        finally:
            remote.close()
    finally:
        server.stop()

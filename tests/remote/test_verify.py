"""A target's ``verify`` (size, hash, readback) and ``sidecar`` on real SFTP servers:
the temporary file is checked before its rename, by a digest the server computes where it
announces one that is right (ProFTPD's check-file), else read back; a file changed on the
target before its rename is refused and never renamed; checksum files pass
``sha256sum -c``."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import Exchange
from tests.sftp_routes import server_target_toml, sftp_endpoint
from tests.sftpservers import SftpServer
from xchange.cli import main
from xchange.config import load_config
from xchange.errors import CannotVerify, VerifyFailed
from xchange.journal import open_journal
from xchange.remote.base import SmallPut, Verify
from xchange.remote.sftp import SFTPRemote

DATA = bytes(range(256)) * 1000 + b"tail"  # 256,004 bytes: several reads and writes


def remote(server: SftpServer, folder: Path) -> SFTPRemote:
    return SFTPRemote("partner", sftp_endpoint(server, folder))


def put(target: SFTPRemote, name: str, data: bytes, **kwargs: object) -> object:
    return target.put_atomic(
        name,
        io.BytesIO(data),
        len(data),
        temp_name=f".{name}.part",
        overwrite=False,
        **kwargs,  # type: ignore[arg-type]
    )


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_hash_is_computed_by_a_server_that_announces_check_file(
    sftp_servers: dict[str, SftpServer],
) -> None:
    """ProFTPD announces check-file (to version 6 sessions, in its ``supported2``) and
    answers a probe file's digest right: files are verified by its sha512, single and
    pipelined; ``describe`` says so."""
    server = sftp_servers["proftpd"]
    folder = server.folder("hash-proftpd")
    target = remote(server, folder)
    try:
        put(target, "one.bin", DATA, verify=Verify("hash"))
        assert target.capabilities().server_hashes == ("sha512",)
        errors = target.put_many(
            [
                SmallPut(
                    f"s{i}.txt", DATA[: 1000 * i + 1], f".s{i}.part", False, None, Verify("hash")
                )
                for i in range(10)
            ]
        )
        assert errors == [None] * 10
        assert any("computes sha512 digests" in line for line in target.describe())
    finally:
        target.close()
    assert (folder / "one.bin").read_bytes() == DATA
    assert (folder / "s9.txt").read_bytes() == DATA[:9001]
    assert not [n for n in names(folder) if n.startswith(".")]  # probe and temps gone


@pytest.mark.parametrize("kind", ["openssh", "gesftpserver"])
def test_readback_where_the_server_computes_no_digest(
    sftp_servers: dict[str, SftpServer], kind: str
) -> None:
    """OpenSSH announces no digest: "hash" reads the file back, as "readback" does (on
    gesftpserver too, whose replies come out of order)."""
    server = sftp_servers[kind]
    folder = server.folder(f"readback-{kind}")
    target = remote(server, folder)
    try:
        put(target, "hash.bin", DATA, verify=Verify("hash"))
        put(target, "readback.bin", DATA, verify=Verify("readback"))
        assert target.capabilities().server_hashes == ()
        errors = target.put_many(
            [
                SmallPut(f"s{i}.txt", DATA[: 5000 * i + 1], f".s{i}.part", False, None, Verify(how))
                for i, how in enumerate(["readback", "hash"] * 5)
            ]
        )
        assert errors == [None] * 10
    finally:
        target.close()
    assert (folder / "hash.bin").read_bytes() == DATA
    assert (folder / "readback.bin").read_bytes() == DATA
    assert (folder / "s9.txt").read_bytes() == DATA[:45001]


@pytest.mark.parametrize(
    ("kind", "how"),
    [("proftpd", "hash"), ("openssh", "readback"), ("openssh", "hash"), ("rclone", "readback")],
)
def test_a_temporary_file_changed_before_its_rename_is_refused(
    sftp_servers: dict[str, SftpServer], kind: str, how: str
) -> None:
    """One byte of the temporary file flipped on the server's disk once it is written (by
    the ``before_rename`` hook): the delivery fails with both digests, retryable; the
    temporary file is removed and nothing is renamed."""
    server = sftp_servers[kind]
    folder = server.folder(f"tampered-{kind}-{how}")
    temp = folder / ".t.bin.part"

    def tamper() -> None:
        data = bytearray(temp.read_bytes())
        data[1000] ^= 0x01
        temp.write_bytes(bytes(data))

    target = remote(server, folder)
    try:
        with pytest.raises(VerifyFailed) as refused:
            put(target, "t.bin", DATA, verify=Verify(how), before_rename=tamper)
    finally:
        target.close()
    message = refused.value.message
    assert refused.value.retryable and refused.value.kind == "verify"
    algorithm = "sha512" if kind == "proftpd" else "sha256"
    assert f"{algorithm} sent " in message
    said = "the server computes" if kind == "proftpd" else "read back"
    sent = message.split(" sent ")[1].split(",")[0]
    found = message.split(f", {said} ")[1].split(";")[0]
    assert len(sent) == len(found) and sent != found
    assert names(folder) == []


def test_a_pipelined_file_overwritten_before_its_rename_is_refused(
    sftp_servers: dict[str, SftpServer],
) -> None:
    """Two files of one pipelined flight written under one temporary name: the first one's
    bytes are overwritten by the second's before it is read back, so it is refused (and
    nothing is renamed to its name); the other is read back whole."""
    server = sftp_servers["openssh"]
    folder = server.folder("pipelined-overwritten")
    first, second = b"a" * 70_000, b"b" * 70_000
    target = remote(server, folder)
    try:
        errors = target.put_many(
            [
                SmallPut("first.txt", first, ".shared.part", False, None, Verify("readback")),
                SmallPut("second.txt", second, ".shared.part", False, None, Verify("readback")),
            ]
        )
    finally:
        target.close()
    assert isinstance(errors[0], VerifyFailed), errors
    assert "first.txt" in errors[0].message
    assert "first.txt" not in names(folder)
    assert not [n for n in names(folder) if n.startswith(".")]


def test_a_file_too_big_to_read_back_is_refused_before_it_is_sent(
    sftp_servers: dict[str, SftpServer],
) -> None:
    server = sftp_servers["openssh"]
    folder = server.folder("too-big")
    small = Verify("hash", readback_max=1000)
    target = remote(server, folder)
    try:
        with pytest.raises(CannotVerify, match="more than readback_max"):
            put(target, "big.bin", DATA, verify=small)
        errors = target.put_many(
            [
                SmallPut("big.txt", DATA, ".big.part", False, None, small),
                SmallPut("small.txt", DATA[:999], ".small.part", False, None, small),
            ]
        )
    finally:
        target.close()
    assert isinstance(errors[0], CannotVerify) and not errors[0].retryable
    assert errors[1] is None
    assert names(folder) == ["small.txt"]


def with_target_keys(exchange: Exchange, keys: str) -> None:
    text = exchange.config.read_text()
    line = 'name = "WMS_OUT_{OrderDate}_{OrderNo}.xml" }'
    assert line in text
    exchange.config.write_text(text.replace(line, line[:-1] + f", {keys} }}"))


def run(exchange: Exchange) -> Result:
    return CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])


def notes(exchange: Exchange) -> list[str]:
    journal = open_journal(load_config(exchange.config).journal)
    try:
        return [
            t.note or "" for record in journal.query(limit=100) for t in journal.history(record.id)
        ]
    finally:
        journal.close()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("proftpd", "verified: sha512 computed by the server"),
        ("openssh", "verified: read back, sha256"),
    ],
)
def test_sidecars_pass_sha256sum_and_the_journal_says_how_outputs_were_verified(
    exchange: Exchange, sftp_servers: dict[str, SftpServer], kind: str, expected: str
) -> None:
    """A converted route with verify = "hash" and sidecar = "sha256": every output has its
    NAME.sha256 beside it, which ``sha256sum -c`` accepts in the target folder; the journal
    notes how each was verified; a second run sends nothing again."""
    if shutil.which("sha256sum") is None:
        pytest.fail("sha256sum (coreutils) is not installed")
    server = sftp_servers[kind]
    folder = server.folder(f"sidecar-{kind}")
    exchange.write_config(target=server_target_toml(server, folder))
    with_target_keys(exchange, 'verify = "hash", sidecar = "sha256"')
    exchange.drop_sample()
    result = run(exchange)
    assert result.exit_code == 0, result.output
    data = [n for n in names(folder) if n.endswith(".xml")]
    assert data and names(folder) == sorted(data + [f"{n}.sha256" for n in data])
    for name in data:
        assert (folder / f"{name}.sha256").read_text() == (
            f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n"
        )
    checked = subprocess.run(
        ["sha256sum", "-c", *[f"{n}.sha256" for n in data]],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK") == len(data)
    said = [n for n in notes(exchange) if n.startswith("verified:")]
    assert said and said[0].startswith(expected), said
    assert f"({2 * len(data)} files)" in said[0]  # the data files and their sidecars
    before = {n: (folder / n).stat().st_mtime_ns for n in names(folder)}
    exchange.drop_sample()
    again = run(exchange)
    assert again.exit_code == 0, again.output
    assert {n: (folder / n).stat().st_mtime_ns for n in names(folder)} == before


def test_a_batch_of_small_files_is_verified_and_journaled(
    exchange: Exchange, sftp_servers: dict[str, SftpServer]
) -> None:
    """Small files of a copy route go in pipelined batches: each is read back before its
    rename, and its delivered step says so."""
    server = sftp_servers["openssh"]
    folder = server.folder("batch-verified")
    exchange.write_config(target=server_target_toml(server, folder))
    exchange.config.write_text(
        exchange.config.read_text()
        + """
[[routes]]
name = "copy"
source = { endpoint = "shop-drop", pattern = "*.dat" }
mapping = "copy"
target = { endpoint = "wms-outbox", name = "{source_stem}.out", verify = "readback" }
after = { action = "delete" }
ready = { settle = 0 }
"""
    )
    for i in range(20):
        (exchange.inbox / f"f{i:02d}.dat").write_bytes(os.urandom(3000 + i))
    result = CliRunner().invoke(
        main, ["run", "--once", "--route", "copy", "--config", str(exchange.config)]
    )
    assert result.exit_code == 0, result.output
    assert len([n for n in names(folder) if n.endswith(".out")]) == 20
    said = [n for n in notes(exchange) if n.startswith("verified:")]
    assert said == ["verified: read back, sha256 (1 file)"] * 20


def test_a_file_too_big_to_read_back_waits_and_nothing_is_sent(
    exchange: Exchange, sftp_servers: dict[str, SftpServer]
) -> None:
    """verify = "hash" on OpenSSH (no digest of its own) with a readback_max smaller than
    the outputs: nothing reaches the target, the file waits with the cause
    ``unverifiable``, and goes through once the limit is raised."""
    server = sftp_servers["openssh"]
    folder = server.folder("unverifiable")
    exchange.write_config(target=server_target_toml(server, folder))
    config = exchange.config.read_text()
    with_target_keys(exchange, 'verify = "hash", readback_max = 100')
    exchange.drop_sample()
    run(exchange)
    assert names(folder) == []
    journal = open_journal(load_config(exchange.config).journal)
    try:
        (record,) = journal.query(limit=10)
    finally:
        journal.close()
    assert (record.state, record.error_kind) == ("retrying", "unverifiable"), record
    assert "more than readback_max (100 bytes)" in (record.error_message or "")
    exchange.config.write_text(config)
    with_target_keys(exchange, 'verify = "hash", readback_max = "1MiB"')
    retried = CliRunner().invoke(main, ["retry", "--config", str(exchange.config)])
    assert retried.exit_code == 0, retried.output
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert [n for n in names(folder) if n.endswith(".xml")]

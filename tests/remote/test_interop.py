"""Delivery scenarios through `xchange run --once` on every SFTP server partners run:
a converted route, a batch of small files with a twin across batches, a big file through
OpenSSH's client, an SFTP drop archived and deleted, every if_exists policy, modes. Each
server is started once per session (see tests/sftpservers.py)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import SAMPLES, Exchange
from tests.sftpservers import SftpServer
from xchange.cli import main

SERVERS = ["openssh", "openssh-noext", "gesftpserver", "rclone", "proftpd"]
EXPECTED = SAMPLES / "shop-orders" / "expected"


def sftp_toml(name: str, server: SftpServer, folder: Path, **extra: object) -> str:
    lines = [
        f"[endpoints.{name}]",
        'type = "sftp"',
        f'host = "{server.host}"',
        f"port = {server.port}",
        f'user = "{server.user}"',
        f'path = "{server.remote_path(folder)}"',
        f'key_file = "{server.client_key}"',
        f'known_hosts = "{server.known_hosts}"',
        "timeouts = { connect = 5, banner = 5, auth = 5, operation = 10 }",
    ]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def run(exchange: Exchange, route: str | None = None) -> Result:
    args = ["run", "--once", "--config", str(exchange.config)]
    if route:
        args += ["--route", route]
    return CliRunner().invoke(main, args)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*")]


def in_order(folder: Path, hours_ago: int = 1) -> None:
    """Times some hours ago, in name order, so that the listing (oldest first) follows
    names: a twin named last is in the last batch."""
    import time

    base = int((time.time() - 3600 * hours_ago) * 1e9)
    for i, path in enumerate(sorted(p for p in folder.iterdir() if p.is_file())):
        os.utime(path, ns=(base + i * 1_000_000, base + i * 1_000_000))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, sftp_servers: dict[str, SftpServer]) -> SftpServer:
    return sftp_servers[request.param]


def copy_route(target: str, name: str, *, after: str = "delete", if_exists: str = "fail") -> str:
    folder = ', folder = "archive"' if after == "archive" else ""
    return f"""
[[routes]]
name = "{name}"
source = {{ endpoint = "shop-drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "{target}", name = "{{source_stem}}.out", if_exists = "{if_exists}" }}
after = {{ action = "{after}"{folder} }}
ready = {{ settle = 0 }}
retry = {{ attempts = 2, initial = 0.01, maximum = 0.05, later = 0 }}
"""


def test_a_converted_route_delivers_the_golden_outputs(
    exchange: Exchange, server: SftpServer
) -> None:
    folder = server.folder(f"converted-{server.kind}")
    exchange.write_config(target=sftp_toml("wms-outbox", server, folder))
    exchange.drop_sample()
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert files(folder) == {p.name: p.read_bytes() for p in EXPECTED.iterdir()}
    assert hidden(folder) == []
    if server.keeps_modes:
        assert {mode(p) for p in folder.iterdir()} == {0o644}


def test_a_batch_with_a_twin_in_a_later_batch_is_delivered_once(
    exchange: Exchange, server: SftpServer
) -> None:
    """300 files of 2 KiB (two batches) and a copy of the first one, dropped last: each
    content is delivered once; the twin is a duplicate."""
    folder = server.folder(f"twins-{server.kind}")
    exchange.write_config(target=sftp_toml("wms-outbox", server, folder))
    exchange.config.write_text(exchange.config.read_text() + copy_route("wms-outbox", "copy"))
    expected = {}
    for i in range(300):
        data = os.urandom(2048)
        (exchange.inbox / f"f{i:04d}.dat").write_bytes(data)
        expected[f"f{i:04d}.out"] = data
    twin = exchange.inbox / "zz-twin.dat"
    twin.write_bytes(expected["f0000.out"])
    in_order(exchange.inbox)
    result = run(exchange, "copy")
    assert result.exit_code == 0, result.output
    assert "copy: 300 delivered" in result.output and "1 duplicate" in result.output
    assert files(folder) == expected
    assert hidden(folder) == []


def test_a_big_file_through_openssh_gets_the_target_mode(
    exchange: Exchange, server: SftpServer
) -> None:
    """A 3 MiB file goes through OpenSSH's own client (accelerate_mb = 1) from a staging
    file that is owner-only: it arrives with the target's mode all the same."""
    folder = server.folder(f"big-{server.kind}")
    exchange.write_config(target=sftp_toml("wms-outbox", server, folder, accelerate_mb=1))
    exchange.config.write_text(exchange.config.read_text() + copy_route("wms-outbox", "copy"))
    data = os.urandom(3 << 20)
    src = exchange.inbox / "big.dat"
    src.write_bytes(data)
    src.chmod(0o600)
    result = run(exchange, "copy")
    assert result.exit_code == 0, result.output
    assert files(folder) == {"big.out": data}
    if server.keeps_modes:
        assert mode(folder / "big.out") == 0o644


def test_a_big_file_with_password_login_goes_through_paramiko(
    exchange: Exchange, server: SftpServer
) -> None:
    """Without the OpenSSH accelerator (accelerate_mb = 0), a 24 MiB file streams through
    the pipelined writes: on a server answering out of order too."""
    folder = server.folder(f"big-paramiko-{server.kind}")
    exchange.write_config(target=sftp_toml("wms-outbox", server, folder, accelerate_mb=0))
    exchange.config.write_text(exchange.config.read_text() + copy_route("wms-outbox", "copy"))
    data = os.urandom(24 << 20)
    (exchange.inbox / "big.dat").write_bytes(data)
    result = run(exchange, "copy")
    assert result.exit_code == 0, result.output
    assert files(folder) == {"big.out": data}
    assert hidden(folder) == []


@pytest.mark.parametrize("after", ["archive", "delete"])
def test_an_sftp_drop_is_archived_or_deleted_without_replacing_archived_files(
    exchange: Exchange, server: SftpServer, after: str
) -> None:
    """Files taken from a drop on the server, twice with the same names: the second round's
    originals go next to the first's in the archive, never over them."""
    drop = server.folder(f"drop-{after}-{server.kind}")
    out = exchange.outbox
    out.mkdir(exist_ok=True)
    exchange.write_config()
    text = exchange.config.read_text().replace(
        f'[endpoints.shop-drop]\ntype = "local"\npath = "{exchange.inbox}"\n',
        sftp_toml("shop-drop", server, drop),
    )
    exchange.config.write_text(
        text + copy_route("wms-outbox", "copy", after=after, if_exists="unique")
    )
    for round_ in (1, 2):
        for i in range(30):
            (drop / f"f{i:02d}.dat").write_bytes(f"round {round_} file {i}".encode())
        in_order(drop, hours_ago=3 - round_)
        result = run(exchange, "copy")
        assert result.exit_code == 0, result.output
        assert "copy: 30 delivered" in result.output
        assert not list(drop.glob("*.dat"))
    assert len(files(out)) == 60
    if after == "archive":
        archived = files(drop / "archive")
        assert len(archived) == 60
        assert sorted(archived.values()) == sorted(
            f"round {r} file {i}".encode() for r in (1, 2) for i in range(30)
        )
    else:
        assert not (drop / "archive").exists()
    assert hidden(drop) == []


@pytest.mark.parametrize("policy", ["fail", "unique", "skip", "overwrite"])
def test_every_if_exists_policy_on_a_partners_file(
    exchange: Exchange, server: SftpServer, policy: str
) -> None:
    """The partner already has f.out (and f2.out, both as single files and in a batch):
    fail quarantines, unique picks f_1.out, skip leaves it, overwrite replaces it."""
    folder = server.folder(f"policy-{policy}-{server.kind}")
    exchange.write_config(target=sftp_toml("wms-outbox", server, folder))
    exchange.config.write_text(
        exchange.config.read_text() + copy_route("wms-outbox", "copy", if_exists=policy)
    )
    (folder / "f.out").write_bytes(b"partner's")
    (exchange.inbox / "f.dat").write_bytes(b"ours")
    result = run(exchange, "copy")
    got = files(folder)
    if policy == "fail":
        assert result.exit_code == 1, result.output
        assert got == {"f.out": b"partner's"}
    elif policy == "unique":
        assert result.exit_code == 0, result.output
        assert got == {"f.out": b"partner's", "f_1.out": b"ours"}
    elif policy == "skip":
        assert result.exit_code == 0, result.output
        assert got == {"f.out": b"partner's"}
    else:
        assert result.exit_code == 0, result.output
        assert got == {"f.out": b"ours"}
    assert hidden(folder) == []


def test_a_local_to_local_batch_with_a_twin_is_delivered_once(exchange: Exchange) -> None:
    exchange.outbox.mkdir(exist_ok=True)
    exchange.config.write_text(exchange.config.read_text() + copy_route("wms-outbox", "copy"))
    for i in range(300):
        (exchange.inbox / f"f{i:04d}.dat").write_bytes(os.urandom(2048))
    twin = exchange.inbox / "zz-twin.dat"
    shutil.copy(exchange.inbox / "f0000.dat", twin)
    in_order(exchange.inbox)
    result = run(exchange, "copy")
    assert result.exit_code == 0, result.output
    assert "copy: 300 delivered" in result.output and "1 duplicate" in result.output
    assert len(files(exchange.outbox)) == 300


# --------------------------------------------------------------------------- read-only drop


def journal_states(exchange: Exchange) -> list[str]:
    from xchange.config import load_config
    from xchange.journal import open_journal

    journal = open_journal(load_config(exchange.config).journal)
    try:
        return sorted(str(r.state) for r in journal.query(limit=1000))
    finally:
        journal.close()


def alerts_of(result: Result) -> list[dict[str, object]]:
    import json

    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return [e for e in events if e.get("event") == "alert.sent"]


def run_json(exchange: Exchange, route: str | None = None) -> Result:
    args = ["--log-format", "json", "run", "--once", "--config", str(exchange.config)]
    if route:
        args += ["--route", route]
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("path", ["single", "batch"])
def test_a_read_only_drop_delivers_once_and_keeps_the_file_delivered_until_archived(
    exchange: Exchange, sftp_servers: dict[str, SftpServer], path: str
) -> None:
    """The drop is read-only (OpenSSH -R): the files are delivered, the archive fails. One
    outcome ("delivered; archive failed: permission"), one alert, the journal at delivered
    (not archived) while the files are still there; later runs send nothing again; once the
    folder can be written (the same folder through a writable server), they are archived."""
    readonly, writable = sftp_servers["openssh-readonly"], sftp_servers["openssh"]
    drop = readonly.folder(f"readonly-{path}")
    exchange.outbox.mkdir(exist_ok=True)
    exchange.write_config()
    base = exchange.config.read_text()
    local_drop = f'[endpoints.shop-drop]\ntype = "local"\npath = "{exchange.inbox}"\n'
    if path == "single":
        route = "shop-orders"
        (drop / "orders_20261121.csv").write_bytes(
            (SAMPLES / "shop-orders" / "in" / "orders_20261121.csv").read_bytes()
        )
        expected = {p.name for p in EXPECTED.iterdir()}
        extra = ""
    else:
        route = "copy"
        for i in range(20):
            (drop / f"f{i:02d}.dat").write_bytes(f"file {i}".encode())
        expected = {f"f{i:02d}.out" for i in range(20)}
        extra = copy_route("wms-outbox", "copy", after="archive")
    in_order(drop)
    drop.chmod(0o755)

    def configure(server: SftpServer) -> None:
        exchange.config.write_text(
            base.replace(local_drop, sftp_toml("shop-drop", server, drop)) + extra
        )

    configure(readonly)
    first = run_json(exchange, route)
    assert first.exit_code == 0, first.output
    assert "left in the drop folder (archive or delete failed)" in first.stdout
    assert "archive failed:" in first.stdout and "permission denied" in first.stdout
    assert set(files(exchange.outbox)) == expected
    assert set(journal_states(exchange)) == {"delivered"}
    assert len(alerts_of(first)) == 1
    delivered_before = files(exchange.outbox)

    second = run_json(exchange, route)
    assert second.exit_code == 0, second.output
    assert "0 delivered" in second.stdout and "left in the drop folder" in second.stdout
    assert files(exchange.outbox) == delivered_before  # nothing sent again
    assert set(journal_states(exchange)) == {"delivered"}
    assert alerts_of(second) == []  # within the alert window

    configure(writable)
    third = run_json(exchange, route)
    assert third.exit_code == 0, third.output
    assert "left in the drop folder" not in third.stdout
    assert files(exchange.outbox) == delivered_before
    assert set(journal_states(exchange)) == {"archived"}
    assert not [p for p in drop.iterdir() if p.is_file()]


def test_a_refusal_through_openssh_is_a_permission_error_not_a_lost_connection(
    sftp_servers: dict[str, SftpServer], tmp_path: Path
) -> None:
    from tests.sftp_routes import sftp_endpoint
    from xchange.errors import RemotePermissionDenied
    from xchange.remote.sftp import SFTPRemote

    server = sftp_servers["openssh-readonly"]
    folder = server.folder("readonly-accelerated")
    remote = SFTPRemote("ro", sftp_endpoint(server, folder, accelerate_mb=1))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 << 20))
    with open(big, "rb") as src, pytest.raises(RemotePermissionDenied):
        remote.put_atomic("big.bin", src, 2 << 20, temp_name=".big.t.xchange-part", overwrite=False)
    remote.close()
    assert not list(folder.iterdir())


def test_check_remote_says_what_each_server_does_differently(
    exchange: Exchange, sftp_servers: dict[str, SftpServer]
) -> None:
    """rclone's rename replaces files (and the window this leaves is said); OpenSSH's
    refuses; OpenSSH without extensions has no posix-rename (and the fallback is said)."""
    for kind, expected in (
        ("rclone", "a plain rename replaces an existing file here"),
        ("openssh", "a plain rename refuses an existing name"),
        ("openssh-noext", "no posix-rename: overwriting moves the old file aside"),
    ):
        server = sftp_servers[kind]
        folder = server.folder(f"check-remote-{kind}")
        exchange.write_config(target=sftp_toml("wms-outbox", server, folder))
        result = CliRunner().invoke(main, ["check", "--remote", "--config", str(exchange.config)])
        assert result.exit_code == 0, result.output
        assert f"wms-outbox ({server.user}@127.0.0.1:{server.port}):" in result.output
        assert expected in result.output, result.output
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # probe removed

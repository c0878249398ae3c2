"""Archives through `xchange run --once`: each entry delivered, duplicated or quarantined
as a file of its own, the archive archived only when every entry is done, a hostile
archive quarantined whole with its bytes, never an entry sent twice across a crash, and
outputs zipped on the way out; on local folders and over a real OpenSSH server."""

from __future__ import annotations

import io
import shutil
import signal
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.archive_files import archive_route, gzip_bytes, tar_gz_bytes, zip_bytes
from tests.conftest import SAMPLES, Exchange
from tests.procs import run_once
from tests.sftp_routes import server_endpoint_toml, sftp_source, sftp_target, sftp_target_toml
from tests.sftpservers import SftpServer
from tests.sshd import SshServer
from xchange.cli import main
from xchange.config import load_config
from xchange.journal import State, open_journal

SAMPLE = SAMPLES / "shop-orders-zip" / "in" / "shop_export_20261207.zip"
EXPECTED = {p.name: p.read_bytes() for p in (SAMPLES / "shop-orders-zip" / "expected").iterdir()}
ORDERS = (SAMPLES / "shop-orders" / "in" / "orders_20261121.csv").read_bytes()
ORDERS_OUT = {p.name: p.read_bytes() for p in (SAMPLES / "shop-orders" / "expected").iterdir()}
#: A shop-orders line with a phone number the layout refuses.
BAD = ORDERS.replace(b"13800138000", b"1380")


def records(exchange: Exchange) -> dict[str, tuple[State, list[str]]]:
    """Each journal record's name: (state, outputs)."""
    journal = open_journal(load_config(exchange.config).journal)
    try:
        return {r.path: (r.state, sorted(o.path for o in r.outputs)) for r in journal.query()}
    finally:
        journal.close()


def delivered(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def any_entry(exchange: Exchange, entries: str) -> None:
    """The route takes any kind of archive, and the entries ``entries``."""
    text = exchange.config.read_text(encoding="utf-8")
    text = text.replace('entries = "门店订单_*.csv"', f'entries = "{entries}"')
    exchange.config.write_text(text.replace('kind = "zip"', 'kind = "auto"'), encoding="utf-8")


@pytest.fixture
def zips(exchange: Exchange) -> Exchange:
    archive_route(exchange.config)
    return exchange


def test_the_shipped_gbk_zip_is_delivered_entry_by_entry_and_archived(zips: Exchange) -> None:
    shutil.copy(SAMPLE, zips.inbox)
    done = run_once(zips.config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 delivered (4 documents)" in done.stdout
    assert delivered(zips.outbox) == EXPECTED
    assert (zips.inbox / "archive" / SAMPLE.name).read_bytes() == SAMPLE.read_bytes()
    assert records(zips) == {
        SAMPLE.name: (State.ARCHIVED, []),
        f"{SAMPLE.name}!/门店订单_20261207.csv": (
            State.DELIVERED,
            sorted(n for n in EXPECTED if not n.endswith("004.xml")),
        ),
        f"{SAMPLE.name}!/门店订单_誠品店_20261207.csv": (
            State.DELIVERED,
            ["WMS_OUT_20261207_EC20261207004.xml"],
        ),
    }


def test_a_bad_entry_is_quarantined_alone_with_its_bytes_the_rest_delivered(
    zips: Exchange,
) -> None:
    (zips.inbox / "shop_export_1.zip").write_bytes(
        zip_bytes([("门店订单_好.csv", ORDERS), ("门店订单_坏.csv", BAD)])
    )
    done = run_once(zips.config)
    assert done.returncode == 1, done.stdout + done.stderr  # something to look at
    assert "1 quarantined" in done.stdout
    assert delivered(zips.outbox) == ORDERS_OUT
    (kept,) = [p for p in zips.quarantine.rglob("*_门店订单_坏.csv") if p.is_file()]
    assert kept.read_bytes() == BAD
    report = next(zips.quarantine.rglob("*_门店订单_坏.csv.report.txt")).read_text()
    assert "1380" in report
    state = records(zips)
    assert state["shop_export_1.zip!/门店订单_坏.csv"][0] == State.QUARANTINED
    assert state["shop_export_1.zip"][0] == State.ARCHIVED  # every entry is done
    assert (zips.inbox / "archive" / "shop_export_1.zip").exists()
    again = run_once(zips.config)
    assert again.returncode == 0 and delivered(zips.outbox) == ORDERS_OUT


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("shop_export_slip.zip", zip_bytes([(b"../evil.csv", ORDERS)]), "would leave its folder"),
        ("shop_export_bomb.zip", zip_bytes([("a.csv", b"0" * (8 << 20))]), "max_ratio"),
        ("shop_export_cut.zip", zip_bytes([("门店订单_1.csv", ORDERS)])[:300], "truncated"),
        ("orders_cut.csv.gz", gzip_bytes(ORDERS * 20)[:-40], "truncated"),
        ("shop_export_link.tgz", tar_gz_bytes([], links=[("a.csv", "/etc/passwd")]), "a link"),
    ],
    ids=["slip", "bomb", "truncated-zip", "truncated-gzip", "symlink"],
)
def test_a_hostile_or_broken_archive_is_quarantined_whole_and_the_others_go_on(
    zips: Exchange, name: str, data: bytes, reason: str
) -> None:
    any_entry(zips, "*")
    (zips.inbox / name).write_bytes(data)
    shutil.copy(SAMPLE, zips.inbox)
    done = run_once(zips.config)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 delivered (4 documents), 1 quarantined" in done.stdout
    assert reason in done.stdout + done.stderr
    assert delivered(zips.outbox) == EXPECTED  # nothing of the bad one
    (kept,) = [p for p in zips.quarantine.rglob(f"*_{name}") if p.is_file()]
    assert kept.read_bytes() == data  # the original bytes
    assert not (zips.inbox / name).exists()
    assert [r for r in records(zips) if r.startswith(name)] == [name]  # no entry claimed


def test_gzip_and_tar_gz_are_taken_too(zips: Exchange) -> None:
    any_entry(zips, "*.csv")
    (zips.inbox / "orders_20261121.csv.gz").write_bytes(gzip_bytes(ORDERS))
    day = SAMPLES / "shop-orders-zip" / "in" / SAMPLE.name
    with zipfile.ZipFile(day, metadata_encoding="gbk") as archive:
        files = [(f"d/{i}.csv", archive.read(n)) for i, n in enumerate(archive.namelist())]
    (zips.inbox / "day.tgz").write_bytes(tar_gz_bytes(files))
    done = run_once(zips.config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert delivered(zips.outbox) == {**ORDERS_OUT, **EXPECTED}
    state = records(zips)
    assert state["orders_20261121.csv.gz!/orders_20261121.csv"][0] == State.DELIVERED
    assert state["day.tgz!/d/0.csv"][0] == State.DELIVERED


def test_an_entry_delivered_before_is_a_duplicate_in_another_archive(zips: Exchange) -> None:
    (zips.inbox / "shop_export_1.zip").write_bytes(zip_bytes([("门店订单_1.csv", ORDERS)]))
    assert run_once(zips.config).returncode == 0
    (zips.inbox / "shop_export_2.zip").write_bytes(
        zip_bytes([("门店订单_1_copy.csv", ORDERS)], stored=True)
    )
    again = run_once(zips.config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert delivered(zips.outbox) == ORDERS_OUT
    assert (zips.inbox / "archive" / "shop_export_2.zip").exists()
    assert "shop_export_2.zip!/门店订单_1_copy.csv" not in records(zips)  # same content: one record


POINTS = ["after-claim", "after-rename", "after-output", "before-archive"]


@pytest.mark.parametrize("point", POINTS)
def test_a_crash_in_the_middle_of_an_archive_sends_no_entry_twice(
    zips: Exchange, point: str
) -> None:
    """Killed while the first entry is under way or just delivered: the next run knows
    it by its identity, delivers the rest, and each output lands once."""
    shutil.copy(SAMPLE, zips.inbox)
    crashed = run_once(zips.config, point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert (zips.inbox / SAMPLE.name).exists()  # not archived: not every entry is done
    resumed = run_once(zips.config)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert delivered(zips.outbox) == EXPECTED
    assert [p.name for p in zips.outbox.iterdir() if p.name.startswith(".")] == []
    state = records(zips)
    assert state[SAMPLE.name][0] == State.ARCHIVED
    outputs = [o for _, (_, outs) in state.items() for o in outs]
    assert sorted(outputs) == sorted(EXPECTED)  # each output journalled once
    assert run_once(zips.config).returncode == 0
    assert delivered(zips.outbox) == EXPECTED


def test_outputs_of_one_source_are_delivered_as_one_zip_the_same_after_a_crash(
    exchange: Exchange, tmp_path: Path
) -> None:
    archive_route(
        exchange.config, unpack=None, archive='{ name = "WMS_{source_stem}.zip", names = "gbk" }'
    )
    exchange.drop_sample()
    crashed = run_once(exchange.config, "before-rename")
    assert crashed.returncode == -signal.SIGKILL
    resumed = run_once(exchange.config)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    (name,) = delivered(exchange.outbox)
    assert name == "WMS_orders_20261121.zip"
    data = (exchange.outbox / name).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data), metadata_encoding="gbk") as archive:
        assert {n: archive.read(n) for n in archive.namelist()} == ORDERS_OUT
    journal = records(exchange)
    assert journal["orders_20261121.csv"] == (State.ARCHIVED, [name])


@pytest.mark.sftp
def test_a_zip_from_an_sftp_drop_delivered_zipped_to_an_sftp_target(
    zips: Exchange, sshd: SshServer
) -> None:
    """Over a real OpenSSH server both ways: the GBK zip in, one zip of the WMS files out."""
    drop, out = sshd.folder("arch-drop"), sshd.folder("arch-out")
    archive_route(zips.config, unpack=None, archive='{ name = "WMS_{source_stem}.zip" }')
    sftp_source(zips, sshd, drop)
    sftp_target(zips, sshd, out)
    shutil.copy(SAMPLE, drop)
    done = run_once(zips.config)
    assert done.returncode == 0, done.stdout + done.stderr
    made = delivered(out)
    assert sorted(made) == ["WMS_门店订单_20261207.zip", "WMS_门店订单_誠品店_20261207.zip"]
    got: dict[str, bytes] = {}
    for data in made.values():
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            got.update({n: archive.read(n) for n in archive.namelist()})
    assert got == EXPECTED
    assert (drop / "archive" / SAMPLE.name).exists()


def quarantine_retry(exchange: Exchange, file_id: int) -> str:
    result = CliRunner().invoke(
        main, ["quarantine", "retry", "--config", str(exchange.config), str(file_id)]
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_a_quarantined_entry_fixed_in_quarantine_is_sent_by_quarantine_retry(
    zips: Exchange,
) -> None:
    (zips.inbox / "shop_export_1.zip").write_bytes(zip_bytes([("门店订单_坏.csv", BAD)]))
    assert run_once(zips.config).returncode == 1
    (kept,) = [p for p in zips.quarantine.rglob("*_门店订单_坏.csv") if p.is_file()]
    kept.write_bytes(ORDERS)  # fixed by hand
    journal = open_journal(load_config(zips.config).journal)
    (entry,) = [r for r in journal.query() if r.path.endswith("门店订单_坏.csv")]
    journal.close()
    quarantine_retry(zips, entry.id)
    assert delivered(zips.outbox) == ORDERS_OUT


def test_a_refused_archive_taken_again_from_quarantine_is_unpacked(zips: Exchange) -> None:
    """Refused for its size, then let through by a raised limit: the kept archive is
    unpacked, its entries delivered."""
    text = zips.config.read_text(encoding="utf-8")
    small = text.replace('names = "gbk" }', 'names = "gbk", max_total = 100 }')
    zips.config.write_text(small, encoding="utf-8")
    shutil.copy(SAMPLE, zips.inbox)
    assert run_once(zips.config).returncode == 1
    zips.config.write_text(text, encoding="utf-8")
    quarantine_retry(zips, 1)
    assert delivered(zips.outbox) == EXPECTED


def test_a_dry_run_of_a_refused_archive_unpacks_it_as_a_retry_would(zips: Exchange) -> None:
    """``quarantine retry --dry-run`` of an archive refused whole (its limit raised since)
    unpacks it as the retry will, and names each output its entries would deliver."""
    text = zips.config.read_text(encoding="utf-8")
    small = text.replace('names = "gbk" }', 'names = "gbk", max_total = 100 }')
    zips.config.write_text(small, encoding="utf-8")
    shutil.copy(SAMPLE, zips.inbox)
    assert run_once(zips.config).returncode == 1
    zips.config.write_text(text, encoding="utf-8")
    dry = CliRunner().invoke(
        main, ["quarantine", "retry", "1", "--dry-run", "--config", str(zips.config)]
    )
    assert dry.exit_code == 0, dry.output
    (said,) = [line for line in dry.output.splitlines() if ": would deliver " in line]
    assert sorted(said.split(": would deliver ")[1].split(", ")) == sorted(EXPECTED)
    assert "(dry run: 1 would be delivered, 0 would stay;" in dry.output
    assert not zips.outbox.exists() or delivered(zips.outbox) == {}


def test_a_dry_run_names_what_an_archive_would_deliver(zips: Exchange) -> None:
    archive_route(zips.config, unpack=None, archive='{ name = "WMS_{source_stem}.zip" }')
    shutil.copy(SAMPLE, zips.inbox)
    result = CliRunner().invoke(main, ["run", "--once", "--dry-run", "--config", str(zips.config)])
    assert "WMS_门店订单_20261207.zip" in result.output, result.output
    assert "WMS_门店订单_誠品店_20261207.zip" in result.output
    assert not zips.outbox.exists() and (zips.inbox / SAMPLE.name).exists()


def test_two_workers_with_the_same_entry_in_two_archives_send_it_once(zips: Exchange) -> None:
    """Two archives taken at once (transfers = 2) holding the same entry content: one
    worker delivers it, the other finds it delivered."""
    text = zips.config.read_text(encoding="utf-8")
    zips.config.write_text(text.replace("\nafter = {", "\ntransfers = 2\nafter = {", 1))
    for i in (1, 2):
        (zips.inbox / f"shop_export_{i}.zip").write_bytes(
            zip_bytes([(f"门店订单_{i}.csv", ORDERS)], stored=i == 2)
        )
    done = run_once(zips.config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert delivered(zips.outbox) == ORDERS_OUT
    assert sorted(p.name for p in (zips.inbox / "archive").iterdir()) == [
        "shop_export_1.zip",
        "shop_export_2.zip",
    ]
    entries = [path for path in records(zips) if "!/" in path]
    assert len(entries) == 1  # one content, one record


def test_an_archive_refused_by_a_limit_heals_by_itself_once_the_limit_is_raised(
    zips: Exchange,
) -> None:
    """The route's archive settings are among what judged it: raised, the kept archive is
    checked again at the next look, with no command."""
    text = zips.config.read_text(encoding="utf-8")
    small = text.replace('names = "gbk" }', 'names = "gbk", max_total = 100 }')
    zips.config.write_text(small, encoding="utf-8")
    shutil.copy(SAMPLE, zips.inbox)
    refused = run_once(zips.config)
    assert refused.returncode == 1 and "max_total" in refused.stdout
    assert run_once(zips.config).returncode == 0  # nothing changed: left alone
    assert not zips.outbox.exists() or delivered(zips.outbox) == {}
    zips.config.write_text(text, encoding="utf-8")
    healed = run_once(zips.config)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert delivered(zips.outbox) == EXPECTED


@pytest.mark.sftp
@pytest.mark.parametrize("kind", ["rclone", "proftpd", "gesftpserver", "openssh-noext"])
def test_zips_with_gbk_names_reach_every_sftp_server_kind(
    zips: Exchange, sftp_servers: dict[str, SftpServer], kind: str
) -> None:
    """The shipped zip in, each entry's WMS files zipped (names in GBK) out, onto each
    partner server kind, read back as they were written."""
    server = sftp_servers[kind]
    folder = server.folder("zips-out")
    text = zips.config.read_text(encoding="utf-8")
    start = text.index("[endpoints.wms-outbox]")
    end = text.index("[[routes]]")
    endpoint = server_endpoint_toml("wms-outbox", server, folder)
    zips.config.write_text(text[:start] + endpoint + "\n" + text[end:], encoding="utf-8")
    archive_route(
        zips.config,
        unpack=None,
        archive='{ name = "WMS_{source_stem}.zip", names = "gbk" }',
    )
    shutil.copy(SAMPLE, zips.inbox)
    done = run_once(zips.config)
    assert done.returncode == 0, done.stdout + done.stderr
    made = delivered(folder)
    assert sorted(made) == ["WMS_门店订单_20261207.zip", "WMS_门店订单_誠品店_20261207.zip"]
    got: dict[str, bytes] = {}
    for data in made.values():
        with zipfile.ZipFile(io.BytesIO(data), metadata_encoding="gbk") as archive:
            assert archive.testzip() is None
            got.update({n: archive.read(n) for n in archive.namelist()})
    assert got == EXPECTED


@pytest.mark.sftp
def test_an_archive_waits_in_its_folder_while_the_target_is_down_then_goes_once(
    exchange: Exchange, own_sshd: SshServer
) -> None:
    """The target (OpenSSH) is down: every entry waits, and so does the archive, in its
    drop folder (exit 3); once it is back the next run delivers each output once and
    archives the zip."""
    folder = own_sshd.folder("arch-outage")
    exchange.write_config(target=sftp_target_toml(own_sshd, folder))
    archive_route(exchange.config)
    shutil.copy(SAMPLE, exchange.inbox)
    own_sshd.stop()
    down = run_once(exchange.config)
    assert down.returncode == 3, down.stdout + down.stderr
    assert "1 retry-later" in down.stdout and "the archive waits in its folder" in down.stdout
    assert (exchange.inbox / SAMPLE.name).exists()
    assert records(exchange)[SAMPLE.name][0] == State.RETRYING
    own_sshd.restart()
    back = run_once(exchange.config)
    assert back.returncode == 0, back.stdout + back.stderr
    assert delivered(folder) == EXPECTED
    assert records(exchange)[SAMPLE.name][0] == State.ARCHIVED
    assert (exchange.inbox / "archive" / SAMPLE.name).exists()

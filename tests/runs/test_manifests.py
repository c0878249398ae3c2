"""Manifests on real servers: a target manifest written after the data files of a source
(once, even across a crash between the two), and a partner's manifest that decides which
data files are taken and what they must be."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import SAMPLES, Exchange
from tests.procs import run_once
from tests.sftp_routes import server_endpoint_toml, sftp_source, sftp_target_toml
from tests.sftpservers import SftpServer
from tests.sshd import SshServer, start_sshd
from xchange.cli import main
from xchange.config import load_config
from xchange.journal import FileRecord, State, open_journal

SAMPLE = "orders_20261121.csv"
EXPECTED = {p.name: p.read_bytes() for p in (SAMPLES / "shop-orders" / "expected").iterdir()}
TARGET_NAME = 'name = "WMS_OUT_{OrderDate}_{OrderNo}.xml" }'
SOURCE = 'source = { endpoint = "shop-drop", pattern = "orders_*.csv" }'


def with_target_manifest(exchange: Exchange, manifest: str, target_extra: str = "") -> None:
    text = exchange.config.read_text()
    assert TARGET_NAME in text
    exchange.config.write_text(
        text.replace(
            TARGET_NAME, TARGET_NAME[:-2] + f"{target_extra}, manifest = {{ {manifest} }} }}"
        )
    )


def with_source_manifest(exchange: Exchange, manifest: str) -> None:
    text = exchange.config.read_text()
    assert SOURCE in text
    exchange.config.write_text(
        text.replace(SOURCE, SOURCE[:-2] + f", manifest = {{ {manifest} }} }}")
    )


def run(exchange: Exchange) -> Result:
    return CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])


def run_process(
    exchange: Exchange, crash_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run_once(exchange.config, crash_at)


def records(exchange: Exchange) -> list[FileRecord]:
    with open_journal(load_config(exchange.config).journal) as journal:
        return journal.query()


def visible(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name[0] != "."}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_json_manifest(data: bytes, record: FileRecord) -> None:
    """The manifest lists every output with its figures, the file's control totals, the
    source, the route and the time of its first claim, keys in a fixed order."""
    manifest = json.loads(data)
    assert list(manifest) == ["source", "route", "claimed_at", "files", "totals"]
    assert manifest["source"] == SAMPLE and manifest["route"] == "shop-orders"
    assert manifest["claimed_at"] == f"{record.created_at:%Y-%m-%dT%H:%M:%SZ}"
    assert manifest["files"] == [
        {"name": name, "size": len(body), "sha256": sha(body), "documents": 1}
        for name, body in sorted(EXPECTED.items())
    ]
    # Exact decimals, as strings (the shop-orders mapping declares them).
    assert set(manifest["totals"]) == {"amount", "lines", "pieces", "prices"}
    assert all(isinstance(v, str) for v in manifest["totals"].values())
    assert data.endswith(b"\n")


# ------------------------------------------------------------------ a target's manifest


@pytest.mark.sftp
def test_a_json_manifest_arrives_after_the_data_files_on_openssh(
    exchange: Exchange, sshd: SshServer
) -> None:
    folder = sshd.folder("manifest-json")
    exchange.write_config(target=sftp_target_toml(sshd, folder))
    with_target_manifest(exchange, 'format = "json", name = "{source_stem}.manifest.json"')
    exchange.drop_sample()
    result = run(exchange)
    assert result.exit_code == 0, result.output
    arrived = visible(folder)
    assert set(arrived) == {*EXPECTED, "orders_20261121.manifest.json"}
    for name, body in EXPECTED.items():
        assert arrived[name] == body
    (record,) = records(exchange)
    check_json_manifest(arrived["orders_20261121.manifest.json"], record)
    # Last to arrive: no data file is newer than the manifest.
    times = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert times["orders_20261121.manifest.json"] >= max(times[n] for n in EXPECTED)
    # Journaled as an output of the file, once.
    assert sorted(o.path for o in record.outputs) == sorted(
        [*EXPECTED, "orders_20261121.manifest.json"]
    )
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.mark.sftp
def test_a_crash_between_the_data_and_the_manifest_ends_with_the_manifest_once(
    exchange: Exchange, sshd: SshServer
) -> None:
    """Killed once every data file is delivered and before the manifest is: the next run
    writes the manifest (the same bytes as an uninterrupted run's: its time is the first
    claim's), once; a further run sends nothing."""
    folder = sshd.folder("manifest-crash")
    exchange.write_config(target=sftp_target_toml(sshd, folder))
    with_target_manifest(exchange, 'format = "json", name = "{source_stem}.manifest.json"')
    exchange.drop_sample()
    crashed = run_process(exchange, "before-manifest")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert visible(folder) == EXPECTED  # the data files, and no manifest yet
    resumed = run_process(exchange)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    arrived = visible(folder)
    assert set(arrived) == {*EXPECTED, "orders_20261121.manifest.json"}
    (record,) = records(exchange)
    assert record.state == State.ARCHIVED
    check_json_manifest(arrived["orders_20261121.manifest.json"], record)
    names = [o.path for o in record.outputs]
    assert names.count("orders_20261121.manifest.json") == 1
    assert sorted(names) == sorted([*EXPECTED, "orders_20261121.manifest.json"])
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert run_process(exchange).returncode == 0
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


@pytest.mark.sftp
def test_a_csv_control_file_in_the_partners_columns_through_rclone(
    exchange: Exchange, sftp_servers: dict[str, SftpServer]
) -> None:
    """rclone's server (a plain rename overwrites): the manifest in declared columns, a
    header row, a semicolon, CRLF, and the file's total in its own column."""
    server = sftp_servers["rclone"]
    folder = server.folder("manifest-csv")
    exchange.write_config(target=server_endpoint_toml("wms-outbox", server, folder))
    with_target_manifest(
        exchange,
        'format = "csv", name = "{source_stem}_{route}.ctl", '
        'columns = ["name", "documents", "size", "sha256", "totals.pieces"], '
        'delimiter = ";", line_end = "crlf"',
    )
    exchange.drop_sample()
    result = run(exchange)
    assert result.exit_code == 0, result.output
    arrived = visible(folder)
    assert set(arrived) == {*EXPECTED, "orders_20261121_shop-orders.ctl"}
    lines = arrived["orders_20261121_shop-orders.ctl"].decode().split("\r\n")
    assert lines[0] == "name;documents;size;sha256;totals.pieces"
    assert lines[-1] == ""
    rows = [line.split(";") for line in lines[1:-1]]
    assert [r[:4] for r in rows] == [
        [name, "1", str(len(body)), sha(body)] for name, body in sorted(EXPECTED.items())
    ]
    assert len({r[4] for r in rows}) == 1 and rows[0][4].isdigit()


def test_a_done_file_is_an_empty_file_named_for_its_source(exchange: Exchange) -> None:
    with_target_manifest(exchange, 'format = "done", name = "{source_stem}.ok"')
    exchange.drop_sample()
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert visible(exchange.outbox) == {**EXPECTED, "orders_20261121.ok": b""}


# ------------------------------------------------------------------ a partner's manifest


def partner_drop(exchange: Exchange, sshd: SshServer, name: str) -> Path:
    drop = sshd.folder(name)
    sftp_source(exchange, sshd, drop)
    with_source_manifest(exchange, 'pattern = "*.manifest.json"')
    return drop


def listing(files: dict[str, bytes], **change: object) -> bytes:
    """A partner's JSON manifest of ``files`` with their true size and sha256, and the
    figures ``change`` gives."""
    entries = []
    for name, body in files.items():
        entry: dict[str, object] = {"name": name, "size": len(body), "sha256": sha(body)}
        entry.update(change)
        entries.append(entry)
    return json.dumps({"files": entries}).encode()


def held(exchange: Exchange) -> dict[str, str]:
    with open_journal(load_config(exchange.config).journal) as journal:
        return {path: obs.reason for path, obs in journal.observations.held("shop-orders").items()}


def other_orders() -> bytes:
    """The sample with other order numbers: other content."""
    data = (SAMPLES / "shop-orders" / "in" / SAMPLE).read_bytes()
    return data.replace(b"EC20261121", b"EC20261122")


@pytest.mark.sftp
def test_a_listed_file_is_taken_an_unlisted_one_waits_and_the_manifest_is_archived(
    exchange: Exchange, sshd: SshServer
) -> None:
    drop = partner_drop(exchange, sshd, "partner-listed")
    sample = (SAMPLES / "shop-orders" / "in" / SAMPLE).read_bytes()
    (drop / SAMPLE).write_bytes(sample)
    (drop / "orders_later.csv").write_bytes(other_orders())
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert not exchange.outbox.exists() or visible(exchange.outbox) == {}
    assert held(exchange) == {
        SAMPLE: "waiting for a manifest listing it",
        "orders_later.csv": "waiting for a manifest listing it",
    }
    # The partner's manifest lists one of them, with its record count (5 order lines).
    (drop / "batch1.manifest.json").write_bytes(listing({SAMPLE: sample}, documents=5))
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert "shop-orders: 1 delivered (3 documents)" in result.output
    assert visible(exchange.outbox) == EXPECTED
    assert held(exchange) == {"orders_later.csv": "waiting for a manifest listing it"}
    # Every file it lists is done: the manifest goes the way of its files (archive).
    assert sorted(os.listdir(drop)) == ["archive", "orders_later.csv"]
    assert sorted(os.listdir(drop / "archive")) == ["batch1.manifest.json", SAMPLE]


@pytest.mark.sftp
def test_a_listed_file_that_repeats_content_taken_before_lets_its_manifest_go(
    exchange: Exchange, sshd: SshServer
) -> None:
    """A manifest listing, by its sha256, content delivered before under another name (the
    file already taken and gone, say its manifest could not be archived then): that
    content is done with on the route, so the manifest is not kept waiting for good."""
    drop = partner_drop(exchange, sshd, "partner-again")
    sample = (SAMPLES / "shop-orders" / "in" / SAMPLE).read_bytes()
    (drop / SAMPLE).write_bytes(sample)
    (drop / "batch1.manifest.json").write_bytes(listing({SAMPLE: sample}))
    assert "1 delivered" in run(exchange).output
    (drop / "batch2.manifest.json").write_bytes(listing({"orders_again.csv": sample}))
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert visible(exchange.outbox) == EXPECTED
    assert sorted(os.listdir(drop)) == ["archive"], held(exchange)
    assert "batch2.manifest.json" in os.listdir(drop / "archive")


@pytest.mark.sftp
@pytest.mark.parametrize("figure", ["size", "sha256", "documents"])
def test_a_file_that_differs_from_its_manifest_is_quarantined_with_both_figures(
    exchange: Exchange, sshd: SshServer, figure: str
) -> None:
    drop = partner_drop(exchange, sshd, f"partner-{figure}")
    sample = (SAMPLES / "shop-orders" / "in" / SAMPLE).read_bytes()
    said: dict[str, object] = {
        "size": len(sample) + 7,
        "sha256": sha(b"another file"),
        "documents": 7,
    }
    wrong = listing({SAMPLE: sample}, **{"documents": 5, figure: said[figure]})
    (drop / SAMPLE).write_bytes(sample)
    (drop / "b.manifest.json").write_bytes(wrong)
    result = run(exchange)
    assert result.exit_code != 0
    assert not exchange.outbox.exists() or visible(exchange.outbox) == {}
    (record,) = records(exchange)
    assert record.state == State.QUARANTINED and record.error_kind == "manifest"
    both = {
        "size": (f"{len(sample)} bytes", f"says {len(sample) + 7}"),
        "sha256": (sha(sample), f"says {sha(b'another file')}"),
        "documents": ("5 records read", "says 7"),
    }[figure]
    assert all(part in (record.error_message or "") for part in both), record.error_message
    assert not (drop / SAMPLE).exists()  # out of the drop folder, kept in quarantine
    # Judged: its manifest is done with too.
    assert sorted(os.listdir(drop / "archive")) == ["b.manifest.json"]


@pytest.mark.sftp
def test_a_manifest_naming_a_path_outside_its_folder_is_refused(
    exchange: Exchange, sshd: SshServer
) -> None:
    drop = partner_drop(exchange, sshd, "partner-escape")
    sample = (SAMPLES / "shop-orders" / "in" / SAMPLE).read_bytes()
    (drop / SAMPLE).write_bytes(sample)
    evil = json.dumps(
        {"files": [{"name": SAMPLE, "size": len(sample)}, {"name": "../etc/passwd"}]}
    ).encode()
    (drop / "evil.manifest.json").write_bytes(evil)
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert not exchange.outbox.exists() or visible(exchange.outbox) == {}
    reasons = held(exchange)
    assert reasons[SAMPLE] == "waiting for a manifest listing it"
    assert reasons["evil.manifest.json"].startswith("manifest refused: ")
    assert "'../etc/passwd' is not a plain name" in reasons["evil.manifest.json"]
    assert sorted(os.listdir(drop)) == ["evil.manifest.json", SAMPLE]
    assert records(exchange) == []


@pytest.mark.sftp
def test_a_listed_file_that_never_arrives_keeps_its_manifest_waiting(
    exchange: Exchange, sshd: SshServer
) -> None:
    exchange.write_config(ready="settle = 0, max_wait = 1")
    drop = partner_drop(exchange, sshd, "partner-missing")
    sample = (SAMPLES / "shop-orders" / "in" / SAMPLE).read_bytes()
    (drop / SAMPLE).write_bytes(sample)
    (drop / "two.manifest.json").write_bytes(listing({SAMPLE: sample, "orders_never.csv": b"x"}))
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert visible(exchange.outbox) == EXPECTED
    assert held(exchange) == {
        "two.manifest.json": "manifest: waiting for 1 listed file(s) not here: orders_never.csv"
    }
    assert sorted(os.listdir(drop)) == ["archive", "two.manifest.json"]
    # Held longer than ready.max_wait: stuck, and said by an alert.
    time.sleep(1.2)
    later = run(exchange)
    assert later.exit_code == 0, later.output
    reason = held(exchange)["two.manifest.json"]
    assert reason.startswith("STUCK for ") and reason.endswith("not here: orders_never.csv")
    assert '"cause": "stuck"' in later.output and '"event": "alert.sent"' in later.output


@pytest.mark.sftp
def test_a_manifest_that_cannot_be_read_is_held_then_alerted_as_stuck(
    exchange: Exchange, tmp_path: Path
) -> None:
    """A server that lists the folder but refuses to open files (OpenSSH's sftp-server
    with the open request prohibited): the manifest is held with the server's word, and
    alerted once held longer than ready.max_wait."""
    server = start_sshd(tmp_path / "sshd", subsystem="internal-sftp -P open")
    try:
        exchange.write_config(ready="settle = 0, max_wait = 1")
        drop = partner_drop(exchange, server, "partner-closed")
        sample = (SAMPLES / "shop-orders" / "in" / SAMPLE).read_bytes()
        (drop / SAMPLE).write_bytes(sample)
        (drop / "one.manifest.json").write_bytes(listing({SAMPLE: sample}))
        result = run(exchange)
        assert result.exit_code == 0, result.output
        assert held(exchange)["one.manifest.json"].startswith("manifest could not be read: ")
        assert '"cause": "stuck"' not in result.output
        time.sleep(1.2)
        later = run(exchange)
        assert later.exit_code == 0, later.output
        reason = held(exchange)["one.manifest.json"]
        assert reason.startswith("STUCK for ") and "manifest could not be read: " in reason
        stuck = [
            line
            for line in later.output.splitlines()
            if '"event": "file.stuck"' in line and "one.manifest.json" in line
        ]
        assert len(stuck) == 1, later.output
        assert '"cause": "stuck"' in later.output and '"event": "alert.sent"' in later.output
        assert records(exchange) == []
    finally:
        server.stop()


def test_a_partners_csv_manifest_in_its_own_columns_and_encoding(exchange: Exchange) -> None:
    """A GBK control file with a header, a semicolon, a column to ignore and no sha256:
    the file it lists is taken, its size and record count checked."""
    with_source_manifest(
        exchange,
        'pattern = "*.ctl", format = "csv", columns = ["name", "", "size", "documents"], '
        'delimiter = ";", encoding = "gbk"',
    )
    sample = exchange.drop_sample().read_bytes()
    control = f"文件;备注;字节;行数\r\n{SAMPLE};订单;{len(sample)};5\r\n".encode("gbk")
    (exchange.inbox / "orders.ctl").write_bytes(control)
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert visible(exchange.outbox) == EXPECTED
    assert sorted(os.listdir(exchange.inbox / "archive")) == ["orders.ctl", SAMPLE]


def test_a_dry_run_says_an_unlisted_file_waits_for_its_manifest(exchange: Exchange) -> None:
    with_source_manifest(exchange, 'pattern = "*.manifest.json"')
    exchange.drop_sample()
    result = CliRunner().invoke(
        main, ["run", "--once", "--dry-run", "--config", str(exchange.config)]
    )
    assert result.exit_code == 0, result.output
    assert f"{SAMPLE} (874 bytes): held: waiting for a manifest listing it" in result.output


def test_a_manifest_lists_each_output_under_the_name_it_was_delivered_under(
    exchange: Exchange,
) -> None:
    """With if_exists = "unique", an output whose name was taken arrives as name_1: the
    manifest says name_1."""
    with_target_manifest(
        exchange, 'name = "{source_stem}.manifest.json"', target_extra=', if_exists = "unique"'
    )
    exchange.outbox.mkdir()
    taken = "WMS_OUT_20261121_EC20261121001.xml"
    (exchange.outbox / taken).write_bytes(b"an older file of the partner's")
    exchange.drop_sample()
    result = run(exchange)
    assert result.exit_code == 0, result.output
    manifest = json.loads((exchange.outbox / "orders_20261121.manifest.json").read_bytes())
    renamed = "WMS_OUT_20261121_EC20261121001_1.xml"
    assert [f["name"] for f in manifest["files"]] == [renamed, *sorted(set(EXPECTED) - {taken})]
    assert (exchange.outbox / renamed).read_bytes() == EXPECTED[taken]


def test_a_manifest_name_taken_on_the_target_stops_the_file_before_any_data_is_sent(
    exchange: Exchange,
) -> None:
    """The partner's folder has a file under the manifest's name (a fixed name, say):
    nothing of the source is sent, and the file is quarantined saying why."""
    with_target_manifest(exchange, 'name = "{source_stem}.manifest.json"')
    exchange.outbox.mkdir(parents=True, exist_ok=True)
    (exchange.outbox / "orders_20261121.manifest.json").write_bytes(b"{}")
    exchange.drop_sample()
    result = CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert result.exit_code == 1, result.output
    assert "(the manifest of orders_20261121.csv) is there already: nothing was sent" in (
        result.output
    )
    assert sorted(p.name for p in exchange.outbox.iterdir()) == ["orders_20261121.manifest.json"]


def test_check_refuses_manifests_that_cannot_work(exchange: Exchange) -> None:
    for extra, said in [
        ('name = "manifest.json"', "is the same for every source"),
        ('name = "../{source_stem}.done", format = "done"', "target.manifest.name"),
        ('name = "{source_stem}.json", columns = ["name"]', "only a csv manifest has them"),
    ]:
        with_target_manifest(exchange, extra)
        checked = CliRunner().invoke(main, ["check", "--config", str(exchange.config)])
        assert checked.exit_code == 2, (extra, checked.output)
        assert said in checked.output, (extra, checked.output)
        exchange.write_config()


def test_check_refuses_a_partner_manifest_pattern_that_is_the_data_pattern(
    exchange: Exchange,
) -> None:
    with_source_manifest(exchange, 'pattern = "orders_*.csv"')
    checked = CliRunner().invoke(main, ["check", "--config", str(exchange.config)])
    assert checked.exit_code == 2, checked.output
    assert "source.manifest.pattern: 'orders_*.csv' is also the route's data pattern" in (
        checked.output
    )


def test_status_does_not_call_a_partners_manifest_a_file_no_route_takes(
    exchange: Exchange,
) -> None:
    with_source_manifest(exchange, 'pattern = "*.manifest.json"')
    (exchange.inbox / "orders_20261121.manifest.json").write_text('{"files": []}')
    (exchange.inbox / "notes.txt").write_text("x")
    shown = CliRunner().invoke(main, ["status", "--config", str(exchange.config)])
    assert "not taken by any route: shop-drop: notes.txt" in shown.output
    assert "manifest.json" not in shown.output.split("not taken by any route")[-1]
    assert shown.output.count("not taken by any route") == 1


def test_a_manifest_too_big_to_be_one_is_refused_without_being_read(
    exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xchange import scan

    monkeypatch.setattr(scan, "MANIFEST_MAX", 1024)
    with_source_manifest(exchange, 'pattern = "*.manifest.json"')
    exchange.drop_sample()
    (exchange.inbox / "orders_20261121.manifest.json").write_text(
        json.dumps({"files": [{"name": SAMPLE}], "padding": "x" * 2000})
    )
    result = CliRunner().invoke(
        main, ["--log-format", "json", "run", "--once", "--config", str(exchange.config)]
    )
    assert "more than a manifest may be" in result.output
    assert not exchange.outbox.exists() or not any(exchange.outbox.iterdir())

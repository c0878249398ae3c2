"""`xchange run --once` end to end on local folders: deliver, journal, archive, never twice."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

from click.testing import CliRunner, Result

from tests.conftest import REPO, SAMPLES, Exchange
from xchange.cli import main
from xchange.config import load_config
from xchange.journal import State, open_journal
from xchange.lock import RunLock

EXPECTED = SAMPLES / "shop-orders" / "expected"


def run_once(exchange: Exchange, *extra: str) -> Result:
    return CliRunner().invoke(
        main, ["--log-format", "json", "run", "--once", "--config", str(exchange.config), *extra]
    )


def test_run_once_delivers_archives_and_journals(exchange: Exchange) -> None:
    """The sample orders land as XML in the outbox, the source is archived, the journal knows."""
    exchange.drop_sample()
    result = run_once(exchange)
    assert result.exit_code == 0, result.output
    assert "shop-orders: 1 delivered (3 documents)" in result.stdout
    assert sorted(p.name for p in exchange.outbox.iterdir()) == sorted(
        p.name for p in EXPECTED.iterdir()
    )
    for golden in EXPECTED.iterdir():
        assert (exchange.outbox / golden.name).read_bytes() == golden.read_bytes()
    assert not (exchange.inbox / "orders_20261121.csv").exists()
    assert (exchange.inbox / "archive" / "orders_20261121.csv").exists()

    journal = open_journal(load_config(exchange.config).journal)
    (record,) = journal.query()
    assert record.state == State.ARCHIVED
    assert record.source_encoding == "gbk"
    assert sorted(o.path for o in record.outputs) == sorted(p.name for p in EXPECTED.iterdir())
    journal.close()


def test_one_summary_event_per_file_in_json_logs(exchange: Exchange) -> None:
    """Logs off a terminal are JSON lines with one file.delivered summary per source file."""
    exchange.drop_sample()
    result = run_once(exchange)
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    (delivered,) = [e for e in events if e["event"] == "file.delivered"]
    assert delivered["route"] == "shop-orders"
    assert delivered["source"] == "orders_20261121.csv"
    assert delivered["target"] == "wms-outbox"
    assert delivered["bytes"] == (SAMPLES / "shop-orders/in/orders_20261121.csv").stat().st_size
    assert delivered["outcome"] == "delivered"
    assert delivered["encoding"] == "gbk"
    assert isinstance(delivered["duration_ms"], int)


def test_second_run_with_the_same_file_delivers_nothing_new(exchange: Exchange) -> None:
    """The same content dropped again is a duplicate: archived, not delivered twice."""
    exchange.drop_sample()
    assert run_once(exchange).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in exchange.outbox.iterdir()}
    exchange.drop_sample()
    again = run_once(exchange)
    assert again.exit_code == 0
    assert "0 delivered (0 documents), 1 duplicate" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in exchange.outbox.iterdir()} == before
    assert not (exchange.inbox / "orders_20261121.csv").exists()


def test_nothing_to_do_exits_0(exchange: Exchange) -> None:
    """An empty drop folder is a successful run."""
    result = run_once(exchange)
    assert result.exit_code == 0
    assert "shop-orders: 0 delivered (0 documents)" in result.stdout


def test_broken_file_is_quarantined_with_its_bytes_and_a_report(exchange: Exchange) -> None:
    """A file that breaks the layout is quarantined: original bytes kept, report beside, exit 1."""
    good = (SAMPLES / "shop-orders/in/orders_20261121.csv").read_bytes()
    bad = good.replace(b"13800138000", b"138", 1)
    (exchange.inbox / "orders_bad.csv").write_bytes(bad)
    result = run_once(exchange)
    assert result.exit_code == 1, result.output
    assert "1 quarantined" in result.stdout
    assert "orders_bad.csv" in result.stdout
    assert not (exchange.inbox / "orders_bad.csv").exists()
    assert not exchange.outbox.exists() or not any(exchange.outbox.iterdir())
    kept = exchange.quarantine / "shop-orders" / "000001_orders_bad.csv"
    assert kept.read_bytes() == bad
    report = kept.with_name(kept.name + ".report.txt").read_text()
    assert "line 2: field 手机: pattern" in report and "'138'" in report
    assert "cause:       validation (permanent)" in report
    for private in (
        kept,
        kept.with_name(kept.name + ".report.txt"),
        kept.with_name(kept.name + ".report.json"),
    ):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    info = json.loads(kept.with_name(kept.name + ".report.json").read_text())
    assert info["report"]["problems"][0]["value"] == "138"


def test_a_good_file_is_delivered_even_when_another_is_quarantined(exchange: Exchange) -> None:
    """One bad file does not stop the others."""
    exchange.drop_sample()
    (exchange.inbox / "orders_zzz.csv").write_bytes(b"\xff\xfe\x00garbage")
    result = run_once(exchange)
    assert result.exit_code == 1
    assert "1 delivered (3 documents), 1 quarantined" in result.stdout
    assert len(list(exchange.outbox.iterdir())) == 3


def test_existing_target_file_is_not_overwritten(exchange: Exchange) -> None:
    """With if_exists = fail, a different file already under the final name is left alone."""
    exchange.outbox.mkdir()
    (exchange.outbox / "WMS_OUT_20261121_EC20261121002.xml").write_bytes(b"theirs")
    exchange.drop_sample()
    result = run_once(exchange)
    assert result.exit_code == 1
    assert (exchange.outbox / "WMS_OUT_20261121_EC20261121002.xml").read_bytes() == b"theirs"


def test_output_already_present_with_same_bytes_is_not_sent_again(exchange: Exchange) -> None:
    """After a crash between rename and journal commit, the delivered output is recognised."""
    exchange.outbox.mkdir()
    name = "WMS_OUT_20261121_EC20261121001.xml"
    (exchange.outbox / name).write_bytes((EXPECTED / name).read_bytes())
    exchange.drop_sample()
    result = run_once(exchange)
    assert result.exit_code == 0, result.output
    assert '"event": "file.output_found"' in result.stderr


def test_run_refuses_while_another_run_holds_the_lock(exchange: Exchange) -> None:
    """A second run of the same configuration says so, touches nothing, and exits 4."""
    exchange.drop_sample()
    config = load_config(exchange.config)
    with RunLock(config.journal.path.with_suffix(".lock")):
        result = run_once(exchange)
    assert result.exit_code == 4
    assert "another xchange run of this configuration is still active" in result.stderr
    assert (exchange.inbox / "orders_20261121.csv").exists()


def test_unreachable_source_folder_exits_3(exchange: Exchange) -> None:
    """A source folder that does not exist is reported, and the run exits 3."""
    exchange.inbox.rmdir()
    result = run_once(exchange)
    assert result.exit_code == 3
    assert "could not run: shop-drop" in result.stdout


def test_journal_is_private_to_its_owner(exchange: Exchange) -> None:
    """The journal file is created readable by its owner only."""
    exchange.drop_sample()
    run_once(exchange)
    for path in exchange.journal.parent.glob("journal.sqlite*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_journal_commands_answer_the_auditor(exchange: Exchange) -> None:
    """`journal list` and `journal show` say which files went where, with checksums."""
    exchange.drop_sample()
    run_once(exchange)
    runner = CliRunner()
    listed = runner.invoke(main, ["journal", "list", "--config", str(exchange.config), "--json"])
    assert listed.exit_code == 0
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["state"] == "archived" and len(row["outputs"]) == 3
    shown = runner.invoke(main, ["journal", "show", "--config", str(exchange.config), "1"])
    assert shown.exit_code == 0
    assert "WMS_OUT_20261121_EC20261121003.xml" in shown.stdout
    assert "processing -> delivering" in shown.stdout
    missing = runner.invoke(main, ["journal", "show", "--config", str(exchange.config), "99"])
    assert missing.exit_code == 1 and "no journal record with id 99" in missing.stderr


def test_readme_demo_runs_every_exchange_and_then_nothing_twice(tmp_path: Path) -> None:
    """README command (a) on a copy: every route delivers its golden files, once."""
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "demo.toml", tmp_path / "config" / "demo.toml")
    (tmp_path / "formats").symlink_to(REPO / "formats")
    inbox = tmp_path / "var" / "demo" / "inbox"
    inbox.mkdir(parents=True)
    for sample in SAMPLES.glob("*/in/*"):
        shutil.copy(sample, inbox)
    config = str(tmp_path / "config" / "demo.toml")
    first = CliRunner().invoke(main, ["run", "--once", "--config", config])
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[0] == "shop-orders: 1 delivered (3 documents)"
    delivered = {p.name: p.read_bytes() for p in (tmp_path / "var/demo/outbox").rglob("*.*")}
    golden = {p.name: p.read_bytes() for p in SAMPLES.glob("*/expected/*")}
    assert delivered == golden
    for sample in SAMPLES.glob("*/in/*"):
        shutil.copy(sample, inbox)
    second = CliRunner().invoke(main, ["run", "--once", "--config", config])
    assert second.exit_code == 0
    assert second.stdout.count("1 duplicate") == len(load_config(config).routes) == 17
    assert {p.name for p in (tmp_path / "var/demo/outbox").rglob("*.*")} == set(golden)

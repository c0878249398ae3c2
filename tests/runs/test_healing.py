"""Quarantine that heals: a quarantined file is tried again by itself once what judged it
changed (a value table, a mapping, a layout) or, given up on a transient cause, once its
target answers again; delivered exactly once, on its own record, and said in one alert."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import SAMPLES, Exchange
from tests.daemons import daemon, drop_with_new_channel, fast, private_formats, with_alerts
from tests.procs import run_once, wait_for
from tests.servers import http_server
from tests.sftp_routes import sftp_target_toml
from tests.sshd import SshServer
from xchange.cli import main
from xchange.config import load_config
from xchange.journal import FileRecord, State, open_journal

SAMPLE = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"
QUARANTINED = "orders_20261121.csv"


def cli(exchange: Exchange, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(exchange.config)])


def run_process(
    exchange: Exchange, crash_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run_once(exchange.config, crash_at)


def add_channel(formats: Path, name: str = "抖音", code: str = "DY") -> None:
    """What the operator does at 3 a.m.: add the new channel to the value table."""
    mapping = formats / "shop-to-wms-outbound.toml"
    text = mapping.read_text(encoding="utf-8")
    mapping.write_text(
        text.replace('"拼多多" = "PDD"', f'"拼多多" = "PDD"\n"{name}" = "{code}"'),
        encoding="utf-8",
    )


def records(exchange: Exchange) -> list[FileRecord]:
    journal = open_journal(load_config(exchange.config).journal)
    try:
        return [r for r in journal.query(limit=1000)]
    finally:
        journal.close()


def states(exchange: Exchange, file_id: int = 1) -> list[str]:
    journal = open_journal(load_config(exchange.config).journal)
    try:
        return [t.to_state for t in journal.history(file_id)]
    finally:
        journal.close()


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def quarantined_with_new_channel(exchange: Exchange) -> Path:
    """A file quarantined for a channel its value table does not know; its formats folder."""
    formats = private_formats(exchange)
    drop_with_new_channel(exchange)
    first = cli(exchange, "run", "--once")
    assert first.exit_code == 1, first.output
    assert "'抖音' is not in value table 'channels'" in cli(exchange, "quarantine", "list").stdout
    return formats


def check_healed_once(exchange: Exchange) -> None:
    """Every order delivered once, the new channel coded, on the first record, quarantine
    empty and its copy kept among the resolved ones."""
    delivered = visible(exchange.outbox)
    assert len(delivered) == 3
    assert [p.name for p in exchange.outbox.iterdir() if p.name.startswith(".")] == []
    assert any(b"<Channel>DY</Channel>" in (exchange.outbox / n).read_bytes() for n in delivered)
    (record,) = records(exchange)
    # Its source left the drop folder when it was quarantined: the kept copy is archived
    # in its place, as any delivered source is.
    assert record.state == State.ARCHIVED
    assert record.archive_path == f"archive/{QUARANTINED}"
    assert (exchange.inbox / "archive" / QUARANTINED).read_bytes() == SAMPLE.read_bytes().decode(
        "gbk"
    ).replace("京东", "抖音").encode("gbk")
    assert sorted(o.path for o in record.outputs) == delivered  # each output once
    assert "(nothing in quarantine)" in cli(exchange, "quarantine", "list").stdout
    resolved = exchange.quarantine / "shop-orders" / "resolved" / f"000001_{QUARANTINED}"
    assert resolved.read_bytes() == SAMPLE.read_bytes().decode("gbk").replace(
        "京东", "抖音"
    ).encode("gbk")


def test_quarantine_list_says_whether_and_why_each_file_is_rechecked(exchange: Exchange) -> None:
    """Before the fix the file is not re-checked (the tables in use judged it); after the
    value table changed it is, and the listing names what changed."""
    formats = quarantined_with_new_channel(exchange)
    before = cli(exchange, "quarantine", "list")
    assert "not re-checked: the layouts, mapping and tables in use now judged it" in before.stdout
    add_channel(formats)
    after = cli(exchange, "quarantine", "list")
    assert "re-checked: mapping shop-to-wms-outbound changed" in after.stdout
    as_json = json.loads(cli(exchange, "quarantine", "list", "--json").stdout)
    assert as_json["auto_retry"] is True
    assert as_json["auto_retry_why"].startswith("mapping shop-to-wms-outbound changed")


def test_a_fixed_value_table_heals_the_file_at_the_next_run_once(exchange: Exchange) -> None:
    """The file quarantined for an unknown channel is delivered by the next `run --once`
    after the channel is added, on the same record; later runs send nothing again."""
    formats = quarantined_with_new_channel(exchange)
    add_channel(formats)
    healed = cli(exchange, "run", "--once")
    assert healed.exit_code == 0, healed.output
    assert "1 delivered" in healed.stdout
    check_healed_once(exchange)
    assert states(exchange) == [
        "processing",
        "quarantined",
        "processing",
        "delivering",
        "delivered",
        "archived",
    ]
    again = cli(exchange, "run", "--once")
    assert again.exit_code == 0 and "1 delivered" not in again.stdout
    check_healed_once(exchange)


def test_auto_retry_off_leaves_the_file_for_a_person(exchange: Exchange) -> None:
    """`quarantine.auto_retry = false`: the fixed table does not send the file by itself,
    and the listing says so."""
    exchange.write_config(route_extra="quarantine = { auto_retry = false }")
    formats = private_formats(exchange)
    drop_with_new_channel(exchange)
    assert cli(exchange, "run", "--once").exit_code == 1
    add_channel(formats)
    assert cli(exchange, "run", "--once").exit_code == 0
    assert not exchange.outbox.exists() or visible(exchange.outbox) == []
    listed = cli(exchange, "quarantine", "list")
    assert "not re-checked: quarantine.auto_retry is off for this route" in listed.stdout


def test_a_file_that_still_fails_keeps_its_bytes_and_gets_the_new_report(
    exchange: Exchange,
) -> None:
    """A change that does not fix the file: it is checked once with the new mapping, stays
    in quarantine with its original bytes, and its report names the new mapping version;
    the next run does not check it again."""
    formats = quarantined_with_new_channel(exchange)
    kept = exchange.quarantine / "shop-orders" / f"000001_{QUARANTINED}"
    original = kept.read_bytes()
    report = exchange.quarantine / "shop-orders" / f"000001_{QUARANTINED}.report.json"
    judged_by = json.loads(report.read_text(encoding="utf-8"))["mapping"]
    add_channel(formats, "快手", "KS")  # another channel: 抖音 is still unknown
    still = cli(exchange, "run", "--once")
    assert still.exit_code == 1, still.output
    assert kept.read_bytes() == original
    info = json.loads(report.read_text(encoding="utf-8"))
    assert info["mapping"] != judged_by
    assert info["mapping"] == records(exchange)[0].mapping_version
    assert "'抖音' is not in value table 'channels'" in info["reason"]
    assert "'抖音' is not in value table 'channels'" in kept.with_name(
        kept.name + ".report.txt"
    ).read_text(encoding="utf-8")
    assert states(exchange) == ["processing", "quarantined", "processing", "quarantined"]
    listed = cli(exchange, "quarantine", "list")
    assert "not re-checked: the layouts, mapping and tables in use now judged it" in listed.stdout
    assert cli(exchange, "run", "--once").exit_code == 0
    assert len(states(exchange)) == 4  # not checked again with the same versions


@pytest.mark.parametrize("point", ["before-rename", "after-rename", "after-output"])
def test_a_heal_killed_in_the_middle_delivers_exactly_once(exchange: Exchange, point: str) -> None:
    """SIGKILL while a healed file is being delivered: the next run finishes it from the
    kept copy, every output once, nothing half-written in sight."""
    formats = quarantined_with_new_channel(exchange)
    add_channel(formats)
    crashed = run_process(exchange, point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    resumed = run_process(exchange)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check_healed_once(exchange)
    assert run_process(exchange).returncode == 0
    check_healed_once(exchange)


def test_a_daemon_reload_heals_the_file_and_alerts_what_healed(exchange: Exchange) -> None:
    """The daemon quarantines the file; the operator fixes the table and runs `xchange
    reload --reason`; the daemon delivers the file once and one alert says what healed and
    why; the journal notes who reloaded and why."""
    fast(exchange)
    formats = private_formats(exchange)
    with http_server() as (url, posts):
        with_alerts(exchange, f'[alerts]\n[[alerts.sinks]]\ntype = "webhook"\nurl = "{url}/h"\n')
        with daemon(exchange) as proc:
            drop_with_new_channel(exchange)
            wait_for(
                lambda: (
                    (exchange.quarantine / "shop-orders" / f"000001_{QUARANTINED}").exists()
                    and any(r.state == State.QUARANTINED for r in records(exchange))
                ),
                what="the file quarantined",
            )
            add_channel(formats)
            asked = cli(exchange, "reload", "--reason", "channel 抖音 added")
            assert asked.exit_code == 0, asked.output
            assert f"asked the daemon (pid {proc.pid}) to reload" in asked.stdout
            (noted,) = cli(exchange, "journal", "actions").stdout.splitlines()
            assert f"reload ({exchange.config}, daemon pid {proc.pid}) by " in noted
            assert noted.endswith(": channel 抖音 added")
            wait_for(
                lambda: len(visible(exchange.outbox)) == 3 if exchange.outbox.exists() else False,
                what="the healed file delivered",
            )
            wait_for(
                lambda: any(p["json"].get("kind") == "healed" for p in posts),
                what="the healed alert",
            )
            assert proc.poll() is None
        check_healed_once(exchange)
        (alert,) = [p["json"] for p in posts if p["json"].get("kind") == "healed"]
        assert alert["text"].startswith(
            "shop-orders: 1 of 1 quarantined files delivered after mapping "
            "shop-to-wms-outbound changed"
        )
    log = (exchange.root / "daemon.log").read_text(encoding="utf-8")
    assert '"event": "daemon.reloaded"' in log


def test_a_reload_with_a_broken_mapping_keeps_the_daemon_on_what_it_had(
    exchange: Exchange,
) -> None:
    """A reload whose mapping does not load is refused with the problem named; the daemon
    goes on delivering with the configuration it had."""
    fast(exchange)
    formats = private_formats(exchange)
    with daemon(exchange) as proc:
        wait_for(
            lambda: '"daemon.started"' in (exchange.root / "daemon.log").read_text(),
            what="the daemon started",
        )
        mapping = formats / "shop-to-wms-outbound.toml"
        mapping.write_text(mapping.read_text(encoding="utf-8") + "\n[broken\n", encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: '"daemon.reload_refused"' in (exchange.root / "daemon.log").read_text(),
            what="the reload refused",
        )
        exchange.drop_sample()
        wait_for(
            lambda: exchange.outbox.exists() and len(visible(exchange.outbox)) == 3,
            what="the file delivered with the mapping loaded before",
        )
        assert proc.poll() is None
    log = (exchange.root / "daemon.log").read_text(encoding="utf-8")
    (refused,) = [line for line in log.splitlines() if '"daemon.reload_refused"' in line]
    assert "shop-to-wms-outbound.toml" in refused


def test_reload_without_a_daemon_says_so(exchange: Exchange) -> None:
    """`xchange reload` with no daemon running exits non-zero and says so."""
    result = cli(exchange, "reload")
    assert result.exit_code == 3
    assert "no daemon of" in result.stderr and "is running" in result.stderr


@pytest.mark.sftp
def test_a_file_given_up_while_the_target_was_down_is_delivered_when_it_is_back(
    exchange: Exchange,
    own_sshd: SshServer,
) -> None:
    """Given up after the retry budget while sshd was down, the file is delivered by the
    first run after sshd is back (one probe), exactly once; while it stays down, runs
    leave it in quarantine without trying it."""
    folder = own_sshd.folder("healing")
    exchange.write_config(
        target=sftp_target_toml(own_sshd, folder),
        retry="attempts = 1, later = 0, give_up_after = 1",
    )
    exchange.drop_sample()
    own_sshd.stop()
    gave_up = cli(exchange, "run", "--once")
    assert gave_up.exit_code == 1, gave_up.output
    listed = cli(exchange, "quarantine", "list")
    assert "re-checked: given up on a transient cause (unavailable)" in listed.stdout
    still_down = cli(exchange, "run", "--once")
    assert still_down.exit_code == 0, still_down.output
    assert states(exchange) == ["processing", "delivering", "quarantined"]  # not tried
    own_sshd.restart()
    back = cli(exchange, "run", "--once")
    assert back.exit_code == 0, back.output
    expected = sorted(p.name for p in (SAMPLES / "shop-orders" / "expected").iterdir())
    assert visible(folder) == expected
    for name in expected:
        assert (folder / name).read_bytes() == (
            SAMPLES / "shop-orders/expected" / name
        ).read_bytes()
    (record,) = records(exchange)
    assert record.state == State.ARCHIVED and len(record.outputs) == 3
    assert cli(exchange, "run", "--once").exit_code == 0
    assert visible(folder) == expected


def test_the_alert_says_how_many_healed_and_which_still_fail(exchange: Exchange) -> None:
    """Two files quarantined for two unknown channels, one channel added: one file is
    delivered, the other stays; the one alert counts both and names the one that fails."""
    formats = private_formats(exchange)
    with http_server() as (url, posts):
        with_alerts(exchange, f'[alerts]\n[[alerts.sinks]]\ntype = "webhook"\nurl = "{url}/h"\n')
        drop_with_new_channel(exchange)
        other = SAMPLE.read_bytes().decode("gbk").replace("京东", "快手").encode("gbk")
        (exchange.inbox / "orders_20261122.csv").write_bytes(other)
        assert cli(exchange, "run", "--once").exit_code == 1
        add_channel(formats)
        mixed = cli(exchange, "run", "--once")
        assert mixed.exit_code == 1, mixed.output  # one file still needs a person
        (alert,) = [p["json"] for p in posts if p["json"].get("kind") == "healed"]
    first = alert["text"].splitlines()[0]
    assert first.startswith(
        "shop-orders: 1 of 2 quarantined files delivered after mapping shop-to-wms-outbound "
        "changed; 1 still fail: orders_20261122.csv: "
    ), first
    assert "'快手' is not in value table 'channels'" in first
    assert "xchange quarantine list --route shop-orders" in alert["text"]
    assert len(visible(exchange.outbox)) == 3
    listed = cli(exchange, "quarantine", "list").stdout
    assert "orders_20261122.csv" in listed and QUARANTINED not in listed


def delivered_then_quarantined(exchange: Exchange) -> Path:
    """#1 delivered, #2 (another day's orders) quarantined for a new channel, the kept copy
    of #2 mended by hand to the known channel; a webhook takes the alerts. Returns the
    formats folder."""
    formats = private_formats(exchange)
    exchange.drop_sample()
    assert cli(exchange, "run", "--once").exit_code == 0
    data = SAMPLE.read_bytes().decode("gbk").replace("京东", "抖音")
    (exchange.inbox / "orders_20261122.csv").write_bytes(
        data.replace("20261121", "20261122").encode("gbk")
    )
    assert cli(exchange, "run", "--once").exit_code == 1
    (second,) = [r for r in records(exchange) if r.state == State.QUARANTINED]
    kept = Path(second.quarantine_path or "")
    kept.write_bytes(kept.read_bytes().decode("gbk").replace("抖音", "京东").encode("gbk"))
    return formats


def healed_alert(posts: list[dict]) -> str:  # type: ignore[type-arg]
    (alert,) = [p["json"] for p in posts if p["json"].get("kind") == "healed"]
    return str(alert["text"])


def test_a_mended_copy_delivered_already_is_counted_healed(exchange: Exchange) -> None:
    """The kept copy of #2 is mended into the very bytes of #1, delivered already; the
    mapping changes, the next run re-checks #2: nothing is sent, nothing is left in
    quarantine, and the alert counts it healed (before: "0 of 1 ... delivered; 1 still
    fail: ... delivered already as #1")."""
    formats = delivered_then_quarantined(exchange)
    (second,) = [r for r in records(exchange) if r.state == State.QUARANTINED]
    Path(second.quarantine_path or "").write_bytes(SAMPLE.read_bytes())
    with http_server() as (url, posts):
        with_alerts(exchange, f'[alerts]\n[[alerts.sinks]]\ntype = "webhook"\nurl = "{url}/h"\n')
        add_channel(formats, "快手", "KS")
        healed = cli(exchange, "run", "--once")
        assert healed.exit_code == 0, healed.output
        text = healed_alert(posts)
    assert text.startswith("shop-orders: 1 of 1 quarantined files delivered after mapping"), text
    assert "still fail" not in text
    assert "(nothing in quarantine)" in cli(exchange, "quarantine", "list").stdout
    assert len(visible(exchange.outbox)) == 3


def test_a_mended_copy_that_cannot_be_sent_goes_back_to_quarantine_on_its_own_record(
    exchange: Exchange,
) -> None:
    """The mended copy of #2 is new content, taken on a record of its own (#3); its target
    folder is gone (a file in its place) at the re-check: #3 goes back to quarantine with
    the reason, #2 stays dropped, the route runs on and the alert says 0 of 1 (before: the
    back-to-quarantine was written on #2, which the journal refused, and the route stopped
    with "the journal does not allow dropped -> quarantined"). `quarantine retry 3` then
    delivers it."""
    formats = delivered_then_quarantined(exchange)
    with http_server() as (url, posts):
        with_alerts(exchange, f'[alerts]\n[[alerts.sinks]]\ntype = "webhook"\nurl = "{url}/h"\n')
        add_channel(formats, "快手", "KS")
        shutil.move(exchange.outbox, exchange.root / "moved")
        exchange.outbox.write_bytes(b"")  # a file where the target folder was
        failed = cli(exchange, "run", "--once")
        assert "does not allow" not in failed.output, failed.output
        text = healed_alert(posts)
    assert text.startswith("shop-orders: 0 of 1 quarantined files delivered"), text
    assert "1 still fail: orders_20261122.csv: " in text
    states = {r.id: r.state for r in records(exchange)}
    assert states == {1: State.ARCHIVED, 2: State.DROPPED, 3: State.QUARANTINED}
    exchange.outbox.unlink()
    shutil.move(exchange.root / "moved", exchange.outbox)
    retried = cli(exchange, "quarantine", "retry", "3")
    assert retried.exit_code == 0, retried.output
    assert len(visible(exchange.outbox)) == 6


def test_a_look_between_an_edit_and_the_reload_does_not_lose_the_fix(
    exchange: Exchange,
) -> None:
    """A daemon that looked between an edit of the mapping and `xchange reload` re-checked
    the quarantined file with the rules it had loaded, but recorded it under the edited
    file's hash: after the reload the file was never re-checked. Versions now say what was
    loaded and used, not what is on disk."""
    from xchange.runner import Runner

    formats = quarantined_with_new_channel(exchange)
    config = load_config(exchange.config)
    journal = open_journal(config.journal)
    try:
        before = Runner(config, journal)  # the daemon, with the mapping as it was
        add_channel(formats)  # edited on disk, not reloaded yet
        before.run_once()
        before.close()
        assert records(exchange)[0].state == State.QUARANTINED
        after = Runner(load_config(exchange.config), journal)  # `xchange reload`
        after.run_once()
        after.close()
    finally:
        journal.close()
    check_healed_once(exchange)

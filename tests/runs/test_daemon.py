"""The daemon and readiness: take only complete files, on schedule, and stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import SAMPLES, Exchange
from tests.daemons import daemon, fast
from tests.procs import wait_for, xchange_argv, xchange_env
from tests.sftp_routes import sftp_source, sftp_target
from tests.sshd import SshServer
from xchange.cli import main
from xchange.config import ScheduleSpec, load_config
from xchange.journal import State, open_journal

SAMPLE = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"
EXPECTED = {p.name: p.read_bytes() for p in (SAMPLES / "shop-orders" / "expected").iterdir()}


def outputs(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def test_a_slowly_written_file_is_taken_only_when_complete(exchange: Exchange) -> None:
    """While a writer is still appending, nothing is delivered; once it stops, the whole
    file is, once."""
    fast(exchange, settle=1.0)
    lines = SAMPLE.read_bytes().split(b"\r\n")
    with daemon(exchange) as proc:
        target = exchange.inbox / "orders_20261121.csv"
        with open(target, "wb") as fh:
            for line in lines:
                fh.write(line + b"\r\n" if line else b"")
                fh.flush()
                time.sleep(0.4)
                assert outputs(exchange.outbox) == {}, "taken while still being written"
        wait_for(lambda: outputs(exchange.outbox) == EXPECTED, what="the delivery")
        assert proc.poll() is None
    assert proc.returncode == 0
    journal = open_journal(load_config(exchange.config).journal)
    (record,) = journal.query()
    assert record.size == SAMPLE.stat().st_size
    journal.close()


def test_files_present_at_start_are_processed_and_nothing_twice_after_restart(
    exchange: Exchange,
) -> None:
    """A daemon started on a full drop folder delivers it; after a restart, only new files."""
    fast(exchange, settle=0)
    exchange.drop_sample()
    with daemon(exchange):
        wait_for(lambda: outputs(exchange.outbox) == EXPECTED, what="the first delivery")
    first = {p.name: p.stat().st_mtime_ns for p in exchange.outbox.iterdir()}
    exchange.drop_sample()  # the same content again, while stopped
    data = SAMPLE.read_bytes().decode("gbk").replace("EC20261121003", "EC20261121004")
    (exchange.inbox / "orders_20261122.csv").write_bytes(data.encode("gbk"))
    with daemon(exchange):
        wait_for(lambda: len(outputs(exchange.outbox)) == 4, what="the new order")
        wait_for(lambda: not any(exchange.inbox.glob("orders_*.csv")), what="archiving")
    for name, mtime in first.items():
        assert (exchange.outbox / name).stat().st_mtime_ns == mtime  # not sent again


def test_a_done_marker_route_waits_for_its_marker(exchange: Exchange) -> None:
    """With ready.marker, a file without its marker is held; with it, taken; both archived."""
    exchange.write_config(ready='settle = 0, marker = "{name}.ok"')
    exchange.drop_sample()
    runner = CliRunner()
    held = runner.invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert held.exit_code == 0, held.output
    assert "0 delivered (0 documents), 1 held" in held.stdout
    status = runner.invoke(main, ["status", "--config", str(exchange.config)])
    assert "held: orders_20261121.csv" in status.stdout
    assert "waiting for marker orders_20261121.csv.ok" in status.stdout
    (exchange.inbox / "orders_20261121.csv.ok").write_bytes(b"")
    done = runner.invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert "1 delivered (3 documents)" in done.stdout
    assert sorted(p.name for p in (exchange.inbox / "archive").iterdir()) == [
        "orders_20261121.csv",
        "orders_20261121.csv.ok",
    ]
    assert "0 held" in runner.invoke(main, ["status", "--config", str(exchange.config)]).stdout


def test_status_says_why_a_growing_file_is_held(exchange: Exchange) -> None:
    """A file that changed between two looks is held with 'size changed N s ago'."""
    exchange.write_config(ready="settle = 30")
    target = exchange.inbox / "orders_20261121.csv"
    target.write_bytes(SAMPLE.read_bytes()[:100])
    runner = CliRunner()
    runner.invoke(main, ["run", "--once", "--config", str(exchange.config)])
    target.write_bytes(SAMPLE.read_bytes()[:300])
    second = runner.invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert "1 held" in second.stdout
    status = runner.invoke(main, ["status", "--config", str(exchange.config)]).stdout
    assert "held: orders_20261121.csv (300 bytes): size changed" in status
    assert " s ago" in status


@pytest.mark.sftp
def test_an_sftp_drop_folder_is_polled_and_delivered(exchange: Exchange, sshd: SshServer) -> None:
    """Files in a partner's SFTP folder are listed, fetched, delivered, and archived there."""
    drop = sshd.folder("sftp-drop")
    exchange.write_config(ready="settle = 0")
    text = exchange.config.read_text().replace(
        f'[endpoints.shop-drop]\ntype = "local"\npath = "{exchange.inbox}"',
        f'[endpoints.shop-drop]\ntype = "sftp"\nhost = "{sshd.host}"\nport = {sshd.port}\n'
        f'user = "{sshd.user}"\npath = "{drop}"\nkey_file = "{sshd.client_key}"\n'
        f'known_hosts = "{sshd.known_hosts}"',
    )
    exchange.config.write_text(
        text.replace("[[routes]]", "[daemon]\npoll_interval = 0.5\n\n[[routes]]", 1)
    )
    (drop / "orders_20261121.csv").write_bytes(SAMPLE.read_bytes())
    (drop / "orders_20261121.csv").chmod(0o666)
    with daemon(exchange):
        wait_for(lambda: outputs(exchange.outbox) == EXPECTED, what="delivery from SFTP")
        wait_for(lambda: (drop / "archive" / "orders_20261121.csv").exists(), what="archive")
    assert not (drop / "orders_20261121.csv").exists()


def big_stock_count(path: Path, lines: int) -> None:
    head = (
        '<?xml version="1.0" encoding="GB18030"?>\n'
        '<StockCount xmlns="urn:example:wms:stockcount:1"><Header><CountNo>SC20261121001'
        '</CountNo><Warehouse code="WH-SH-01">上海仓</Warehouse><CountDate>2026-11-21'
        "</CountDate></Header><Lines>\n"
    )
    with open(path, "w", encoding="gb18030") as fh:  # (the layout's encoding)
        fh.write(head)
        for i in range(lines):
            fh.write(
                f'<Line no="{i}"><Sku>SKU-{i:07d}</Sku><Name>T恤</Name><Batch>B</Batch>'
                "<BookQty>1</BookQty><CountQty>1</CountQty><Unit>件</Unit></Line>\n"
            )
        fh.write("</Lines></StockCount>\n")


def stock_count_exchange(exchange: Exchange, lines: int = 40_000) -> Path:
    """A route that turns one large stock count into one large CSV."""
    exchange.write_config(ready="settle = 0")
    text = exchange.config.read_text()
    route = text[text.index("[[routes]]") :]
    stock = (
        route.replace('name = "shop-orders"', 'name = "wms-stock-count"')
        .replace('pattern = "orders_*.csv"', 'pattern = "stockcount_*.xml"')
        .replace('source_layout = "shop-order-lines"', 'source_layout = "wms-stock-count"')
        .replace('mapping = "shop-to-wms-outbound"', 'mapping = "wms-stock-count-to-oms-inventory"')
        .replace('target_layout = "wms-outbound-order"', 'target_layout = "oms-inventory"')
        .replace("WMS_OUT_{OrderDate}_{OrderNo}.xml", "OMS_INV_{source_stem}.csv")
    )
    exchange.config.write_text(
        text.replace(route, stock).replace(
            "[[routes]]", "[daemon]\npoll_interval = 0.5\n\n[[routes]]", 1
        )
    )
    source = exchange.root / "stockcount_big.xml"
    big_stock_count(source, lines)
    return source


def signal_with_work_in_hand(exchange: Exchange, source: Path, signals: int) -> int:
    """Start the daemon, drop ``source``, send SIGTERM ``signals`` times once the file is
    being converted; return the daemon's exit status."""
    staging = exchange.journal.parent / "scratch" / "staging"
    with daemon(exchange) as proc:
        os.replace(source, exchange.inbox / source.name)
        wait_for(lambda: staging.exists() and any(staging.iterdir()), what="work in hand")
        log = exchange.root / "daemon.log"
        for n in range(signals):
            if n:  # once the first has been taken (said), while the file is still in hand
                wait_for(lambda: '"event": "run.stopping"' in log.read_text(), timeout=30)
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    return proc.returncode


def test_sigterm_during_a_delivery_finishes_it_and_exits_0(exchange: Exchange) -> None:
    """The file in hand when SIGTERM arrives is finished; nothing half-written is left."""
    source = stock_count_exchange(exchange)
    assert signal_with_work_in_hand(exchange, source, 1) == 0
    (out,) = exchange.outbox.iterdir()
    assert out.name == "OMS_INV_stockcount_big.csv"
    assert out.read_bytes().count(b"\r\n") == 40_001
    assert not (exchange.inbox / source.name).exists()
    # The stop says which file it waits for, how big and how far along: no silence.
    log = (exchange.root / "daemon.log").read_text(encoding="utf-8")
    assert "finishing the files in hand" not in log  # (a person's line: not in JSON logs)
    (said,) = [json.loads(x) for x in log.splitlines() if '"event": "run.stopping"' in x]
    assert said["signal"] == "SIGTERM" and "stockcount_big.xml" in " ".join(said["in_hand"])
    (stopping,) = [
        json.loads(line) for line in log.splitlines() if '"event": "daemon.stopping"' in line
    ]
    (hand,) = stopping["in_hand"]
    assert hand.startswith("stockcount_big.xml on wms-stock-count (") and "MB" in hand


def test_a_second_signal_exits_at_once_leaving_no_partial_file(exchange: Exchange) -> None:
    """Two signals: out at once, nothing under a final name; the next start delivers it."""
    # (big enough that the file is still in hand when the second signal comes)
    source = stock_count_exchange(exchange, lines=200_000)
    assert signal_with_work_in_hand(exchange, source, 2) == 128 + signal.SIGTERM
    assert outputs(exchange.outbox) == {}
    with daemon(exchange):
        wait_for(lambda: len(outputs(exchange.outbox)) == 1, timeout=120, what="redelivery")
    (out,) = exchange.outbox.iterdir()
    assert out.read_bytes().count(b"\r\n") == 200_001


def test_two_routes_reading_one_file_both_deliver_before_it_is_archived(
    exchange: Exchange,
) -> None:
    """Fan-out: the source is archived only once every route that takes it has delivered."""
    exchange.write_config(ready="settle = 0")
    text = exchange.config.read_text()
    route = text[text.index("[[routes]]") :]
    second = route.replace('name = "shop-orders"', 'name = "shop-orders-copy"').replace(
        "[endpoints.wms-outbox]", "[endpoints.x]"
    )
    copy_box = exchange.root / "outbox2"
    text += "\n" + second.replace('endpoint = "wms-outbox"', 'endpoint = "copy-box"')
    text = text.replace(
        "[[routes]]", f'[endpoints.copy-box]\ntype = "local"\npath = "{copy_box}"\n\n[[routes]]', 1
    )
    exchange.config.write_text(text)
    exchange.drop_sample()
    result = CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert result.exit_code == 0, result.output
    assert outputs(exchange.outbox) == EXPECTED and outputs(copy_box) == EXPECTED
    assert (exchange.inbox / "archive" / "orders_20261121.csv").exists()
    journal = open_journal(load_config(exchange.config).journal)
    assert {r.state for r in journal.query()} == {State.ARCHIVED}
    journal.close()


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            "unique",
            {
                "WMS_OUT_20261121_EC20261121001.xml": b"theirs",
                "WMS_OUT_20261121_EC20261121001_1.xml": None,
            },
        ),
        ("skip", {"WMS_OUT_20261121_EC20261121001.xml": b"theirs"}),
        ("overwrite", {"WMS_OUT_20261121_EC20261121001.xml": None}),
    ],
)
def test_if_exists_policies(
    exchange: Exchange, policy: str, expected: dict[str, bytes | None]
) -> None:
    """unique adds _1, skip leaves the name alone, overwrite replaces; the rest arrive."""
    exchange.write_config()
    exchange.config.write_text(
        exchange.config.read_text().replace(
            'name = "WMS_OUT_{OrderDate}_{OrderNo}.xml" }',
            f'name = "WMS_OUT_{{OrderDate}}_{{OrderNo}}.xml", if_exists = "{policy}" }}',
        )
    )
    exchange.outbox.mkdir()
    (exchange.outbox / "WMS_OUT_20261121_EC20261121001.xml").write_bytes(b"theirs")
    exchange.drop_sample()
    result = CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert result.exit_code == 0, result.output
    got = outputs(exchange.outbox)
    golden = EXPECTED["WMS_OUT_20261121_EC20261121001.xml"]
    for name, data in expected.items():
        assert got[name] == (golden if data is None else data)
    assert (
        got["WMS_OUT_20261121_EC20261121002.xml"] == EXPECTED["WMS_OUT_20261121_EC20261121002.xml"]
    )


def test_cron_schedules_use_day_names_and_time_zones() -> None:
    """Numeric days of the week are refused (they differ between cron flavours)."""
    assert ScheduleSpec(cron="0 2 * * mon-fri", timezone="Asia/Shanghai").cron
    with pytest.raises(ValueError, match="by name"):
        ScheduleSpec(cron="0 2 * * 1-5")
    with pytest.raises(ValueError, match="unknown timezone"):
        ScheduleSpec(cron="0 2 * * *", timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="not both"):
        ScheduleSpec(cron="0 2 * * *", interval=60)


@pytest.mark.sftp
def test_a_slowly_written_file_on_sftp_is_taken_only_when_complete(
    exchange: Exchange, sshd: SshServer
) -> None:
    """Polling an SFTP folder: a file still growing between looks is held until stable."""
    fast(exchange, settle=1.5)
    drop = sshd.folder("sftp-slow")
    sftp_source(exchange, sshd, drop)
    lines = SAMPLE.read_bytes().split(b"\r\n")
    with daemon(exchange):
        target = drop / "orders_20261121.csv"
        with open(target, "wb") as fh:
            for line in lines:
                fh.write(line + b"\r\n" if line else b"")
                fh.flush()
                time.sleep(0.6)
                assert outputs(exchange.outbox) == {}, "taken while still being written"
        target.chmod(0o666)
        wait_for(lambda: outputs(exchange.outbox) == EXPECTED, what="the delivery")


@pytest.mark.sftp
def test_sigterm_during_an_sftp_delivery_leaves_the_target_clean(
    exchange: Exchange, sshd: SshServer
) -> None:
    """Over SFTP too: the file in hand is finished, complete, nothing temporary left."""
    source = stock_count_exchange(exchange)
    folder = sshd.folder("sigterm")
    sftp_target(exchange, sshd, folder)
    assert signal_with_work_in_hand(exchange, source, 1) == 0
    assert os.listdir(folder) == ["OMS_INV_stockcount_big.csv"]
    assert (folder / "OMS_INV_stockcount_big.csv").read_bytes().count(b"\r\n") == 40_001


def test_check_names_a_cron_line_apscheduler_cannot_read(exchange: Exchange) -> None:
    """`xchange check` reports an impossible cron field with the file and the key."""
    exchange.write_config(route_extra='schedule = { cron = "61 2 * * mon" }')
    result = CliRunner().invoke(main, ["check", "--config", str(exchange.config)])
    assert result.exit_code == 2
    assert f"{exchange.config}: routes[0].schedule.cron:" in result.stderr


def test_a_watched_folder_is_looked_at_by_its_events_and_due_retries_not_listed(
    tmp_path: Path,
) -> None:
    """Between rescans, a watched local folder is not listed: each look stats the names
    its file events carry, the files it holds and the retries that are due (before: the
    daemon never made such a look, and listed the whole folder every poll, against
    README's "a folder with a long history costs nothing extra"). A file waiting for a
    retry goes once its target is mended, with no event to name it."""
    drop, target = tmp_path / "drop", tmp_path / "target"
    drop.mkdir()
    target.write_text("not a folder yet")  # deliveries fail (transient) until mended
    config = tmp_path / "xchange.toml"
    config.write_text(
        f"""
[journal]
path = "{tmp_path / "state" / "journal.sqlite"}"

[quarantine]
path = "{tmp_path / "quarantine"}"

[daemon]
poll_interval = 0.3
rescan = 600

[endpoints.drop]
type = "local"
path = "{drop}"

[endpoints.out]
type = "local"
path = "{target}"

[[routes]]
name = "bulk"
source = {{ endpoint = "drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "out", name = "{{source_name}}" }}
after = {{ action = "leave" }}
ready = {{ settle = 0 }}
retry = {{ attempts = 1, initial = 0.01, maximum = 0.01, later = 1 }}
""",
        encoding="utf-8",
    )
    for n in range(200):  # the folder's history: delivered long ago, left in place
        (drop / f"old-{n:03d}.txt").write_bytes(b"x")
    log = tmp_path / "daemon.log"
    with open(log, "ab") as writer:
        argv = xchange_argv(config, "--verbose", "run")
        proc = subprocess.Popen(argv, stdout=writer, stderr=writer, env=xchange_env())
        try:
            time.sleep(1.0)  # the start look (a listing)
            (drop / "a.dat").write_bytes(b"first")
            wait_for(lambda: b'"retry_later": 1' in log.read_bytes(), 20, "the failed try")
            target.unlink()
            target.mkdir()  # mended: no file event says so
            wait_for(lambda: (target / "a.dat").exists(), 20, "the due retry")
            for name in ("b.dat", "c.dat"):
                (drop / name).write_bytes(name.encode())
                wait_for(lambda name=name: (target / name).exists(), 20, name)
            time.sleep(1.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    looks = [e for e in events if e["event"] == "route.summary"]
    listed = [e for e in events if e["event"] == "route.listed"]
    assert len(looks) >= 8, len(looks)
    assert len(listed) == 1, [e.get("timestamp") for e in listed]  # the start look only

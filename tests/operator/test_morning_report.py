"""The morning report per route and day: files, documents, the control totals agreed,
files stopped because totals differed, repeats stopped, deliveries not collected yet,
all read from the journal."""

from __future__ import annotations

import json
from datetime import datetime

from click.testing import CliRunner

from tests.conftest import Exchange
from tests.daemons import SAMPLE, private_formats
from xchange.cli import main

TARGET = 'name = "WMS_OUT_{OrderDate}_{OrderNo}.xml" }'


def run(exchange: Exchange) -> str:
    result = CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    return result.output


def test_the_report_gives_each_day_its_files_documents_totals_repeats_and_pickups(
    exchange: Exchange,
) -> None:
    exchange.write_config(route_extra='dedupe_key = "OrderNo"')
    text = exchange.config.read_text().replace(TARGET, TARGET[:-1] + ", pickup = true }")
    exchange.config.write_text(text)
    formats = private_formats(exchange)
    (exchange.inbox / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    assert "1 delivered" in run(exchange)
    # The partner sends two orders again, with one new one.
    again = SAMPLE.read_bytes().replace(b"EC20261121003", b"EC20261121009")
    (exchange.inbox / "orders_20261122.csv").write_bytes(again)
    assert "1 delivered" in run(exchange)
    # A mapping that changes one amount: stopped by the totals.
    mapping = formats / "shop-to-wms-outbound.toml"
    mapping.write_text(
        mapping.read_text(encoding="utf-8").replace(
            'UnitPrice = "goods_price"', 'UnitPrice = { expr = "goods_price + 0.01" }'
        ),
        encoding="utf-8",
    )
    other = SAMPLE.read_bytes().replace(b"EC202611210", b"EC202611219")
    (exchange.inbox / "orders_20261123.csv").write_bytes(other)
    assert "1 quarantined" in run(exchange)

    # Each file counts what it delivered: the second file's repeats once, in the first.
    shown = CliRunner().invoke(main, ["report", "--config", str(exchange.config)])
    assert shown.exit_code == 0, shown.output
    today = datetime.now().astimezone().date().isoformat()
    assert (
        f"  {today}: 2 file(s), 4 document(s); totals: amount 2126.20, lines 7, pieces 12, "
        "prices 1826.70; "
        "1 file(s) stopped: control totals differed; 2 repeat(s) stopped; "
        "4 delivered, not collected yet"
    ) in shown.output, shown.output
    raw = CliRunner().invoke(main, ["report", "--json", "--config", str(exchange.config)])
    [route] = json.loads(raw.output)["routes"]
    [day] = route["days"]
    assert day == {
        "day": today,
        "files": 2,
        "documents": 4,
        "totals": {"amount": "2126.20", "lines": "7", "pieces": "12", "prices": "1826.70"},
        "differences": 1,
        "repeats": 2,
        "repeat_files": 0,
        "not_collected": 4,
    }


def test_a_file_stopped_whole_for_its_repeats_is_counted_as_such_in_its_day(
    exchange: Exchange,
) -> None:
    exchange.write_config(route_extra='dedupe_key = "OrderNo"\nrepeats = "quarantine"')
    (exchange.inbox / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    assert "1 delivered" in run(exchange)
    again = SAMPLE.read_bytes().replace(b"EC20261121003", b"EC20261121009")
    (exchange.inbox / "orders_20261122.csv").write_bytes(again)
    assert "1 quarantined" in run(exchange)
    raw = CliRunner().invoke(main, ["report", "--json", "--config", str(exchange.config)])
    [route] = json.loads(raw.output)["routes"]
    [day] = route["days"]
    assert (day["files"], day["repeat_files"], day["repeats"], day["differences"]) == (1, 1, 0, 0)
    shown = CliRunner().invoke(main, ["report", "--config", str(exchange.config)]).output
    assert "1 file(s) stopped: documents delivered before" in shown

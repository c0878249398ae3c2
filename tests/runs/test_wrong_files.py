"""A file that is not what its layout says is quarantined in a run, never archived as
delivered; its reason is one bounded line, the quarantine report keeps all of it."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tests.conftest import Exchange
from xchange.cli import main


def test_a_wrong_file_is_quarantined_in_a_run_not_archived(exchange: Exchange) -> None:
    (exchange.inbox / "orders_20261201.csv").write_bytes(b"hello world\r\n")
    result = CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert result.exit_code == 1, result.output
    assert "1 quarantined" in result.stdout
    assert not (exchange.inbox / "archive").exists()
    kept = [p for p in exchange.quarantine.rglob("*_orders_20261201.csv") if p.is_file()]
    assert any(p.read_bytes() == b"hello world\r\n" for p in kept)


def test_a_long_reason_is_one_bounded_line_and_the_report_keeps_it_all(
    exchange: Exchange,
) -> None:
    """A 10,000-character root element name: the summary, journal and alert reason is one
    line cut with "...", the quarantine report has the whole message."""
    from xchange.errors import REASON_LIMIT

    tag = "X" * 10_000
    exchange.write_config().write_text(
        exchange.config.read_text()
        .replace('pattern = "orders_*.csv"', 'pattern = "*.xml"')
        .replace('source_layout = "shop-order-lines"', 'source_layout = "wms-stock-count"')
        .replace('mapping = "shop-to-wms-outbound"', 'mapping = "wms-stock-count-to-oms-inventory"')
        .replace('target_layout = "wms-outbound-order"', 'target_layout = "oms-inventory"')
        .replace("WMS_OUT_{{OrderDate}}_{{OrderNo}}.xml", "x.csv")
        .replace("WMS_OUT_{OrderDate}_{OrderNo}.xml", "x.csv")
    )
    (exchange.inbox / "count.xml").write_text(f"<{tag}/>")
    result = CliRunner().invoke(
        main, ["--log-format", "json", "run", "--once", "--config", str(exchange.config)]
    )
    assert result.exit_code == 1, result.output
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    (event,) = [e for e in events if e["event"] == "file.quarantined"]
    assert len(event["error"]) <= REASON_LIMIT and event["error"].endswith("...")
    assert "\n" not in event["error"]
    (report,) = exchange.quarantine.rglob("*.report.txt")
    assert tag in report.read_text(encoding="utf-8")
    listed = CliRunner().invoke(main, ["quarantine", "list", "--config", str(exchange.config)])
    assert tag not in listed.output

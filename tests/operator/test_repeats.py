"""The same document twice: a target layout that declares a business key stops a repeat by
default, and a route chooses what a repeat does (skip and report, alert, quarantine the
file, or deliver it again)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import Exchange
from tests.daemons import SAMPLE
from tests.servers import http_server
from xchange.cli import main
from xchange.config import load_config
from xchange.pipeline import make_pipeline


def run(exchange: Exchange) -> Result:
    return CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])


def reexport(exchange: Exchange) -> None:
    """The shop exports two orders again under a new file name, with one new order."""
    again = SAMPLE.read_bytes().replace(b"EC20261121003", b"EC20261121009")
    (exchange.inbox / "orders_20261122.csv").write_bytes(again)


def delivered(outbox: Path) -> list[str]:
    return sorted(p.name for p in outbox.iterdir())


def test_a_target_layout_with_a_business_key_stops_repeats_without_route_settings(
    exchange: Exchange,
) -> None:
    """wms-outbound-order declares business_key = "OrderNo": the route says nothing."""
    assert "dedupe_key" not in exchange.config.read_text()
    exchange.drop_sample()
    assert run(exchange).exit_code == 0
    reexport(exchange)
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert "skipped (already delivered): orders_20261122.csv (#2): EC20261121001 (in #1 " in (
        result.output
    )
    assert len(delivered(exchange.outbox)) == 4


def test_a_route_that_quarantines_repeats_sends_nothing_of_the_file_and_names_the_earlier(
    exchange: Exchange,
) -> None:
    exchange.write_config(route_extra='repeats = "quarantine"')
    exchange.drop_sample()
    run(exchange)
    reexport(exchange)
    result = run(exchange)
    assert result.exit_code == 1, result.output
    assert "1 quarantined" in result.output
    assert len(delivered(exchange.outbox)) == 3  # not even the new order
    (report,) = exchange.quarantine.rglob("*.report.txt")
    text = report.read_text(encoding="utf-8")
    assert "2 document(s) delivered before: EC20261121001 (in #1 orders_20261121.csv, " in text
    assert 'repeats = "quarantine"' in text
    # Sent on purpose anyway: the operator forces it.
    forced = CliRunner().invoke(
        main, ["reprocess", "2", "--force", "--config", str(exchange.config)]
    )
    assert forced.exit_code == 0, forced.output
    assert len(delivered(exchange.outbox)) == 4


def test_a_route_that_alerts_repeats_delivers_the_rest_and_sends_one_alert(
    exchange: Exchange,
) -> None:
    with http_server() as (url, received):
        exchange.write_config(route_extra='repeats = "alert"')
        exchange.config.write_text(
            exchange.config.read_text()
            + f'\n[alerts]\n[[alerts.sinks]]\ntype = "webhook"\nurl = "{url}"\n'
        )
        exchange.drop_sample()
        run(exchange)
        assert received == []
        reexport(exchange)
        assert run(exchange).exit_code == 0
        [alert] = received  # (and no "recovered": the route never failed)
    assert "2 document(s) delivered before came again" in alert["json"]["title"]
    assert "orders_20261122.csv: EC20261121001 (in #1 orders_20261121.csv" in alert["json"]["text"]
    assert len(delivered(exchange.outbox)) == 4


def test_a_route_may_deliver_repeats_again(exchange: Exchange) -> None:
    """repeats = "deliver": no check; the re-exported orders are converted and sent
    again (here the same bytes under the same names, recognised on the target)."""
    exchange.write_config(route_extra='repeats = "deliver"')
    config = load_config(exchange.config)
    assert not make_pipeline(config.route("shop-orders"), config.formats).dedupes
    exchange.drop_sample()
    run(exchange)
    reexport(exchange)
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert "1 delivered (3 documents)" in result.output
    assert "skipped (already delivered)" not in result.stdout
    assert len(delivered(exchange.outbox)) == 4


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ('repeats = "deliver"\ndedupe_key = "OrderNo"', 'repeats = "deliver" sends documents'),
        ('repeats = "sometimes"', "repeats"),
    ],
)
def test_check_refuses_repeats_it_cannot_honour(exchange: Exchange, extra: str, said: str) -> None:
    exchange.write_config(route_extra=extra)
    result = CliRunner().invoke(main, ["check", "--config", str(exchange.config)])
    assert result.exit_code != 0
    assert said in result.output


def test_find_names_every_file_that_carried_an_order_and_what_became_of_it(
    exchange: Exchange,
) -> None:
    """The order delivered by #1, left out of #2 as a repeat, then sent on purpose by
    #2 (reprocess --force): find names both files and how."""
    exchange.write_config(route_extra='repeats = "quarantine"')
    exchange.drop_sample()
    run(exchange)
    reexport(exchange)
    run(exchange)
    shown = CliRunner().invoke(main, ["find", "EC20261121001", "--config", str(exchange.config)])
    assert "business key EC20261121001, left out as a repeat" in shown.output, shown.output
    assert "#1 shop-orders" in shown.output and "#2 shop-orders" in shown.output
    CliRunner().invoke(
        main, ["reprocess", "2", "--force", "--reason", "asked", "--config", str(exchange.config)]
    )
    again = CliRunner().invoke(
        main, ["find", "EC20261121001", "--json", "--config", str(exchange.config)]
    )
    files = {f["id"]: f["matched"] for f in json.loads(again.output)["files"]}
    assert files[1] == ["business key"]
    assert files[2] == ["business key", "business key, left out as a repeat"]

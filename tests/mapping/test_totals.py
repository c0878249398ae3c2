"""Control totals: a source's counts and exact sums, and its outputs' (read again through
the target layout, a path that shares nothing with the mapping), agree before anything
is delivered; a mapping that changes one amount is stopped, the file quarantined with
both figures, nothing sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import SAMPLES, Exchange
from tests.daemons import SAMPLE, private_formats
from xchange.cli import main
from xchange.layout import Layout
from xchange.mapping import Mapping, check_mapping
from xchange.totals import readable

MAPPING = "shop-to-wms-outbound.toml"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def run(exchange: Exchange) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    return result.exit_code, result.output


def test_a_mapping_that_changes_one_amount_is_stopped_and_nothing_is_delivered(
    exchange: Exchange,
) -> None:
    formats = private_formats(exchange)
    edit(
        formats / MAPPING,
        'UnitPrice = "goods_price"',
        'UnitPrice = { expr = "goods_price + 0.01" }',
    )
    (exchange.inbox / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    code, out = run(exchange)
    assert code == 1, out
    assert "1 quarantined" in out
    assert "control totals differ (prices: the source has" in out
    assert not [p for p in exchange.outbox.rglob("*") if p.is_file()]  # nothing sent
    (report,) = exchange.quarantine.rglob("*.report.txt")
    text = report.read_text(encoding="utf-8")
    assert "prices: the source has 1637.30, the outputs 1637.35" in text  # a cent a line


def test_delivered_files_carry_their_totals_in_the_journal(exchange: Exchange) -> None:
    (exchange.inbox / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    code, out = run(exchange)
    assert code == 0, out
    listed = CliRunner().invoke(
        main, ["journal", "show", "1", "--json", "--config", str(exchange.config)]
    )
    history = json.loads(listed.output)["history"]
    assert any("totals: lines 5, pieces 8, prices 1637.30" in (h["note"] or "") for h in history), (
        history
    )


@pytest.mark.parametrize(
    ("totals", "extra", "said"),
    [
        ({"x": {"source": "goods_number"}}, {}, "give both source and target"),
        ({"x": {"source": "nope", "target": "Quantity"}}, {}, "has no field 'nope'"),
        ({"x": {"source": "goods_name", "target": "Quantity"}}, {}, "only numbers add up"),
        ({"x": {}}, {"filter": "goods_number > 1"}, "a filter leaves records out on purpose"),
    ],
)
def test_check_says_what_is_wrong_with_totals(
    tmp_path: Path, totals: dict[str, object], extra: dict[str, object], said: str
) -> None:
    from tests.conftest import FORMATS
    from xchange.layout import load_layout
    from xchange.mapping import load_mapping

    mapping = load_mapping(FORMATS, "shop-to-wms-outbound")
    changed = Mapping.model_validate(
        {
            **mapping.model_dump(by_alias=True),
            "totals": totals,
            **extra,
            "source_file": tmp_path / "m.toml",
        }
    )
    problems = check_mapping(
        changed,
        load_layout(FORMATS, "shop-order-lines"),
        load_layout(FORMATS, "wms-outbound-order"),
    )
    assert any(said in p and "totals" in p for p in problems), problems


def test_totals_are_not_checked_where_documents_were_skipped_as_delivered_already(
    exchange: Exchange,
) -> None:
    """A route with dedupe_key leaves repeated documents out on purpose: then the totals
    cannot agree, and the file says it was not checked (a warning), instead of a false
    difference."""
    exchange.write_config(route_extra='dedupe_key = "OrderNo"')
    (exchange.inbox / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    assert run(exchange)[0] == 0
    again = SAMPLE.read_bytes().replace(b"EC20261121003", b"EC20261121009")
    (exchange.inbox / "orders_20261122.csv").write_bytes(again)
    result = CliRunner().invoke(
        main, ["--log-format", "json", "run", "--once", "--config", str(exchange.config)]
    )
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    (delivered,) = [e for e in events if e["event"] == "file.delivered"]
    assert delivered["skipped_keys"] and delivered["documents"] == 1
    assert any("control totals not checked: 2 document(s)" in w for w in delivered["warnings"])


def test_written_files_are_read_back_as_their_layout_writes_them() -> None:
    """A wrapped JSON document is read under its wrap, a batch under its batch key or root."""
    kingdee = Layout.model_validate(
        {
            "name": "k",
            "codec": "json",
            "json": {"wrap": "Model", "batch_key": "docs"},
            "fields": [{"name": "a"}],
        }
    )
    assert readable(kingdee).json_.records == "$.docs[*].Model"
    batch = Layout.model_validate(
        {
            "name": "x",
            "codec": "xml",
            "xml": {"root": "Order", "batch_root": "Orders"},
            "fields": [{"name": "a"}],
        }
    )
    assert readable(batch).xml is not None
    assert (readable(batch).xml.root, readable(batch).xml.records) == ("Orders", "/Orders/Order")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("route", "agreed"),
    [
        ("shop-orders", {"lines": "5", "pieces": "8", "prices": "1637.30"}),
        ("purchase-inbound", {"lines": "3", "quantity": "850"}),
    ],
)
def test_shipped_exchanges_check_their_totals_on_the_samples(
    route: str, agreed: dict[str, str]
) -> None:
    """Two shipped exchanges declare totals; their samples agree on them (and still come
    out byte for byte as their golden files: tests/mapping/test_pipeline.py)."""
    import io
    from datetime import datetime
    from decimal import Decimal

    from tests.conftest import FORMATS, REPO
    from xchange.config import load_config
    from xchange.pipeline import Pipeline
    from xchange.sink import Sink

    pipeline = Pipeline(load_config(REPO / "config" / "demo.toml").route(route), FORMATS)
    (source,) = (SAMPLES / route / "in").iterdir()
    conversion = pipeline.convert_stream(
        io.BytesIO(source.read_bytes()), source.name, datetime(2026, 11, 21, 12), Sink()
    )
    assert conversion.totals == {k: Decimal(v) for k, v in agreed.items()}

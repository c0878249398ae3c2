"""Control totals: a source's counts and exact sums, and its outputs' (read again through
the target layout, a path that shares nothing with the mapping), agree before anything
is delivered; a mapping that changes one amount is stopped, the file quarantined with
both figures, nothing sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import SAMPLES, Exchange
from tests.daemons import SAMPLE, private_formats
from xchange.cli import main
from xchange.layout import Layout
from xchange.mapping import Mapping, check_mapping
from xchange.totals import readable

MAPPING = "shop-to-wms-outbound.toml"
BY_NOPE = {"source": "nope", "target": "OrderNo"}
BY_TABLE = {"source": "order_sn", "target": "OrderNo", "table": "nope"}
BY_KINDS = {"source": "add_time", "target": "OrderDate"}


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
    assert "prices: the source has 1637.30, the outputs 1637.35" in out
    assert not [p for p in exchange.outbox.rglob("*") if p.is_file()]  # nothing sent
    (report,) = exchange.quarantine.rglob("*.report.txt")
    text = report.read_text(encoding="utf-8")
    assert "prices: the source has 1637.30, the outputs 1637.35" in text  # a cent a line


def test_a_mapping_that_swaps_two_lines_quantities_is_stopped_by_the_orders_value(
    exchange: Exchange,
) -> None:
    """Pieces and prices stay as they were; the value (quantity times price) does not."""
    formats = private_formats(exchange)
    edit(
        formats / MAPPING,
        'Quantity = "goods_number"',
        "Quantity = { expr = \"(1 if goods_number == 2 else 2) if order_sn == 'EC20261121001' "
        'else goods_number" }',
    )
    (exchange.inbox / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    code, out = run(exchange)
    assert code == 1, out
    assert "amount: the source has 1817.00, the outputs 1846.10" in out
    assert "pieces" not in out.split("control totals differ")[1].split("):")[0]
    assert not [p for p in exchange.outbox.rglob("*") if p.is_file()]


def test_delivered_files_carry_their_totals_in_the_journal(exchange: Exchange) -> None:
    (exchange.inbox / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    code, out = run(exchange)
    assert code == 0, out
    listed = CliRunner().invoke(
        main, ["journal", "show", "1", "--json", "--config", str(exchange.config)]
    )
    history = json.loads(listed.output)["history"]
    said = "totals: amount 1817.00, lines 5, pieces 8, prices 1637.30"
    assert any(said in (h["note"] or "") for h in history), history


@pytest.mark.parametrize(
    ("totals", "extra", "said"),
    [
        ({"x": {"source": "goods_number"}}, {}, "give both source and target"),
        ({"x": {"source": "nope", "target": "Quantity"}}, {}, "has no field 'nope'"),
        ({"x": {"source": "goods_name", "target": "Quantity"}}, {}, "only numbers add up"),
        ({"x": {}}, {"filter": "goods_number > 1"}, "a filter leaves records out on purpose"),
        (
            {"x": {"source": "goods_number", "target": "Quantity", "by": BY_NOPE}},
            {},
            "by.source: layout",
        ),
        (
            {"x": {"source": "goods_number", "target": "Quantity", "by": BY_TABLE}},
            {},
            "the mapping has no table 'nope'",
        ),
        ({"x": {"stated": "goods_price", "stated_per": "document"}}, {}, "needs a nested source"),
        ({"x": {"stated": "goods_name"}}, {}, "is string: not a figure"),
        ({"x": {"stated_per": "file"}}, {}, "give stated"),
        (
            {"x": {"source": {"expr": "goods_number * nope"}, "target": "Quantity"}},
            {},
            "source.expr",
        ),
        (
            {"x": {"source": "goods_number", "target": "Quantity", "by": BY_KINDS}},
            {},
            "is datetime and 'OrderDate' is date",
        ),
        ({"x": {"stated": "goods_price", "stated_per": "group"}}, {}, "group needs by"),
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


def test_totals_still_cover_documents_skipped_as_delivered_already(
    exchange: Exchange,
) -> None:
    """A re-export with one order delivered before: the repeat is left out, and the totals
    still compare everything read with everything the mapping made (the repeat read back
    as if written): they agree, and the file says its totals."""
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
    assert not delivered.get("warnings")
    shown = CliRunner().invoke(
        main, ["journal", "show", "2", "--json", "--config", str(exchange.config)]
    )
    notes = " ".join(h["note"] or "" for h in json.loads(shown.output)["history"])
    assert (
        "totals: amount 1817.00, lines 5, pieces 8, prices 1637.30 (of which repeats left "
        "out: amount 1507.80, lines 3, pieces 4, prices 1447.90)"
    ) in notes


def test_a_changed_amount_beside_a_repeat_is_still_stopped(exchange: Exchange) -> None:
    """One order delivered before, one new: the mapping that changes an amount is stopped
    as it is in a file without repeats (the repeat does not switch the check off)."""
    formats = private_formats(exchange)
    (exchange.inbox / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    assert run(exchange)[0] == 0
    edit(
        formats / MAPPING,
        'UnitPrice = "goods_price"',
        'UnitPrice = { expr = "goods_price + 0.01" }',
    )
    again = SAMPLE.read_bytes().replace(b"EC20261121003", b"EC20261121009")
    (exchange.inbox / "orders_20261122.csv").write_bytes(again)
    code, out = run(exchange)
    assert code == 1, out
    assert "prices: the source has 1637.30, the outputs 1637.35" in out
    assert not (exchange.outbox / "WMS_OUT_20261121_EC20261121009.xml").exists()


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
        ("shop-orders", {"lines": "5", "pieces": "8", "prices": "1637.30", "amount": "1817.00"}),
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


def converted(tmp_path: Path, route: str, data: bytes, name: str, **edits: tuple[str, str]) -> Any:
    """Convert ``data`` on a shipped route with its formats edited (file: (old, new))."""
    import io
    import shutil
    from datetime import datetime

    from tests.conftest import FORMATS, REPO
    from xchange.config import load_config
    from xchange.pipeline import Pipeline
    from xchange.sink import Sink

    formats = tmp_path / "formats"
    if not formats.exists():
        shutil.copytree(FORMATS, formats)
    for file, (old, new) in edits.items():
        edit(formats / f"{file.replace('_', '-')}.toml", old, new)
    pipeline = Pipeline(load_config(REPO / "config" / "demo.toml").route(route), formats)
    return pipeline.convert_stream(io.BytesIO(data), name, datetime(2026, 11, 21, 12), Sink())


PER_ORDER = (
    'pieces = { source = "goods_number", target = "Quantity" }',
    'pieces = { source = "goods_number", target = "Quantity" }\n'
    'per_order = { source = "goods_number", target = "Quantity", '
    'by = { source = "order_sn", target = "OrderNo" } }',
)


def test_totals_per_order_agree_and_a_moved_piece_is_named_with_both_orders(
    tmp_path: Path,
) -> None:
    from xchange.errors import TotalsDiffer

    good = converted(
        tmp_path, "shop-orders", SAMPLE.read_bytes(), SAMPLE.name, shop_to_wms_outbound=PER_ORDER
    )
    assert {k: str(v) for k, v in good.totals.items() if k.startswith("per_order")} == {
        "per_order[EC20261121001]": "3",
        "per_order[EC20261121002]": "1",
        "per_order[EC20261121003]": "4",
    }
    moved = (
        'Quantity = "goods_number"',
        "Quantity = { expr = \"goods_number + 1 if order_sn == 'EC20261121001' and "
        'goods_number == 2 else (goods_number - 1 if goods_number == 3 else goods_number)" }',
    )
    with pytest.raises(TotalsDiffer) as caught:
        converted(
            tmp_path, "shop-orders", SAMPLE.read_bytes(), SAMPLE.name, shop_to_wms_outbound=moved
        )
    said = str(caught.value)
    assert "pieces" not in said  # the file's sum agrees ...
    assert "per_order[EC20261121001]: the source has 3, the outputs 4" in said
    assert "per_order[EC20261121003]: the source has 4, the outputs 3" in said


OMS = SAMPLES / "oms-kingdee-orders" / "in" / "sales_orders_20261121.json"
PER_CURRENCY = (
    "[tables.sale_orgs]",
    "[totals]\n"
    'quantity = { source = "qty", target = "FQty", '
    'by = { source = "currency", target = "FCurrency", table = "currencies" }, '
    'stated = "total_qty" }\n\n[tables.sale_orgs]',
)
STATED_IN_FILE = (
    '[[fields]]\nname = "remark"\n',
    '[[fields]]\nname = "remark"\n\n[[fields]]\nname = "total_qty"\ncolumn = "$.total_qty"\n'
    'type = "integer"\n',
)


def oms(total: int, usd: bool = True) -> bytes:
    data = json.loads(OMS.read_text(encoding="utf-8"))
    if usd:
        data["orders"][1]["currency"] = "USD"
    data["total_qty"] = total
    return json.dumps(data, ensure_ascii=False).encode()


def test_totals_kept_per_currency_agree_where_the_mapping_translates_the_currency(
    tmp_path: Path,
) -> None:
    """Quantities per currency: the source's CNY is the target's PRE001 (through the
    mapping's own table); the export's stated total_qty is checked against the file."""
    good = converted(
        tmp_path,
        "oms-kingdee-orders",
        oms(16),
        OMS.name,
        oms_to_kingdee_sale_order=PER_CURRENCY,
        oms_sales_order=STATED_IN_FILE,
    )
    assert {k: str(v) for k, v in good.totals.items()} == {
        "quantity[PRE001]": "3",
        "quantity[PRE007]": "13",
    }
    from xchange.totals import summary

    assert summary(good.totals) == "totals: quantity[PRE001] 3, quantity[PRE007] 13"


def test_a_file_whose_stated_total_differs_from_its_lines_is_stopped(tmp_path: Path) -> None:
    from xchange.errors import TotalsDiffer

    with pytest.raises(TotalsDiffer) as caught:
        converted(
            tmp_path,
            "oms-kingdee-orders",
            oms(17),
            OMS.name,
            oms_to_kingdee_sale_order=PER_CURRENCY,
            oms_sales_order=STATED_IN_FILE,
        )
    assert "quantity of the file: the source states 17, what was read gives 16" in str(caught.value)


RECEIPTS = SAMPLES / "purchase-inbound" / "in" / "inbound_20261121.xml"
STATED_PER_RECEIPT = (
    'quantity = { source = "qty", target = "FRealQty" }',
    'quantity = { source = "qty", target = "FRealQty", stated = "total_qty" }',
)
TOTAL_QTY_FIELD = (
    "[[line_fields]]",
    '[[fields]]\nname = "total_qty"\ncolumn = "TotalQty"\ntype = "decimal"\n\n[[line_fields]]',
)


@pytest.mark.parametrize(("first", "second", "wrong"), [("800", "50", None), ("800", "49", "49")])
def test_each_documents_stated_total_is_checked_against_its_lines(
    tmp_path: Path, first: str, second: str, wrong: str | None
) -> None:
    """A receipt's own <TotalQty> must be the sum of its items' quantities."""
    from xchange.errors import TotalsDiffer

    text = RECEIPTS.read_text(encoding="utf-8")
    for no, total in (("RK20261121-01", first), ("RK20261121-02", second)):
        text = text.replace(
            f'<Receipt no="{no}">', f'<Receipt no="{no}">\n    <TotalQty>{total}</TotalQty>'
        )
    args = (tmp_path, "purchase-inbound", text.encode(), RECEIPTS.name)
    edits = {
        "wms_to_kingdee_purchase_inbound": STATED_PER_RECEIPT,
        "wms_purchase_inbound": TOTAL_QTY_FIELD,
    }
    if wrong is None:
        assert converted(*args, **edits).totals["quantity"] == 850
        return
    with pytest.raises(TotalsDiffer) as caught:
        converted(*args, **edits)
    said = str(caught.value)
    assert f"total_qty states {wrong}, its lines give quantity 50" in said
    assert "RK20261121-01" not in said and "800" not in said


def test_check_refuses_totals_on_a_mapping_of_steps(tmp_path: Path) -> None:
    """Nothing would compare them: refused, not silently agreed."""
    from tests.conftest import FORMATS
    from xchange.layout import load_layout
    from xchange.mapping import load_mapping

    mapping = load_mapping(FORMATS, "shop-order-line-shares")
    assert mapping.steps
    changed = Mapping.model_validate(
        {
            **mapping.model_dump(by_alias=True),
            "totals": {"lines": {}},
            "source_file": tmp_path / "m.toml",
        }
    )
    problems = check_mapping(
        changed,
        load_layout(FORMATS, mapping.source),
        load_layout(FORMATS, mapping.target),
    )
    assert any("a mapping of steps cannot declare control totals" in p for p in problems)

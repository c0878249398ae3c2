"""The data plane of the shop-orders exchange: golden outputs and reports a person can act on."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import FORMATS, REPO, SAMPLES
from xchange.archives import convert_file
from xchange.cli import main
from xchange.config import load_config
from xchange.errors import DecodeError, MappingError, ValidationFailed
from xchange.manifest import manifest_name
from xchange.pipeline import Pipeline
from xchange.sink import Sink

NOW = datetime(2026, 11, 21, 12, 0, 0)
IN = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"
EXPECTED = SAMPLES / "shop-orders" / "expected"


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    config = load_config(REPO / "config" / "demo.toml")
    return Pipeline(config.route("shop-orders"), FORMATS)


def gbk_csv(*lines: str) -> bytes:
    header = (
        "订单号,下单时间,渠道,收货人,手机,省份,城市,区县,详细地址,"
        "商品编码,商品名称,数量,单价,发货仓,买家留言"
    )
    return ("\r\n".join([header, *lines]) + "\r\n").encode("gbk")


GOOD = (
    "EC20261121009,2026-11-21 09:00:00,天猫,赵六,13800000000,"
    "上海市,上海市,,人民路1号,SKU-1,杯子,1,9.90,上海仓,"
)


DEMO = load_config(REPO / "config" / "demo.toml")
GOLDEN = [
    (route.name, source)
    for route in DEMO.routes
    for source in sorted((SAMPLES / route.name / "in").iterdir())
]


def expected_outputs(route: str) -> dict[str, bytes]:
    """The route's golden outputs, but for the manifest its delivery writes after them
    (no conversion makes one: the run's test checks it)."""
    config = DEMO.route(route)
    written = {p.name: p.read_bytes() for p in (SAMPLES / route / "expected").iterdir()}
    if config.target.manifest is None:
        return written
    return {
        name: data
        for name, data in written.items()
        if not any(
            name == manifest_name(config, source.name, NOW)
            for source in (SAMPLES / route / "in").iterdir()
        )
    }


@pytest.mark.parametrize(("route", "source"), GOLDEN, ids=[r for r, _ in GOLDEN])
def test_every_sample_becomes_its_golden_outputs_byte_for_byte(route: str, source: Path) -> None:
    """Each exchange's sample input converts to exactly the files under expected/ (an
    archive's entries one after the other)."""
    pipeline = Pipeline(DEMO.route(route), FORMATS)
    with open(source, "rb") as stream:
        outputs = convert_file(
            pipeline, DEMO.route(route), stream, source.name, NOW, Sink()
        ).outputs
    assert {o.name: o.data for o in outputs} == expected_outputs(route)


def test_every_exchange_has_samples_and_a_route() -> None:
    """samples/<exchange>/ exists for each demo route, and every sample folder has a route."""
    assert {r for r, _ in GOLDEN} == {p.name for p in SAMPLES.iterdir() if p.is_dir()}
    assert len(DEMO.routes) >= 5


@pytest.mark.parametrize(("route", "source"), GOLDEN, ids=[r for r, _ in GOLDEN])
def test_convert_command_reproduces_the_golden_outputs(
    route: str, source: Path, tmp_path: Path
) -> None:
    """`xchange convert` writes the same bytes as the golden outputs into -o DIR."""
    result = CliRunner().invoke(
        main,
        [
            "convert",
            "--config",
            str(REPO / "config" / "demo.toml"),
            "--route",
            route,
            str(source),
            "-o",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == expected_outputs(route)


def test_shop_orders_become_one_document_per_order(pipeline: Pipeline) -> None:
    """The flat order lines are grouped into one nested document per order number."""
    outputs = pipeline.convert(IN.read_bytes(), IN.name, NOW)
    assert [o.documents for o in outputs] == [1, 1, 1]
    assert outputs[0].data.count(b"<Item>") == 2


def test_a_broken_file_reports_every_problem_with_line_field_rule_and_value(
    pipeline: Pipeline,
) -> None:
    """All problems are collected, each naming the line, field, rule and offending value."""
    data = gbk_csv(
        GOOD,
        GOOD.replace("13800000000", "1380000").replace("EC20261121009", "EC20261121010"),
        GOOD.replace(",1,9.90,", ",0,9.999,").replace("EC20261121009", "EC20261121011"),
        GOOD.replace("2026-11-21 09:00:00", "21.11.2026").replace("EC20261121009", "X1"),
    )
    with pytest.raises(ValidationFailed) as info:
        pipeline.convert(data, "orders_bad.csv", NOW)
    found = {(p.location, p.field, p.rule, p.value) for p in info.value.report.problems}
    assert found == {
        ("line 3", "手机", "pattern", "1380000"),
        ("line 4", "数量", "min", "0"),
        ("line 4", "单价", "scale", "9.999"),
        ("line 5", "订单号", "pattern", "X1"),
        ("line 5", "下单时间", "type", "21.11.2026"),
    }
    text = info.value.report.text()
    assert "orders_bad.csv: line 3: field 手机: pattern:" in text and "'1380000'" in text


def test_unknown_channel_code_is_reported_as_a_value_table_problem(pipeline: Pipeline) -> None:
    """A code missing from a value table names the table, the target field and the line."""
    with pytest.raises(ValidationFailed) as info:
        pipeline.convert(gbk_csv(GOOD.replace("天猫", "抖音")), "orders_new.csv", NOW)
    (problem,) = info.value.report.problems
    assert (problem.location, problem.field, problem.rule) == ("line 2", "Channel", "table")
    assert "'抖音' is not in value table 'channels'" in problem.message


def test_bytes_that_are_not_gbk_are_a_decode_error_with_the_line(pipeline: Pipeline) -> None:
    """Undecodable bytes are reported with the line they are on."""
    data = gbk_csv(GOOD) + b"EC20261121012,\xff\xfe,broken\r\n"
    with pytest.raises(DecodeError, match=r"line 3: bytes ff are not valid gbk"):
        pipeline.convert(data, "orders_x.csv", NOW)


def test_ragged_rows_are_reported_with_their_line(pipeline: Pipeline) -> None:
    """A row with too few or too many fields is a problem on its line, not silently padded."""
    data = gbk_csv(GOOD, "EC20261121013,2026-11-21 09:00:00,天猫", GOOD + ",extra")
    with pytest.raises(ValidationFailed) as info:
        pipeline.convert(data, "orders_r.csv", NOW)
    found = [(p.location, p.rule, p.message) for p in info.value.report.problems]
    assert found == [
        ("line 3", "columns", "ragged row: expected 15 fields, found 3"),
        ("line 4", "columns", "ragged row: expected 15 fields, found 16"),
    ]


def test_unclosed_quote_is_a_decode_error_with_the_line(pipeline: Pipeline) -> None:
    """An unclosed quote is reported, not swallowed into one giant field."""
    data = gbk_csv(GOOD, 'EC20261121014,"2026-11-21 09:00:00,天猫')
    with pytest.raises(DecodeError, match="CSV syntax"):
        pipeline.convert(data, "orders_q.csv", NOW)


def test_leading_zeros_and_na_survive_as_text(pipeline: Pipeline) -> None:
    """ "00123"-like codes and "NA" stay text: nothing is inferred from the data."""
    row = GOOD.replace("SKU-1", "00123").replace("人民路1号", "NA")
    (out,) = pipeline.convert(gbk_csv(row), "orders_t.csv", NOW)
    assert b"<SkuCode>00123</SkuCode>" in out.data
    assert "上海市上海市NA".encode() in out.data


def test_validate_command_prints_the_report_and_exits_1(tmp_path: Path) -> None:
    """`xchange validate` on a broken file prints line, field, rule and value, exit 1."""
    bad = tmp_path / "orders_bad.csv"
    bad.write_bytes(gbk_csv(GOOD.replace("13800000000", "12345")))
    result = CliRunner().invoke(
        main,
        [
            "validate",
            "--config",
            str(REPO / "config" / "demo.toml"),
            "--route",
            "shop-orders",
            str(bad),
        ],
    )
    assert result.exit_code == 1
    assert "orders_bad.csv: line 2: field 手机: pattern: does not match" in result.stderr
    assert "'12345'" in result.stderr


def test_a_character_the_target_encoding_lacks_is_a_mapping_error(tmp_path: Path) -> None:
    """Writing a character the declared output encoding cannot hold fails, never garbles."""
    from xchange.codecs.text import encode

    with pytest.raises(MappingError, match=r"character '𠀀' \(U\+20000\) cannot be written in gbk"):
        encode("ok\n𠀀", "gbk", "out.xml")


def test_the_shipped_broken_sample_prints_line_field_rule_and_value() -> None:
    """samples/shop-orders/broken/ is refused with every problem, in file order."""
    broken = SAMPLES / "shop-orders" / "broken" / "orders_20261122.csv"
    result = CliRunner().invoke(
        main,
        [
            "validate",
            "--config",
            str(REPO / "config" / "demo.toml"),
            "--route",
            "shop-orders",
            str(broken),
        ],
    )
    assert result.exit_code == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("orders_20261122.csv: line")]
    assert lines == [
        "orders_20261122.csv: line 3: field 手机: pattern: does not match 1\\d{10} "
        "(value: '1380013800')",
        "orders_20261122.csv: line 4: field Channel: table: '抖音' is not in value table "
        "'channels' (source field channel, column 渠道) (value: '抖音')",
        "orders_20261122.csv: line 5: field 数量: min: less than 1 (value: '0')",
    ]

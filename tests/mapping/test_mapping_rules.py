"""Mapping rules ERP imports need, as data: expressions, aggregates, lookups from master
data, filters and splits. Each rule kind is proved on real routes and on small layouts."""

from __future__ import annotations

import os
import re
import time
from datetime import datetime
from pathlib import Path

from click.testing import CliRunner

from tests.conftest import FORMATS, REPO, SAMPLES, Exchange
from xchange.cli import main
from xchange.config import load_config
from xchange.journal import open_journal
from xchange.layout import Layout
from xchange.mapping import Mapping, Record, apply_mapping, check_mapping, compile_mapping
from xchange.pipeline import Pipeline
from xchange.report import Report

DEMO = REPO / "config" / "demo.toml"
NOW = datetime(2026, 11, 21, 12)

SOURCE = Layout.model_validate(
    {
        "name": "src",
        "codec": "csv",
        "fields": [
            {"name": "order"},
            {"name": "status"},
            {"name": "sku"},
            {"name": "wh"},
            {"name": "qty", "type": "decimal"},
            {"name": "price", "type": "decimal"},
        ],
    }
)
NESTED = Layout.model_validate(
    {
        "name": "dst",
        "codec": "json",
        "shape": "nested",
        "json": {"lines": "lines", "batch_key": "docs"},
        "fields": [
            {"name": "no"},
            {"name": "wh"},
            {"name": "total", "type": "decimal", "scale": 2},
            {"name": "lines_count", "type": "integer"},
        ],
        "line_fields": [
            {"name": "sku"},
            {"name": "amount", "type": "decimal", "scale": 2},
        ],
    }
)


def mapping(tmp_path: Path, **extra: object) -> Mapping:
    data: dict[str, object] = {
        "name": "m",
        "source": "src",
        "target": "dst",
        "group_by": ["order"],
        "header": {
            "no": "order",
            "wh": {"from": "wh", "row": "first"},
            "total": {"expr": "sum(amount)"},
            "lines_count": {"expr": "count()"},
        },
        "lines": {"sku": "sku", "amount": {"expr": "qty * price"}},
        "source_file": tmp_path / "m.toml",
        **extra,
    }
    return Mapping.model_validate(data)


def rows(*values: tuple[str, str, str, str, str, str]) -> list[Record]:
    from decimal import Decimal

    out = []
    for i, (order, status, sku, wh, qty, price) in enumerate(values, start=2):
        out.append(
            Record(
                f"line {i}",
                {
                    "order": order,
                    "status": status,
                    "sku": sku,
                    "wh": wh,
                    "qty": Decimal(qty),
                    "price": Decimal(price),
                },
            )
        )
    return out


def run_mapping(m: Mapping, records: list[Record]) -> tuple[list[object], Report]:
    report = Report("in")
    compiled, problems = compile_mapping(m, SOURCE, NESTED)
    assert problems == []
    return list(apply_mapping(m, NESTED, records, report, compiled=compiled)), report


ROWS = rows(
    ("A", "ok", "s1", "W1", "2", "1.50"),
    ("A", "ok", "s2", "W2", "1", "10"),
    ("B", "cancelled", "s1", "W1", "5", "1"),
    ("C", "ok", "s3", "W1", "0", "9.99"),
    ("C", "ok", "s4", "W1", "3", "0.10"),
)


def test_line_amounts_are_computed_and_the_header_aggregates_them(tmp_path: Path) -> None:
    docs, report = run_mapping(mapping(tmp_path), ROWS)
    assert not report
    first = docs[0]
    assert first.header["total"] == 13 and first.header["lines_count"] == 2  # type: ignore[attr-defined]
    assert [ln["amount"] for ln in first.lines] == [3, 10]  # type: ignore[attr-defined]


def test_a_filter_skips_documents_and_says_how_many(tmp_path: Path) -> None:
    m = mapping(tmp_path, filter='status != "cancelled"', line_filter="qty > 0")
    docs, report = run_mapping(m, ROWS)
    assert [d.header["no"] for d in docs] == ["A", "C"]  # type: ignore[attr-defined]
    assert docs[1].header["lines_count"] == 1  # type: ignore[attr-defined]
    assert report.skipped == {"rows": 1, "lines": 1}


def test_split_by_makes_one_document_per_warehouse(tmp_path: Path) -> None:
    m = mapping(tmp_path, split_by=["wh"])
    docs, _ = run_mapping(m, ROWS[:2])
    assert [(d.header["no"], d.header["wh"], d.header["total"]) for d in docs] == [  # type: ignore[attr-defined]
        ("A", "W1", 3),
        ("A", "W2", 10),
    ]


def test_an_amount_with_more_digits_than_the_target_is_a_problem_not_a_rounding(
    tmp_path: Path,
) -> None:
    """qty * price with three decimals into a scale-2 field: a located problem, never a
    silent rounding; round() in the rule is the explicit way."""
    odd = rows(("A", "ok", "s1", "W1", "3", "0.333"))
    _, report = run_mapping(mapping(tmp_path), odd)
    (problem,) = [p for p in report.problems if p.field == "amount"]
    assert problem.rule == "scale" and "never rounded" in problem.message
    fixed = mapping(tmp_path)
    lines = dict(fixed.lines)
    lines["amount"] = {"expr": 'round(qty * price, 2, "half-up")'}  # type: ignore[assignment]
    docs, report = run_mapping(mapping(tmp_path, lines=lines), odd)
    assert not report and docs[0].lines[0]["amount"] == 1  # type: ignore[attr-defined]


def test_an_evaluation_error_is_a_located_report_line(tmp_path: Path) -> None:
    lines = {"sku": "sku", "amount": {"expr": "qty / (price - 10)"}}
    _, report = run_mapping(mapping(tmp_path, lines=lines), ROWS[1:2])
    (problem,) = report.problems
    assert (problem.location, problem.field, problem.rule) == ("line 3", "amount", "expr")
    assert "division by zero" in problem.message


# --------------------------------------------------------------------------- lookups


def master(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "skus.csv"
    path.write_text(text, encoding="utf-8")
    return path


def with_lookup(tmp_path: Path, rule: str) -> Mapping:
    lines = {"sku": {"expr": rule}, "amount": {"expr": "qty * price"}}
    return mapping(
        tmp_path,
        lines=lines,
        lookups={"skus": {"file": "skus.csv", "key": "sku", "value": "code"}},
    )


def test_a_lookup_reads_master_data_and_a_miss_is_a_located_problem(tmp_path: Path) -> None:
    master(tmp_path, "sku,code\ns1,M-1\ns2,M-2\n")
    docs, report = run_mapping(with_lookup(tmp_path, 'lookup("skus", sku)'), ROWS[:2])
    assert not report and [ln["sku"] for ln in docs[0].lines] == ["M-1", "M-2"]  # type: ignore[attr-defined]
    _, report = run_mapping(with_lookup(tmp_path, 'lookup("skus", sku)'), ROWS[3:4])
    (problem,) = report.problems
    assert problem.location == "line 5" and "'s3' is not in 'skus'" in problem.message
    docs, report = run_mapping(with_lookup(tmp_path, 'lookup("skus", sku, null, "?")'), ROWS[3:4])
    assert not report and docs[0].lines[0]["sku"] == "?"  # type: ignore[attr-defined]


def test_a_lookup_is_read_again_when_its_file_changes(tmp_path: Path) -> None:
    path = master(tmp_path, "sku,code\ns1,OLD\n")
    m = with_lookup(tmp_path, 'lookup("skus", sku)')
    compiled, _ = compile_mapping(m, SOURCE, NESTED)
    first = compiled.lookups.versions()
    report = Report("in")
    docs = list(apply_mapping(m, NESTED, ROWS[:1], report, compiled=compiled))
    assert docs[0].lines[0]["sku"] == "OLD"
    path.write_text("sku,code\ns1,NEW\n", encoding="utf-8")
    later = time.time() + 2
    os.utime(path, (later, later))
    docs = list(apply_mapping(m, NESTED, ROWS[:1], report, compiled=compiled))
    assert docs[0].lines[0]["sku"] == "NEW"
    assert compiled.lookups.versions() != first and first.startswith("skus:")


def test_a_key_twice_in_master_data_is_refused(tmp_path: Path) -> None:
    master(tmp_path, "sku,code\ns1,A\ns1,B\n")
    _, problems = compile_mapping(with_lookup(tmp_path, 'lookup("skus", sku)'), SOURCE, NESTED)
    assert any("key 's1' is at rows 2 and 3" in p for p in problems)


def test_100000_entries_cost_a_lookup_per_value_not_a_load_per_row(tmp_path: Path) -> None:
    master(tmp_path, "sku,code\n" + "".join(f"s{i},M-{i}\n" for i in range(100_000)))
    m = with_lookup(tmp_path, 'lookup("skus", sku)')
    compiled, _ = compile_mapping(m, SOURCE, NESTED)
    from xchange.lookups import Lookup

    loads = []
    real = Lookup._parse

    def counted(self, data):  # type: ignore[no-untyped-def]
        loads.append(1)
        return real(self, data)

    Lookup._parse = counted  # type: ignore[method-assign]
    try:
        many = rows(*[("A", "ok", f"s{i}", "W", "1", "1") for i in range(2000)])
        docs = list(apply_mapping(m, NESTED, many, Report("in"), compiled=compiled))
    finally:
        Lookup._parse = real  # type: ignore[method-assign]
    assert loads == [] and docs[0].lines[1999]["sku"] == "M-1999"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- check


def test_check_names_a_broken_expression_with_file_key_and_position(tmp_path: Path) -> None:
    m = mapping(tmp_path, lines={"sku": "sku", "amount": {"expr": "qty * prise"}})
    problems = check_mapping(m, SOURCE, NESTED)
    assert any(
        p.endswith("m.toml: lines.amount.expr: position 7: unknown field 'prise'") for p in problems
    ), problems


def test_check_of_the_demo_with_a_broken_rule(tmp_path: Path) -> None:
    import shutil

    formats = tmp_path / "formats"
    shutil.copytree(FORMATS, formats)
    path = formats / "shop-to-kingdee-sale-order.toml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("goods_number * goods_price", "goods_number *"),
        encoding="utf-8",
    )
    config = tmp_path / "demo.toml"
    config.write_text(
        DEMO.read_text(encoding="utf-8").replace('formats = "../formats"', f'formats = "{formats}"')
    )
    result = CliRunner().invoke(main, ["check", "--config", str(config)])
    assert result.exit_code == 2
    assert "shop-to-kingdee-sale-order.toml: lines.FAllAmount.expr: " in result.output
    assert "not a valid expression" in result.output


# --------------------------------------------------------------------------- in a run


def test_a_run_says_what_the_filter_left_out_in_the_summary_and_the_journal(
    exchange: Exchange,
) -> None:
    config = load_config(DEMO)
    exchange.config.write_text(
        DEMO.read_text(encoding="utf-8")
        .replace('formats = "../formats"', f'formats = "{FORMATS}"')
        .replace('"../var/demo/journal.sqlite"', f'"{exchange.journal}"')
        .replace('"../var/demo/quarantine"', f'"{exchange.quarantine}"')
        .replace('"../var/demo/inbox"', f'"{exchange.inbox}"')
        .replace('"../var/demo/outbox', f'"{exchange.outbox}')
    )
    assert config.route("stock-count-gain")
    source = SAMPLES / "stock-count-gain" / "in" / "stockcount_SC20261121001.xml"
    (exchange.inbox / source.name).write_bytes(source.read_bytes())
    result = CliRunner().invoke(
        main, ["run", "--once", "--route", "stock-count-gain", "--config", str(exchange.config)]
    )
    assert result.exit_code == 0, result.output
    assert "stock-count-gain: 1 delivered (1 document; 2 lines skipped by filter)" in result.stdout
    journal = open_journal(load_config(exchange.config).journal)
    (record,) = journal.query()
    transitions = journal.history(record.id)
    journal.close()
    assert any("2 lines skipped by filter" in (t.note or "") for t in transitions)


def test_the_master_data_version_is_in_the_journal(exchange: Exchange) -> None:
    route = load_config(DEMO).route("shop-kingdee-orders")
    pipeline = Pipeline(route, FORMATS)
    _, mapping_version = pipeline.versions
    assert re.fullmatch(
        r"shop-to-kingdee-sale-order@2026\.12#[0-9a-f]{8}/[0-9a-f]{6}\+materials:.+",
        mapping_version,
    ), mapping_version


def test_a_repeated_xml_path_is_aggregated_by_the_mapping() -> None:
    """Every parcel's waybill, joined: the declared answer to several values."""
    route = load_config(DEMO).route("delivery-confirm")
    source = SAMPLES / "delivery-confirm" / "in" / "deliveryconfirm_DO20261121001.xml"
    (out,) = Pipeline(route, FORMATS).convert(source.read_bytes(), source.name, NOW)
    assert "SF1409876543210|SF1409876543211" in out.data.decode("utf-8-sig")


def test_a_bad_master_data_file_is_a_config_error(tmp_path: Path) -> None:
    master(tmp_path, "sku,other\ns1,A\n")
    _, problems = compile_mapping(with_lookup(tmp_path, 'lookup("skus", sku)'), SOURCE, NESTED)
    assert any("has no column(s) code" in p for p in problems)

"""Rules that see the whole document: named values ([let], [line_let]), line rules that read
the document's aggregates, their own position and the fields computed before them (in the
order of what they read; a cycle refused), and allocate(): an order-level discount split over
the lines by amount, exact to the cent, the remainder where the mapping says."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xchange.expressions import ExpressionError, allocate
from xchange.layout import Layout
from xchange.mapping import Mapping, Record, apply_mapping, check_mapping, compile_mapping
from xchange.report import Report

ORDERS = Layout.model_validate(
    {
        "name": "orders",
        "codec": "csv",
        "fields": [
            {"name": "order"},
            {"name": "discount", "type": "decimal"},
            {"name": "sku"},
            {"name": "qty", "type": "decimal"},
            {"name": "price", "type": "decimal"},
        ],
    }
)
OUTBOUND = Layout.model_validate(
    {
        "name": "outbound",
        "codec": "json",
        "shape": "nested",
        "json": {"lines": "lines", "batch_key": "docs"},
        "fields": [
            {"name": "no"},
            {"name": "goods", "type": "decimal", "scale": 2},
            {"name": "discount", "type": "decimal", "scale": 2},
        ],
        "line_fields": [
            {"name": "lineNo", "type": "integer"},
            {"name": "sku"},
            {"name": "amount", "type": "decimal", "scale": 2},
            {"name": "share", "type": "decimal", "scale": 2},
            {"name": "net", "type": "decimal", "scale": 2},
            {"name": "last", "type": "boolean"},
        ],
    }
)


def mapping(tmp_path: Path, **changes: Any) -> Mapping:
    data: dict[str, Any] = {
        "name": "m",
        "source": "orders",
        "target": "outbound",
        "group_by": ["order"],
        "let": {"goods": "sum(qty * price)"},
        "header": {
            "no": "order",
            "goods": {"expr": "goods"},
            "discount": {"expr": "sum(share)"},
        },
        "lines": {
            # Written before what it reads: run in the order of what it reads.
            "net": {"expr": "amount - share"},
            "lineNo": {"expr": "position()"},
            "sku": "sku",
            "amount": {"expr": "qty * price"},
            "share": {"expr": "allocate(discount, amount, 2)"},
            "last": {"expr": "is_last()"},
        },
        "source_file": tmp_path / "m.toml",
    }
    data.update(changes)
    return Mapping.model_validate(data)


def rows(order: str, discount: str, *lines: tuple[str, str, str]) -> list[Record]:
    return [
        Record(
            f"line {i}",
            {
                "order": order,
                "discount": Decimal(discount),
                "sku": sku,
                "qty": Decimal(qty),
                "price": Decimal(price),
            },
        )
        for i, (sku, qty, price) in enumerate(lines, start=2)
    ]


def run(m: Mapping, records: list[Record]) -> tuple[list[Any], Report]:
    compiled, problems = compile_mapping(m, ORDERS, OUTBOUND)
    assert problems == []
    report = Report("in")
    return list(apply_mapping(m, OUTBOUND, records, report, compiled=compiled)), report


THREE = rows("SO1", "10.00", ("a", "1", "33.33"), ("b", "1", "33.33"), ("c", "1", "33.34"))


def test_a_discount_is_apportioned_by_amount_the_remainder_on_the_last_line(
    tmp_path: Path,
) -> None:
    (doc,), report = run(mapping(tmp_path), THREE)
    assert not report, report
    assert [ln["share"] for ln in doc.lines] == [Decimal("3.33"), Decimal("3.33"), Decimal("3.34")]
    assert sum(ln["share"] for ln in doc.lines) == Decimal("10.00")
    assert [ln["net"] for ln in doc.lines] == [Decimal("30.00"), Decimal("30.00"), Decimal("30.00")]
    assert [ln["lineNo"] for ln in doc.lines] == [1, 2, 3]
    assert [ln["last"] for ln in doc.lines] == [False, False, True]
    assert doc.header["goods"] == Decimal("100.00")
    assert doc.header["discount"] == Decimal("10.00")
    # The lines keep the layout's order of fields, whatever the order of computing.
    assert list(doc.lines[0]) == ["lineNo", "sku", "amount", "share", "net", "last"]


def test_the_largest_remainder_policy_gives_the_cents_to_the_largest_fractions(
    tmp_path: Path,
) -> None:
    m = mapping(tmp_path)
    m.lines["share"] = m.lines["share"].model_copy(
        update={"expr": 'allocate(discount, amount, 2, "largest")'}
    )
    records = rows("SO2", "1.00", ("a", "1", "1"), ("b", "1", "1"), ("c", "1", "1"))
    (doc,), report = run(m, records)
    assert not report
    # 1.00 / 3: 0.333.. each; the one cent left goes to the first of the equal remainders.
    assert [ln["share"] for ln in doc.lines] == [Decimal("0.34"), Decimal("0.33"), Decimal("0.33")]


def test_line_rules_read_document_aggregates_and_line_values(tmp_path: Path) -> None:
    m = mapping(
        tmp_path,
        line_let={"gross": "qty * price"},
        lines={
            "lineNo": {"expr": "position()"},
            "sku": "sku",
            "amount": {"expr": "gross"},
            "share": {"expr": "round(gross / sum(gross) * 100, 2)"},  # percent of the order
            "net": {"expr": "goods - gross"},
            "last": {"expr": "position() == count()"},
        },
        header={"no": "order", "goods": {"expr": "goods"}, "discount": {"const": "0"}},
    )
    (doc,), report = run(m, THREE)
    assert not report, report
    cents = [ln["share"] for ln in doc.lines]
    assert cents == [Decimal("33.33"), Decimal("33.33"), Decimal("33.34")]
    assert [ln["net"] for ln in doc.lines] == [Decimal("66.67"), Decimal("66.67"), Decimal("66.66")]
    assert [ln["last"] for ln in doc.lines] == [False, False, True]


def test_a_cycle_is_refused_naming_its_fields(tmp_path: Path) -> None:
    m = mapping(tmp_path)
    m.lines["amount"] = m.lines["amount"].model_copy(update={"expr": "net + share"})
    problems = check_mapping(m, ORDERS, OUTBOUND)
    (cycle,) = [p for p in problems if "a cycle" in p]
    assert "lines.amount" in cycle and "lines.net" in cycle and str(tmp_path / "m.toml") in cycle


def test_position_and_allocate_outside_line_rules_are_refused_with_their_place(
    tmp_path: Path,
) -> None:
    m = mapping(tmp_path)
    m.header["goods"] = m.header["goods"].model_copy(update={"expr": "position()"})
    problems = check_mapping(m, ORDERS, OUTBOUND)
    said = "header.goods.expr: position 1: position() is about a line's place"
    assert any(said in p for p in problems), problems
    m = mapping(tmp_path, let={"goods": "allocate(discount, qty, 2)"})
    problems = check_mapping(m, ORDERS, OUTBOUND)
    assert any("let.goods: position 1: allocate()" in p for p in problems), problems


def test_an_unknown_name_in_a_named_value_is_said_with_file_and_key(tmp_path: Path) -> None:
    m = mapping(tmp_path, let={"goods": "sum(qty * prize)"})
    problems = check_mapping(m, ORDERS, OUTBOUND)
    assert any("m.toml: let.goods: position" in p and "'prize'" in p for p in problems), problems


def test_a_named_value_cannot_take_a_source_fields_name(tmp_path: Path) -> None:
    m = mapping(tmp_path, let={"qty": "sum(qty)"})
    problems = check_mapping(m, ORDERS, OUTBOUND)
    assert any("let.qty: a source field has this name" in p for p in problems), problems


def test_an_allocation_that_cannot_balance_is_a_located_problem(tmp_path: Path) -> None:
    records = rows("SO3", "10.005", ("a", "1", "5"), ("b", "1", "5"))
    _, report = run(mapping(tmp_path), records)
    problems = [str(p) for p in report.problems]
    assert any("share" in p and "10.005 has more than 2 decimal place(s)" in p for p in problems), (
        problems
    )
    zero = rows("SO4", "1.00", ("a", "0", "5"), ("b", "0", "5"))
    _, report = run(mapping(tmp_path), zero)
    assert any("weights sum to 0" in str(p) for p in report.problems)


def test_a_mapping_without_document_rules_runs_as_before(tmp_path: Path) -> None:
    """No [let], no line rule reading the document: each line is mapped from its own row,
    as it always was (the whole-document order is not used)."""
    m = mapping(
        tmp_path,
        let={},
        lines={
            "lineNo": {"sequence": 1},
            "sku": "sku",
            "amount": {"expr": "qty * price"},
            "share": {"const": "0"},
            "net": {"expr": "qty * price"},
            "last": {"const": "false"},
        },
        header={"no": "order", "goods": {"expr": "sum(qty * price)"}, "discount": {"const": "0"}},
    )
    compiled, problems = compile_mapping(m, ORDERS, OUTBOUND)
    assert problems == [] and not compiled.whole
    (doc,), report = run(m, THREE)
    assert not report and doc.header["goods"] == Decimal("100.00")


@settings(max_examples=300, deadline=None)
@given(
    total=st.decimals(min_value=-10_000, max_value=10_000, places=2),
    weights=st.lists(st.decimals(min_value=0, max_value=1000, places=3), min_size=1, max_size=12),
    policy=st.sampled_from(["last", "largest"]),
)
def test_allocated_shares_always_sum_to_the_total_at_the_scale(
    total: Decimal, weights: list[Decimal], policy: str
) -> None:
    try:
        shares = allocate(total, weights, 2, policy)
    except ExpressionError as exc:
        # Only what cannot balance: no proportion at all, or (remainder on the last line)
        # a last line that would get a share against its own sign.
        assert (sum(weights) == 0 and total != 0) or (
            policy == "last" and "cannot balance on the last line" in exc.message
        ), exc
        return
    assert sum(shares) == total
    assert all(s == s.quantize(Decimal("0.01")) for s in shares)
    whole = sum(weights)
    for share, weight in zip(shares, weights, strict=True):
        exact = total * weight / whole if whole else Decimal(0)
        assert share == 0 or (share > 0) == (exact > 0)  # never against its own sign
        if policy == "largest":  # each share within one cent of its exact proportion
            assert abs(share - exact) < Decimal("0.01")


def test_allocate_is_exact_where_floats_are_not() -> None:
    assert allocate(Decimal("0.3"), [Decimal("0.1"), Decimal("0.2")], 2) == [
        Decimal("0.10"),
        Decimal("0.20"),
    ]
    with pytest.raises(ExpressionError, match="has no value"):
        allocate(Decimal("1"), [Decimal("1"), None], 2)


def test_a_remainder_the_last_line_cannot_take_is_a_problem_not_a_negative_share() -> None:
    """1.00 over 200 equal lines: each rounds to 0.01 and the last would get -0.99; a gift
    line of weight 0 would get -0.01. Said, with the way out ("largest")."""
    with pytest.raises(
        ExpressionError, match='cannot balance on the last line; split with "largest"'
    ):
        allocate(Decimal("1.00"), [Decimal(1)] * 200, 2)
    with pytest.raises(ExpressionError, match="cannot balance on the last line"):
        allocate(Decimal("0.01"), [Decimal(1), Decimal(1), Decimal(0)], 2)
    shares = allocate(Decimal("1.00"), [Decimal(1)] * 200, 2, "largest")
    assert sum(shares) == Decimal("1.00") and min(shares) == 0


def test_weights_of_both_signs_and_numbers_out_of_range_are_said() -> None:
    with pytest.raises(ExpressionError, match="weights of both signs"):
        allocate(Decimal("100"), [Decimal(1), Decimal(-1), Decimal("1E-50")], 2)
    with pytest.raises(ExpressionError, match="out of range"):
        allocate(Decimal("1E50"), [Decimal(1), Decimal(3)], 20)


def test_a_total_that_differs_between_lines_of_a_document_is_a_problem_at_that_line(
    tmp_path: Path,
) -> None:
    records = rows("SO5", "1.00", ("a", "1", "5"), ("b", "1", "5"))
    records[1].values["discount"] = Decimal("2.00")
    m = mapping(tmp_path)
    m.header["no"] = m.header["no"].model_copy(update={"row": "first"})
    compiled, _ = compile_mapping(m, ORDERS, OUTBOUND)
    report = Report("in")
    list(apply_mapping(m, OUTBOUND, records, report, compiled=compiled))
    said = [str(p) for p in report.problems if "first line's 1.00" in str(p)]
    assert len(said) == 1 and "line 3" in said[0] and "share" in said[0], report.problems


def test_a_document_problem_is_reported_once_not_on_every_line(tmp_path: Path) -> None:
    records = rows("SO6", "1.005", *[("x", "1", "1")] * 4)
    _, report = run(mapping(tmp_path), records)
    assert len([p for p in report.problems if "decimal place" in str(p)]) == 1
    bad = rows("SO7", "1.00", ("a", "1", "5"), ("b", "1", "5"), ("c", "1", "5"))
    bad[1].failed.add("price")  # its price could not be read (reported by the reader)
    _, report = run(mapping(tmp_path), bad)
    assert report.problems == [] or not any("weight" in str(p) for p in report.problems)


def test_a_rule_that_reads_itself_is_a_cycle(tmp_path: Path) -> None:
    m = mapping(tmp_path)
    m.lines["amount"] = m.lines["amount"].model_copy(update={"expr": "amount + 1"})
    problems = check_mapping(m, ORDERS, OUTBOUND)
    assert any("a cycle: lines.amount -> lines.amount" in p for p in problems), problems
    m = mapping(tmp_path, let={"goods": "goods + 1"})
    problems = check_mapping(m, ORDERS, OUTBOUND)
    assert any("a cycle: let.goods -> let.goods" in p for p in problems), problems


def test_the_header_reads_target_line_fields_over_source_fields_of_the_same_name(
    tmp_path: Path,
) -> None:
    """As without document rules: a header aggregate of a name both the source and the
    target lines have reads the target's (computed) value, whatever else the mapping uses."""
    m = mapping(tmp_path)
    m.lines["sku"] = m.lines["sku"].model_copy(update={"from_": None, "expr": 'concat(sku, "!")'})
    m.header["no"] = m.header["no"].model_copy(update={"from_": None, "expr": 'join(sku, ",")'})
    (doc,), report = run(m, THREE)
    assert not report and doc.header["no"] == "a!,b!,c!"


def test_let_reads_the_kept_rows_of_its_document_and_they_must_agree(tmp_path: Path) -> None:
    """A grouped document's [let] reads the first row the document keeps (after the line
    filter), as its header does, and the rows must agree on what it reads outside
    aggregates (before: the group's first raw row, a filtered one, without a word)."""
    m = mapping(
        tmp_path,
        let={"goods": "sum(qty * price)", "d": "discount"},
        line_filter="qty > 0",
    )
    m.lines["share"] = m.lines["share"].model_copy(update={"expr": "allocate(d, amount, 2)"})
    records = rows("SO8", "9.00", ("gone", "0", "1"), ("a", "1", "5"), ("b", "1", "5"))
    records[0].values["discount"] = Decimal("99.00")  # on the row the filter drops
    (doc,), report = run(m, records)
    assert not report, report
    assert doc.header["discount"] == Decimal("9.00")
    records[2].values["discount"] = Decimal("8.00")  # the kept rows disagree
    _, report = run(m, records)
    assert any("let.d" in str(p) and "disagree" in str(p) for p in report.problems), report.problems


def test_value_names_are_words_and_flattened_mappings_refuse_them(tmp_path: Path) -> None:
    m = mapping(tmp_path, let={"goods": "sum(qty * price)", "null": "1", "a-b": "2"})
    problems = check_mapping(m, ORDERS, OUTBOUND)
    assert any("let.null: a value's name is a word" in p for p in problems), problems
    assert any("let.a-b: a value's name is a word" in p for p in problems), problems


def test_a_value_is_written_as_text_one_way_in_templates_concat_and_table_keys(
    tmp_path: Path,
) -> None:
    """Before: a template wrote True, 2026-11-21T09:15:02 and 1E-7 where concat() wrote
    true, 2026-11-21 09:15:02 and 0.0000001 (and a table keyed "true" missed a boolean)."""
    from datetime import datetime

    source = Layout.model_validate(
        {
            "name": "s",
            "codec": "csv",
            "fields": [
                {"name": "ok", "type": "boolean"},
                {"name": "at", "type": "datetime", "formats": ["%Y-%m-%d %H:%M:%S"]},
                {"name": "tiny", "type": "decimal"},
            ],
        }
    )
    target = Layout.model_validate(
        {
            "name": "t",
            "codec": "csv",
            "fields": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
        }
    )
    m = Mapping.model_validate(
        {
            "name": "m",
            "source": "s",
            "target": "t",
            "tables": {"flags": {"true": "Y", "false": "N"}},
            "header": {
                "a": {"template": "{ok}|{at}|{tiny}"},
                "b": {"expr": 'concat(ok, "|", at, "|", tiny)'},
                "c": {"from": "ok", "table": "flags"},
            },
            "source_file": tmp_path / "m.toml",
        }
    )
    compiled, problems = compile_mapping(m, source, target)
    assert problems == []
    record = Record(
        "line 2",
        {"ok": True, "at": datetime(2026, 11, 21, 9, 15, 2), "tiny": Decimal("1E-7")},
    )
    report = Report("in")
    (doc,) = apply_mapping(m, target, [record], report, compiled=compiled)
    assert not report, report
    assert doc.header["a"] == doc.header["b"] == "true|2026-11-21 09:15:02|0.0000001"
    assert doc.header["c"] == "Y"


def test_check_says_how_to_key_a_table_read_with_a_boolean_now(tmp_path: Path) -> None:
    """A table keyed True/False (what a template wrote for a boolean before) no longer
    matches: `check` says how to write the keys; the run reports the miss, located."""
    from click.testing import CliRunner

    from tests.conftest import FORMATS
    from xchange.cli import main

    formats = tmp_path / "formats"
    formats.mkdir()
    for name in ("shop-order-lines", "wms-outbound-order"):
        (formats / f"{name}.toml").write_bytes((FORMATS / f"{name}.toml").read_bytes())
    text = (FORMATS / "shop-to-wms-outbound.toml").read_text(encoding="utf-8")
    layout = (formats / "shop-order-lines.toml").read_text(encoding="utf-8")
    (formats / "shop-order-lines.toml").write_text(
        layout + '\n[[fields]]\nname = "paid"\ntype = "boolean"\n', encoding="utf-8"
    )
    text = (
        text.replace(
            'Remark = { from = "postscript", trim = true }',
            'Remark = { from = "paid", table = "paid_words" }',
        )
        + '\n[tables.paid_words]\nTrue = "paid"\nFalse = "unpaid"\n'
    )
    (formats / "shop-to-wms-outbound.toml").write_text(text, encoding="utf-8")
    config = tmp_path / "x.toml"
    config.write_text(
        f'formats = "{formats}"\n[journal]\npath = "{tmp_path / "j.sqlite"}"\n'
        f'[quarantine]\npath = "{tmp_path / "q"}"\n'
        f'[endpoints.in]\ntype = "local"\npath = "{tmp_path}"\n'
        "[[routes]]\n"
        'name = "r"\nsource = { endpoint = "in", pattern = "*.csv" }\n'
        'source_layout = "shop-order-lines"\nmapping = "shop-to-wms-outbound"\n'
        'target_layout = "wms-outbound-order"\n'
        'target = { endpoint = "in", name = "{OrderNo}.xml" }\n',
        encoding="utf-8",
    )
    checked = CliRunner().invoke(main, ["check", "--config", str(config)])
    assert "tables.paid_words: booleans are looked up as true/false" in checked.output, (
        checked.output
    )

"""Any tree of groups: layouts declare repeating groups beside the lines (a WMS order's
packages), under each line (a Kingdee entry's serial sub-entries), under each other's items,
and lists of plain values (waybills as ["SF1", "SF2"]), for XML and JSON, read and written;
a mapping says how each target group's items are made from a source group, its rules
reading the item and every level above it. Every input element is still accounted for."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FORMATS, REPO, SAMPLES
from xchange.codecs import codec_for
from xchange.config import load_config
from xchange.errors import ConfigError, ValidationFailed
from xchange.layout import Layout
from xchange.mapping import (
    Document,
    Mapping,
    Record,
    Step,
    apply_mapping,
    apply_steps,
    check_mapping,
    compile_mapping,
)
from xchange.pipeline import Pipeline
from xchange.report import Report

SHOP = {
    "name": "shop",
    "codec": "json",
    "shape": "nested",
    "json": {"records": "$.orders[*]", "lines": "goods"},
    "fields": [
        {"name": "order_sn", "required": True},
        {"name": "freight", "type": "decimal", "scale": 2, "required": True},
    ],
    "line_fields": [
        {"name": "sku", "required": True},
        {"name": "qty", "type": "integer", "required": True},
    ],
    "groups": [
        {
            "name": "packages",
            "path": "packages",
            "min_items": 1,
            "fields": [
                {"name": "package_no", "required": True},
                {"name": "weight", "type": "decimal", "scale": 3, "required": True},
            ],
        },
        {
            "name": "waybills",
            "under": "packages",
            "path": "waybills",
            "fields": [{"name": "waybill", "column": ".", "pattern": "SF\\d+"}],
        },
        {
            "name": "serials",
            "under": "lines",
            "path": "serials",
            "fields": [{"name": "serial", "column": ".", "required": True}],
        },
    ],
}
WMS = {
    "name": "wms",
    "codec": "xml",
    "shape": "nested",
    "xml": {"root": "Order", "lines": "Items", "line": "Item", "indent": ""},
    "fields": [{"name": "OrderNo"}],
    "line_fields": [{"name": "Sku"}, {"name": "Qty", "type": "integer"}],
    "groups": [
        {
            "name": "Packages",
            "path": "Packages/Package",
            "fields": [
                {"name": "No", "column": "@no"},
                {"name": "Seq", "type": "integer"},
                {"name": "Freight", "type": "decimal", "scale": 2},
                {"name": "Order", "column": "@order"},
            ],
        },
        {
            "name": "Waybills",
            "under": "Packages",
            "path": "Waybill",
            "fields": [{"name": "Waybill", "column": "."}],
        },
        {
            "name": "Serials",
            "under": "lines",
            "path": "Serials/SN",
            "fields": [
                {"name": "SN", "column": "."},
            ],
        },
    ],
}
RULES: dict[str, Any] = {
    "name": "m",
    "source": "shop",
    "target": "wms",
    "header": {"OrderNo": "order_sn"},
    "lines": {"Sku": {"from": "sku", "case": "upper"}, "Qty": "qty"},
    "groups": {
        "Packages": {
            "from": "packages",
            "rules": {
                "No": "package_no",
                "Seq": {"expr": "position()"},
                # An item's rules read the document's fields and aggregate over the
                # items of the same parent: the freight split by weight.
                "Freight": {"expr": "allocate(freight, weight, 2)"},
                "Order": {"expr": "OrderNo"},  # the parent's target field
            },
        },
        "Waybills": {"from": "waybills", "rules": {"Waybill": "waybill"}},
        "Serials": {"from": "serials", "rules": {"SN": {"from": "serial", "case": "upper"}}},
    },
}
ORDER = b"""{"orders": [{"order_sn": "E1", "freight": "10.00",
  "goods": [{"sku": "a-1", "qty": 2, "serials": ["sn1", "sn2"]}, {"sku": "b-2", "qty": 1,
             "serials": []}],
  "packages": [{"package_no": "P1", "weight": "1.000", "waybills": ["SF1", "SF2"]},
               {"package_no": "P2", "weight": "2.000", "waybills": []}]}]}"""
WRITTEN = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Order><OrderNo>E1</OrderNo>"
    "<Items><Item><Sku>A-1</Sku><Qty>2</Qty><Serials><SN>SN1</SN><SN>SN2</SN></Serials></Item>"
    "<Item><Sku>B-2</Sku><Qty>1</Qty><Serials/></Item></Items>"
    '<Packages><Package no="P1" order="E1"><Seq>1</Seq><Freight>3.33</Freight>'
    "<Waybill>SF1</Waybill><Waybill>SF2</Waybill></Package>"
    '<Package no="P2" order="E1"><Seq>2</Seq><Freight>6.67</Freight></Package></Packages>'
    "</Order>\n"
)


def layout(data: dict[str, Any], **changes: Any) -> Layout:
    return Layout.model_validate({**data, **changes})


def mapping(tmp_path: Path, **changes: Any) -> Mapping:
    return Mapping.model_validate({**RULES, **changes, "source_file": tmp_path / "m.toml"})


def read(source: Layout, data: bytes) -> tuple[list[Any], Report]:
    report = Report("in")
    records = list(codec_for(source).records(io.BytesIO(data), source, "in", report))
    return records, report


def convert(
    tmp_path: Path, data: bytes, m: Mapping | None = None, source: Layout | None = None
) -> tuple[str, Report]:
    source = source or layout(SHOP)
    target = layout(WMS)
    m = m or mapping(tmp_path)
    assert check_mapping(m, source, target) == []
    compiled, _ = compile_mapping(m, source, target)
    records, report = read(source, data)
    docs = list(apply_mapping(m, target, records, report, compiled=compiled))
    out = io.BytesIO()
    codec_for(target).write(docs, target, "out", out)
    return out.getvalue().decode(), report


def test_groups_beside_under_lines_and_of_values_are_read_mapped_and_written(
    tmp_path: Path,
) -> None:
    written, report = convert(tmp_path, ORDER)
    assert not report, report.text()
    assert written == WRITTEN


def test_what_is_written_with_groups_reads_back_as_the_same_values(tmp_path: Path) -> None:
    back, report = read(layout(WMS), WRITTEN.encode())
    assert not report, report.text()
    (order,) = back
    packages = order.groups["Packages"]
    assert [p.values["No"] for p in packages] == ["P1", "P2"]
    assert [w.values["Waybill"] for w in packages[0].groups["Waybills"]] == ["SF1", "SF2"]
    assert [s.values["SN"] for s in order.lines[0].groups["Serials"]] == ["SN1", "SN2"]
    assert order.lines[1].groups["Serials"] == []


def test_unknown_input_inside_a_group_item_is_a_problem_naming_its_path() -> None:
    data = ORDER.replace(b'"package_no": "P2",', b'"package_no": "P2", "box": "L",')
    _, report = read(layout(SHOP), data)
    assert [p.field for p in report.ordered()] == ["packages.box"]
    assert "$.orders[0].packages[1]" in report.text()
    xml = WRITTEN.replace("<Seq>2</Seq>", "<Seq>2</Seq><Box>L</Box>").encode()
    _, report = read(layout(WMS), xml)
    assert "Packages/Package/Box" in report.text()
    assert "not in layout wms" in report.text()


def test_unknown_input_deep_in_groups_is_located_where_it_is() -> None:
    boxes = [
        {"name": "boxes", "under": "lines", "path": "boxes", "fields": [{"name": "box"}]},
        {"name": "parts", "under": "boxes", "path": "parts", "fields": [{"name": "part"}]},
    ]
    data = ORDER.replace(
        b'"serials": []', b'"serials": [], "boxes": [{"box": "B1", "parts": [{"px": 1}]}]'
    )
    _, report = read(layout(SHOP, groups=[*SHOP["groups"], *boxes]), data)
    (problem,) = report.ordered()
    assert problem.location == "$.orders[0].goods[1].boxes[0].parts[0]"
    assert problem.field == "goods.boxes.parts.px"  # as [unknown_in] says it: from the record


def test_a_list_of_values_refuses_an_object_and_a_group_refuses_a_value() -> None:
    data = ORDER.replace(b'"waybills": ["SF1", "SF2"]', b'"waybills": ["SF1", {"no": "SF2"}]')
    _, report = read(layout(SHOP), data)
    (problem,) = report.ordered()  # (once: not also as an unknown key "no")
    assert "an item of group waybills is one value, found an object" in problem.message
    data = ORDER.replace(b'"waybills": []', b'"waybills": "SF3"')
    _, report = read(layout(SHOP), data)
    assert "group waybills must be a JSON list" in report.text()
    data = ORDER.replace(b'"waybills": ["SF1", "SF2"]', b'"waybills": ["SF1", "XX2"]')
    _, report = read(layout(SHOP), data)
    assert [(p.field, p.rule) for p in report.ordered()] == [("waybill", "pattern")]
    assert "$.orders[0].packages[0].waybills[1]" in report.text()


def test_fewer_or_more_items_than_the_layout_allows_is_a_problem() -> None:
    data = ORDER.replace(b'"packages": [{', b'"parcels": [{')
    _, report = read(layout(SHOP, unknown_in={"parcels": "ignore"}), data)
    assert "group packages (packages) has 0 item(s); the layout needs at least 1" in report.text()
    shop = layout(SHOP, groups=[{**SHOP["groups"][0], "max_items": 1}, *SHOP["groups"][1:]])
    _, report = read(shop, ORDER)
    assert "has 2 item(s); the layout allows at most 1" in report.text()


def test_a_group_container_given_twice_in_xml_is_a_problem_not_a_merge() -> None:
    twice = WRITTEN.replace("</Packages>", "</Packages><Packages/>").encode()
    _, report = read(layout(WMS), twice)
    assert "is here a second time" in report.text()


def test_an_item_whose_value_failed_is_reported_once_and_its_rules_skipped(
    tmp_path: Path,
) -> None:
    data = ORDER.replace(b'"weight": "2.000"', b'"weight": "2kg"')
    _, report = convert(tmp_path, data)
    assert [(p.field, p.rule) for p in report.ordered()] == [("weight", "type")]


def test_one_item_per_parent_when_the_group_names_no_source_group(tmp_path: Path) -> None:
    rules = {**RULES["groups"], "Serials": {"rules": {"SN": {"expr": "concat(sku, '-x')"}}}}
    written, report = convert(tmp_path, ORDER, mapping(tmp_path, groups=rules))
    assert not report, report.text()
    assert "<Serials><SN>a-1-x</SN></Serials>" in written
    assert "<Serials><SN>b-2-x</SN></Serials>" in written


def test_an_item_filter_keeps_items_and_counts_the_others(tmp_path: Path) -> None:
    rules = {**RULES["groups"]}
    rules["Waybills"] = {**rules["Waybills"], "filter": "waybill != 'SF2'"}
    written, report = convert(tmp_path, ORDER, mapping(tmp_path, groups=rules))
    assert "<Waybill>SF1</Waybill></Package>" in written
    assert report.skipped == {"Waybills items": 1}


@pytest.mark.parametrize(
    ("groups", "said"),
    [
        (
            {k: v for k, v in RULES["groups"].items() if k != "Serials"},
            "groups.Serials: target group 'Serials' (?) has no rules",
        ),
        (
            {**RULES["groups"], "Boxes": {"rules": {}}},
            "groups.Boxes: target layout ? has no group 'Boxes' (it has Packages, Waybills, "
            "Serials)",
        ),
        (
            {**RULES["groups"], "Serials": {"from": "parcels", "rules": {"SN": "serial"}}},
            "groups.Serials.from: source layout ? has no group 'parcels' (it has packages, "
            "waybills, serials)",
        ),
        (
            {**RULES["groups"], "Serials": {"from": "packages", "rules": {"SN": "package_no"}}},
            "groups.Serials.from: source group 'packages' is under 'record', but this group's "
            "parent ('lines') is made from the source's 'lines'",
        ),
        (
            {**RULES["groups"], "Waybills": {"from": "waybills", "rules": {}}},
            "groups.Waybills.rules: field 'Waybill' of group 'Waybills' (?) has no rule",
        ),
        (
            {
                **RULES["groups"],
                "Serials": {"from": "serials", "rules": {"SN": "serial", "X": "sku"}},
            },
            "groups.Serials.rules.X: target group 'Serials' has no field 'X'",
        ),
        (
            {
                **RULES["groups"],
                "Serials": {"from": "serials", "rules": {"SN": {"expr": "serial + weight"}}},
            },
            "groups.Serials.rules.SN.expr: position 10: unknown field 'weight'",
        ),
        (
            {**RULES["groups"], "Serials": {"from": "serials", "rules": {"SN": "serail"}}},
            "groups.Serials.rules.SN: no field 'serail' here",
        ),
        (
            {
                **RULES["groups"],
                "Serials": {"from": "serials", "rules": {"SN": {"template": "{weight}"}}},
            },
            "groups.Serials.rules.SN: no field 'weight' here",
        ),
    ],
)
def test_check_says_what_is_wrong_with_a_groups_rules_with_file_and_key(
    tmp_path: Path, groups: dict[str, Any], said: str
) -> None:
    problems = check_mapping(mapping(tmp_path, groups=groups), layout(SHOP), layout(WMS))
    assert any(said in p for p in problems), problems
    assert all(p.startswith(f"{tmp_path / 'm.toml'}: ") for p in problems)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"codec": "csv", "json": None}, "groups: a CSV file is flat"),
        (
            {"groups": [{**SHOP["groups"][1], "under": "boxes"}]},
            "under: is 'boxes'",
        ),
        (
            {
                "groups": [
                    {**SHOP["groups"][0], "name": "a", "under": "b"},
                    {**SHOP["groups"][0], "name": "b", "under": "a"},
                ]
            },
            "groups under each other in a circle",
        ),
        (
            {"groups": [{**SHOP["groups"][0], "fields": [{"name": "order_sn"}]}]},
            "groups.packages: order_sn: a field above the group has this name",
        ),
        (
            {
                "groups": [
                    {
                        **SHOP["groups"][1],
                        "under": "record",
                        "fields": [{"name": "w", "column": "."}, {"name": "v"}],
                    }
                ]
            },
            'a field at column "." is the item itself',
        ),
        (
            {"shape": "rows", "line_fields": [], "json": {}, "groups": [SHOP["groups"][2]]},
            'under = "lines": only a nested layout has lines',
        ),
    ],
)
def test_a_layout_whose_groups_cannot_be_read_one_way_is_refused(
    change: dict[str, Any], said: str
) -> None:
    data = {k: v for k, v in {**SHOP, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=None) as caught:
        Layout.model_validate(data)
    assert said in str(caught.value)


@pytest.mark.parametrize(
    ("data", "groups", "said"),
    [
        # A group where a field is: each value read twice.
        (
            WMS,
            [{**WMS["groups"][0], "path": "OrderNo"}],
            "is at or inside the path of group 'Packages'",
        ),
        # A group at the lines' path: every line read twice.
        (
            WMS,
            [{**WMS["groups"][0], "path": "Items/Item"}],
            "the lines ('Items/Item') is at or inside the path of group",
        ),
        # A JSON field going into a group's list: read by no one.
        (
            {**SHOP, "fields": [*SHOP["fields"], {"name": "n", "column": "packages.count"}]},
            SHOP["groups"],
            "its items would be read by neither",
        ),
        # A query where a path is meant.
        (WMS, [{**WMS["groups"][0], "path": "../Packages/Package"}], "not a query"),
        (WMS, [{**WMS["groups"][0], "path": "Packages/Package[1]"}], "not a query"),
        (SHOP, [{**SHOP["groups"][0], "path": "$.packages"}], "not a document path"),
        (WMS, [{**WMS["groups"][0], "path": "q:Packages/q:Package"}], "prefix 'q' is not declared"),
    ],
)
def test_a_group_path_that_would_read_an_element_twice_or_never_is_refused(
    data: dict[str, Any], groups: list[dict[str, Any]], said: str
) -> None:
    with pytest.raises(ValueError) as caught:
        layout(data, groups=groups)
    assert said in str(caught.value)


def test_an_xml_field_on_a_groups_enclosing_element_is_written_on_that_one_element(
    tmp_path: Path,
) -> None:
    wms = layout(
        WMS,
        fields=[*WMS["fields"], {"name": "Parcels", "column": "Packages/@count"}],
    )
    doc = Document(
        "x",
        {"OrderNo": "E1", "Parcels": "1", "Packages": [{"No": "P1"}]},
        [{"Sku": "A", "Qty": 1}],
    )
    out = io.BytesIO()
    codec_for(wms).write([doc], wms, "out", out)
    written = out.getvalue()
    assert written.count(b"<Packages") == 1
    (back,), report = read(wms, written)
    assert not report, report.text()
    assert back.values["Parcels"] == "1"


def test_steps_carry_groups_from_one_step_to_the_next(tmp_path: Path) -> None:
    source, middle = layout(SHOP), layout(WMS)
    target = layout(WMS, name="wms2")
    first = mapping(tmp_path)
    second = Mapping.model_validate(
        {
            "name": "m2",
            "source": "wms",
            "target": "wms2",
            "header": {"OrderNo": "OrderNo"},
            "lines": {"Sku": "Sku", "Qty": "Qty"},
            "groups": {
                "Packages": {
                    "from": "Packages",
                    "rules": {"No": "No", "Seq": "Seq", "Freight": "Freight", "Order": "Order"},
                },
                "Waybills": {"from": "Waybills", "rules": {"Waybill": "Waybill"}},
                "Serials": {"from": "Serials", "rules": {"SN": {"from": "SN", "case": "lower"}}},
            },
            "source_file": tmp_path / "m2.toml",
        }
    )
    assert check_mapping(second, middle, target) == []
    steps = [
        Step(first, source, middle, compile_mapping(first, source, middle)[0]),
        Step(second, middle, target, compile_mapping(second, middle, target)[0]),
    ]
    records, report = read(source, ORDER)
    (doc,) = apply_steps(steps, records, report)
    assert not report, report.text()
    assert [s["SN"] for s in doc.lines[0]["Serials"]] == ["sn1", "sn2"]
    assert [w["Waybill"] for w in doc.header["Packages"][0]["Waybills"]] == ["SF1", "SF2"]


def test_a_csv_layout_with_groups_is_refused_when_loaded(tmp_path: Path) -> None:
    from xchange.layout import load_layout

    (tmp_path / "flat.toml").write_text(
        'name = "flat"\ncodec = "csv"\n[[fields]]\nname = "a"\n'
        '[[groups]]\nname = "g"\npath = "g"\n[[groups.fields]]\nname = "b"\n',
        "utf-8",
    )
    with pytest.raises(ConfigError, match="a CSV file is flat"):
        load_layout(tmp_path, "flat")


def test_a_serial_number_given_twice_in_a_file_is_a_problem_at_its_second_place() -> None:
    """``unique`` holds for a group's field across the whole file (two lines, two receipts)."""
    source = SAMPLES / "purchase-inbound-lots" / "in" / "lot_inbound_20261122.xml"
    data = source.read_bytes().replace(b"SN3010-A00042", b"SN3003-000118")
    route = load_config(REPO / "config" / "demo.toml").route("purchase-inbound-lots")
    with pytest.raises(ValidationFailed) as info:
        Pipeline(route, FORMATS).convert(data, source.name, datetime(2026, 11, 22, 20, 0))
    (problem,) = info.value.report.problems
    assert (problem.field, problem.rule, problem.value) == ("serial_no", "unique", "SN3003-000118")
    assert problem.location == (
        "line 24 /InboundConfirmations/Receipt[1]/Items/Item[2]/Serials/Serial[1]"
    )
    assert "already at line 15 " in problem.message


def test_a_named_value_cannot_take_the_name_of_a_source_items_field(tmp_path: Path) -> None:
    problems = check_mapping(
        mapping(tmp_path, let={"waybill": "sum(qty)"}), layout(SHOP), layout(WMS)
    )
    assert any("let.waybill: a source field has this name" in p for p in problems)


def test_more_items_than_the_target_layout_allows_is_a_problem_not_a_file_it_refuses(
    tmp_path: Path,
) -> None:
    source, m = layout(SHOP), mapping(tmp_path)
    target = layout(WMS, groups=[{**WMS["groups"][0], "max_items": 1}, *WMS["groups"][1:]])
    records, report = read(source, ORDER)
    list(apply_mapping(m, target, records, report, compiled=compile_mapping(m, source, target)[0]))
    (problem,) = report.ordered()
    assert problem.rule == "group"
    assert "has 2 item(s); the layout allows at most 1: layout wms would refuse" in problem.message


def test_rows_of_a_grouped_document_must_agree_on_what_a_groups_rules_read(
    tmp_path: Path,
) -> None:
    rows = Layout.model_validate(
        {"name": "rows", "codec": "csv", "fields": [{"name": "order_sn"}, {"name": "sku"}]}
    )
    target = layout(WMS, groups=[{"name": "Tag", "path": "Tag", "fields": [{"name": "T"}]}])
    m = Mapping.model_validate(
        {
            "name": "g",
            "source": "rows",
            "target": "wms",
            "group_by": ["order_sn"],
            "header": {"OrderNo": "order_sn"},
            "lines": {"Sku": "sku", "Qty": {"const": "1"}},
            "groups": {"Tag": {"rules": {"T": "sku"}}},
            "source_file": tmp_path / "g.toml",
        }
    )
    assert check_mapping(m, rows, target) == []
    records = [Record(f"row {i}", {"order_sn": "E1", "sku": sku}) for i, sku in enumerate("AB", 1)]
    report = Report("in")
    list(apply_mapping(m, target, records, report, compiled=compile_mapping(m, rows, target)[0]))
    (problem,) = report.ordered()
    assert (problem.location, problem.rule) == ("row 2", "agree")
    assert "groups.Tag.T takes one value" in problem.message

"""The JSON writer writes each document from a template made once per layout: the bytes
are exactly those of serializing the document's tree, for every JSON layout shipped, and
its serializer writes what ``json.dumps`` writes (decimals exact)."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import FORMATS
from xchange.codecs.json_codec import _shape, dumps
from xchange.layout import FieldSpec, Layout, load_layout
from xchange.mapping import Document

JSON_LAYOUTS = sorted(
    p.stem for p in FORMATS.glob("*.toml") if 'codec = "json"' in p.read_text("utf-8")
)

TEXTS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)


def value_for(spec: FieldSpec) -> st.SearchStrategy[Any]:
    """A typed value of the field (or none), as a mapping gives it to the writer."""
    kind = {
        "integer": st.integers(-(10**20), 10**20),
        "boolean": st.booleans(),
        "decimal": st.integers(-(10**9), 10**9).map(
            lambda n: Decimal(n).scaleb(-(spec.scale or 0))
        ),
        "date": st.dates(min_value=date(1900, 1, 1)),
        "datetime": st.datetimes(min_value=datetime(1900, 1, 1)),
    }.get(spec.type, TEXTS)
    return st.one_of(st.none(), kind)


def held(draw: st.DrawFn, layout: Layout, level: str) -> dict[str, Any]:
    """The items of the groups ``level`` holds (and theirs), as a mapping gives them."""
    groups: dict[str, Any] = {}
    for group in layout.children(level):
        groups[group.name] = [
            {
                **{f.name: draw(value_for(f)) for f in group.fields},
                **held(draw, layout, group.name),
            }
            for _ in range(draw(st.integers(0, 2)))
        ]
    return groups


@st.composite
def documents(draw: st.DrawFn, layout: Layout) -> Document:
    header = {f.name: draw(value_for(f)) for f in layout.fields}
    header.update(held(draw, layout, "record"))
    lines = [
        {
            **{f.name: draw(value_for(f)) for f in layout.line_fields},
            **held(draw, layout, "lines"),
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    return Document("$", header, lines)


def place(obj: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


def json_value(spec: FieldSpec, value: Any) -> Any:
    if value is None or spec.type in ("integer", "boolean"):
        return value
    if spec.type == "decimal":
        return Decimal(spec.render(value))  # written as its text at the field's scale
    return spec.render(value)


def groups_tree(obj: dict[str, Any], values: dict[str, Any], layout: Layout, level: str) -> None:
    """The groups ``level`` holds placed in its object: a list of objects, or of values."""
    for group in layout.children(level):
        items: list[Any] = []
        for item in values.get(group.name) or []:
            if group.scalar:
                items.append(json_value(group.fields[0], item.get(group.fields[0].name)))
                continue
            node: dict[str, Any] = {}
            for spec in group.fields:
                place(node, spec.key, json_value(spec, item.get(spec.name)))
            groups_tree(node, item, layout, group.name)
            items.append(node)
        place(obj, group.path, items)


def tree(doc: Document, layout: Layout) -> dict[str, Any]:
    """The document as a tree of JSON values, built the plain way (the oracle)."""
    opts = layout.json_
    body: dict[str, Any] = {}
    for spec in layout.fields:
        place(body, spec.key, json_value(spec, doc.header.get(spec.name)))
    if layout.shape == "nested":
        lines = []
        for line in doc.lines:
            item: dict[str, Any] = {}
            for spec in layout.line_fields:
                place(item, spec.key, json_value(spec, line.get(spec.name)))
            groups_tree(item, line, layout, "lines")
            lines.append(item)
        place(body, opts.lines or "lines", lines)
    groups_tree(body, doc.header, layout, "record")
    if opts.wrap:
        wrapped: dict[str, Any] = {}
        place(wrapped, opts.wrap, body)
        return wrapped
    return body


@pytest.mark.parametrize("name", JSON_LAYOUTS)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), indent=st.sampled_from([None, 2, 4]), level=st.sampled_from([0, 2]))
def test_the_template_writes_what_serializing_the_tree_writes(
    name: str, data: st.DataObject, indent: int | None, level: int
) -> None:
    layout = load_layout(FORMATS, name)
    doc = data.draw(documents(layout))
    assert _shape(layout, indent, level).text(doc) == dumps(tree(doc, layout), indent, level)


def test_every_shipped_json_layout_is_covered() -> None:
    assert {
        "kingdee-sale-order",
        "oms-sales-order",
        "kingdee-stock-count-gain",
        "kingdee-purchase-inbound-lots",  # groups under the lines
        "shop-order-discounted",  # a group beside the lines, a list of values under it
    } <= set(JSON_LAYOUTS)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXTS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.sampled_from([None, 2, 4]))
def test_the_serializer_writes_what_json_dumps_writes(value: Any, indent: int | None) -> None:
    assert dumps(value, indent) == json.dumps(value, ensure_ascii=False, indent=indent)


def test_decimals_are_written_as_their_exact_text() -> None:
    assert dumps({"a": Decimal("59.90"), "b": Decimal("0.10")}, None) == '{"a": 59.90, "b": 0.10}'


@pytest.mark.parametrize(
    ("note_column", "message"),
    [
        ("FBillNo.Text", "field 'FNote' is at 'FBillNo.Text', inside field 'FBillNo''s key"),
        ("FBillNo", "field 'FBillNo' and field 'FNote' are both at 'FBillNo'"),
        ("FSaleOrderEntry", "field 'FNote' and the lines are both at 'FSaleOrderEntry'"),
    ],
)
def test_a_target_layout_whose_fields_would_collide_is_refused(
    tmp_path: Path, note_column: str, message: str
) -> None:
    """Two target fields at one key (a value written over another), or one inside the
    other's (a key both a value and an object), are a configuration error naming the
    layout file, not a lost value or a crash at write time; as a source the same layout
    loses nothing and loads."""
    import shutil

    from tests.columnar_routes import route_config
    from xchange.errors import ConfigError
    from xchange.pipeline import Pipeline

    formats = tmp_path / "formats"
    shutil.copytree(FORMATS, formats)
    layout = formats / "kingdee-sale-order.toml"
    text = layout.read_text("utf-8")
    layout.write_text(
        text.replace('name = "FNote"', f'name = "FNote"\ncolumn = "{note_column}"'), "utf-8"
    )
    assert load_layout(formats, "kingdee-sale-order").write_collisions()  # it loads
    route = route_config(
        "oms-sales-order", "oms-to-kingdee-sale-order", "kingdee-sale-order", "{FBillNo}.json"
    )
    with pytest.raises(ConfigError) as caught:
        Pipeline(route, formats)
    text = "\n".join(caught.value.problems)
    assert message in text and "kingdee-sale-order.toml" in text


def test_a_key_holding_a_percent_sign_is_written_as_it_is(tmp_path: Path) -> None:
    """The template is filled by one ``%`` per object: a key's own ``%`` and ``%s`` are
    text, not places for values."""
    (tmp_path / "pct.toml").write_text(
        'name = "pct"\nversion = "1"\ncodec = "json"\nencoding = "utf-8"\n[json]\nindent = 2\n'
        '[[fields]]\nname = "a"\ncolumn = "rate%"\ntype = "decimal"\nscale = 1\n'
        '[[fields]]\nname = "b"\ncolumn = "%s %d %%"\n',
        "utf-8",
    )
    layout = load_layout(tmp_path, "pct")
    doc = Document("$", {"a": Decimal("12.5"), "b": "50%"})
    text = _shape(layout, 2, 0).text(doc)
    assert text == dumps(tree(doc, layout), 2, 0)
    assert json.loads(text) == {"rate%": 12.5, "%s %d %%": "50%"}

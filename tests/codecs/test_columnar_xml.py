"""The columnar fast path for line-level XML -> CSV routes (``wms-stock-count``) gives
exactly what the row path gives: the same bytes, or the same report; and the one-pass read
of a record's children gives each field what a query per field gives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from tests.columnar_routes import fast_and_slow, route_config
from tests.columnar_routes import outcome as columnar_outcome
from tests.conftest import REPO
from xchange.layout import FieldSpec, FieldValueError
from xchange.pipeline import Pipeline

NS = "urn:example:wms:stockcount:1"


def pipelines() -> tuple[Pipeline, Pipeline]:
    route = route_config(
        "wms-stock-count",
        "wms-stock-count-to-oms-inventory",
        "oms-inventory",
        "OMS_INV_{count_no}_{source_stem}.csv",
    )
    return fast_and_slow(route, REPO / "formats")


FAST, SLOW = pipelines()

HEADERS = [
    "<CountNo>SC20261121001</CountNo><Warehouse code='WH-SH-01'>上海仓</Warehouse>"
    "<CountDate>2026-11-21</CountDate>",
    # a count number against its pattern, a missing warehouse code, an impossible date
    "<CountNo>SC2026</CountNo><Warehouse>上海仓</Warehouse><CountDate>2026-11-21</CountDate>",
    "<CountNo>SC20261121001</CountNo><Warehouse code='W'/><CountDate>2026-02-30</CountDate>",
    # the count number twice: which one is unclear
    "<CountNo>SC20261121001</CountNo><CountNo>SC20261121002</CountNo>"
    "<Warehouse code='W'>仓</Warehouse><CountDate>2026-11-21</CountDate>",
    "<Warehouse code='W'>仓</Warehouse><CountDate>2026-11-21</CountDate>",
    # an element in the header that no field reads
    "<CountNo>SC20261121001</CountNo><Warehouse code='W'>仓</Warehouse>"
    "<CountDate>2026-11-21</CountDate><Counter>张三</Counter>",
]
#: Per line field: the XML that carries its value ("" leaves the element out).
POOLS = [
    [' no="1"', ' no="007"', ' no="x"', ' no=""', ""],
    [
        "<Sku>sku-1</Sku>",
        "<Sku> sku-2 </Sku>",
        "<Sku></Sku>",
        "",
        "<Sku>A</Sku><Sku>B</Sku>",
        "<Sku>a<!-- c -->b</Sku>",
        "<Sku><x>1</x></Sku>",
        "<Sku><![CDATA[s<1>]]></Sku>",
        "<Sku>sku\u200b1</Sku>",
        "<Sku>\u200b</Sku>",
        "<Sku>sku-１</Sku>",
    ],
    ["<Name>T恤</Name>", "<Name> 名 </Name>", "<Name/>", "", "<Name>&amp;&lt;</Name>"],
    ["<Batch>B1</Batch>", "<Batch/>", "", "<Batch>B1</Batch><Batch>B2</Batch>"],
    [
        "<BookQty>1</BookQty>",
        "<BookQty>1.000</BookQty>",
        "<BookQty>1.5</BookQty>",
        "<BookQty>-0</BookQty>",
        "<BookQty>x</BookQty>",
        "<BookQty></BookQty>",
        "<BookQty>12.0000</BookQty>",
        "<BookQty>007</BookQty>",
        "<BookQty>-0.000</BookQty>",
        "<BookQty>5.</BookQty>",
        "<BookQty>.5</BookQty>",
        "<BookQty>１</BookQty>",
        "<BookQty>1,000</BookQty>",
        "<BookQty>1_000</BookQty>",
        "<BookQty>\u2060</BookQty>",
    ],
    [
        "<CountQty>0</CountQty>",
        "<CountQty>-1</CountQty>",
        "<CountQty>3</CountQty>",
        "<CountQty>2.500</CountQty>",
        "<CountQty> 4 </CountQty>",
    ],
    [
        "<Unit>件</Unit>",
        "<Unit></Unit>",
        "",
        '<Unit xmlns="urn:other">件</Unit>',
        # input no field reads: an element, text, an attribute, a stray element among
        # the records (then a record after it)
        "<Unit>件</Unit><Note>n</Note>",
        "<Unit>件</Unit>stray",
        "<Unit unit='pcs'>件</Unit>",
        "<Unit>件</Unit></Line><Lines/><Line no='9'><Sku>s</Sku><Name>n</Name>"
        "<BookQty>1</BookQty><CountQty>1</CountQty><Unit>u</Unit>",
    ],
]
GOOD = (0, 0, 0, 0, 0, 0, 0)


def document(header: str, lines: list[tuple[int, ...]]) -> bytes:
    body = "".join(
        f"<Line{POOLS[0][c[0]]}>" + "".join(POOLS[k][c[k]] for k in range(1, 7)) + "</Line>\n"
        for c in lines
    )
    return (
        f'<?xml version="1.0" encoding="GB18030"?>\n<StockCount xmlns="{NS}">'
        f"<Header>{header}</Header><Lines>\n{body}</Lines></StockCount>\n"
    ).encode("gb18030")


def outcome(pipeline: Pipeline, data: bytes) -> object:
    return columnar_outcome(pipeline, data, "sc.xml")


def test_the_stock_count_route_takes_the_columnar_path() -> None:
    """A line-level XML -> CSV route gets a plan, the plan converts a clean count's chunk
    itself (it does not hand it to the row path), and the bytes are the same either way."""
    import io

    from xchange.report import Report

    assert FAST._plan is not None
    data = document(HEADERS[0], [GOOD] * 3)
    (chunk,) = FAST._reader.chunks(io.BytesIO(data), FAST.source, "sc.xml", Report("sc.xml"))
    assert chunk.clean and chunk.size == 3
    assert FAST._plan.convert(chunk) is not None
    result = outcome(FAST, data)
    assert isinstance(result, list) and result[0][2] == 3
    assert result == outcome(SLOW, data)


@pytest.mark.parametrize("field", range(len(POOLS)))
def test_every_edge_value_of_every_field_gives_the_same_result(field: int) -> None:
    """One line per edge value (after a good one): identical bytes, or identical problems."""
    for choice in range(len(POOLS[field])):
        line = list(GOOD)
        line[field] = choice
        data = document(HEADERS[0], [GOOD, tuple(line)])
        assert outcome(FAST, data) == outcome(SLOW, data), POOLS[field][choice]


@pytest.mark.parametrize("header", HEADERS)
def test_header_problems_are_reported_the_same_way(header: str) -> None:
    data = document(header, [GOOD] * 3)
    assert outcome(FAST, data) == outcome(SLOW, data)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(HEADERS),
    st.lists(st.tuples(*[st.integers(0, len(p) - 1) for p in POOLS]), min_size=1, max_size=10),
)
def test_random_counts_give_the_same_result_both_ways(
    header: str, lines: list[tuple[int, ...]]
) -> None:
    data = document(header, lines)
    assert outcome(FAST, data) == outcome(SLOW, data)


def test_chunks_keep_numbering_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Across chunk boundaries (some fast, some given to the row path), output and
    report stay identical, and locations keep counting."""
    import xchange.codecs.xml_codec as codec

    monkeypatch.setattr(codec, "CHUNK_RECORDS", 3)
    bad = list(GOOD)
    bad[4] = 4  # BookQty "x"
    for lines in ([GOOD] * 10, [GOOD] * 5 + [tuple(bad)] + [GOOD] * 5, [tuple(bad)] + [GOOD] * 7):
        data = document(HEADERS[0], lines)
        assert outcome(FAST, data) == outcome(SLOW, data)
    result = outcome(FAST, document(HEADERS[0], [GOOD] * 5 + [tuple(bad)] + [GOOD] * 5))
    assert isinstance(result, tuple)
    (problem,) = result[1]
    assert problem[0] == "line 8 /StockCount/Lines/Line[6]"


# ------------------------------------------------------------------ one pass == a query each

TAGS = ["a", "b", "{urn:w}c"]
PATHS = ["a", "b", "w:c", "@x", "a/@y", "w:c/@x", "b/a", "a/b/@y"]


@st.composite
def records(draw: st.DrawFn) -> etree._Element:
    element = etree.Element("r")
    if draw(st.booleans()):
        element.set("x", draw(st.sampled_from(["", "1", " v "])))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["child", "comment"]))
        if kind == "comment":
            element.append(etree.Comment("c"))
            continue
        child = etree.SubElement(element, draw(st.sampled_from(TAGS)))
        child.text = draw(st.sampled_from([None, "", "t", " 中 "]))
        if draw(st.booleans()):
            child.set("y", draw(st.sampled_from(["", "y1"])))
        if draw(st.booleans()):
            child.set("x", "x1")
        if draw(st.booleans()):
            inner = etree.SubElement(child, draw(st.sampled_from(TAGS)))
            inner.text = "in"
            inner.set("y", "iy")
    return element


def _query(spec: FieldSpec, element: etree._Element) -> object:
    from xchange.codecs.xml_codec import _Getter

    getter = _Getter(spec, {"w": "urn:w"})
    try:
        return getter.get_all(element) if spec.multiple == "all" else getter.get(element)
    except FieldValueError as exc:
        return ("error", exc.rule, exc.message)


@settings(max_examples=300, deadline=None)
@given(records(), st.sampled_from(["reject", "first", "last", "join", "all"]))
def test_one_pass_over_children_reads_what_a_query_per_field_reads(
    element: etree._Element, multiple: str
) -> None:
    """Whatever the children (repeated, missing, commented, with attributes or not), each
    field's raw value is what the path query gives, errors included."""
    from xchange.codecs.xml_codec import _Extractor

    specs = [
        FieldSpec.model_validate({"name": f"f{i}", "column": path, "multiple": multiple})
        for i, path in enumerate(PATHS)
    ]
    got = _Extractor(specs, {"w": "urn:w"}).values(element, {})
    expected = [_query(spec, element) for spec in specs]
    got = [("error", v.rule, v.message) if isinstance(v, FieldValueError) else v for v in got]
    assert got == expected


def test_text_split_by_a_comment_is_read_whole_and_an_element_inside_is_a_problem() -> None:
    """``a<!-- c -->b`` is the value ``ab`` (nothing after the comment dropped); a value
    element holding an element is reported where it is, not read up to that element."""
    sku = 1
    data = document(
        HEADERS[0], [GOOD, (0, POOLS[sku].index("<Sku>a<!-- c -->b</Sku>"), 0, 0, 0, 0, 0)]
    )
    (out,) = outcome(FAST, data)  # type: ignore[misc]
    assert ",AB," in out[1].decode("utf-8-sig")
    data = document(HEADERS[0], [GOOD, (0, POOLS[sku].index("<Sku><x>1</x></Sku>"), 0, 0, 0, 0, 0)])
    kind, problems = outcome(FAST, data)  # type: ignore[misc]
    assert kind == "ValidationFailed"
    (problem,) = problems
    assert problem[0] == "line 4 /StockCount/Lines/Line[2]" and problem[2] == "type"
    assert "<Sku> holds the element <x>, not a value" in problem[4]

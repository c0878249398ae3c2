"""Every element of the input is read into a field, declared by the layout as something to
ignore, or a problem: nothing is passed over without a word, on every codec. Each case is
tried on the shipped routes of config/demo.toml with their own samples, changed the way a
real export goes wrong."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, SAMPLES
from xchange.codecs.json_codec import JsonCodec
from xchange.codecs.xml_codec import XmlCodec
from xchange.config import load_config
from xchange.errors import DecodeError, MappingError, ValidationFailed
from xchange.layout import Layout
from xchange.pipeline import Pipeline, make_pipeline
from xchange.report import Report

DEMO = REPO / "config" / "demo.toml"
NOW = __import__("datetime").datetime(2026, 11, 21, 12, 0)


def pipeline(route: str, **layout: Any) -> Pipeline:
    """The demo route's pipeline; ``layout`` keys replace the source layout's."""
    config = load_config(DEMO)
    made = make_pipeline(config.route(route), config.formats)
    assert isinstance(made, Pipeline)
    if layout:
        made.source = made.source.model_copy(update=layout)
        made._plan = None  # (the plan was built for the layout as loaded)
    return made


def sample(route: str) -> bytes:
    (path,) = (SAMPLES / route / "in").iterdir()
    return path.read_bytes()


def problems(route: str, data: bytes, **layout: Any) -> list[tuple[str, str, str]]:
    """(location, field, rule) of every problem; [] when the file converts."""
    try:
        pipeline(route, **layout).convert(data, "in", NOW)
    except ValidationFailed as exc:
        return [(p.location, p.field, p.rule) for p in exc.report.problems]
    return []


def rules(route: str, data: bytes, **layout: Any) -> list[str]:
    """The rule of every problem (see :func:`problems`)."""
    return [rule for _, _, rule in problems(route, data, **layout)]


def doubled(data: bytes, tag: str) -> bytes:
    """``data`` with its first ``<tag>...</tag>`` given twice in a row."""
    start = data.index(f"<{tag}".encode())
    close = f"</{tag}>".encode()
    end = data.index(close) + len(close)
    return data[:end] + data[start:end] + data[end:]


def messages(route: str, data: bytes) -> str:
    try:
        pipeline(route).convert(data, "in", NOW)
    except ValidationFailed as exc:
        return exc.report.text()
    return ""


def test_every_shipped_sample_converts_with_nothing_left_unread() -> None:
    """The samples' every element is read or declared: strictness costs the real files
    nothing."""
    config = load_config(DEMO)
    for route in config.routes:
        if route.source.unpack is not None:
            continue  # an archive: its entries are read by a route's codec, tried there
        assert problems(route.name, sample(route.name)) == [], route.name


# --------------------------------------------------------------------------- XML beside records


@pytest.mark.parametrize(
    ("route", "good", "bad"),
    [
        # a misspelt line among the lines of a receipt
        ("purchase-inbound", b'<Item sku="SKU-1002">', b'<ltem sku="SKU-1002">'),
        # a line element in another case among the records
        (
            "delivery-confirm",
            b"<orderLine>\n      <orderLineNo>2",
            b"<orderline>\n      <orderLineNo>2",
        ),
    ],
)
def test_a_misspelt_element_among_records_or_lines_is_a_problem(
    route: str, good: bytes, bad: bytes
) -> None:
    data = sample(route)
    assert good in data
    if route == "delivery-confirm":
        data = data.replace(good, bad).replace(
            b"</orderLine>\n  </orderLines>", b"</orderline>\n  </orderLines>"
        )
    else:
        data = data.replace(good, bad, 1).replace(
            b'</Item>\n    </Items>\n  </Receipt>\n  <Receipt no="RK20261121-02">',
            b'</ltem>\n    </Items>\n  </Receipt>\n  <Receipt no="RK20261121-02">',
            1,
        )
    found = problems(route, data)
    assert found and all(rule == "unknown" for _, _, rule in found), found
    assert any(("ltem" in field or "orderline" in field) for _, field, _ in found), found


def stock_count(route: str, line: bytes) -> bytes:
    """The stock-count sample with ``line`` added after its lines."""
    data = sample(route)
    assert b"</w:Lines>" in data or b"</Lines>" in data
    close = b"</w:Lines>" if b"</w:Lines>" in data else b"</Lines>"
    return data.replace(close, line + close, 1)


@pytest.mark.parametrize("route", ["wms-stock-count", "stock-count-gain", "stock-count-loss"])
def test_a_line_in_another_namespace_is_not_a_record_and_not_passed_over(route: str) -> None:
    """``<Line xmlns="urn:other">`` among the count's lines: on stock-count-gain the whole
    gain document vanished ("OK: 0 document(s)")."""
    data = stock_count(route, b'<Line xmlns="urn:other" no="9"><Sku>X</Sku></Line>')
    found = rules(route, data)
    assert found == ["unknown"], found
    assert "urn:other" in messages(route, data)


def test_an_element_anywhere_else_in_the_document_is_a_problem() -> None:
    """Beside the header's values, between the records, after them, and text where only
    elements belong."""
    data = sample("delivery-confirm")
    for extra in (
        (b"<warehouseCode>", b"<remark>fragile</remark><warehouseCode>"),
        (b"</orderLines>", b"<note>late</note></orderLines>"),
        (b"</request>", b"<signature>abc</signature></request>"),
        (b"<orderLines>", b"<orderLines>stray text"),
        (b"<itemCode>", b"<discount>10.00</discount><itemCode>"),
        (b"<orderLine>", b'<orderLine status="cancelled">'),
    ):
        found = rules("delivery-confirm", data.replace(*extra, 1))
        assert found == ["unknown"], (extra, found)


def test_unknown_xml_input_may_be_ignored_or_warned_per_layout_and_per_subtree() -> None:
    data = sample("delivery-confirm").replace(
        b"<itemCode>", b"<discount>10.00</discount><itemCode>", 1
    )
    assert problems("delivery-confirm", data, unknown="ignore") == []
    declared = pipeline("delivery-confirm").source.unknown_in
    for path in ("discount", "/request/orderLines/orderLine/discount", "/request/orderLines"):
        assert problems("delivery-confirm", data, unknown_in={**declared, path: "ignore"}) == []
    warned = pipeline("delivery-confirm", unknown="warn").convert(data, "in", NOW)
    assert warned  # delivered, with the warning in the conversion
    conversion = pipeline("delivery-confirm", unknown="warn").convert_stream(
        io.BytesIO(data), "in", NOW, __import__("xchange.sink", fromlist=["Sink"]).Sink()
    )
    assert any("discount" in w for w in conversion.warnings)
    # The nearest declared path decides: ignored below a subtree that rejects.
    assert problems(
        "delivery-confirm", data, unknown="ignore", unknown_in={"/request/orderLines": "reject"}
    ) == [("line 27", "/request/orderLines/orderLine/discount", "unknown")]


# --------------------------------------------------------------------------- JSON keys


def oms(change: Any) -> bytes:
    doc = json.loads(sample("oms-kingdee-orders"))
    change(doc)
    return json.dumps(doc, ensure_ascii=False, indent=2).encode()


def test_an_unknown_json_key_on_a_line_or_a_record_is_a_problem_naming_its_path() -> None:
    data = oms(lambda d: d["orders"][0]["items"][1].update(discount="10.00"))
    found = problems("oms-kingdee-orders", data)
    assert [(loc, field, rule) for loc, field, rule in found] == [
        ("$.orders[0].items[1]", "items.discount", "unknown")
    ]
    data = oms(lambda d: d["orders"][1].update(coupon={"code": "X", "amount": "5"}))
    assert [f for _, f, _ in problems("oms-kingdee-orders", data)] == ["coupon"]
    data = oms(lambda d: d.update(page=2))
    assert [f for _, f, _ in problems("oms-kingdee-orders", data)] == ["$.page"]


def test_unknown_json_keys_may_be_ignored_or_warned_per_layout_and_per_subtree() -> None:
    data = oms(lambda d: d["orders"][0]["items"][1].update(discount="10.00"))
    declared = pipeline("oms-kingdee-orders").source.unknown_in
    assert problems("oms-kingdee-orders", data, unknown="ignore") == []
    for path, policy in (("items", "warn"), ("items.discount", "ignore"), ("$.orders", "ignore")):
        relaxed = {**declared, path: policy}
        assert problems("oms-kingdee-orders", data, unknown_in=relaxed) == [], path
    assert problems("oms-kingdee-orders", data, unknown_in={**declared, "remark": "ignore"}) != []


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["orders"][0].pop("items"),
        lambda d: d["orders"][0].update(itemz=d["orders"][0].pop("items")),
        lambda d: d["orders"][0].update(items=[]),
        lambda d: d["orders"][0].update(items=None),
    ],
    ids=["missing", "misspelt", "empty", "null"],
)
def test_an_order_without_lines_is_a_problem_unless_the_layout_allows_it(change: Any) -> None:
    """A nested document needs at least one line: a missing or misspelt lines key lost
    them all, and the order was delivered with none."""
    data = oms(change)
    found = problems("oms-kingdee-orders", data)
    assert ("$.orders[0]", "items", "lines") in found, found
    relaxed = problems("oms-kingdee-orders", data, min_lines=0)
    assert all(rule == "unknown" for _, _, rule in relaxed), relaxed  # itemz: still unread


def test_an_xml_receipt_without_lines_is_a_problem_unless_the_layout_allows_it() -> None:
    data = sample("purchase-inbound")
    start = data.index(b"<Items>")
    end = data.index(b"</Items>") + len(b"</Items>")
    for empty in (b"<Items/>", b""):
        changed = data[:start] + empty + data[end:]
        found = rules("purchase-inbound", changed)
        assert found == ["lines"], found
        assert "no line" in messages("purchase-inbound", changed)
        # The source may say it has no line; its Kingdee payload may not (its layout
        # needs one): read back for its control totals, it is refused before delivery.
        with pytest.raises(MappingError, match="does not read back in it"):
            pipeline("purchase-inbound", min_lines=0).convert(changed, "in", NOW)


@pytest.mark.parametrize(
    ("key", "value", "ok"),
    [
        ("sku", True, False),
        ("sku", 1001, False),
        ("qty", "2", True),
        ("qty", 2, True),
        ("qty", True, False),
        ("price", 89.5, True),
        ("price", "89.50", True),
        ("price", False, False),
        ("tax_rate", [13], False),
    ],
)
def test_a_json_value_must_be_of_a_type_its_field_takes(key: str, value: Any, ok: bool) -> None:
    """``"sku": true`` was delivered to Kingdee as "TRUE"; a string is read by the field's
    rules whatever its type, a number only into a number, true/false only into a
    boolean."""
    data = oms(lambda d: d["orders"][0]["items"][0].update({key: value}))
    found = problems("oms-kingdee-orders", data)
    assert (found == []) is ok, found
    if not ok:
        assert found == [("$.orders[0].items[0]", key, "type")]


def test_a_json_date_field_takes_a_string_not_a_number() -> None:
    data = oms(lambda d: d["orders"][0].update(order_time=20261121))
    assert problems("oms-kingdee-orders", data) == [("$.orders[0]", "order_time", "type")]


# --------------------------------------------------------------------------- XML declaration


def gb_count(declaration: str) -> bytes:
    """The GB18030 stock count with another XML declaration."""
    data = sample("wms-stock-count")
    first, _, rest = data.partition(b"\n")
    assert first.startswith(b"<?xml")
    return f'<?xml version="1.0" encoding="{declaration}"?>'.encode() + b"\n" + rest


def test_a_declaration_that_contradicts_the_layout_is_refused_naming_both() -> None:
    """Big5 declared on GB18030 bytes: the names arrived garbled and the file delivered."""
    with pytest.raises(DecodeError, match=r"says it is Big5.*says gb18030"):
        pipeline("wms-stock-count").convert(gb_count("Big5"), "in", NOW)
    # Agreeing declarations: the same encoding, or one the layout's reads identically.
    for declared in ("GB18030", "gb18030", "GBK", "GB2312"):
        if declared == "GB2312":
            continue  # (the sample holds characters beyond GB2312: read as GB18030 all the same)
        assert pipeline("wms-stock-count").convert(gb_count(declared), "in", NOW)


def test_a_layout_may_trust_the_declaration() -> None:
    layout = pipeline("wms-stock-count").source
    trusting = layout.model_copy(
        update={"xml": layout.xml.model_copy(update={"declared_encoding": "trust"})}  # type: ignore[union-attr]
    )
    text = (
        "<?xml version='1.0' encoding='UTF-8'?>"
        "<w:StockCount xmlns:w='urn:example:wms:stockcount:1'/>"
    )
    report = Report("in")
    with pytest.raises(DecodeError, match="says it is UTF-8"):
        list(XmlCodec().records(io.BytesIO(text.encode()), layout, "in", report))
    list(XmlCodec().records(io.BytesIO(text.encode()), trusting, "in", report))


def read_xml(encoding: str, data: bytes) -> tuple[list[Any], Report]:
    """The records of ``<R><v>...</v></R>`` read by a one-field layout in ``encoding``."""
    layout = Layout.model_validate(
        {
            "name": "t",
            "codec": "xml",
            "encoding": encoding,
            "xml": {"root": "R"},
            "fields": [{"name": "v"}],
        }
    )
    report = Report("in")
    return list(XmlCodec().records(io.BytesIO(data), layout, "in", report)), report


def test_a_utf32_byte_order_mark_is_not_read_as_utf16() -> None:
    (record,), report = read_xml("utf-32", "\ufeff<R><v>中文</v></R>".encode("utf-32-le"))
    assert record.values == {"v": "中文"} and not report


def test_json_reader_reports_keys_the_layout_does_not_read_in_ndjson_too() -> None:
    layout = Layout.model_validate(
        {"name": "t", "codec": "json", "json": {"ndjson": True}, "fields": [{"name": "id"}]}
    )
    report = Report("in")
    list(
        JsonCodec().records(io.BytesIO(b'{"id": "1"}\n{"id": "2", "x": 1}\n'), layout, "in", report)
    )
    assert [(p.field, p.rule) for p in report.problems] == [("x", "unknown")]


# --------------------------------------------------------------------------- bounded reasons


def test_a_huge_parser_message_is_one_bounded_line_and_the_report_file_has_it_whole(
    tmp_path: Path,
) -> None:
    """libxml2's message for a mismatched 10,000-character tag was one 10,141-character
    line on validate's output."""
    from click.testing import CliRunner

    from xchange.cli import main
    from xchange.cli.main import LINE_LIMIT

    tag = "X" * 10_000
    bad = tmp_path / "count.xml"
    bad.write_text(f'<w:StockCount xmlns:w="urn:example:wms:stockcount:1"><{tag}></w:StockCount>')
    args = ["validate", "--config", str(DEMO), "--route", "wms-stock-count", str(bad)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert all(len(line) <= LINE_LIMIT for line in result.output.splitlines()), result.output
    assert "--report FILE" in result.output
    whole = tmp_path / "report.txt"
    result = CliRunner().invoke(main, [*args, "--report", str(whole)])
    assert all(len(line) <= LINE_LIMIT for line in result.output.splitlines())
    assert tag in whole.read_text(encoding="utf-8")


def test_a_report_of_many_long_problems_prints_bounded_lines(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from xchange.cli import main
    from xchange.cli.main import LINE_LIMIT

    data = sample("delivery-confirm").replace(
        b"<itemCode>", b"<" + b"d" * 3000 + b">1</" + b"d" * 3000 + b"><itemCode>"
    )
    bad = tmp_path / "d.xml"
    bad.write_bytes(data)
    whole = tmp_path / "report.txt"
    args = ["validate", "--config", str(DEMO), "--route", "delivery-confirm", str(bad)]
    result = CliRunner().invoke(main, [*args, "--report", str(whole)])
    assert result.exit_code == 1
    assert all(len(line) <= LINE_LIMIT for line in result.output.splitlines())
    assert "d" * 100 in whole.read_text(encoding="utf-8")  # (a name from the file: shortened)


def test_a_json_route_says_what_it_normalised_like_the_others() -> None:
    """``digits = "unicode"`` reads ２ as 2 on every codec, and the report says so."""
    layout = Layout.model_validate(
        {
            "name": "t",
            "codec": "json",
            "json": {"records": "$[*]"},
            "fields": [{"name": "qty", "type": "integer", "digits": "unicode"}],
        }
    )
    report = Report("in")
    (record,) = JsonCodec().records(io.BytesIO('[{"qty": "１２"}]'.encode()), layout, "in", report)
    assert record.values == {"qty": 12} and not report
    assert any("１２" in w for w in report.warnings), report.warnings


@pytest.mark.parametrize(
    ("route", "at", "text"),
    [
        ("wms-stock-count", b'<Line no="2">', b"junk"),
        ("purchase-inbound", b'<Receipt no="RK20261121-02">', b"junk"),
        ("purchase-inbound", b'<Receipt no="RK20261121-01">', b"<!--c-->junk"),
        ("purchase-inbound", b'<Receipt no="RK20261121-02">', b"<?pi x?>junk"),
        ("delivery-confirm", b"<orderLine>", b"<![CDATA[x]]>"),
        ("delivery-confirm", b"<orderLineNo>", "\u3000".encode()),
    ],
)
def test_text_between_records_is_input_too(route: str, at: bytes, text: bytes) -> None:
    """Text after any record (or after a comment among them) was dropped with the record;
    XML's white space is space, tab, CR and LF only (an ideographic space is text)."""
    data = sample(route)
    assert at in data
    data = (
        data.replace(at, text + at, 1)
        if route != "wms-stock-count"
        else data.replace(at, text.decode().encode("gb18030") + at, 1)
    )
    found = rules(route, data)
    assert found == ["unknown"], found


def test_a_lines_container_given_twice_in_one_document_is_a_problem() -> None:
    """Two <Items> in one receipt were merged into one document's lines without a word."""
    found = rules("purchase-inbound", doubled(sample("purchase-inbound"), "Items"))
    assert "structure" in found, found


@pytest.mark.parametrize(
    ("route", "container"), [("wms-stock-count", "Lines"), ("delivery-confirm", "orderLines")]
)
def test_records_in_several_blocks_are_read_from_each(route: str, container: str) -> None:
    """Records are records wherever their path matches: an export in batches
    (<Lines>...</Lines><Lines>...</Lines>) gives the rows of both, each once."""
    data = sample(route)
    once = pipeline(route).convert(data, "in", NOW)
    twice = pipeline(route).convert(doubled(data, container), "in", NOW)
    assert sum(o.documents for o in twice) == 2 * sum(o.documents for o in once)


def test_an_attribute_in_the_xml_namespace_is_named_as_the_layout_would_write_it() -> None:
    data = sample("delivery-confirm").replace(b"<orderLine>", b'<orderLine xml:lang="zh">', 1)
    text = messages("delivery-confirm", data)
    assert '"/request/orderLines/orderLine/@xml:lang" = "ignore"' in text, text
    declared = pipeline("delivery-confirm").source.unknown_in
    relaxed = {**declared, "/request/orderLines/orderLine/@xml:lang": "ignore"}
    assert problems("delivery-confirm", data, unknown_in=relaxed) == []


def test_an_element_of_a_namespace_the_layout_has_no_prefix_for_says_so() -> None:
    data = sample("delivery-confirm").replace(
        b"<itemCode>", b'<o:Ext xmlns:o="urn:o">1</o:Ext><itemCode>', 1
    )
    assert "no prefix in the layout" in messages("delivery-confirm", data)


@pytest.mark.parametrize(
    ("route", "change"),
    [
        (
            "delivery-confirm",
            lambda d: d.replace("纯棉T恤 白色".encode(), "纯棉T恤&#x85;白色".encode()),
        ),
        (
            "delivery-confirm",
            lambda d: d.replace("纯棉T恤 白色".encode(), "纯棉T恤&#x7F;白色".encode()),
        ),
        ("shop-kingdee-orders", None),
        ("oms-kingdee-orders", None),
    ],
)
def test_a_control_character_in_a_value_is_a_problem(route: str, change: Any) -> None:
    """ESC, NUL, DEL or NEL inside a remark reached the ERP's file as they were."""
    if route == "oms-kingdee-orders":
        data = oms(lambda d: d["orders"][0].update(remark="尾款\u0000已付"))
    elif route == "shop-kingdee-orders":
        raw = sample(route)
        text = raw.decode("gbk")
        assert "请周末送货" in text
        data = text.replace("请周末送货", "请周末\x1b送货", 1).encode("gbk")
    else:
        data = change(sample(route))
    found = rules(route, data)
    assert found == ["invisible"], found


def test_an_empty_xml_records_element_is_nothing_to_do_as_an_empty_json_list_is() -> None:
    data = sample("purchase-inbound")
    start = data.index(b"<Receipt ")
    end = data.rindex(b"</Receipt>") + len(b"</Receipt>")
    assert problems("purchase-inbound", data[:start] + data[end:]) == []
    wrong = data[:start] + b"<Recipt/>" + data[end:]
    assert problems("purchase-inbound", wrong)


@pytest.mark.parametrize("label", ["x-gbk", "GB-18030", "GB_2312-80", "CP936"])
def test_encoding_labels_exporters_write_are_known(label: str) -> None:
    assert pipeline("wms-stock-count").convert(gb_count(label), "in", NOW)


def test_a_refused_json_value_says_from_which_line() -> None:
    """A duplicate key deep in a record, NaN, a 5,000-digit number: the line of the value,
    and no advice meant for programmers (sys.set_int_max_str_digits)."""
    padding = '{"orders": [\n' + '{"order_no": "SO1"},\n' * 3
    for bad, says in (
        ('{"x": {"a": 1, "a": 2}}', "duplicate key 'a'"),
        ('{"q": NaN}', "NaN"),
        ('{"q": ' + "9" * 5000 + "}", "more than 4,300 digits"),
    ):
        with pytest.raises(DecodeError) as caught:
            pipeline("oms-kingdee-orders").convert((padding + bad + "]}").encode(), "in", NOW)
        assert "from line 5" in str(caught.value) and says in str(caught.value), caught.value
        assert "set_int_max_str_digits" not in str(caught.value)


@pytest.mark.parametrize(
    "extra",
    [
        {"min_lines": 0},
        {"line_fields": [{"name": "sku"}]},
        {"json": {"lines": "items"}},
    ],
)
def test_keys_about_lines_are_refused_on_a_layout_without_lines(extra: dict[str, Any]) -> None:
    from pydantic import ValidationError

    base = {"name": "t", "codec": "json", "fields": [{"name": "id"}]}
    with pytest.raises(ValidationError, match="only a nested layout has lines"):
        Layout.model_validate({**base, **extra})


def test_gb18030s_byte_order_mark_is_a_mark_not_text() -> None:
    """84 31 95 33 (U+FEFF in GB18030) before a header: the header was read as
    '\\ufeffreturn_no' and refused."""
    data = sample("sales-returns")
    assert not data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8-sig")  # (the sample is UTF-8; its layout says auto)
    marked = b"\x84\x31\x95\x33" + text.encode("gb18030")
    assert problems("sales-returns", marked) == []
    xml = sample("wms-stock-count")
    assert problems("wms-stock-count", b"\x84\x31\x95\x33" + xml) == []


# --------------------------------------------------------------------------- from a review


def test_trim_does_not_take_a_control_character_away_in_silence() -> None:
    """str.strip() counts U+001F and U+0085 as white space: 'ABC\\x1f' was read as 'ABC'."""
    from xchange.layout import FieldSpec, FieldValueError

    spec = FieldSpec(name="r")
    for text in ("ABC\x1f", "\x85ABC"):
        with pytest.raises(FieldValueError):
            spec.parse(text)
    assert spec.parse("\u3000ABC\u00a0 ") == "ABC"  # white space of any script is trimmed


def test_a_regex_in_a_mapping_reads_digits_as_a_layouts_pattern_does() -> None:
    from xchange.expressions import Expression, Names

    expression = Expression.compile(
        'regex(code, "EC(\\\\d+)", 1)', Names(frozenset({"code"}), frozenset())
    )
    assert expression.evaluate({"code": "EC2026"}) == "2026"
    assert expression.evaluate({"code": "EC２０２６"}) is None


def test_ndjson_members_beside_the_records_are_input_too() -> None:
    layout = Layout.model_validate(
        {
            "name": "t",
            "codec": "json",
            "json": {"ndjson": True, "records": "$.order"},
            "fields": [{"name": "id"}],
        }
    )
    report = Report("in")
    data = b'{"order": {"id": "1"}, "total": "99"}\n'
    list(JsonCodec().records(io.BytesIO(data), layout, "in", report))
    assert [(p.location, p.field, p.rule) for p in report.problems] == [
        ("line 1", "$.total", "unknown")
    ]


def test_a_declared_path_inside_a_member_beside_the_records_decides_for_it() -> None:
    layout = Layout.model_validate(
        {
            "name": "t",
            "codec": "json",
            "json": {"records": "$.orders[*]"},
            "fields": [{"name": "id"}],
            "unknown_in": {"$.meta.generated": "ignore"},
        }
    )
    report = Report("in")
    data = b'{"orders": [{"id": "1"}], "meta": {"generated": "x", "by": "y"}}'
    list(JsonCodec().records(io.BytesIO(data), layout, "in", report))
    assert [p.field for p in report.problems] == ["$.meta.by"]


def test_a_csv_column_may_be_declared_ignored_by_name() -> None:
    from xchange.codecs.csv_codec import CsvCodec

    layout = Layout.model_validate(
        {"name": "t", "codec": "csv", "fields": [{"name": "a"}], "unknown_in": {"备注": "ignore"}}
    )
    report = Report("in")
    data = "a,备注,x\r\n1,2,3\r\n".encode()
    list(CsvCodec().records(io.BytesIO(data), layout, "in", report))
    assert len(report.problems) == 1 and "'x'" in report.problems[0].message
    assert "备注" not in report.problems[0].message


def test_a_path_below_the_record_is_below_each_line_too() -> None:
    data = sample("purchase-inbound").replace(
        b"<Qty>500</Qty>", b"<Qty>500</Qty><Discount>1</Discount>", 1
    )
    declared = pipeline("purchase-inbound").source.unknown_in
    assert problems("purchase-inbound", data)
    assert problems("purchase-inbound", data, unknown_in={**declared, "Discount": "ignore"}) == []


def test_a_gb2312_declaration_on_a_gb2312_layout_reads_gbk_text_as_before() -> None:
    data = '<?xml version="1.0" encoding="GB2312"?><R><v>王喆镕</v></R>'.encode("gbk")
    (record,), _ = read_xml("gb2312", data)
    assert record.values == {"v": "王喆镕"}


def test_warnings_beyond_the_cap_are_counted_and_messages_stay_on_one_line() -> None:
    report = Report("in", cap=2)
    for n in range(5):
        report.warn(f"w{n}")
    report.add("line 1", "f", "r", None, "first line\nsecond line")
    text = report.text(limit=200)
    assert "3 more warning(s) not listed" in text
    assert "first line second line" in text

"""A JSON route compiled into one function per record writes what the general way writes,
byte for byte, and reports what it reports, problem for problem, in the same order: for
random orders with numbers in every JSON form (``0.1``, ``1e-7``,
``12345678901234567890.123``, ``-0``, ``1E+2``), texts with escapes and any script,
missing and null fields, values of the wrong JSON type and values that break rules (a
record the compiled function cannot vouch for goes the general way)."""

from __future__ import annotations

import json
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.columnar_routes import route_config
from tests.conftest import FORMATS
from xchange.config import RouteConfig
from xchange.errors import XchangeError
from xchange.pipeline import Pipeline
from xchange.sink import Sink

NOW = datetime(2026, 11, 21, 12, 0)


class Raw(str):
    """A JSON value's text, written as it is (a number in the form drawn)."""


def dumps(value: Any, ascii_only: bool) -> str:
    """JSON text of ``value``, numbers (:class:`Raw`) in the form they were drawn."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{dumps(k, ascii_only)}: {dumps(v, ascii_only)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(dumps(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


MISSING = object()

NUMBER_TEXTS = st.sampled_from(
    ["0.1", "1e-7", "12345678901234567890.123", "-0", "-0.0", "1E+2", "59.90", "13", "0",
     "100", "100.001", "1e400", "-5", "7", "3.14159", "2.50", "99999.9999"]
)  # fmt: skip
NUMBERS = st.one_of(
    NUMBER_TEXTS.map(Raw),
    st.integers(-5, 10**20).map(lambda n: Raw(str(n))),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(lambda d: Raw(str(d))),
)
TEXTS = st.one_of(
    st.text('aZ9 -\t\n"\\/é中ß\u200b\x01\x7f\u3000', max_size=12),
    st.text(max_size=6),
    st.sampled_from(
        ["", " ", "  x  ", "a\tb", "é", "ß", "双十一预售", "\u200bX", "Ｘ１", '\\n"q"']
    ),
)


ORDER_NOS = st.integers(0, 6).map(lambda i: f"SO{20261121000000 + i:014d}")
TIMES = st.one_of(
    st.sampled_from(["2026-11-21 10:00:05", "2026-11-21T23:59:59", "2026-02-30 10:00:00", "x"]),
    st.datetimes(min_value=datetime(1900, 1, 1)).map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S")),
)
SHOPS = st.sampled_from(["TMALL01", "JD01", "WEB01", "NOPE", " JD01", ""])
CUSTOMERS = st.sampled_from(["C-TMALL", "C-JD", "C-WEB", "C-XX"])
CURRENCIES = st.sampled_from(["CNY", "HKD", "USD", "EUR", "cny"])
PRICES = st.one_of(NUMBERS, NUMBERS.map(str), st.sampled_from(["12.50", " 3.1 ", "1,000.00", "¥5"]))

ODD = st.one_of(
    st.just(None), st.just(MISSING), NUMBERS, TEXTS, st.booleans(), st.just([])
)  # fmt: skip


def build(
    good: dict[str, st.SearchStrategy[Any]], odd: dict[str, st.SearchStrategy[Any]]
) -> tuple[st.SearchStrategy[dict[str, Any]], st.SearchStrategy[dict[str, Any]]]:
    """Objects of good values, and objects with odd values among them: null, missing,
    another JSON type, values that break a rule."""
    clean = st.fixed_dictionaries(good)
    messy = st.fixed_dictionaries(
        {k: st.one_of(v, odd.get(k, v), ODD) for k, v in good.items()}
    ).map(lambda d: {k: v for k, v in d.items() if v is not MISSING})
    return clean, messy


def files(
    clean: st.SearchStrategy[Any], messy: st.SearchStrategy[Any]
) -> st.SearchStrategy[list[Any]]:
    """Up to five good records, and maybe one odd one among them."""
    return st.tuples(
        st.lists(clean, max_size=5), st.one_of(st.none(), st.none(), messy), st.integers(0, 5)
    ).map(lambda t: t[0] if t[1] is None else [*t[0][: t[2]], t[1], *t[0][t[2] :]])


GOOD_TEXT = st.text(
    "abcXYZ019-_ é中文订单号", min_size=1, max_size=8
).filter(lambda t: t.strip() == t)  # fmt: skip
AMOUNTS = st.decimals(min_value=0, max_value=10**6, places=2)
GOOD_ITEM, ODD_ITEM = build(
    {
        "sku": st.one_of(st.sampled_from(["sku-00001", "Sku-2", " sku-3 ", "ß-9"]), GOOD_TEXT),
        "qty": st.integers(1, 12).map(lambda n: Raw(str(n))),
        "price": st.one_of(
            AMOUNTS.map(lambda d: Raw(str(d))),
            AMOUNTS.map(str),
            st.sampled_from(["0.1", "12345678901234567890.12", "-0", "1E+2", "59.90"]).map(Raw),
        ),
        "tax_rate": st.sampled_from(["13", "0", "100", "6.5", "1E+1", "-0"]).map(Raw),
    },
    {
        "sku": TEXTS,
        "qty": st.one_of(st.integers(-2, 12).map(lambda n: Raw(str(n))), NUMBERS),
        "price": st.one_of(PRICES, st.sampled_from(["1e-7", "12345678901234567890.123"]).map(Raw)),
        "tax_rate": st.one_of(st.sampled_from(["100.5", "101", "1e2"]).map(Raw), PRICES),
    },
)
GOOD_HEAD, ODD_HEAD = build(
    {
        "order_no": st.integers(0, 10**6).map(lambda i: f"SO{20261121000000 + i:014d}"),
        "order_time": st.sampled_from(["2026-11-21 10:00:05", "2026-11-21T23:59:59"]),
        "shop_code": st.sampled_from(["TMALL01", "JD01", "WEB01"]),
        "customer_code": st.sampled_from(["C-TMALL", "C-JD", "C-WEB"]),
        "currency": st.sampled_from(["CNY", "HKD", "USD"]),
        "remark": st.one_of(st.none(), GOOD_TEXT, st.sampled_from(["", " 请周末送货 ", 'a\\n"b'])),
    },
    {
        "remark": TEXTS,
        "order_no": ORDER_NOS,
        "order_time": TIMES,
        "shop_code": SHOPS,
        "customer_code": CUSTOMERS,
        "currency": CURRENCIES,
    },
)
GOOD_ORDER = st.tuples(GOOD_HEAD, st.lists(GOOD_ITEM, min_size=1, max_size=4)).map(
    lambda t: {**t[0], "items": t[1]}
)
ODD_ORDER = st.one_of(
    st.tuples(GOOD_HEAD, st.lists(ODD_ITEM, min_size=1, max_size=4)),
    st.tuples(ODD_HEAD, st.lists(GOOD_ITEM, min_size=1, max_size=4)),
    st.tuples(GOOD_HEAD, st.sampled_from([None, MISSING, {"sku": "x"}, [], ["not a line"]])),
    st.tuples(GOOD_HEAD.map(lambda d: {**d, "extra": 1}), st.lists(GOOD_ITEM, min_size=1)),
).map(lambda t: {**t[0], **({} if t[1] is MISSING else {"items": t[1]})})


def outcome(pipeline: Pipeline, data: bytes) -> object:
    """The outputs (names, bytes, counts), warnings, records read and encoding, or the
    error and every problem reported, in the order reported."""
    try:
        done = pipeline.convert_stream(BytesIO(data), "orders.json", NOW, Sink())
    except XchangeError as exc:
        report = getattr(exc, "report", None)
        if report is None:
            return (type(exc).__name__, str(exc))
        problems = [(p.location, p.field, p.rule, p.value, p.message) for p in report.problems]
        return (type(exc).__name__, str(exc), problems, report.warnings)
    outputs = [(o.name, o.data, o.documents, o.sha256, o.size) for o in done.outputs]
    return (outputs, done.warnings, done.records, done.encoding)


def delivered(found: object) -> str:
    """What the example shows (for ``--hypothesis-show-statistics``)."""
    if isinstance(found, tuple) and isinstance(found[0], list):
        return f"{min(len(found[0]), 3)}+ documents written" if found[0] else "nothing to write"
    return "refused"


def compiled_and_general(route: RouteConfig, formats: Path) -> tuple[Pipeline, Pipeline]:
    """The route's pipeline twice: compiled into one function per record, and without."""
    compiled, general = Pipeline(route, formats), Pipeline(route, formats)
    assert compiled._compiled_route is not None
    general._compiled_route = None
    return compiled, general


OMS = compiled_and_general(
    route_config(
        "oms-sales-order", "oms-to-kingdee-sale-order", "kingdee-sale-order", "{FBillNo}.json"
    ),
    FORMATS,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(orders=files(GOOD_ORDER, ODD_ORDER), ascii_only=st.booleans(), wrapped=st.booleans())
def test_oms_orders_come_out_the_same_compiled_or_not(
    orders: list[dict[str, Any]], ascii_only: bool, wrapped: bool
) -> None:
    """The benchmark's route (OMS orders -> one Kingdee order each): same bytes, or the
    same problems in the same order."""
    body = "[" + ",\n".join(dumps(o, ascii_only) for o in orders) + "]"
    text = '{"export_id": 1, "orders": ' + body + "}" if wrapped else '{"orders": ' + body + "}"
    data = text.encode()
    compiled, general = OMS
    found = outcome(compiled, data)
    assert found == outcome(general, data)
    event(delivered(found))


def test_good_orders_are_written_by_the_compiled_function() -> None:
    """A file of good orders is all written by the compiled function (none goes the
    general way), with the bytes the general way writes."""
    compiled, general = OMS
    orders = [
        {
            "order_no": f"SO{20261121000000 + i:014d}",
            "order_time": "2026-11-21 10:00:05",
            "shop_code": "JD01",
            "customer_code": "C-JD",
            "currency": "CNY",
            "remark": [None, " 请周末送货 ", ""][i % 3],
            "items": [
                {"sku": "sku-1", "qty": Raw("2"), "price": Raw("59.90"), "tax_rate": Raw("13")},
                {"sku": "ab", "qty": Raw("1"), "price": "0.1", "tax_rate": Raw("1E+1")},
            ],
        }
        for i in range(6)
    ]
    data = ('{"orders": [' + ", ".join(dumps(o, False) for o in orders) + "]}").encode()
    route = compiled._compiled_route
    assert route is not None
    calls: list[object] = []

    def counted(node: Any, where: str, first: Any) -> Any:
        made = route(node, where, first)
        calls.append(made is not None)
        return made

    compiled._compiled_route = counted
    try:
        assert outcome(compiled, data) == outcome(general, data)
    finally:
        compiled._compiled_route = route
    assert calls == [True] * 6


SOURCE = """
name = "flat-in"
version = "1"
codec = "json"
encoding = "utf-8"
unknown = "warn"
[json]
records = "$.rows[*]"
[[fields]]
name = "id"
required = true
pattern = '[A-Z][0-9]+'
unique = true
[[fields]]
name = "code"
trim = false
[[fields]]
name = "kind"
type = "enum"
values = ["a", "b"]
[[fields]]
name = "n"
type = "integer"
min = 0
[[fields]]
name = "amount"
type = "decimal"
{scale}
[[fields]]
name = "day"
type = "date"
formats = ["%Y-%m-%d"]
[[fields]]
name = "flag"
type = "boolean"
"""

TARGET = """
name = "flat-out"
version = "1"
codec = "json"
encoding = "{encoding}"
[json]
{json}
[[fields]]
name = "id"
required = true
[[fields]]
name = "code"
max_length = 6
[[fields]]
name = "lower"
[[fields]]
name = "kind"
[[fields]]
name = "n"
type = "integer"
[[fields]]
name = "amount"
type = "decimal"
scale = {target_scale}
[[fields]]
name = "day"
type = "date"
formats = ["%d/%m/%Y"]
[[fields]]
name = "flag"
type = "boolean"
[[fields]]
name = "fixed"
[[fields]]
name = "label"
column = "meta.label"
"""

MAPPING = """
name = "flat"
version = "1"
source = "flat-in"
target = "flat-out"
output = "per-document"
[header]
id = "id"
code = "code"
lower = { from = "code", trim = true, case = "lower" }
kind = { from = "kind", table = "kinds", default = "a" }
n = "n"
amount = "amount"
day = "day"
flag = "flag"
fixed = { const = "X-1" }
label = { from = "kind", table = "labels" }
[tables.kinds]
a = "alpha"
b = "beta"
[tables.labels]
a = "第一"
b = "second"
"""


def flat_pipelines(
    folder: Path, scale: int | None, target_scale: int, encoding: str, ndjson: bool
) -> tuple[Pipeline, Pipeline]:
    formats = folder / f"formats-{scale}-{target_scale}-{encoding}-{ndjson}"
    if not formats.exists():
        formats.mkdir(parents=True)
        (formats / "flat-in.toml").write_text(
            SOURCE.format(scale="" if scale is None else f"scale = {scale}"), "utf-8"
        )
        (formats / "flat-out.toml").write_text(
            TARGET.format(
                encoding=encoding,
                target_scale=target_scale,
                json="ndjson = true" if ndjson else "indent = 2",
            ),
            "utf-8",
        )
        (formats / "flat.toml").write_text(MAPPING, "utf-8")
    route = route_config("flat-in", "flat", "flat-out", "{id}.json")
    return compiled_and_general(route, formats)


GOOD_ROW, ODD_ROW = build(
    {
        "id": st.integers(0, 10**6).map(lambda i: f"A{i}"),
        "code": st.one_of(
            st.sampled_from(["ab", " Ab ", "Ç", ""]), GOOD_TEXT.filter(lambda t: len(t) <= 6)
        ),
        "kind": st.sampled_from(["a", "b", ""]),
        "n": st.integers(0, 10**25).map(lambda n: Raw(str(n))),
        "amount": st.one_of(
            st.integers(-(10**12), 10**12).map(lambda n: Raw(str(n))),
            st.sampled_from(["-0", "1E+2", "0.0", "7", "12345678901234567890"]).map(Raw),
        ),
        "day": st.sampled_from(["2026-11-21", ""]),
        "flag": st.one_of(st.booleans(), st.sampled_from(["true", "no", "1"])),
    },
    {
        "id": st.one_of(st.integers(0, 4).map(lambda i: f"A{i}"), TEXTS),
        "code": st.sampled_from(["ABCDEFGH", " x\u200b"]),
        "kind": st.sampled_from(["c", "A"]),
        "n": st.one_of(st.integers(-3, 10).map(lambda n: Raw(str(n))), NUMBERS),
        "amount": st.one_of(NUMBERS, PRICES),
        "day": st.sampled_from(["2026-13-01", "21/11/2026"]),
        "flag": st.sampled_from(["maybe", "2"]),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=files(
        GOOD_ROW,
        st.one_of(ODD_ROW, st.just(["not", "a", "record"]), GOOD_ROW.map(lambda r: {**r, "z": 1})),
    ),
    scale=st.sampled_from([None, 2, 4]),
    target_scale=st.sampled_from([0, 2, 4]),
    encoding=st.sampled_from(["utf-8", "gb18030", "ascii"]),
    ndjson=st.booleans(),
    ascii_only=st.booleans(),
)
def test_flat_records_come_out_the_same_compiled_or_not(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[Any],
    scale: int | None,
    target_scale: int,
    encoding: str,
    ndjson: bool,
    ascii_only: bool,
) -> None:
    """Flat records through copies (taken unchanged or checked again), a trim and a
    case, tables with and without a default, a constant, dates and flags, written
    indented or as NDJSON, in encodings that cannot write every character."""
    folder = tmp_path_factory.getbasetemp() / "compiled-flat"
    compiled, general = flat_pipelines(folder, scale, target_scale, encoding, ndjson)
    data = ('{"rows": [' + ", ".join(dumps(r, ascii_only) for r in rows) + "]}").encode()
    found = outcome(compiled, data)
    assert found == outcome(general, data)
    event(delivered(found))

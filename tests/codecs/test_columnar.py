"""The columnar fast path for flat CSV -> CSV routes gives exactly what the row path gives:
the same bytes, or the same report."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.columnar_routes import (
    GOOD,
    HEADER,
    NOW,
    POOLS,
    fast_and_slow,
    outcome,
    route_config,
)
from tests.conftest import REPO
from xchange.codecs import Chunk
from xchange.pipeline import Pipeline

FORMATS = REPO / "tests" / "bench" / "formats"


def pipelines(mapping: str = "shop-to-erp-lines") -> tuple[Pipeline, Pipeline]:
    target = "erp-order-lines" + mapping.removeprefix("shop-to-erp-lines")
    route = route_config("shop-order-lines", mapping, target, "ERP_{OrderNo}_{source_stem}.csv")
    return fast_and_slow(route, FORMATS)


FAST, SLOW = pipelines()
#: Three computed fields (a product, a rounded product, a lookup) and a filter.
FAST_EXPR, SLOW_EXPR = pipelines("shop-to-erp-lines-computed")


def gbk_csv(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows([HEADER, *rows])
    return buf.getvalue().encode("gbk")


def chunk_of(rows: list[list[str]]) -> Chunk:
    """Rows of text as the CSV codec gives them to the columnar plan."""
    columns = {name: [row[i] for row in rows] for i, name in enumerate(HEADER)}
    return Chunk(columns, len(rows), 0, True, lambda report: iter([]))  # type: ignore[arg-type]


def test_the_columnar_plan_is_used_for_flat_csv_routes() -> None:
    """A flat CSV -> CSV mapping gets a plan, and clean data goes through it."""
    assert FAST._plan is not None
    rows = [GOOD] * 3
    assert FAST._plan.convert(chunk_of(rows)) is not None
    assert outcome(FAST, gbk_csv(rows)) == outcome(SLOW, gbk_csv(rows))


@pytest.mark.parametrize("column", range(len(HEADER)))
def test_every_edge_value_of_every_column_gives_the_same_result(column: int) -> None:
    """One row per edge value: identical output bytes, or identical problems."""
    for value in POOLS[column]:
        row = list(GOOD)
        row[column] = value
        data = gbk_csv([GOOD, row])
        assert outcome(FAST, data) == outcome(SLOW, data), (HEADER[column], value)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[st.sampled_from(pool) for pool in POOLS]), min_size=1, max_size=12))
def test_random_files_give_the_same_result_both_ways(rows: list[tuple[str, ...]]) -> None:
    """Any mix of good and bad values: the fast path never differs from the row path."""
    data = gbk_csv([list(r) for r in rows])
    assert outcome(FAST, data) == outcome(SLOW, data)


def test_expressions_a_lookup_and_a_filter_take_the_columnar_path() -> None:
    """Clean data with computed fields, a lookup and a filter goes through the plan, with
    the same bytes as the row path and the same count of rows left out."""

    assert FAST_EXPR._plan is not None
    one = list(GOOD)
    one[11] = "1"  # left out by the filter (goods_number > 1)
    rows = [GOOD, one, GOOD]
    assert FAST_EXPR._plan.convert(chunk_of(rows)) is not None
    assert FAST_EXPR._plan.skipped == 1
    assert outcome(FAST_EXPR, gbk_csv(rows)) == outcome(SLOW_EXPR, gbk_csv(rows))
    (out,) = FAST_EXPR.convert(gbk_csv(rows), "in.csv", NOW)
    assert out.documents == 2 and b",119.80,104.23,M001001" in out.data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[st.sampled_from(pool) for pool in POOLS]), min_size=1, max_size=12))
def test_random_files_give_the_same_result_both_ways_with_expressions(
    rows: list[tuple[str, ...]],
) -> None:
    """With expressions, a lookup (misses included) and a filter: never a difference."""
    data = gbk_csv([list(r) for r in rows])
    assert outcome(FAST_EXPR, data) == outcome(SLOW_EXPR, data)


def test_chunks_keep_counting_lines_and_sequences(monkeypatch: pytest.MonkeyPatch) -> None:
    """Across chunk boundaries (some fast, some not), output and report stay identical."""
    import xchange.codecs.csv_codec as codec

    monkeypatch.setattr(codec, "CHUNK_ROWS", 4)
    bad = list(GOOD)
    bad[11] = "x"
    for rows in ([GOOD] * 10, [GOOD] * 5 + [bad] + [GOOD] * 5, [bad] + [GOOD] * 9):
        data = gbk_csv(rows)
        assert outcome(FAST, data) == outcome(SLOW, data)


def test_output_file_is_complete_and_named_from_the_first_row(tmp_path: Path) -> None:
    """The batch file is named from the first row's fields and holds every row."""
    (out,) = FAST.convert(gbk_csv([GOOD] * 5), "orders_x.csv", NOW)
    assert out.name == "ERP_EC20261121001_orders_x.csv"
    assert out.documents == 5
    assert out.data.count(b"\r\n") == 6


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.datetimes(min_value=datetime(1678, 1, 1), max_value=datetime(2261, 12, 31)),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from(["%Y%m%d", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M", "%H%M%S", "T%Y.%m"]),
)
def test_dates_are_written_and_recognised_as_strftime_does(
    values: list[datetime], fmt: str
) -> None:
    """The columnar date writer gives strftime's text, and that text is what the
    canonical pattern of the format accepts."""
    import re

    import pandas as pd

    from xchange.codecs.columnar import _strftime, canonical_when

    series = pd.Series(pd.to_datetime(values)).dt.floor("s")
    expected = [v.replace(microsecond=0).strftime(fmt) for v in values]
    assert _strftime(series, fmt).tolist() == expected
    pattern = canonical_when(fmt)
    assert pattern is not None
    assert all(re.fullmatch(pattern, e) for e in expected)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(alphabet=["E", "C", "1", "3", "8", "a", "-", " ", "中", "\x00"], max_size=6)),
    st.sampled_from(
        [r"EC\d{3}", r"1\d{2}", r"(?:ab)+", r"[A-Z]{1,2}-\d+", r"\w+", r"a|b|EC", r"1?3*"]
    ),
)
def test_a_column_checked_at_once_matches_as_value_by_value(
    values: list[str], pattern: str
) -> None:
    """A whole column against a pattern in one scan says what fullmatch on each value says
    (values holding a NUL themselves are never taken for a match)."""
    import re

    import pandas as pd

    from xchange.codecs.columnar import _all_match, _nul_safe

    assert _nul_safe(pattern)
    each = all(re.fullmatch(pattern, v) for v in values)
    together = _all_match(pd.Series(values, dtype=object), pattern)
    assert together == each or (not together and any("\x00" in v for v in values))


def test_patterns_that_could_match_across_values_are_checked_one_by_one() -> None:
    """Anchors, dots, negated classes, lookarounds and NUL escapes are not joined."""
    from xchange.codecs.columnar import _nul_safe

    for pattern in (r".*", r"a.*|b", r"[^a]+", r"^x", r"x$", r"\D+", r"(?=a)a", r"\x00", r"\S"):
        assert not _nul_safe(pattern), pattern


def test_every_mapping_key_is_carried_out_or_refused_by_the_columnar_path() -> None:
    """A new mapping key cannot be silently ignored on the fast path: it must be listed as
    carried out or as a reason to take the row path (and build() must refuse it)."""
    from xchange.codecs.columnar import ColumnarPlan
    from xchange.mapping import Mapping

    keys = set(Mapping.model_fields)
    assert keys == ColumnarPlan.CARRIES_OUT | ColumnarPlan.REFUSES
    assert not ColumnarPlan.CARRIES_OUT & ColumnarPlan.REFUSES


def test_every_rule_option_is_carried_out_or_refused_by_the_columnar_path() -> None:
    """The same for each option of a rule: a new one is in neither list until decided."""
    from xchange.codecs.columnar import ColumnarPlan
    from xchange.mapping import Rule

    assert set(Rule.model_fields) == ColumnarPlan.RULE_CARRIES_OUT | ColumnarPlan.RULE_REFUSES
    assert not ColumnarPlan.RULE_CARRIES_OUT & ColumnarPlan.RULE_REFUSES


# --------------------------------------------------------------------------- exact numbers

#: A route of computed numbers over a decimal without a scale (``amount``), one with a
#: scale of 2 (``price``) and an integer (``qty``), a lookup of an upper-cased key (its
#: values with and without spaces around them) and a filter.
NUMBERS = {
    "src.toml": """
name = "src"
version = "1"
codec = "csv"
encoding = "utf-8"
shape = "rows"
[[fields]]
name = "amount"
type = "decimal"
required = true
[[fields]]
name = "price"
type = "decimal"
scale = 2
required = true
[[fields]]
name = "qty"
type = "integer"
required = true
[[fields]]
name = "sku"
type = "string"
required = true
""",
    "tgt.toml": """
name = "tgt"
version = "1"
codec = "csv"
encoding = "utf-8"
shape = "rows"
[[fields]]
name = "Product"
type = "decimal"
scale = 7
required = true
[[fields]]
name = "Sum"
type = "decimal"
scale = 2
required = true
[[fields]]
name = "Net"
type = "decimal"
scale = 2
required = true
[[fields]]
name = "Difference"
type = "decimal"
scale = 7
[[fields]]
name = "Sku"
required = true
[[fields]]
name = "Material"
required = true
""",
    "map.toml": """
name = "map"
version = "1"
source = "src"
target = "tgt"
output = "batch"
filter = "qty != 7"
[header]
Product = { expr = "amount * qty" }
Sum = { expr = "price + qty" }
Net = { expr = 'round(price * qty * 0.87, 2, "half-up")' }
Difference = { expr = "price - amount" }
Sku = { from = "sku", case = "upper" }
Material = { expr = 'lookup("skus", upper(sku))' }
[lookups.skus]
file = "skus.csv"
key = "sku"
value = "material"
""",
    "skus.csv": "sku,material\nA-1,M1\nB-2, M2 \nC-3,M3\n",
}

#: Edge values of each source column (the other columns as in NUMBERS_GOOD).
NUMBERS_EDGES = {
    "amount": [
        "1.0000001",  # a float would call this 1 (7 decimals, 1e-7 away from it)
        "0.0000001",
        "-1.0000001",
        "-2.5",
        "123.4500",
        "0.1",
        "1.00000001",  # beyond the target's scale
        "299.9999999",
        "300.0000000",
        "300000000",  # beyond what the columnar path multiplies exactly
        "3000000000",
        "-0",
        "-0.0",
        "",
        "12345678901234567890",
        "1e3",
        "1.",
        ".5",
        "١٢",
    ],
    "price": ["59.90", "-0.01", "0.00", "99999999.99", "0.005", "1.999", "", "-0.00", "1.5"],
    "qty": ["1", "-3", "0", "007", "7", "9" * 18, "", "-0", "+2"],
    "sku": ["a-1", "A-1", "b-2", "c-3", "x-9", "", " a-1 "],
}
NUMBERS_GOOD = {"amount": "2.25", "price": "10.10", "qty": "3", "sku": "a-1"}


@pytest.fixture(scope="module")
def numbers_route(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pipeline, Pipeline]:
    formats = tmp_path_factory.mktemp("numbers")
    for name, text in NUMBERS.items():
        (formats / name).write_text(text.lstrip(), encoding="utf-8")
    return fast_and_slow(route_config("src", "map", "tgt", "out.csv"), formats)


def numbers_csv(rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(NUMBERS_GOOD))
    writer.writerows([[row[k] for k in NUMBERS_GOOD] for row in rows])
    return buf.getvalue().encode("utf-8")


def chunk_of_csv(data: bytes) -> Chunk:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    columns = {name: [row[i] for row in rows[1:]] for i, name in enumerate(rows[0])}
    return Chunk(columns, len(rows) - 1, 0, True, lambda report: iter([]))  # type: ignore[arg-type]


def test_computed_numbers_are_exact_on_the_columnar_path(
    numbers_route: tuple[Pipeline, Pipeline],
) -> None:
    """Decimals of a field without a scale are read digit by digit: 1.0000001 stays
    1.0000001 (read as a float and rounded to the fewest decimals, it became 1), on the
    columnar path, as the row path gives it."""
    fast, slow = numbers_route
    assert fast._plan is not None
    rows = [dict(NUMBERS_GOOD, amount="1.0000001"), dict(NUMBERS_GOOD, amount="-2.5")]
    data = numbers_csv(rows)
    fast.compiled.lookups.refresh()
    assert fast._plan.convert(chunk_of_csv(data)) is not None
    assert outcome(fast, data) == outcome(slow, data)
    (out,) = fast.convert(data, "in.csv", NOW)
    assert b"3.0000003," in out.data and b"-7.5000000," in out.data


@pytest.mark.parametrize("column", list(NUMBERS_EDGES))
def test_edge_numbers_give_what_the_row_path_gives(
    numbers_route: tuple[Pipeline, Pipeline], column: str
) -> None:
    """Negative, many decimals, beyond the scale, empty, huge, not a number: the same
    bytes or the same problems both ways (alone in a file, and beside a good row)."""
    fast, slow = numbers_route
    for value in NUMBERS_EDGES[column]:
        row = dict(NUMBERS_GOOD, **{column: value})
        for rows in ([row], [NUMBERS_GOOD, row, NUMBERS_GOOD]):
            data = numbers_csv(rows)
            assert outcome(fast, data) == outcome(slow, data), (column, value)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries({k: st.sampled_from(v) for k, v in NUMBERS_EDGES.items()}),
        min_size=1,
        max_size=8,
    )
)
def test_random_numbers_give_what_the_row_path_gives(
    numbers_route: tuple[Pipeline, Pipeline], rows: list[dict[str, str]]
) -> None:
    fast, slow = numbers_route
    data = numbers_csv(rows)
    assert outcome(fast, data) == outcome(slow, data)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.integers(0, 12).flatmap(
            lambda places: st.decimals(
                -(10**13), 10**13, allow_nan=False, allow_infinity=False, places=places
            )
        )
        | st.integers(-(10**19), 10**19).map(Decimal)
        | st.sampled_from(["1.50", "-0.10", "0.000", "2.0000001", "-0", "-0.00"]).map(Decimal),
        min_size=1,
        max_size=10,
    ),
    st.sampled_from([None, 0, 2, 5, 9]),
)
def test_numbers_are_read_as_decimal_reads_them(values: list[Decimal], scale: int | None) -> None:
    """The columnar reading of number text gives Decimal's value exactly, or gives up; it
    gives up only beyond what it holds (18 digits, the limit once scaled, a digit the scale
    would lose, more than 9 decimals) and on a negative zero (Decimal keeps its sign)."""
    import numpy as np

    from xchange.codecs.columnar import _NUM_LIMIT, _exact

    texts = [format(v, "f") for v in values]
    read = _exact(np.array(texts, dtype=object), scale)
    decimals = [max(0, -int(Decimal(t).normalize().as_tuple().exponent)) for t in texts]
    needed = max(decimals) if scale is None else scale
    scaled = [Decimal(t).scaleb(needed) for t in texts]
    fits = (
        needed <= 9
        and all(s == s.to_integral_value() and abs(s) <= _NUM_LIMIT for s in scaled)
        and all(sum(c.isdigit() for c in t) <= 18 for t in texts)
        and not any(t.startswith("-") and Decimal(t) == 0 for t in texts)
    )
    assert (read is not None) == fits, texts
    if read is not None:
        data, got_scale = read
        assert got_scale == needed
        assert [Decimal(int(x)) for x in data] == scaled


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(-(10**18) * 9, 10**18 * 9) | st.integers(-1000, 1000), min_size=1),
    st.integers(0, 9),
)
def test_computed_numbers_are_written_as_decimal_writes_them(values: list[int], scale: int) -> None:
    """Scaled integers as text: what format(Decimal, "f") writes at that exponent."""
    import numpy as np

    from xchange.codecs.columnar import _decimal_text

    written = _decimal_text(np.array(values, dtype=np.int64), scale).tolist()
    assert written == [format(Decimal(v).scaleb(-scale), "f") for v in values]


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(alphabet=["A", "b", "-", "1", "\x00", "é", " "], max_size=40),
        st.text(alphabet=["M", "1", " "], max_size=5),
        max_size=30,
    ),
    st.lists(st.text(alphabet=["A", "b", "-", "1", "\x00", "é", " "], max_size=40), max_size=20),
    st.data(),
)
def test_a_column_of_keys_is_looked_up_as_the_dictionary_does(
    table: dict[str, str], others: list[str], data: st.DataObject
) -> None:
    """Keys looked up a column at once (as numbers, when they are short ASCII text) find
    what the dictionary finds, and a key it lacks (longer, shorter, with a NUL, not ASCII,
    differing in one character) gives the chunk to the row path."""
    from xchange.codecs.columnar import _GiveUp, _Table

    keys = data.draw(st.lists(st.sampled_from(sorted(table) or [""]), max_size=20))
    keys += data.draw(st.sampled_from([[], others]))
    prepared = _Table.of(table)
    try:
        got: object = list(prepared.get(keys))
    except _GiveUp:
        got = "row path"
    expected = [table[k] for k in keys] if all(k in table for k in keys) else "row path"
    assert got == expected


def test_lookups_of_short_ascii_keys_use_the_index() -> None:
    """(The fast way is taken for the benchmark's keys; a NUL or a long key is not.)"""
    from xchange.codecs.columnar import _Table

    table = {f"SKU-{i:05d}": f"M{i:06d}" for i in range(1000)}
    assert _Table.of(table).index is not None
    assert list(_Table.of(table).get(["SKU-00007", "SKU-00999"])) == ["M000007", "M000999"]
    assert _Table.of({"a\x00": "x"}).index is None
    assert _Table.of({"k" * 33: "x"}).index is None
    assert _Table.of({"中": "x"}).index is None

"""Flat CSV -> CSV read in one pass and mapped on Arrow columns gives exactly what the
standard reading (structural pass, pandas, the columnar plan) and the row path give: the
same bytes, or the same error and report, on random and edge-case files."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xchange.codecs.arrow as arrow
import xchange.codecs.csv_codec as csv_codec
import xchange.codecs.text as text
from tests.columnar_routes import GOOD, HEADER, POOLS, fast_and_slow, outcome, route_config
from tests.conftest import REPO
from xchange.pipeline import Pipeline

FORMATS = REPO / "tests" / "bench" / "formats"


def three_ways(route_formats: tuple[str, str, str, str], formats: Path) -> list[Pipeline]:
    """The route's pipeline read the fast way (Arrow), the standard way (pandas and the
    columnar plan), and by the row path alone."""
    source, mapping, target, name = route_formats
    route = route_config(source, mapping, target, name)
    fast, rows = fast_and_slow(route, formats)
    standard = Pipeline(route, formats)
    standard._fast = False
    return [fast, standard, rows]


BENCH = three_ways(
    ("shop-order-lines", "shop-to-erp-lines", "erp-order-lines", "ERP_{OrderNo}.csv"), FORMATS
)

#: Three computed fields (a product, a rounded product, a lookup) and a filter.
COMPUTED = three_ways(
    (
        "shop-order-lines",
        "shop-to-erp-lines-computed",
        "erp-order-lines-computed",
        "ERP_{OrderNo}.csv",
    ),
    FORMATS,
)


@contextlib.contextmanager
def small_blocks() -> Iterator[None]:
    """Decoded pieces of 7 bytes and blocks of 40 characters: many chunks, and characters
    and lines cut at every place."""
    with mock.patch.object(text, "CHUNK", 7), mock.patch.object(csv_codec, "FAST_BLOCK", 40):
        yield


class Used:
    """Counts the chunks the Arrow plan converted."""

    def __init__(self) -> None:
        self.chunks = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[Used]:
        real = arrow.ArrowPlan.convert

        def convert(plan: arrow.ArrowPlan, *args: object) -> object:
            out = real(plan, *args)  # type: ignore[arg-type]
            self.chunks += out is not None
            return out

        with mock.patch.object(arrow.ArrowPlan, "convert", convert):
            yield self


def same_everywhere(pipelines: list[Pipeline], data: bytes) -> object:
    """The fast reading's outcome is the standard reading's, whatever it is; and when
    the file converts, the row path writes the same bytes. (When it does not, the row
    path alone may name another first cause: a value its writer cannot encode before
    the broken rule the columnar paths report.)"""
    fast, standard, rows = (outcome(p, data) for p in pipelines)
    assert fast == standard
    if isinstance(standard, list) or isinstance(rows, list):
        assert standard == rows
    return fast


def written(
    rows: list[list[str]],
    *,
    ending: str = "\r\n",
    quoting: str = "none",
    encoding: str = "gbk",
    blank: tuple[int, ...] = (),
    final: bool = True,
    bom: bytes = b"",
) -> bytes:
    """A CSV file as exports write it: fields quoted as ``quoting`` says ("none": as they
    are, whatever they hold), blank lines before the rows ``blank`` names."""

    def field(value: str) -> str:
        needs = any(c in value for c in ',"\r\n')
        if quoting == "all" or (quoting == "minimal" and needs):
            return '"' + value.replace('"', '""') + '"'
        return value

    lines = [",".join(map(field, HEADER))]
    for i, row in enumerate(rows):
        lines += [""] * blank.count(i)
        lines.append(",".join(map(field, row)))
    body = ending.join(lines) + (ending if final else "")
    return bom + body.encode(encoding, errors="replace")


def test_clean_files_take_the_arrow_path_with_the_same_bytes() -> None:
    """The benchmark's route has an Arrow plan, clean rows go through it, and the output is
    byte for byte the standard reading's."""
    assert BENCH[0]._arrow is not None
    with Used().counting() as used:
        result = same_everywhere(BENCH, written([GOOD] * 5))
    assert used.chunks == 1
    assert isinstance(result, list) and result[0][2] == 5


@pytest.mark.parametrize("column", range(len(HEADER)))
def test_every_edge_value_gives_the_same_result_all_three_ways(column: int) -> None:
    """One row per edge value, written as it is (no quoting), as RFC 4180 quotes it, and
    with every field quoted."""
    for value in POOLS[column]:
        row = list(GOOD)
        row[column] = value
        for quoting in ("none", "minimal", "all"):
            same_everywhere(BENCH, written([GOOD, row], quoting=quoting))


FILES = st.fixed_dictionaries(
    {
        "rows": st.lists(
            st.tuples(*[st.sampled_from(pool) for pool in POOLS]).map(list),
            min_size=0,
            max_size=10,
        ),
        "ending": st.sampled_from(["\r\n", "\n"]),
        "quoting": st.sampled_from(["none", "none", "minimal", "all"]),
        "encoding": st.sampled_from(["gbk", "gbk", "gb18030", "utf-8"]),
        "blank": st.lists(st.integers(0, 10), max_size=3).map(tuple),
        "final": st.booleans(),
        "ragged": st.lists(st.tuples(st.integers(0, 9), st.booleans()), max_size=2),
        "bom": st.sampled_from([b"", b"", b"\xef\xbb\xbf", b"\x84\x31\x95\x33"]),
    }
)


def random_file(spec: dict[str, object]) -> bytes:
    rows = [list(r) for r in spec["rows"]]  # type: ignore[attr-defined]
    for at, longer in spec["ragged"]:  # type: ignore[attr-defined]
        if at < len(rows):
            rows[at] = [*rows[at], "x"] if longer else rows[at][:-1]
    return written(
        rows,
        ending=spec["ending"],  # type: ignore[arg-type]
        quoting=spec["quoting"],  # type: ignore[arg-type]
        encoding=spec["encoding"],  # type: ignore[arg-type]
        blank=spec["blank"],  # type: ignore[arg-type]
        final=spec["final"],  # type: ignore[arg-type]
        bom=spec["bom"],  # type: ignore[arg-type]
    )


@settings(max_examples=300, deadline=None)
@given(FILES)
def test_random_files_give_the_same_result_all_three_ways(spec: dict[str, object]) -> None:
    """Quoting, embedded line ends, BOMs, GBK and GB18030 text, ragged rows, blank lines,
    CRLF and LF, a last line without its end, good and bad values of every type."""
    same_everywhere(BENCH, random_file(spec))


def test_expressions_a_lookup_and_a_filter_take_the_arrow_path() -> None:
    """Exact decimal products, half-up rounding, a lookup in master data and a filter,
    computed on Arrow columns: the standard reading's bytes and count of rows left out."""
    one = list(GOOD)
    one[11] = "1"  # left out by the filter (goods_number > 1)
    assert COMPUTED[0]._arrow is not None
    with Used().counting() as used:
        result = same_everywhere(COMPUTED, written([GOOD, one, GOOD]))
    assert used.chunks == 1
    assert isinstance(result, list) and result[0][2] == 2
    assert b",119.80,104.23,M001001" in result[0][1]


@settings(max_examples=200, deadline=None)
@given(FILES)
def test_random_files_with_expressions_give_the_same_result(spec: dict[str, object]) -> None:
    """Computed fields, lookup misses and the filter on random files: never a difference."""
    same_everywhere(COMPUTED, random_file(spec))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FILES)
def test_random_files_cut_in_small_blocks_give_the_same_result(spec: dict[str, object]) -> None:
    """Blocks and decoded pieces cut anywhere (inside characters, lines and CRLFs)."""
    with small_blocks():
        same_everywhere(BENCH, random_file(spec))


def test_many_blocks_keep_line_numbers_and_sequences() -> None:
    """Across many small blocks, a bad value late in the file is reported at its line (the
    standard reading makes the report), and clean files give the same bytes."""
    bad = list(GOOD)
    bad[11] = "x"
    with small_blocks(), Used().counting() as used:
        same_everywhere(BENCH, written([GOOD] * 30, blank=(3, 17)))
        assert used.chunks > 5
        result = same_everywhere(BENCH, written([GOOD] * 20 + [bad] + [GOOD] * 5))
    assert isinstance(result, tuple) and result[1][0][0] == "line 22"


# --------------------------------------------------------------------------- the plan's rules

PLAN_FORMATS = {
    "src.toml": """
name = "src"
version = "1"
codec = "csv"
encoding = "utf-8"
shape = "rows"
[csv]
delimiter = ";"
[[fields]]
name = "id"
required = true
pattern = '[A-Z]{2}-[0-9]{3}'
[[fields]]
name = "at"
type = "datetime"
formats = ["%Y-%m-%d %H:%M:%S", "%Y/%m/%d"]
[[fields]]
name = "qty"
type = "integer"
min = 0
max = 500.5
[[fields]]
name = "price"
type = "decimal"
scale = 3
min = -10
max = 1000.5
[[fields]]
name = "name"
max_length = 6
[[fields]]
name = "kind"
type = "enum"
values = ["a", "b", "c"]
[[fields]]
name = "note"
null_values = ["NA"]
[[fields]]
name = "day"
type = "date"
formats = ["%Y%m%d"]
""",
    "tgt.toml": """
name = "tgt"
version = "1"
codec = "csv"
encoding = "gbk"
shape = "rows"
[csv]
line_ending = "\\n"
[[fields]]
name = "Id"
[[fields]]
name = "Day"
type = "date"
formats = ["%d/%m/%Y"]
[[fields]]
name = "When"
type = "datetime"
formats = ["%Y%m%d%H%M%S"]
[[fields]]
name = "Qty"
type = "decimal"
scale = 2
[[fields]]
name = "Price"
type = "decimal"
scale = 2
[[fields]]
name = "Name"
[[fields]]
name = "Kind"
[[fields]]
name = "Note"
[[fields]]
name = "Const"
[[fields]]
name = "Seq"
type = "integer"
[[fields]]
name = "Label"
[[fields]]
name = "Born"
type = "date"
formats = ["%Y-%m-%d"]
[[fields]]
name = "Empty"
""",
    "map.toml": """
name = "map"
version = "1"
source = "src"
target = "tgt"
output = "batch"
[header]
Id = "id"
Day = "at"
When = "at"
Qty = "qty"
Price = "price"
Name = { from = "name", trim = true, case = "upper" }
Kind = { from = "kind", table = "kinds" }
Note = { from = "note", default = "-" }
Const = { const = " X " }
Seq = { sequence = 100 }
Label = { template = "{id}/{kind}:{at}" }
Born = "day"
Empty = { const = "" }
[tables.kinds]
a = "甲"
b = "乙"
c = " 丙,丁 "
""",
}

PLAN_GOOD = ["AB-123", "2026-11-21 09:15:02", "3", "12.5", "bob", "a", "hi", "20240229"]
PLAN_POOLS = [
    ["AB-123", "ab-123", " AB-123 ", "AB-1234", ""],
    ["2026-11-21 09:15:02", "2026/11/21", "2026-02-30 00:00:00", "2026-11-21 9:15:02", ""],
    ["3", "0", "500", "501", "-1", "007", "+2", "", "x"],
    ["12.5", "12.345", "12.350", "-10", "-10.001", "1000.5", "1000.501", "0", ".5", ""],
    ["bob", " bob ", "bobby12", "伯伯", "ß", "Ærø", "b\u3000o", ""],
    ["a", "b", "c", "d", ""],
    ["hi", "NA", "", "  ", "a;b", "x\u200by"],
    ["20240229", "20230229", "2024-02-29", ""],
]


@pytest.fixture(scope="module")
def plan_formats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    formats = tmp_path_factory.mktemp("arrow-plan")
    for name, body in PLAN_FORMATS.items():
        (formats / name).write_text(body.lstrip(), encoding="utf-8")
    # The same without a header line: columns by position.
    bare = PLAN_FORMATS["src.toml"].replace('name = "src"', 'name = "bare"')
    (formats / "bare.toml").write_text(bare.replace("[csv]", "[csv]\nheader = false"))
    mapping = PLAN_FORMATS["map.toml"].replace('source = "src"', 'source = "bare"')
    (formats / "map-bare.toml").write_text(mapping.replace('name = "map"', 'name = "map-bare"'))
    return formats


@pytest.fixture(scope="module")
def plan_routes(plan_formats: Path) -> list[Pipeline]:
    return three_ways(("src", "map", "tgt", "out.csv"), plan_formats)


@pytest.fixture(scope="module")
def bare_routes(plan_formats: Path) -> list[Pipeline]:
    return three_ways(("bare", "map-bare", "tgt", "out.csv"), plan_formats)


def plan_csv(rows: list[list[str]], ending: str = "\n") -> bytes:
    header = "id;at;qty;price;name;kind;note;day"
    return ending.join([header, *(";".join(r) for r in rows)]).encode("utf-8") + b"\n"


def test_the_plans_rules_take_the_arrow_path(plan_routes: list[Pipeline]) -> None:
    """Dates re-formatted, an integer written as a decimal, decimals re-scaled, trim and
    case, a value table, a default, a constant, a sequence, a template, a GBK target whose
    values need quoting: computed by the Arrow plan, with the standard reading's bytes."""
    assert plan_routes[0]._arrow is not None
    with Used().counting() as used:
        result = same_everywhere(plan_routes, plan_csv([PLAN_GOOD] * 3))
    assert used.chunks == 1
    assert isinstance(result, list)
    assert result[0][1].splitlines()[1] == (
        "AB-123,21/11/2026,20261121091502,3.00,12.50,BOB,甲,hi,X,100,"
        "AB-123/a:2026-11-21 09:15:02,2024-02-29,"
    ).encode("gbk")


@pytest.mark.parametrize("column", range(len(PLAN_GOOD)))
def test_every_edge_value_of_the_plans_rules(plan_routes: list[Pipeline], column: int) -> None:
    for value in PLAN_POOLS[column]:
        row = list(PLAN_GOOD)
        row[column] = value
        same_everywhere(plan_routes, plan_csv([PLAN_GOOD, row]))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(*[st.sampled_from(p) for p in PLAN_POOLS]).map(list), max_size=8),
    st.sampled_from(["\n", "\r\n"]),
)
def test_random_rows_through_the_plans_rules(
    plan_routes: list[Pipeline], rows: list[list[str]], ending: str
) -> None:
    same_everywhere(plan_routes, plan_csv(rows, ending))


@pytest.mark.parametrize(
    ("pattern", "same"),
    [
        ("EC[0-9]{11}", True),
        ("[A-Za-z0-9-]{4,32}", True),
        ("a|b(?:c)+", True),
        (r"\w+", False),
        (r"\d+", False),
        ("(?i)abc", False),
        ("a{,3}", False),
        ("[[:alpha:]]", False),
        ("^a$", False),
        ("[^,]+", False),
        ("(?=a)a", False),
        (r"a\ b", False),
        (r"a\.b", True),
    ],
)
def test_patterns_go_to_re2_only_when_both_engines_read_them_alike(
    pattern: str, same: bool
) -> None:
    assert (arrow.re2_pattern(pattern) is not None) == same


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(*[st.sampled_from(p) for p in PLAN_POOLS]).map(list), max_size=8),
    st.sampled_from(["\n", "\r\n"]),
    st.integers(0, 3),
)
def test_files_without_a_header_line(
    bare_routes: list[Pipeline], rows: list[list[str]], ending: str, blank: int
) -> None:
    """Without a header the first line is a record (blank lines before it skipped)."""
    assert bare_routes[0]._arrow is not None
    body = ending.join(";".join(r) for r in rows)
    same_everywhere(bare_routes, (ending * blank + body + ending).encode("utf-8"))

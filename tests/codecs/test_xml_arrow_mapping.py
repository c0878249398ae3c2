"""An XML -> CSV route with an expression, a value table, a template, case and trim rules
and a filter gives the same bytes, or the same report, mapped on Arrow columns (records
read in batches), on pandas columns, and record by record through the row path."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xchange.codecs.xml_codec as codec
from tests.columnar_routes import fast_and_slow, route_config
from tests.columnar_routes import outcome as columnar_outcome
from tests.conftest import REPO
from tests.stock_counts import HEADER, NS, USUAL, clean_counts, stock_counts
from xchange.codecs.arrow import ArrowPlan
from xchange.pipeline import Pipeline

TARGET = """
name = "oms-inventory-diff"
version = "test"
codec = "csv"
encoding = "utf-8-sig"
shape = "rows"

[csv]
delimiter = ","
header = true
line_ending = "\\r\\n"

[[fields]]
name = "warehouse"
required = true

[[fields]]
name = "sku"
required = true

[[fields]]
name = "name"

[[fields]]
name = "unit"
required = true

[[fields]]
name = "diff"
type = "decimal"
scale = 3

[[fields]]
name = "ref"

[[fields]]
name = "count_date"
type = "date"
formats = ["%Y%m%d"]
required = true
"""

MAPPING = """
name = "wms-stock-count-to-oms-diff"
version = "test"
source = "wms-stock-count"
target = "oms-inventory-diff"
output = "batch"
filter = "count_qty != book_qty"

[header]
warehouse = "warehouse_code"
sku = { from = "sku", case = "upper", trim = true }
name = { from = "sku_name", trim = true }
unit = { from = "unit", table = "units" }
diff = { expr = "count_qty - book_qty" }
ref = { template = "{count_no}/{line_no}" }
count_date = "count_date"

[tables.units]
"件" = "PCS"
"条" = "PCS"
"双" = "PAIR"
"个" = "PCS"
"""


def pipelines() -> tuple[Pipeline, Pipeline, Pipeline]:
    """The route three ways: Arrow (and batches), pandas, the row path."""
    formats = Path(tempfile.mkdtemp(prefix="xchange-xml-arrow-"))
    shutil.copy(REPO / "formats" / "wms-stock-count.toml", formats)
    (formats / "oms-inventory-diff.toml").write_text(TARGET, encoding="utf-8")
    (formats / "wms-stock-count-to-oms-diff.toml").write_text(MAPPING, encoding="utf-8")
    route = route_config(
        "wms-stock-count", "wms-stock-count-to-oms-diff", "oms-inventory-diff", "diff.csv"
    )
    arrow, slow = fast_and_slow(route, formats)
    pandas, _ = fast_and_slow(route, formats)
    pandas._arrow = None
    pandas._fast = False
    return arrow, pandas, slow


ARROW, PANDAS, SLOW = pipelines()


def test_the_route_is_mapped_on_arrow_columns() -> None:
    """The route gets both plans; a usual count's output is the same all three ways."""
    assert ARROW._arrow is not None and PANDAS._plan is not None
    lines = "".join(
        f'<Line no="{i}">' + "".join(USUAL).replace("{p}", "") + "</Line>\n" for i in range(1, 2001)
    )
    data = (
        f'<?xml version="1.0" encoding="GB18030"?>\n<StockCount xmlns="{NS}">'
        + HEADER.replace("{p}", "")
        + f"<Lines>\n{lines}</Lines></StockCount>\n"
    ).encode("gb18030")
    converted = []
    original = ArrowPlan.convert

    def spy(self: ArrowPlan, *args: object) -> object:
        rendered = original(self, *args)  # type: ignore[arg-type]
        converted.append(rendered is not None)
        return rendered

    with mock.patch.object(ArrowPlan, "convert", spy):
        out = columnar_outcome(ARROW, data, "sc.xml")
    assert converted == [True]  # (one chunk, mapped on Arrow columns)
    assert isinstance(out, list) and out[0][2] == 2000
    assert out == columnar_outcome(PANDAS, data, "sc.xml") == columnar_outcome(SLOW, data, "sc.xml")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(stock_counts(), clean_counts()),
    st.integers(16, 700),
    st.sampled_from([2, 5, 20_000]),
)
def test_random_counts_give_the_same_result_on_arrow_on_pandas_and_by_rows(
    data: bytes, feed: int, chunk: int
) -> None:
    """Counts of usual lines with odd values (line ends, tabs, wide spaces, quotes, the
    delimiter...) and counts with unusual lines, a few records to a chunk or many."""
    with mock.patch.object(codec, "CHUNK_RECORDS", chunk):
        with mock.patch.object(codec, "FEED", feed):
            arrow = columnar_outcome(ARROW, data, "sc.xml")
        pandas = columnar_outcome(PANDAS, data, "sc.xml")
        slow = columnar_outcome(SLOW, data, "sc.xml")
    assert arrow == pandas == slow

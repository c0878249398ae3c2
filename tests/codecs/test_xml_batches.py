"""Records read in batches (a few XPath queries over the records a feed of the parser
completed) give exactly what reading them one at a time gives: the same values, lines,
problems and warnings, the same output bytes. Stock counts are drawn at random with
unexpected elements, attributes, comments, processing instructions, CDATA, missing and
empty fields, white space, text among the records and values that break the rules; the
parser is fed a few bytes at a time so that batches start and end everywhere."""

from __future__ import annotations

import io
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xchange.codecs.xml_codec as codec
from tests.columnar_routes import fast_and_slow, route_config
from tests.columnar_routes import outcome as columnar_outcome
from tests.conftest import REPO
from tests.stock_counts import HEADER, NS, USUAL, clean_counts, stock_counts
from xchange.codecs.xml_codec import XmlCodec
from xchange.errors import XchangeError
from xchange.layout import FieldValueError, Layout
from xchange.pipeline import Pipeline
from xchange.report import Report


def shown(value: object) -> object:
    """A raw value as it compares: a problem by what it says."""
    if isinstance(value, FieldValueError):
        return ("problem", value.rule, value.message)
    return value


def chunks(layout: Layout, data: bytes, *, batches: bool, feed: int) -> object:
    """Every chunk's columns, size, offset, cleanness and typed records (with where they
    are), then every problem and warning; or the error."""
    report = Report("sc.xml")
    with mock.patch.object(codec, "FEED", feed), mock.patch.object(codec, "CHUNK_RECORDS", 5):
        try:
            got: list[Any] = []
            for chunk in XmlCodec(batches=batches).chunks(
                io.BytesIO(data), layout, "sc.xml", report
            ):
                typed = Report("typed")
                records = [(r.location, r.values, r.failed) for r in chunk.rows(typed)]
                columns = {k: [shown(v) for v in vs] for k, vs in chunk.columns.items()}
                got.append((columns, chunk.size, chunk.offset, chunk.clean, records))
                got.append([(p.location, p.field, p.rule, p.message) for p in typed.problems])
        except XchangeError as exc:
            return (type(exc).__name__, str(exc))
    problems = [(p.location, p.field, p.rule, p.value, p.message) for p in report.problems]
    return got, problems, report.warnings


def with_remark(layout: Layout) -> Layout:
    """``layout`` with one more header value, optional: the count's remark."""
    given = layout.model_dump(by_alias=True, exclude_unset=True)
    given["fields"].append({"name": "remark", "column": "/w:StockCount/w:Header/w:Remark"})
    return Layout.model_validate(given)


def layouts() -> list[Layout]:
    """The stock count's layout as shipped, with other words for unknown input, and with
    an optional header value (mostly absent)."""
    fast, _ = pipelines()
    layout = fast.source
    return [
        layout,
        layout.model_copy(update={"unknown": "warn"}),
        layout.model_copy(update={"unknown": "ignore"}),
        layout.model_copy(update={"unknown_in": {"w:Note": "ignore", "@extra": "warn"}}),
        with_remark(layout),
    ]


def pipelines() -> tuple[Pipeline, Pipeline]:
    route = route_config(
        "wms-stock-count",
        "wms-stock-count-to-oms-inventory",
        "oms-inventory",
        "OMS_INV_{count_no}_{source_stem}.csv",
    )
    return fast_and_slow(route, REPO / "formats")


LAYOUTS = layouts()
FAST, SLOW = pipelines()
GENERAL, _ = pipelines()
GENERAL._reader = XmlCodec(batches=False)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stock_counts(), st.sampled_from(LAYOUTS), st.integers(16, 700))
def test_records_read_in_batches_are_what_reading_one_at_a_time_gives(
    data: bytes, layout: Layout, feed: int
) -> None:
    """The same values, locations, problems and warnings, whatever the input and wherever
    the feeds of the parser end."""
    assert chunks(layout, data, batches=True, feed=feed) == chunks(
        layout, data, batches=False, feed=65536
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stock_counts(trailers=True), st.sampled_from(LAYOUTS), st.integers(16, 700))
def test_header_values_after_the_records_are_read_alike_both_ways(
    data: bytes, layout: Layout, feed: int
) -> None:
    """With the header after the lines, what a record gets of it depends on how much of
    the document was read when the record was: fed alike, both ways read it alike."""
    assert chunks(layout, data, batches=True, feed=feed) == chunks(
        layout, data, batches=False, feed=feed
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(stock_counts(), clean_counts()), st.integers(16, 700))
def test_batches_give_the_same_bytes_or_the_same_problems_as_the_row_path(
    data: bytes, feed: int
) -> None:
    """Through the route (the Arrow plan behind the batches): identical bytes, or the
    identical report, as reading one record at a time and as the row path."""
    with mock.patch.object(codec, "FEED", feed):
        fast = columnar_outcome(FAST, data, "sc.xml")
    general = columnar_outcome(GENERAL, data, "sc.xml")
    assert fast == general == columnar_outcome(SLOW, data, "sc.xml")


@pytest.mark.parametrize(("p", "space"), [("", ""), ("w:", "\n      ")])
def test_a_long_usual_count_is_read_in_batches(p: str, space: str) -> None:
    """The batch reader is what reads a usual count (all but the first feed's records),
    in the default namespace or under a prefix, compact or laid out, and its output is
    the same as one record at a time."""
    lines = "".join(
        f'<{p}Line no="{i}">'
        + "".join(space + c for c in USUAL).replace("{p}", p)
        + space[:-2]
        + f"</{p}Line >\n"
        for i in range(1, 3001)
    )
    declare = f'xmlns:w="{NS}"' if p else f'xmlns="{NS}"'
    data = (
        f'<?xml version="1.0" encoding="GB18030"?>\n<{p}StockCount {declare}>'
        + HEADER.replace("{p}", p)
        + f"<{p}Lines>\n{lines}</{p}Lines></{p}StockCount>\n"
    ).encode("gb18030")
    batch = codec._batches(FAST.source)
    assert batch is not None
    read = []
    original = codec._Batch.read

    def spy(self: codec._Batch, *args: Any) -> object:
        columns = original(self, *args)
        read.append(None if columns is None else len(columns[0]))
        return columns

    with mock.patch.object(codec._Batch, "read", spy):
        out = columnar_outcome(FAST, data, "sc.xml")
    assert read and None not in read and sum(read) > 2500  # type: ignore[operator]
    assert out == columnar_outcome(GENERAL, data, "sc.xml")
    # An optional header value that is absent does not keep the records from batches.
    read.clear()
    layout = LAYOUTS[-1]
    with mock.patch.object(codec._Batch, "read", spy):
        got = chunks(layout, data, batches=True, feed=codec.FEED)
    assert read and None not in read and sum(read) > 2500  # type: ignore[operator]
    assert got == chunks(layout, data, batches=False, feed=codec.FEED)


@pytest.mark.parametrize(
    "update",
    [
        {"unknown_in": {"w:Sku": "ignore"}},
        {"unknown_in": {"w:Sku/@a": "warn"}},
    ],
)
def test_a_layout_that_says_something_of_a_fields_element_is_read_one_at_a_time(
    update: dict[str, Any],
) -> None:
    """Where the layout says what unknown input inside a value's element means, the
    batch reader does not vouch for it: each record is walked the general way."""
    assert codec._batches(FAST.source) is not None
    assert codec._batches(FAST.source.model_copy(update=update)) is None

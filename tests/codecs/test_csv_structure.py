"""The CSV codec's first pass (record lines, ragged rows, header) gives what the standard
library's tokenizer gives, whether a file has quotes or not, wherever chunks are cut."""

from __future__ import annotations

import csv
import io
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xchange.codecs import csv_codec, text
from xchange.errors import DecodeError
from xchange.layout import Layout
from xchange.report import Report

LAYOUT = Layout.model_validate(
    {"name": "t", "codec": "csv", "encoding": "utf-8", "fields": [{"name": "a"}]}
)


def bare_quote(record: str) -> int | None:
    """The line (from 0) of the first quote of a record's raw text that is not around a
    whole field (RFC 4180), by a character-by-character state machine; None: none."""
    state = "start"
    down = 0
    for i, ch in enumerate(record):
        if (ch == "\n" and record[i - 1 : i] != "\r") or ch == "\r":
            down += 1
        if state == "start":
            state = "quoted" if ch == '"' else "start" if ch in ",\r\n" else "plain"
        elif state == "plain":
            if ch == '"':
                return down
            state = "start" if ch in ",\r\n" else "plain"
        elif state == "quoted":
            state = "closing" if ch == '"' else "quoted"
        else:  # just after a quote inside a quoted field: doubled, or the closing one
            if ch == '"':
                state = "quoted"
            elif ch in ",\r\n":
                state = "start"
            else:
                return down
    return None


def oracle(data: str) -> tuple[list[int], list[str] | None, list[str]] | str:
    """Record start lines, header, bare quotes and ragged rows, by csv.reader line by line."""
    raw: list[str] = []

    def lines():
        for line in text.split_lines([data]):
            raw.append(line)
            yield line

    reader = csv.reader(lines(), delimiter=",", quotechar='"', strict=True)
    starts: list[int] = []
    header = None
    width = None
    problems = []
    line = 1
    try:
        for row in reader:
            start, line = line, reader.line_num + 1
            record = "".join(raw)
            raw.clear()
            if not row:
                continue
            down = bare_quote(record)
            bare = down is not None
            if bare:
                problems.append(f"line {start + down}: bare quote")
            if width is None:
                width = len(row)
                header = list(row)  # (cells as written: a spaced name is the layout's business)
                continue
            starts.append(start)
            if not bare and len(row) != width:
                problems.append(f"line {start}: expected {width} fields, found {len(row)}")
    except csv.Error:
        return "syntax"
    return starts, header, problems


def structure(data: str) -> tuple[list[int], list[str] | None, list[str]] | str:
    report = Report("in.csv", cap=10_000)
    try:
        starts, header = csv_codec._structure(
            io.BytesIO(data.encode("utf-8")), "utf-8", LAYOUT, "in.csv", report
        )
    except DecodeError:
        return "syntax"
    problems = [
        f"{p.location}: bare quote"
        if p.rule == "quote"
        else f"{p.location}: {p.message.removeprefix('ragged row: ')}"
        for p in report.problems
    ]
    return [starts[i] for i in range(len(starts))], header, problems


FIELD = st.text(alphabet=["a", "中", " ", ",", '"', "\n", "\r"], max_size=4)
ROW = st.lists(FIELD, min_size=1, max_size=4)


def render(rows: list[list[str]], ends: list[str], quote_all: bool) -> str:
    out = []
    for row, end in zip(rows, ends, strict=False):
        cells = [
            '"' + c.replace('"', '""') + '"' if quote_all or any(x in c for x in ',"\r\n') else c
            for c in row
        ]
        out.append(",".join(cells) + end)
    return "".join(out)


@pytest.mark.parametrize("chunk", [3, 7, 64, 1 << 20])
@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(ROW, min_size=0, max_size=12),
    ends=st.lists(st.sampled_from(["\n", "\r\n", "\r", ""]), min_size=12, max_size=12),
    quote_all=st.booleans(),
)
def test_first_pass_agrees_with_the_tokenizer(
    chunk: int,
    rows: list[list[str]],
    ends: list[str],
    quote_all: bool,
) -> None:
    """Same record lines, header and ragged rows (or both refuse the file)."""
    data = render(rows, ends, quote_all)
    with mock.patch.object(text, "CHUNK", chunk):
        assert structure(data) == oracle(data), repr(data)


@pytest.mark.parametrize("chunk", [5, 1 << 20])
@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.text(alphabet=["a", "中", " ", "\t"], max_size=3), min_size=1, max_size=4),
        max_size=15,
    ),
    blank=st.lists(st.booleans(), min_size=15, max_size=15),
    crlf=st.booleans(),
)
def test_files_without_quotes_take_the_counting_path_and_agree(
    chunk: int,
    rows: list[list[str]],
    blank: list[bool],
    crlf: bool,
) -> None:
    """Files without quotes (the counting path): blank lines, ragged rows, CRLF."""
    end = "\r\n" if crlf else "\n"
    data = "".join(
        ("" if not b else end) + ",".join(r) + end for r, b in zip(rows, blank, strict=False)
    )
    with mock.patch.object(text, "CHUNK", chunk):
        assert structure(data) == oracle(data), repr(data)


def test_a_carriage_return_at_the_end_of_a_chunk_still_ends_its_line() -> None:
    """A lone \\r (old Mac line end) cut from what follows by a chunk boundary."""
    assert list(text.split_lines(["a,b\r", "c,d"])) == ["a,b\r", "c,d"]
    assert list(text.split_lines(["a,b\r", "\nc"])) == ["a,b\r\n", "c"]


@pytest.mark.parametrize("chunk", range(2, 12))
def test_quote_free_crlf_files_never_need_the_tokenizer(chunk: int) -> None:
    """Wherever a chunk ends (even between \\r and \\n), a file without quotes is counted."""
    data = "a,b\r\n1,2\r\n\r\n3,4\r\n5,6,7\r\n"
    with (
        mock.patch.object(text, "CHUNK", chunk),
        mock.patch.object(csv_codec._Scan, "tokenize", side_effect=AssertionError("tokenizer")),
    ):
        assert structure(data) == ([2, 4, 5], ["a", "b"], ["line 5: expected 2 fields, found 3"])

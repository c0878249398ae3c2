"""A JSON number is read from its text and written at the target field's scale, digit for
digit: never through a binary float, whatever its size or form (``0.1``, ``1e-7``,
``12345678901234567890.123``, ``-0``, ``1E+2``), whether the target field checks it again
or takes it unchanged from a source field with the same rules."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from decimal import Decimal, localcontext
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.columnar_routes import route_config
from tests.conftest import FORMATS
from xchange.errors import ValidationFailed
from xchange.pipeline import Pipeline

NOW = datetime(2026, 11, 21, 12, 0)

SOURCE = """
name = "numbers-in"
version = "1"
codec = "json"
encoding = "utf-8"
[json]
records = "$.rows[*]"
[[fields]]
name = "id"
required = true
[[fields]]
name = "amount"
type = "decimal"
{scale}
"""

TARGET = """
name = "numbers-out"
version = "1"
codec = "json"
encoding = "utf-8"
[json]
indent = 2
[[fields]]
name = "id"
required = true
[[fields]]
name = "amount"
type = "decimal"
scale = {scale}
"""

MAPPING = """
name = "numbers"
version = "1"
source = "numbers-in"
target = "numbers-out"
output = "per-document"
[header]
id = "id"
amount = "amount"
"""


def pipeline(folder: Path, source_scale: int | None, target_scale: int) -> Pipeline:
    formats = folder / f"formats-{source_scale}-{target_scale}"
    if not formats.exists():
        shutil.copytree(FORMATS, formats)
        scale = "" if source_scale is None else f"scale = {source_scale}"
        (formats / "numbers-in.toml").write_text(SOURCE.format(scale=scale), "utf-8")
        (formats / "numbers-out.toml").write_text(TARGET.format(scale=target_scale), "utf-8")
        (formats / "numbers.toml").write_text(MAPPING, "utf-8")
    route = route_config("numbers-in", "numbers", "numbers-out", "{id}.json")
    return Pipeline(route, formats)


def expected(text: str, source_scale: int | None, target_scale: int) -> str | None:
    """The number's text at the target scale, worked out in decimal arithmetic with room
    for every digit (None: the number has more decimals than a scale allows)."""
    with localcontext() as ctx:
        ctx.prec = 200
        value = Decimal(text)
        for scale in (source_scale, target_scale):
            if scale is not None and value != value.quantize(Decimal(1).scaleb(-scale)):
                return None
        if not value:
            value = Decimal(0)  # a zero has no sign
        return format(value.quantize(Decimal(1).scaleb(-target_scale)), "f")


def written(pipe: Pipeline, number: str) -> str | None:
    data = ('{"rows": [{"id": "A1", "amount": ' + number + "}]}").encode()
    try:
        (out,) = pipe.convert(data, "in.json", NOW)
    except ValidationFailed as exc:
        assert [p.rule for p in exc.report.problems] == ["scale"], exc.report.problems
        return None
    match = re.search(rb'"amount": ([^\s,}]+)', out.data)
    assert match is not None, out.data
    # The document is JSON whose number is exactly that text.
    assert json.loads(out.data, parse_float=Decimal)["amount"] == Decimal(match.group(1).decode())
    return match.group(1).decode()


@pytest.mark.parametrize(
    ("number", "source_scale", "target_scale", "text"),
    [
        ("0.1", None, 2, "0.10"),
        ("1e-7", None, 7, "0.0000001"),
        ("1e-7", None, 8, "0.00000010"),
        ("1e-7", 4, 8, None),  # more decimals than the source field takes
        ("1e-7", None, 6, None),  # ... or the target field
        ("12345678901234567890.123", 3, 3, "12345678901234567890.123"),
        ("12345678901234567890.123", 3, 5, "12345678901234567890.12300"),
        ("12345678901234567890.123", None, 2, None),
        ("-0", 2, 2, "0.00"),
        ("-0.0", 2, 4, "0.0000"),
        ("1E+2", 2, 2, "100.00"),
        ("1e2", None, 0, "100"),
        ("-59.90", 2, 2, "-59.90"),
        ("13", 2, 2, "13.00"),
        ("123456789012345678901234567890", 0, 0, "123456789012345678901234567890"),
    ],
)
def test_a_json_number_comes_out_as_the_layout_says(
    tmp_path: Path, number: str, source_scale: int | None, target_scale: int, text: str | None
) -> None:
    """The examples: exact at the target scale, or refused for its extra decimals."""
    assert written(pipeline(tmp_path, source_scale, target_scale), number) == text


NUMBERS = st.builds(
    lambda sign, whole, fraction, exponent: (
        f"{sign}{whole}{'.' + fraction if fraction else ''}{exponent}"
    ),
    st.sampled_from(["", "-"]),
    st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,25}", fullmatch=True)),
    st.one_of(st.just(""), st.from_regex(r"[0-9]{1,12}", fullmatch=True)),
    st.one_of(st.just(""), st.from_regex(r"[eE][+-]?[0-9]{1,2}", fullmatch=True)),
)


@settings(max_examples=300, deadline=None)
@given(
    number=NUMBERS,
    source_scale=st.sampled_from([None, 0, 2, 4]),
    target_scale=st.sampled_from([0, 2, 4, 8]),
)
def test_every_json_number_is_written_from_its_text(
    tmp_path_factory: pytest.TempPathFactory,
    number: str,
    source_scale: int | None,
    target_scale: int,
) -> None:
    """Any JSON number a decimal field reads: its exact value at the target's scale (a
    copy the target field takes unchanged, or checks again, alike), or refused for its
    decimals; a number beyond what a field holds (more than 40 digits either side of
    the point) is refused as out of range."""
    folder = tmp_path_factory.getbasetemp() / "numbers"
    folder.mkdir(exist_ok=True)
    pipe = pipeline(folder, source_scale, target_scale)
    value = Decimal(number)
    fraction = any(c in number for c in ".eE")  # (else a JSON integer: any size is read)
    if fraction and (
        not -40 <= value.adjusted() <= 40 or value.as_tuple().exponent < -40  # type: ignore[operator]
    ):
        with pytest.raises(ValidationFailed) as info:
            pipe.convert(('{"rows": [{"id": "A1", "amount": ' + number + "}]}").encode(), "x", NOW)
        assert "out of range" in info.value.report.problems[0].message
        return
    assert written(pipe, number) == expected(number, source_scale, target_scale)

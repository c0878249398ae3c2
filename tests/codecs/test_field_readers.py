"""A field's readers, checkers and writers made once per field give what its rules give,
value for value and problem for problem: the plain decimal and integer readers, the rule
checker, a JSON integer read as a number, the renderer; and a copy into a field that
takes every value of its source unchanged is one the target field's own check would
return as it is."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from xchange.layout import SPACES, FieldSpec, FieldValueError


def field(**options: Any) -> FieldSpec:
    return FieldSpec.model_validate({"name": "f", **options})


def reference_parse(spec: FieldSpec, text: str | None) -> Any:
    """What reading a value meant before the readers were made once per field: trim,
    the unusual characters, no value, the type's general reader, then every rule."""
    if text is not None:
        if spec.trim:
            text = text.strip(SPACES)
        if not (text.isprintable() and (spec.digits == "ascii" or text.isascii())):
            text = spec.unusual(text)
    if not text or text in spec.null_values:
        if spec.required:
            raise FieldValueError("required", "a value is required")
        return None
    convert = {
        "integer": spec._integer,
        "decimal": spec._decimal,
        "boolean": spec._boolean,
        "date": spec._when,
        "datetime": spec._when,
    }.get(spec.type)
    value = text if convert is None else convert(text)
    spec._check_rules(text, value)
    return value


def outcome(read: Any, *args: Any) -> tuple[str, Any]:
    try:
        value = read(*args)
    except FieldValueError as exc:
        return "problem", exc.rule
    return type(value).__name__, value


LIMITS = st.one_of(st.none(), st.decimals(-1000, 1000, places=2).map(str))


@st.composite
def specs(draw: st.DrawFn) -> FieldSpec:
    kind = draw(st.sampled_from(["string", "enum", "integer", "decimal"]))
    options: dict[str, Any] = {"type": kind, "required": draw(st.booleans())}
    options["trim"] = draw(st.booleans())
    options["null_values"] = draw(st.sampled_from([[], ["NA"], ["0"]]))
    if kind == "string":
        options["pattern"] = draw(st.sampled_from([None, r"[A-Z]{2}\d+", r".*7"]))
        options["invisible"] = draw(st.sampled_from(["reject", "remove", "keep"]))
    if kind in ("string", "enum"):
        options["max_length"] = draw(st.sampled_from([None, 3, 8]))
        options["min_length"] = draw(st.sampled_from([None, 2]))
    if kind == "enum":
        options["values"] = ["CNY", "USD", "7"]
    if kind in ("integer", "decimal"):
        options["min"], options["max"] = draw(LIMITS), draw(LIMITS)
        options["digits"] = draw(st.sampled_from(["ascii", "unicode"]))
    if kind == "decimal":
        options["scale"] = draw(st.sampled_from([None, 0, 2, 4]))
    options = {k: v for k, v in options.items() if v is not None}
    return field(**options)


TEXTS = st.one_of(
    st.none(),
    st.from_regex(r"[ ]?-?[0-9]{1,30}(\.[0-9]{1,30})?[ ]?", fullmatch=True),
    st.from_regex(r"[+-]?[0-9０-９١]{0,4}[.,]?[0-9]{0,3}", fullmatch=True),
    st.text(alphabet="AZ07 .-+eE\u3000\u200b\tNA", max_size=8),
    st.sampled_from(["CNY", "USD", "7", "NA", "0", "-0", "-0.00", "1e3", "99999999999999999999"]),
)


@settings(max_examples=1500, deadline=None)
@given(spec=specs(), text=TEXTS)
def test_the_parser_reads_what_the_rules_read(spec: FieldSpec, text: str | None) -> None:
    """The same value of the same type, or a problem under the same rule."""
    assert outcome(spec.parse, text) == outcome(reference_parse, spec, text)


@settings(max_examples=800, deadline=None)
@given(spec=specs(), number=st.integers(-(10**30), 10**30))
def test_a_json_integer_is_read_as_its_text_is(spec: FieldSpec, number: int) -> None:
    """A number field reads the integer ``n`` as it reads the text of ``n``."""
    read = spec.int_reader
    if read is None:
        assert spec.type not in ("integer", "decimal") or spec.null_values
        return
    got, want = outcome(read, number), outcome(spec.parse, str(number))
    assert got == want
    if got[0] == "Decimal":  # the same digits and exponent, not only an equal number
        assert str(got[1]) == str(want[1])


VALUES = st.one_of(
    st.none(),
    st.text(max_size=6),
    st.decimals(allow_nan=True, allow_infinity=True, places=None).filter(
        lambda d: not d.is_finite() or abs(d.adjusted()) < 60
    ),
    st.integers(-(10**20), 10**20),
    st.booleans(),
    st.dates(min_value=date(1000, 1, 1)),
    st.datetimes(min_value=datetime(1000, 1, 1)),
)


@settings(max_examples=1500, deadline=None)
@given(
    spec=st.builds(
        lambda kind, scale, formats: field(
            type=kind,
            **({"scale": scale} if kind == "decimal" and scale is not None else {}),
            **({"formats": formats} if kind in ("date", "datetime") else {}),
        ),
        st.sampled_from(["string", "integer", "decimal", "date", "datetime", "boolean"]),
        st.sampled_from([None, 0, 2, 5]),
        st.sampled_from([["%Y-%m-%d"], ["%Y%m%d %H%M%S"], ["%d/%m/%Y"]]),
    ),
    value=VALUES,
)
def test_the_renderer_writes_what_render_writes(spec: FieldSpec, value: Any) -> None:
    """The same text for every value (or a problem under the same rule)."""
    assert outcome(spec.renderer, value) == outcome(spec.render, value)


@settings(max_examples=1500, deadline=None)
@given(source=specs(), target=specs(), text=TEXTS)
def test_a_field_that_takes_a_sources_values_unchanged_would_return_them_as_they_are(
    source: FieldSpec, target: FieldSpec, text: str | None
) -> None:
    """Where ``takes_unchanged`` says so, the target field's own check of any value the
    source field reads returns that value, of the same type, and refuses none."""
    if not target.takes_unchanged(source):
        return
    try:
        value = source.parse(text)
    except FieldValueError:
        return
    if value is None and not target.required:
        assert target.coerce(value) is None
        return
    checked = target.coerce(value)
    assert type(checked) is type(value) and checked == value
    if isinstance(value, Decimal):
        assert str(checked) == str(value)


def test_fields_with_the_same_rules_or_a_looser_target_take_values_unchanged() -> None:
    """What a copy skips a second check for, and what it does not."""
    code = field(pattern=r"SO\d{14}", required=True, unique=True)
    assert field(required=True).takes_unchanged(code)
    assert field().takes_unchanged(code)
    assert not field(required=True).takes_unchanged(field())
    assert not field(pattern=r"X\d+").takes_unchanged(code)
    price = field(type="decimal", scale=2, min="0")
    assert field(type="decimal", scale=4).takes_unchanged(price)
    assert not field(type="decimal", scale=2).takes_unchanged(field(type="decimal", scale=4))
    assert not field(type="decimal", min="1").takes_unchanged(price)
    assert not field(type="integer").takes_unchanged(price)
    assert not field(null_values=["NA"]).takes_unchanged(field())
    assert not field(trim=True).takes_unchanged(field(trim=False))

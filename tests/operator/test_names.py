"""Names built from data can never leave their folder."""

from __future__ import annotations

import pytest

from xchange.errors import UnsafeName
from xchange.names import render_name
from xchange.remote.base import safe_subfolder, temp_name_for


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("EC001", "OUT_EC001.xml"),
        ("../../etc/passwd", "OUT_______etc_passwd.xml"),
        ("a/b\\c", "OUT_a_b_c.xml"),
        ("订单 1", "OUT_订单 1.xml"),
        ("x\x00y\n", "OUT_x_y_.xml"),
    ],
)
def test_values_are_cleaned_before_they_enter_a_name(value: str, expected: str) -> None:
    """Separators, control characters and '..' in data become harmless characters."""
    name = render_name("OUT_{OrderNo}.xml", {"OrderNo": value})
    assert "/" not in name and "\\" not in name and ".." not in name
    assert name == expected


def test_a_name_that_would_be_hidden_or_empty_is_refused() -> None:
    """A value that makes the whole name empty, '.', or hidden is an error."""
    for value in ("", ".hidden", "."):
        with pytest.raises(UnsafeName):
            render_name("{OrderNo}", {"OrderNo": value})


def test_unknown_template_field_is_named() -> None:
    """A template using a field the document lacks says which field."""
    with pytest.raises(UnsafeName, match=r"unknown field.*OrderNumber"):
        render_name("{OrderNumber}.xml", {"OrderNo": "1"})


def test_subfolders_stay_inside_their_root() -> None:
    """Archive folders cannot climb out of the endpoint folder."""
    assert safe_subfolder("archive/2026") == "archive/2026"
    for bad in ("../x", "/abs", "a/../../x", "..", "a\\..\\..\\x", "x\x00"):
        with pytest.raises(UnsafeName):
            safe_subfolder(bad)
    # A name that starts with two dots is a name inside the folder (a hidden name made
    # from a hidden one: ".a.tmp" set aside becomes "..a.tmp.<token>.xchange-del").
    assert safe_subfolder("..a.tmp.1f2e.xchange-del") == "..a.tmp.1f2e.xchange-del"
    assert safe_subfolder("sub/..x") == "sub/..x"


def test_temporary_names_are_hidden_and_deterministic() -> None:
    """The same delivery always uses the same hidden temporary name."""
    assert temp_name_for("a.xml", "abc") == ".a.xml.abc.xchange-part"
    assert temp_name_for("a.xml", "abc") == temp_name_for("a.xml", "abc")

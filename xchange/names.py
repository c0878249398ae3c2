"""File names built from data, which can never leave their folder.

A template such as ``WMS_OUT_{OrderNo}_{date:%Y%m%d}.xml`` is filled from the
document's fields, the source file's name (``{source_name}``, ``{source_stem}``) and
the processing time (``{date}``). Every value is made safe *before* it is put in the
name: path separators, control characters and characters Windows forbids become
``_``, and a value cannot make the name start with a dot. The finished name is
checked once more as a whole, and made acceptable to Windows servers (no device names
such as ``CON.xml``, no trailing dots or spaces).
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from xchange.errors import UnsafeName

_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
MAX_NAME_BYTES = 255
#: Placeholders every name template may use besides the target layout's header fields.
BUILTIN_FIELDS = ("source_name", "source_stem", "date")


def template_problems(template: str, fields: set[str] | frozenset[str]) -> list[str]:
    """What is wrong with a file-name template whose documents have ``fields`` (besides
    the built-in ones): placeholders nothing provides, or broken syntax."""
    try:
        used = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return [f"{template!r} is not a valid template: {exc}"]
    if "" in used:
        return [f"{template!r}: an empty placeholder {{}} names no field"]
    known = set(fields) | set(BUILTIN_FIELDS)
    unknown = sorted({f for f in used if f not in known})
    if unknown:
        offered = ", ".join(sorted(fields)) or "none"
        return [
            f"{template!r} uses {', '.join('{' + f + '}' for f in unknown)}, which no target "
            f"field provides (fields: {offered}; always: {', '.join(BUILTIN_FIELDS)})"
        ]
    return plain_problems(template, {f: _SAMPLE_DATE if f == "date" else "x" for f in used})


#: The date a template is tried with (any date: only its literal text is judged).
_SAMPLE_DATE = datetime(2026, 12, 7, 8, 30)


def plain_problems(template: str, sample: Mapping[str, Any]) -> list[str]:
    """What is wrong with a template's own text (outside what its fields bring): filled
    with ``sample``, it must make a plain name, or every file would be refused at run time
    (``../x.zip``, ``out/{source_stem}.zip``, ``{date:%Y/%m/%d}.xml``, ``.hidden``)."""
    try:
        name = template.format_map(sample)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return []  # (a field's format spec that fits its value alone: judged at run time)
    try:
        check_plain_name(windows_safe(name))
    except UnsafeName:
        return [
            f"{template!r} does not make a plain file name ({name!r}: a folder, '/', '\\', "
            "'..' or a leading '.'): files are written in their target folder only"
        ]
    return []


@functools.lru_cache(maxsize=256)
def template_fields(template: str) -> frozenset[str]:
    """The fields a file-name template uses (none for a template that does not parse:
    :func:`template_problems` says what is wrong with it)."""
    try:
        return frozenset(f for _, f, _, _ in string.Formatter().parse(template) if f)
    except ValueError:
        return frozenset()


def clean_value(value: Any) -> Any:
    """A value made safe to appear inside a file name (dates keep their type for format specs)."""
    if isinstance(value, datetime):
        return value
    text = _UNSAFE.sub("_", "" if value is None else str(value)).strip()
    return text.replace("..", "__")


def render_name(template: str, values: Mapping[str, Any]) -> str:
    """Fill a file-name template; the result is a single, safe path component.

    Raises:
        UnsafeName: a field is unknown, or the result would not be a plain name.
    """
    fields = template_fields(template)
    missing = sorted(f for f in fields if f not in values)
    if missing:
        raise UnsafeName(
            f"file-name template {template!r} uses unknown field(s): {', '.join(missing)}"
        )
    try:
        name = template.format_map({k: clean_value(values[k]) for k in fields})
    except (ValueError, TypeError) as exc:
        raise UnsafeName(f"file-name template {template!r}: {exc}") from None
    check_plain_name(windows_safe(name))
    return windows_safe(name)


#: Names Windows reserves for devices, whatever the extension (``CON.xml`` is CON).
_RESERVED = re.compile(r"(?i)^(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(\.|$)")


def windows_safe(name: str) -> str:
    """A name a Windows server (many Kingdee and partner SFTP servers run on Windows)
    accepts as it is: no device name (``CON.xml`` -> ``_CON.xml``), no trailing dots or
    spaces (Windows drops them silently, so two names would meet)."""
    name = name.rstrip(". ")
    if _RESERVED.match(name):
        name = "_" + name
    return name


def check_plain_name(name: str) -> str:
    """Accept only a single path component that cannot escape or hide in its folder."""
    if (
        not name
        or name in (".", "..")
        or name.startswith(".")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or len(name.encode("utf-8")) > MAX_NAME_BYTES
    ):
        raise UnsafeName(f"{name!r} is not a safe file name")
    return name

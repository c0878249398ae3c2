"""JSON, strictly: the standard library's parser with every lenient default turned off.

- NaN, Infinity and -Infinity are refused (Python accepts them by default);
- bytes must be valid text in the declared encoding (no ``surrogatepass``);
- a key given twice in one object is refused (or, if the layout says
  ``duplicate_keys = "last"``, the last one wins, as in most parsers);
- numbers are kept exact: integers of any size as ``int``, fractions as ``Decimal``;
- nesting deeper than the interpreter can follow is refused, not a crash.

Writing is our own small serializer so that decimals are written digit for digit
and non-ASCII text is written as it is.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from xchange.codecs.text import decode, encode
from xchange.errors import DecodeError, MappingError
from xchange.layout import FieldSpec, JsonOptions, Layout, parse_field
from xchange.mapping import Document, Record
from xchange.report import Report

_STEP = re.compile(r"\.([^.\[\]]+)|\[(\*|\d+)\]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _pairs(rule: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out and rule == "reject":
                raise ValueError(f"duplicate key {key!r} in one object")
            out[key] = value
        return out

    return hook


def loads(text: str, origin: str, *, duplicate_keys: str = "reject") -> Any:
    """Parse one JSON text strictly.

    Raises:
        DecodeError: with line and column.
    """
    decoder = json.JSONDecoder(
        parse_float=Decimal,
        parse_int=int,
        parse_constant=_refuse_constant,
        object_pairs_hook=_pairs(duplicate_keys),
        strict=True,
    )
    try:
        value, end = decoder.raw_decode(text, _skip_ws(text, 0))
    except json.JSONDecodeError as exc:
        raise DecodeError(f"{origin}: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise DecodeError(f"{origin}: JSON nested too deeply") from None
    except ValueError as exc:  # from the hooks: NaN/Infinity, duplicate keys, huge ints
        raise DecodeError(f"{origin}: {exc}") from None
    except ArithmeticError:  # a number beyond what Decimal can hold
        raise DecodeError(f"{origin}: a number is out of range") from None
    rest = _skip_ws(text, end)
    if rest != len(text):
        line = text.count("\n", 0, rest) + 1
        raise DecodeError(f"{origin}: line {line}: extra data after the JSON value")
    return value


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def select(value: Any, path: str) -> list[tuple[str, Any]]:
    """Nodes at a JSONPath subset: ``$``, ``.key``, ``[n]``, ``[*]``."""
    if not path.startswith("$"):
        raise DecodeError(f"record path {path!r} must start with $")
    nodes: list[tuple[str, Any]] = [("$", value)]
    rest = path[1:]
    pos = 0
    while pos < len(rest):
        m = _STEP.match(rest, pos)
        if m is None:
            raise DecodeError(f"record path {path!r}: cannot read {rest[pos:]!r}")
        pos = m.end()
        key, index = m.group(1), m.group(2)
        out: list[tuple[str, Any]] = []
        for where, node in nodes:
            if key is not None and isinstance(node, dict) and key in node:
                out.append((f"{where}.{key}", node[key]))
            elif index == "*" and isinstance(node, list):
                out.extend((f"{where}[{i}]", item) for i, item in enumerate(node))
            elif (
                index is not None
                and index != "*"
                and isinstance(node, list)
                and int(index) < len(node)
            ):
                out.append((f"{where}[{index}]", node[int(index)]))
        nodes = out
    return nodes


def _lookup(obj: Any, dotted: str) -> tuple[bool, Any]:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return False, None
        obj = obj[part]
    return True, obj


def _as_text(spec: FieldSpec, value: Any, where: str, report: Report) -> str | bool | None:
    """A JSON scalar as the text a field parses; False if it is not a scalar."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        if (
            not value.is_finite()
            or not -40 <= value.adjusted() <= 40
            or (
                value.as_tuple().exponent < -40  # type: ignore[operator]
            )
        ):
            report.add(where, spec.key, "type", str(value)[:40], "number out of range")
            return False
        return format(value, "f") if spec.type == "decimal" else str(value)
    if isinstance(value, int | str):
        return str(value)
    report.add(
        where,
        spec.key,
        "type",
        None,
        f"expected a value, found {'an object' if isinstance(value, dict) else 'a list'}",
    )
    return False


class JsonCodec:
    """The JSON codec."""

    def read(self, data: bytes, layout: Layout, origin: str, report: Report) -> list[Record]:
        opts = layout.json_
        text, _ = decode(data, layout.encoding, origin)
        if opts.ndjson:
            docs = []
            for n, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    docs.append(
                        (
                            f"line {n}",
                            loads(line, f"{origin}: line {n}", duplicate_keys=opts.duplicate_keys),
                        )
                    )
            nodes = [(f"{at} {w}", v) for at, doc in docs for w, v in select(doc, opts.records)]
        else:
            nodes = select(loads(text, origin, duplicate_keys=opts.duplicate_keys), opts.records)
        records: list[Record] = []
        for where, node in nodes:
            if not isinstance(node, dict):
                report.add(where, "(record)", "type", None, "a record must be a JSON object")
                continue
            records.append(self._record(node, where, layout, opts, report))
        return records

    def _record(
        self, node: dict[str, Any], where: str, layout: Layout, opts: JsonOptions, report: Report
    ) -> Record:
        values = self._values(node, where, layout.fields, report)
        lines: list[Record] = []
        if layout.shape == "nested" and opts.lines:
            found, items = _lookup(node, opts.lines)
            if found and not isinstance(items, list):
                report.add(where, opts.lines, "type", None, "lines must be a JSON list")
            for i, item in enumerate(items if isinstance(items, list) else []):
                at = f"{where}.{opts.lines}[{i}]"
                if not isinstance(item, dict):
                    report.add(at, "(line)", "type", None, "a line must be a JSON object")
                    continue
                lines.append(Record(at, self._values(item, at, layout.line_fields, report)))
        return Record(where, values, lines)

    @staticmethod
    def _values(
        node: dict[str, Any], where: str, specs: list[FieldSpec], report: Report
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for spec in specs:
            _, raw = _lookup(node, spec.key)
            text = _as_text(spec, raw, where, report)
            values[spec.name] = None if text is False else parse_field(spec, text, where, report)  # type: ignore[arg-type]
        return values

    # ------------------------------------------------------------------ writing

    def write(self, docs: list[Document], layout: Layout, origin: str) -> bytes:
        opts = layout.json_
        objects = [self._document(doc, layout, opts) for doc in docs]
        if opts.ndjson:
            text = "".join(dumps(o, None) + "\n" for o in objects)
        elif len(objects) == 1 and not opts.batch_key:
            text = dumps(objects[0], opts.indent) + "\n"
        elif opts.batch_key:
            text = dumps({opts.batch_key: objects}, opts.indent) + "\n"
        else:
            raise MappingError(
                f"{origin}: {len(objects)} documents for one JSON file, "
                f"but layout {layout.name} has no batch_key"
            )
        return encode(text, layout.encoding, origin)

    def _document(self, doc: Document, layout: Layout, opts: JsonOptions) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for spec in layout.fields:
            _place(body, spec.key, _json_value(spec, doc.header.get(spec.name)))
        if layout.shape == "nested":
            lines = []
            for line in doc.lines:
                item: dict[str, Any] = {}
                for spec in layout.line_fields:
                    _place(item, spec.key, _json_value(spec, line.get(spec.name)))
                lines.append(item)
            _place(body, opts.lines or "lines", lines)
        if opts.wrap:
            wrapped: dict[str, Any] = {}
            _place(wrapped, opts.wrap, body)
            return wrapped
        return body


def _place(obj: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


def _json_value(spec: FieldSpec, value: Any) -> Any:
    if value is None:
        return None
    if spec.type in ("integer", "boolean"):
        return value
    if spec.type == "decimal":
        return _Raw(spec.render(value))
    return spec.render(value)


class _Raw(str):
    """A number already written exactly; emitted without quotes."""

    __slots__ = ()


def dumps(value: Any, indent: int | None, level: int = 0) -> str:
    """Serialize with decimals exact and non-ASCII as is."""
    if isinstance(value, _Raw):
        return str(value)
    if value is None or isinstance(value, bool | int | str):
        return json.dumps(value, ensure_ascii=False)
    pad = "" if indent is None else "\n" + " " * (indent * (level + 1))
    end = "" if indent is None else "\n" + " " * (indent * level)
    sep = ", " if indent is None else ","
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [
            f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {dumps(v, indent, level + 1)}"
            for k, v in value.items()
        ]
        return "{" + sep.join(items) + end + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[" + sep.join(f"{pad}{dumps(v, indent, level + 1)}" for v in value) + end + "]"
    if isinstance(value, Decimal):
        return format(value, "f")
    raise MappingError(f"cannot write a {type(value).__name__} as JSON")

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

import functools
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any, BinaryIO

import structlog

from xchange.codecs import per_layout
from xchange.codecs.text import (
    Encoder,
    decoded_chunks,
    python_codec,
    split_lines,
    text_reading,
)
from xchange.errors import DecodeError, MappingError
from xchange.layout import (
    FieldSpec,
    FieldValueError,
    JsonOptions,
    Layout,
    few_lines,
    group_count,
    json_outside,
    json_steps,
)
from xchange.mapping import Document, Record
from xchange.report import Report

log = structlog.get_logger(__name__)

#: The largest single JSON value (one record) held in memory while streaming.
MAX_VALUE = 64 * 1024 * 1024

_STEP = re.compile(r"\.([^.\[\]]+)|\[(\*|\d+)\]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _pairs(rule: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)  # (the last value of a repeated key wins)
        if len(out) != len(pairs) and rule == "reject":
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise ValueError(f"duplicate key {key!r} in one object")
                seen.add(key)
        return out

    return hook


def _decoder(duplicate_keys: str) -> json.JSONDecoder:
    return json.JSONDecoder(
        parse_float=Decimal,
        parse_int=int,
        parse_constant=_refuse_constant,
        object_pairs_hook=_pairs(duplicate_keys),
        strict=True,
    )


class _Refused(Exception):
    """A value the hooks refuse (NaN, a duplicate key, a huge number): the caller, who
    knows where the value starts in the file, names the line."""


def _raw_decode(decoder: json.JSONDecoder, text: str, pos: int, origin: str) -> tuple[Any, int]:
    try:
        return decoder.raw_decode(text, pos)
    except RecursionError:
        raise DecodeError(f"{origin}: JSON nested too deeply") from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # from the hooks: NaN/Infinity, duplicate keys, huge ints
        message = str(exc)
        if "digits" in message and "limit" in message:  # (Python's own advice is for programmers)
            message = "a number has more than 4,300 digits; refused"
        raise _Refused(message) from None
    except ArithmeticError:  # a number beyond what Decimal can hold
        raise DecodeError(f"{origin}: a number is out of range") from None


def loads(text: str, origin: str, *, duplicate_keys: str = "reject") -> Any:
    """Parse one JSON text strictly.

    Raises:
        DecodeError: with line and column.
    """
    start = _skip_ws(text, 0)
    try:
        value, end = _raw_decode(_decoder(duplicate_keys), text, start, origin)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"{origin}: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except _Refused as exc:
        line = text.count("\n", 0, start) + 1
        raise DecodeError(f"{origin}: in the value from line {line}: {exc}") from None
    rest = _skip_ws(text, end)
    if rest != len(text):
        line = text.count("\n", 0, rest) + 1
        raise DecodeError(f"{origin}: line {line}: extra data after the JSON value")
    return value


class _TextStream:
    """Decoded text with a sliding buffer, for reading one JSON value at a time."""

    def __init__(self, chunks: Iterator[str], origin: str, duplicate_keys: str) -> None:
        self.chunks = chunks
        self.origin = origin
        self.decoder = _decoder(duplicate_keys)
        self.duplicate_keys = duplicate_keys
        self.buf = ""
        self.pos = 0
        self.line = 1  # line of buf[0]
        self.eof = False

    def _more(self) -> bool:
        if self.eof:
            return False
        if len(self.buf) - self.pos > MAX_VALUE:
            raise DecodeError(
                f"{self.origin}: line {self.where()}: a single JSON value is larger than "
                f"{MAX_VALUE // (1024 * 1024)} MiB; refused"
            )
        chunk = next(self.chunks, None)
        if chunk is None:
            self.eof = True
            return False
        # Drop what has been consumed, keeping line numbers right.
        self.line += self.buf.count("\n", 0, self.pos)
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True

    def where(self) -> int:
        return self.line + self.buf.count("\n", 0, self.pos)

    def peek(self) -> str:
        while True:
            self.pos = _skip_ws(self.buf, self.pos)
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            found = self.peek() or "end of file"
            raise DecodeError(
                f"{self.origin}: line {self.where()}: expected {char!r}, found {found!r}"
            )
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = _raw_decode(self.decoder, self.buf, self.pos, self.origin)
            except _Refused as exc:
                raise DecodeError(
                    f"{self.origin}: in the value from line {self.where()}: {exc}"
                ) from None
            except json.JSONDecodeError as exc:
                # Maybe only the buffer ended: read more and try again; else it is an error.
                if self._more():
                    continue
                line = self.line + exc.doc.count("\n", 0, exc.pos)
                raise DecodeError(f"{self.origin}: line {line}: {exc.msg}") from None
            if end == len(self.buf) and not self.eof and self._more():
                continue  # a number may go on in the next chunk
            self.pos = end
            return value


_STREAMABLE = re.compile(r"^\$((?:\.[^.\[\]]+)*)\[\*\]$")


class Matched:
    """Whether a records path matched, and the top-level keys seen (for the message)."""

    def __init__(self) -> None:
        self.found = False
        self.top: list[str] = []
        #: The whole document (when it is read whole), for fields outside the records.
        self.document: Any = None

    def missing(self, path: str) -> str:
        keys = ", ".join(self.top[:10]) + (", ..." if len(self.top) > 10 else "")
        seen = f" (its top-level keys: {keys})" if self.top else ""
        return f"the records path {path} matches nothing in this document{seen}"


#: Called for each member beside the records path: its path (``$.export_id``), value and
#: line.
Beside = Callable[[str, Any, int], None]


def stream_records(
    chunks: Iterator[str],
    path: str,
    origin: str,
    duplicate_keys: str,
    matched: Matched | None = None,
    beside: Beside | None = None,
    *,
    whole: bool = False,
) -> Iterator[tuple[str, Any]]:
    """Records at ``$.a.b[*]`` one at a time, without holding the whole document.

    Other paths (and ``whole``: fields read outside the records) read the whole document
    and select from it (``matched.document``). The document is checked as
    strictly as a whole-document parse: every value, every comma and bracket, duplicate
    keys at every level. ``matched`` learns whether the path was found (an empty list
    there is found: nothing to do).
    """
    matched = matched if matched is not None else Matched()
    match = None if whole else _STREAMABLE.match(path)
    if match is None:
        parts, size = [], 0
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_VALUE:
                raise DecodeError(
                    f"{origin}: the document is larger than {MAX_VALUE // (1024 * 1024)} MiB "
                    f"and its records path {path!r} cannot be streamed (use $.key[*])"
                )
            parts.append(chunk)
        document = loads("".join(parts), origin, duplicate_keys=duplicate_keys)
        matched.document = document
        if isinstance(document, dict):
            matched.top = list(document)
        nodes = select(document, path)
        matched.found = bool(nodes) or _path_exists(document, path)
        yield from nodes
        if beside is not None:
            _beside_selected(document, {id(node) for _, node in nodes}, "$", beside)
        return
    keys = [k for k in match.group(1).split(".") if k]
    ts = _TextStream(chunks, origin, duplicate_keys)
    if not ts.peek():
        raise DecodeError(f"{origin}: the file is empty: no JSON value")
    if keys:
        yield from _walk(ts, keys, "$", matched, beside)
    else:
        yield from _items(ts, "$", matched)
    if ts.peek():
        raise DecodeError(f"{origin}: line {ts.where()}: extra data after the JSON value")


def _items(ts: _TextStream, where: str, matched: Matched) -> Iterator[tuple[str, Any]]:
    """The elements of the list at ``where``, one at a time."""
    if ts.peek() != "[":
        ts.value()  # checked, then found not to be a list
        raise DecodeError(f"{ts.origin}: line {ts.where()}: {where} is not a list")
    matched.found = True
    ts.pos += 1
    if ts.peek() == "]":
        ts.pos += 1
        return
    index = 0
    while True:
        yield f"{where}[{index}]", ts.value()
        index += 1
        if ts.peek() == ",":
            ts.pos += 1
            continue  # a value must follow: value() refuses "]"
        ts.expect("]")
        return


def _on_line(beside: Beside, line: int, path: str, value: Any, _: int) -> None:
    """``beside`` for a member of one NDJSON line (its line number, not the value's)."""
    beside(path, value, line)


def _beside_selected(node: Any, selected: set[int], where: str, beside: Beside) -> None:
    """Hand ``beside`` every part of a whole document that holds no selected record."""
    if id(node) in selected:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            _beside_or_below(value, selected, f"{where}.{key}", beside)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _beside_or_below(value, selected, f"{where}[{i}]", beside)


def _beside_or_below(value: Any, selected: set[int], where: str, beside: Beside) -> None:
    if id(value) in selected:
        return
    if isinstance(value, dict | list) and _holds(value, selected):
        _beside_selected(value, selected, where, beside)
    else:
        beside(where, value, 0)


def _holds(node: Any, selected: set[int]) -> bool:
    if id(node) in selected:
        return True
    values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return any(_holds(v, selected) for v in values)


def _walk(
    ts: _TextStream,
    keys: list[str],
    where: str,
    matched: Matched,
    beside: Beside | None = None,
) -> Iterator[tuple[str, Any]]:
    """Through the object here to the records below ``keys``; every other member is
    read (and checked) and skipped. A member name given twice is refused whatever
    ``duplicate_keys`` says for records: which copy holds the records is ambiguous."""
    if ts.peek() != "{":
        ts.value()  # not an object: the path is not here
        return
    ts.pos += 1
    top = where == "$"
    seen: set[str] = set()
    if ts.peek() == "}":
        ts.pos += 1
        return
    while True:
        if ts.peek() != '"':
            found = ts.peek() or "end of file"
            raise DecodeError(
                f"{ts.origin}: line {ts.where()}: expected a member name in double quotes, "
                f"found {found!r}"
            )
        name = ts.value()
        if name in seen and (ts.duplicate_keys == "reject" or name == keys[0]):
            raise DecodeError(
                f"{ts.origin}: line {ts.where()}: duplicate key {name!r} in one object"
                + (" (on the records path)" if name == keys[0] else "")
            )
        seen.add(name)
        if top:
            matched.top.append(name)
        ts.expect(":")
        if name == keys[0]:
            below = f"{where}.{name}"
            if len(keys) == 1:
                yield from _items(ts, below, matched)
            else:
                yield from _walk(ts, keys[1:], below, matched, beside)
        else:
            line = ts.where()
            value = ts.value()
            if beside is not None:
                beside(f"{where}.{name}", value, line)
        if ts.peek() == ",":
            ts.pos += 1
            continue  # a member must follow
        ts.expect("}")
        return


def _path_exists(document: Any, path: str) -> bool:
    """Whether the container a records path ends in exists (``$.a[*]`` on ``{"a": []}``)."""
    if path.endswith("[*]"):
        return bool(select(document, path[:-3])) and all(
            isinstance(node, list) for _, node in select(document, path[:-3])
        )
    return False


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


def _outside_values(
    document: Any, where: str, outside: list[tuple[FieldSpec, tuple[list[str], str] | None]]
) -> dict[str, Any]:
    """The raw values of a record's fields outside it (``$.batch_no``, ``^.order_no``):
    from the document's root, or from the object as many objects above the record (at
    ``where``, an NDJSON line's ``line 3 $.x[0]`` too) as the column says."""
    path = where[where.index("$") :]
    concrete = json_steps(path)
    out: dict[str, Any] = {}
    for spec, found in outside:
        assert found is not None
        steps, key = found
        node = document
        for step in concrete[: len(steps)] if steps else ():
            if step.startswith("["):
                index = int(step[1:-1])
                node = node[index] if isinstance(node, list) and index < len(node) else None
            else:
                node = node.get(step[1:]) if isinstance(node, dict) else None
        out[spec.key] = _lookup(node, key)[1]
    return out


def _lookup(obj: Any, dotted: str) -> tuple[bool, Any]:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return False, None
        obj = obj[part]
    return True, obj


#: What JSON values each field type takes besides a string (a string is read by the
#: field's rules, whatever its type) and null (no value).
_TAKES = {
    "string": "a JSON string",
    "enum": "a JSON string",
    "date": "a JSON string",
    "datetime": "a JSON string",
    "integer": "a JSON number or a string",
    "decimal": "a JSON number or a string",
    "boolean": "true, false or a string",
}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"the JSON boolean {'true' if value else 'false'}"
    if isinstance(value, int | Decimal):
        return f"the JSON number {str(value)[:40]}"
    return "an object" if isinstance(value, dict) else "a list"


def _as_text(spec: FieldSpec, value: Any, where: str, report: Report) -> str | bool | None:
    """A JSON scalar as the text a field parses; False if its JSON type does not fit the
    field's (a problem: ``"sku": true`` is not the text "TRUE", nor ``1`` a boolean)."""
    if value is None:
        return None
    kind = spec.type
    fits = (
        kind == "boolean"
        if isinstance(value, bool)
        else kind in ("integer", "decimal")
        if isinstance(value, int | Decimal)
        else False
    )
    if not fits:
        report.add(
            where,
            spec.shown,
            "type",
            None,
            f"a {kind} field takes {_TAKES[kind]}, found {_json_kind(value)}",
        )
        return False
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        text = _fraction_text(spec, value)
        if text is None:
            report.add(where, spec.shown, "type", str(value)[:40], "number out of range")
            return False
        return text
    return str(value)


def _fraction_text(spec: FieldSpec, value: Decimal) -> str | None:
    """A JSON fraction as the text a number field parses; None when it is out of range."""
    if (
        not value.is_finite()
        or not -40 <= value.adjusted() <= 40
        or (
            value.as_tuple().exponent < -40  # type: ignore[operator]
        )
    ):
        return None
    return format(value, "f") if spec.type == "decimal" else str(value)


class _Node:
    """One key of what a layout reads: the keys below it, whether a field reads its value,
    whether it holds the lines (its keys are each line's), and what unknown keys at or
    below it mean."""

    __slots__ = ("children", "inner", "lines", "policy", "scalar", "value")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.value = False
        self.lines = False
        #: A list whose items are values (a group of one field at "."), not objects.
        self.scalar = False
        self.policy: str | None = None
        #: The children that hold keys of their own (objects, the lines), with their keys.
        self.inner: list[tuple[str, _Node]] = []

    def finish(self) -> None:
        """Note which children hold keys (once the tree is built)."""
        self.inner = [(k, c) for k, c in self.children.items() if c.lines or not c.value]
        for child in self.children.values():
            child.finish()

    def at(self, dotted: str) -> _Node:
        node = self
        for part in dotted.split("."):
            node = node.children.setdefault(part, _Node())
        return node


#: An index in a document path (``[3]``).
_INDEX = re.compile(r"\[\d+\]")

#: The last step of a document path (``.key`` or ``[n]``).
_UP = re.compile(r"(\.[^.\[\]]*|\[\d+\])$")


class _Keys:
    """Every key of a record (and of its lines) is read into a field, declared by the
    layout (``unknown``, ``unknown_in``), or a problem; so is every member of the document
    beside the records path."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.record = _Node()
        lines: _Node | None = None
        if layout.shape == "nested":
            lines = self.record.at(layout.json_.lines or "lines")
            lines.lines = True
        outside = layout.outside()
        #: What fields outside the records read: document paths, any index as ``[*]``.
        self.read: set[str] = set()
        for spec in outside:
            found = json_outside(layout.json_.records, spec.key)
            assert found is not None
            steps, key = found
            self.read.add("$" + "".join(steps) + "." + key)
        for specs, base in ((layout.fields, self.record), (layout.line_fields, lines)):
            for spec in specs:
                if spec not in outside:
                    (base or self.record).at(spec.key).value = True
        self._groups(layout, "record", self.record)
        if lines is not None:
            self._groups(layout, "lines", lines)
        #: Paths from the document's root ("$.export_id") -> policy.
        self.document: dict[str, str] = {}
        self.base = layout.unknown
        for path, policy in layout.unknown_in.items():
            if path == "$" or path.startswith("$."):
                self.document[path] = policy
            else:
                self.record.at(path).policy = policy
        self.record_policy = self._document_policy(layout.json_.records.split("[")[0])
        self.record.finish()

    def _groups(self, layout: Layout, level: str, base: _Node) -> None:
        """The groups held by ``level``'s objects (at ``base``), and below them: each a
        list whose items are walked as lines are (an item that is one value holds no
        keys: what it is is its field's business)."""
        for group in layout.children(level):
            node = base.at(group.path)
            node.lines = True
            node.scalar = group.scalar
            for spec in group.fields:
                if spec.key != ".":
                    node.at(spec.key).value = True
            self._groups(layout, group.name, node)

    def _document_policy(self, path: str) -> str:
        """The policy of the nearest declared path enclosing ``path`` (``$.a.b[2].c``)."""
        while path:
            if path in self.document:
                return self.document[path]
            path = _UP.sub("", path) if path != "$" else ""
        return self.base

    def declares_below(self, path: str) -> bool:
        """Whether a declared document path (or one a field reads) lies inside ``path``."""
        pattern = _INDEX.sub("[*]", path)
        return any(p.startswith(path + ".") for p in self.document) or any(
            p.startswith((pattern + ".", pattern + "[")) for p in self.read
        )

    def beside(self, path: str, value: Any, where: str, report: Report) -> None:
        """A member of the document outside the records (read by a field, or unknown)."""
        if self.read and _INDEX.sub("[*]", path) in self.read:
            return
        self._unknown(self._document_policy(path), where, path, path, value, report)

    def walk(
        self,
        obj: dict[str, Any],
        node: _Node,
        policy: str,
        where: str,
        prefix: str,
        report: Report,
        local: str = "",
    ) -> None:
        """The keys of ``obj`` (at ``node``; ``prefix`` is its key path in the record,
        ``local`` in the object at ``where``: the record, a line or an item)."""
        policy = node.policy or policy
        if obj.keys() <= node.children.keys():
            # The usual object: every key known; only what holds keys is looked inside
            # (unless a value sits where an object belongs: the full look below says so).
            if not node.inner:
                return
            inner = [(k, below, obj[k]) for k, below in node.inner if obj.get(k) is not None]
            if all(below.lines or type(value) is dict for _, below, value in inner):
                for key, below, value in inner:
                    path = f"{prefix}{key}"
                    if below.lines:
                        self._lines(value, below, policy, where, path, f"{local}{key}", report)
                    else:
                        self.walk(value, below, policy, where, f"{path}.", report, f"{local}{key}.")
                return
        for key, value in obj.items():
            path = f"{prefix}{key}"
            found = node.children.get(key)
            if found is None:
                self._unknown(policy, where, path, path, value, report)
                continue
            below = found
            if below.lines:
                self._lines(value, below, policy, where, path, f"{local}{key}", report)
            elif below.value:
                continue  # a field reads it (and says if its type does not fit)
            elif isinstance(value, dict):
                self.walk(value, below, policy, where, f"{path}.", report, f"{local}{key}.")
            elif value is not None:
                self._unknown(
                    below.policy or policy,
                    where,
                    path,
                    f"{path} (the layout reads keys inside it)",
                    value,
                    report,
                )

    def _lines(
        self,
        value: Any,
        node: _Node,
        policy: str,
        where: str,
        path: str,
        local: str,
        report: Report,
    ) -> None:
        """The keys of each line of a record's list of lines, or of each item of a group's
        list (``local``: its key path in the object at ``where``; what is not a list, not
        an object, or an object in a list of values is the record reader's problem)."""
        if isinstance(value, list) and not node.scalar:
            known, inner = node.children.keys(), node.inner
            for i, item in enumerate(value):
                if type(item) is dict and not inner and item.keys() <= known:
                    continue  # (what walk would find: nothing to look at)
                if isinstance(item, dict):
                    at = f"{where}.{local}[{i}]"
                    self.walk(item, node, node.policy or policy, at, f"{path}.", report)

    def _unknown(
        self, policy: str, where: str, path: str, what: str, value: Any, report: Report
    ) -> None:
        if policy == "ignore":
            return
        shown = _json_kind(value) if not isinstance(value, str) else f"{value[:40]!r}"
        name = what if what.isprintable() and what.strip() == what else repr(what)
        if len(name) > 120:
            name = name[:117] + "..."
        message = f"the key {name} ({shown}) is not in layout {self.layout.name}"
        if policy == "warn":
            report.warn(f'{where}: {message}: not read (unknown = "warn")')
            return
        report.add(
            where,
            path,
            "unknown",
            None,
            f"{message} (its value would be lost: declare it as a field, or add "
            f'{json.dumps(path, ensure_ascii=False)[:120]} = "ignore" under [unknown_in])',
        )


#: The layout's :class:`_Keys` (made once per layout).
_keys = per_layout(_Keys)


#: A field as :meth:`JsonCodec._values` reads it: its name, key, its parser when the usual
#: value is read by it alone (a key without dots, a field that never changes what it
#: reads: see ``FieldSpec.normalises``), what reads a JSON integer (a number field's
#: ``int_reader``), and the field.
_Plain = tuple[str, str, Any, Any, FieldSpec]
_PLANS: dict[int, tuple[list[FieldSpec], list[_Plain]]] = {}


def _plain_fields(specs: list[FieldSpec]) -> list[_Plain]:
    """Each field of ``specs`` as :data:`_Plain` (made once per list of fields)."""
    known = _PLANS.get(id(specs))
    if known is None or known[0] is not specs:
        if len(_PLANS) > 1024:
            _PLANS.clear()
        plan = [
            (
                spec.name,
                spec.key,
                spec.parser if "." not in spec.key and not spec.normalises else None,
                spec.int_reader,
                spec,
            )
            for spec in specs
        ]
        known = _PLANS[id(specs)] = (specs, plan)
    return known[1]


class JsonCodec:
    """The JSON codec."""

    def records(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report
    ) -> Iterator[Record]:
        opts = layout.json_
        record = self._record
        for where, node, extra in self.nodes(stream, layout, origin, report):
            yield record(node, where, layout, opts, report, extra)

    def record(self, node: dict[str, Any], where: str, layout: Layout, report: Report) -> Record:
        """One record of :meth:`nodes` (with no fields outside it) as :meth:`records`
        reads it."""
        return self._record(node, where, layout, layout.json_, report)

    def check_keys(self, node: dict[str, Any], where: str, layout: Layout, report: Report) -> None:
        """Report the keys of a record (and of its lines) the layout neither reads nor
        declares (what :meth:`nodes` does for each record unless told not to)."""
        keys = _keys(layout)
        keys.walk(node, keys.record, keys.record_policy, where, "", report)

    def nodes(
        self,
        stream: BinaryIO,
        layout: Layout,
        origin: str,
        report: Report,
        *,
        check_keys: bool = True,
    ) -> Iterator[tuple[str, dict[str, Any], dict[str, Any] | None]]:
        """Each record's object as it is in the file, its keys checked against the layout
        (problems to ``report``; ``check_keys=False``: left to :meth:`check_keys`), with the raw
        values of its fields outside it (None when the layout has none): what
        :meth:`records` reads each record from."""
        opts = layout.json_
        encoding, check = text_reading(
            stream,
            layout.encoding,
            layout.mojibake,
            origin,
            report,
            plausible=layout.check_text,
        )
        chunks = decoded_chunks(stream, encoding, origin, check)
        matched = Matched()
        keys = _keys(layout)
        #: Members beside the records: unknown input, once the records path is found.
        others: list[tuple[str, Any, str]] = []

        def beside(path: str, value: Any, line: int) -> None:
            if isinstance(value, dict) and keys.declares_below(path):
                for key, inner in value.items():  # (a declared path inside it decides)
                    beside(f"{path}.{key}", inner, line)
                return
            shown = value if type(value) is str or not isinstance(value, dict | list) else []
            others.append((path, shown, f"line {line}" if line else path))

        outside = [(spec, json_outside(opts.records, spec.key)) for spec in layout.outside()]
        if opts.ndjson:
            nodes: Iterable[tuple[str, Any]] = self._ndjson(
                chunks, opts, origin, report, beside, matched
            )
        else:
            nodes = stream_records(
                chunks,
                opts.records,
                origin,
                opts.duplicate_keys,
                matched,
                beside,
                whole=bool(outside),
            )
        for where, node in nodes:
            if not isinstance(node, dict):
                report.add(where, "(record)", "type", None, "a record must be a JSON object")
                continue
            if check_keys:
                keys.walk(node, keys.record, keys.record_policy, where, "", report)
            extra = _outside_values(matched.document, where, outside) if outside else None
            yield where, node, extra
        if not opts.ndjson and not matched.found:
            report.add("$", "(records)", "records", None, matched.missing(opts.records))
        else:
            for path, value, at in others:
                keys.beside(path, value, at, report)

    @staticmethod
    def _ndjson(
        chunks: Iterator[str],
        opts: JsonOptions,
        origin: str,
        report: Report,
        beside: Beside | None = None,
        matched: Matched | None = None,
    ) -> Iterator[tuple[str, Any]]:
        empty = True
        for n, line in enumerate(split_lines(chunks, origin), start=1):
            if line.strip():
                empty = False
                value = loads(line, f"{origin}: line {n}", duplicate_keys=opts.duplicate_keys)
                nodes = select(value, opts.records)
                if matched is not None:
                    matched.document = value  # (fields outside the records read it)
                if not nodes and not _path_exists(value, opts.records):
                    report.add(
                        f"line {n}",
                        "(records)",
                        "records",
                        None,
                        f"the records path {opts.records} matches nothing on this line",
                    )
                for where, node in nodes:
                    yield f"line {n} {where}", node
                if beside is not None and nodes:
                    on_line = functools.partial(_on_line, beside, n)
                    _beside_selected(value, {id(node) for _, node in nodes}, "$", on_line)
        if empty:
            raise DecodeError(f"{origin}: the file is empty: no JSON value")

    def _record(
        self,
        node: dict[str, Any],
        where: str,
        layout: Layout,
        opts: JsonOptions,
        report: Report,
        extra: dict[str, Any] | None = None,
    ) -> Record:
        failed: set[str] = set()
        values = self._values(node, where, layout.fields, report, failed, extra)
        lines: list[Record] = []
        if layout.shape == "nested":
            key = opts.lines or "lines"
            found, items = _lookup(node, key)
            if found and items is not None and not isinstance(items, list):
                report.add(where, key, "type", None, "lines must be a JSON list")
            line_fields, grouped, base = layout.line_fields, bool(layout.groups), f"{where}.{key}["
            values_of = self._values
            for i, item in enumerate(items if isinstance(items, list) else []):
                at = f"{base}{i}]"
                if not isinstance(item, dict):
                    report.add(at, "(line)", "type", None, "a line must be a JSON object")
                    continue
                line_failed: set[str] = set()
                line_values = values_of(item, at, line_fields, report, line_failed)
                below = self._groups(item, at, layout, "lines", report) if grouped else {}
                lines.append(Record(at, line_values, lines=[], failed=line_failed, groups=below))
            if len(lines) < layout.min_lines and (found or not isinstance(items, list)):
                what = f"{key!r} is {'missing' if not found else 'empty or null'}"
                if found and isinstance(items, list) and items:
                    what = f"{key!r} holds {len(items)} item(s) that are not lines"
                report.add(where, key, "lines", None, few_lines(len(lines), layout.min_lines, what))
        groups = self._groups(node, where, layout, "record", report) if layout.groups else {}
        return Record(where, values, lines, failed=failed, groups=groups)

    def _groups(
        self, node: dict[str, Any], where: str, layout: Layout, level: str, report: Report
    ) -> dict[str, list[Record]]:
        """The items of each group ``level``'s object holds (and theirs, below them)."""
        out: dict[str, list[Record]] = {}
        for group in layout.children(level):
            key = group.path
            found, items = _lookup(node, key)
            if found and items is not None and not isinstance(items, list):
                report.add(where, key, "type", None, f"group {group.name} must be a JSON list")
            records: list[Record] = []
            for i, item in enumerate(items if isinstance(items, list) else []):
                at = f"{where}.{key}[{i}]"
                failed: set[str] = set()
                if group.scalar:
                    if isinstance(item, dict | list):
                        report.add(
                            at,
                            key,
                            "type",
                            None,
                            f"an item of group {group.name} is one value, found {_json_kind(item)}",
                        )
                        continue
                    values = self._values({".": item}, at, group.fields, report, failed)
                    records.append(Record(at, values, failed=failed))
                    continue
                if not isinstance(item, dict):
                    report.add(
                        at,
                        "(item)",
                        "type",
                        None,
                        f"an item of group {group.name} must be a JSON object",
                    )
                    continue
                values = self._values(item, at, group.fields, report, failed)
                below = self._groups(item, at, layout, group.name, report)
                records.append(Record(at, values, failed=failed, groups=below))
            problem = group_count(group, len(records), items if isinstance(items, list) else [])
            if problem:
                report.add(where, key, "group", None, problem)
            out[group.name] = records
        return out

    @staticmethod
    def _values(
        node: dict[str, Any],
        where: str,
        specs: list[FieldSpec],
        report: Report,
        failed: set[str],
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Each field's typed value (what ``parse_field`` gives; problems to ``report``);
        ``extra``: the raw values of fields outside the record, by key."""
        values: dict[str, Any] = {}
        for name, key, parse, number, spec in _plain_fields(specs):
            # The usual value first: a text (or an integer of a number field) at a plain
            # key, read by the field's parser; anything else, or a broken rule, below.
            if parse is not None and (extra is None or key not in extra):
                raw = node.get(key)
                kind = type(raw)
                if kind is str or raw is None or (kind is int and number is not None):
                    try:
                        values[name] = parse(raw) if kind is not int else number(raw)
                        continue
                    except FieldValueError:
                        pass  # (read again below, which reports it)
            if extra is not None and key in extra:
                raw = extra[key]
            else:
                raw = node.get(key) if "." not in key or key == "." else _lookup(node, key)[1]
            text = raw if type(raw) is str else _as_text(spec, raw, where, report)
            if text is False:
                failed.add(spec.name)
                values[spec.name] = None
                continue
            try:
                values[spec.name] = spec.parser(text)  # type: ignore[arg-type]
            except FieldValueError as exc:
                report.add(where, spec.shown, exc.rule, text, exc.message)
                failed.add(spec.name)
                values[spec.name] = None
                continue
            if spec.normalises and text and not (text.isascii() and text.isprintable()):  # type: ignore[union-attr]
                spec.note_normalised(text, where, report)  # type: ignore[arg-type]
        return values

    # ------------------------------------------------------------------ writing

    def document(self, doc: Document, layout: Layout, origin: str) -> bytes:
        """What :meth:`write` writes for ``[doc]``, made at once.

        Raises:
            MappingError: as :meth:`write`.
        """
        opts = layout.json_
        if not opts.batch_key:
            text = _shape(layout, None if opts.ndjson else opts.indent, 0).text(doc) + "\n"
            try:
                return text.encode(_python_codec(layout.encoding))
            except UnicodeEncodeError:
                pass  # (written below, which says which character and where)
        buf = io.BytesIO()
        self.write([doc], layout, origin, buf)
        return buf.getvalue()

    def write(self, docs: Iterable[Document], layout: Layout, origin: str, out: Any) -> int:
        opts = layout.json_
        encoder = Encoder(layout.encoding, origin)
        count = 0
        if opts.ndjson:
            shape = _shape(layout, None, 0)
            for doc in docs:
                out.write(encoder(shape.text(doc) + "\n"))
                count += 1
        elif opts.batch_key:
            indent = opts.indent
            shape = _shape(layout, indent, 2)
            pad = "" if indent is None else "\n" + " " * (2 * indent)
            out.write(
                encoder(
                    "{"
                    + ("" if indent is None else "\n" + " " * indent)
                    + json.dumps(opts.batch_key, ensure_ascii=False)
                    + ": ["
                )
            )
            for doc in docs:
                out.write(encoder(("," if count else "") + pad + shape.text(doc)))
                count += 1
            close = "" if indent is None else "\n" + " " * indent
            out.write(
                encoder((close if count else "") + "]" + ("" if indent is None else "\n") + "}\n")
            )
        else:
            shape = _shape(layout, opts.indent, 0)
            for doc in docs:
                if count:
                    raise MappingError(
                        f"{origin}: several documents for one JSON file, "
                        f"but layout {layout.name} has no batch_key"
                    )
                out.write(encoder(shape.text(doc) + "\n"))
                count += 1
        out.write(encoder("", final=True))
        return count


class _Slot:
    """Where a value goes in a :class:`_Shape`: a field's (``spec``), or a list of items
    (``items``: the document's lines when ``key`` is None, else the group at ``key``)."""

    __slots__ = ("items", "key", "spec")

    def __init__(
        self, spec: FieldSpec | None = None, *, items: _List | None = None, key: str | None = None
    ) -> None:
        self.spec = spec
        self.items = items
        self.key = key


class _Form:
    """A template made into one format string (``%s`` where each slot goes) and, per
    slot, what writes its value: an object's text is one ``%`` of its values' texts."""

    __slots__ = ("fields", "fmt", "slots")

    def __init__(self, pieces: list[str | _Slot]) -> None:
        texts = [t for t in pieces[0::2] if isinstance(t, str)]
        slots = [s for s in pieces[1::2] if isinstance(s, _Slot)]
        assert len(texts) + len(slots) == len(pieces)
        self.fmt = "%s".join(t.replace("%", "%%") for t in texts)
        #: Per slot: a field's name and writer, or (None, a list's writer, its key).
        self.slots: list[tuple[str | None, Any, str | None]] = [
            (slot.spec.name, _writer(slot.spec), None)
            if slot.spec is not None
            else (None, slot.items, slot.key)
            for slot in slots
        ]
        #: (field name, writer) per slot when every slot is a field's (no list inside).
        self.fields: list[tuple[str, Callable[[Any], str]]] | None = None
        if all(name is not None for name, _, _ in self.slots):
            self.fields = [(name, write) for name, write, _ in self.slots]  # type: ignore[misc]

    def text(self, values: dict[str, Any], lines: list[dict[str, Any]] | None = None) -> str:
        """An object's text from its values (``lines``: a document's)."""
        fields = self.fields
        if fields is not None:
            return self.fmt % tuple([write(values.get(name)) for name, write in fields])
        out: list[str] = []
        for name, write, key in self.slots:
            if name is not None:
                out.append(write(values.get(name)))
            else:
                items = (lines or []) if key is None else values.get(key) or []
                out.append(write.text(items))
        return self.fmt % tuple(out)


class _List:
    """A list of items in a template (the lines, or a group's), at ``level``: one item's
    own template, or for items that are one value, that value's field."""

    __slots__ = ("close", "form", "open", "pad", "scalar")

    def __init__(
        self,
        layout: Layout,
        level_name: str,
        fields: list[FieldSpec],
        indent: int | None,
        level: int,
    ) -> None:
        self.scalar: tuple[str, Callable[[Any], str]] | None = (
            (fields[0].name, _writer(fields[0])) if fields[0].key == "." else None
        )
        self.form: _Form | None = None
        if self.scalar is None:
            item: dict[str, Any] = {}
            for spec in fields:
                _place(item, spec.key, _Slot(spec))
            _place_groups(item, layout, level_name, indent, level + 1)
            self.form = _Form(_template(item, indent, level + 1))
        pad = "" if indent is None else "\n" + " " * (indent * (level + 1))
        self.open = "[" + pad
        self.pad = ", " if indent is None else "," + pad
        self.close = ("" if indent is None else "\n" + " " * (indent * level)) + "]"

    def text(self, items: list[dict[str, Any]]) -> str:
        if not items:
            return "[]"
        if self.scalar is not None:
            name, write = self.scalar
            texts = [write(item.get(name)) for item in items]
        else:
            assert self.form is not None
            text = self.form.text
            texts = [text(item) for item in items]
        return self.open + self.pad.join(texts) + self.close


def _place_groups(
    obj: dict[str, Any], layout: Layout, level_name: str, indent: int | None, level: int
) -> None:
    """Slots for the groups held by an object of ``level_name`` at ``level``."""
    for group in layout.children(level_name):
        depth = level + len(group.path.split("."))
        items = _List(layout, group.name, group.fields, indent, depth)
        _place(obj, group.path, _Slot(items=items, key=group.name))


class _Shape:
    """A layout's documents written from a template: every document of a layout has the
    same keys in the same order and nesting (a field with no value is ``null``), so the
    structure is serialized once, with slots where the values go, and each document only
    fills the slots. Writes exactly what :func:`dumps` writes for the document as a tree
    of JSON values (tested against it)."""

    def __init__(self, layout: Layout, indent: int | None, level: int) -> None:
        opts = layout.json_
        body: dict[str, Any] = {}
        for spec in layout.fields:
            _place(body, spec.key, _Slot(spec))
        # Where the body's own keys are: below the wrap, if any.
        body_level = level + (len(opts.wrap.split(".")) if opts.wrap else 0)
        if layout.shape == "nested":
            lines = opts.lines or "lines"
            depth = body_level + len(lines.split("."))
            items = _List(layout, "lines", layout.line_fields, indent, depth)
            _place(body, lines, _Slot(items=items))
        _place_groups(body, layout, "record", indent, body_level)
        tree: dict[str, Any] = body
        if opts.wrap:
            tree = {}
            _place(tree, opts.wrap, body)
        self.form = _Form(_template(tree, indent, level))

    def text(self, doc: Document) -> str:
        return self.form.text(doc.header, doc.lines)


_SHAPES: dict[tuple[int, int | None, int], tuple[Layout, _Shape]] = {}


def _shape(layout: Layout, indent: int | None, level: int) -> _Shape:
    """The layout's :class:`_Shape` at this indent and level (made once)."""
    key = (id(layout), indent, level)
    known = _SHAPES.get(key)
    if known is None or known[0] is not layout:
        if len(_SHAPES) > 256:
            _SHAPES.clear()
        known = _SHAPES[key] = (layout, _Shape(layout, indent, level))
    return known[1]


def _template(tree: Any, indent: int | None, level: int) -> list[str | _Slot]:
    """``dumps`` of a tree holding slots: its text in pieces, slots left in place (text
    first and last: a slot between two texts, maybe empty ones)."""
    pieces: list[Any] = []
    _dump(tree, indent, level, pieces)
    merged: list[str | _Slot] = [""]
    for piece in pieces:
        if type(piece) is str:
            if type(merged[-1]) is str:
                merged[-1] += piece
            else:
                merged.append(piece)
        else:
            if type(merged[-1]) is not str:
                merged.append("")
            merged.append(piece)
    if type(merged[-1]) is not str:
        merged.append("")
    return merged


def _json_text(spec: FieldSpec, value: Any) -> str:
    """One value of a field as JSON text: decimals as their text at the field's scale."""
    if value is None:
        return "null"
    kind = spec.type
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int:
        return int.__repr__(value)
    if kind == "integer" or kind == "boolean":
        return dumps(value, None)
    if kind == "decimal":
        return spec.renderer(value)
    return _quoted(spec.renderer(value))


def _writer(spec: FieldSpec) -> Callable[[Any], str]:
    """:func:`_json_text` for one field, the usual value's type tested first."""
    kind = spec.type
    if kind == "boolean":
        return functools.partial(_json_text, spec)
    if kind == "integer":

        def integer(value: Any) -> str:
            return int.__repr__(value) if type(value) is int else _json_text(spec, value)

        return integer
    if kind == "decimal":
        render = spec.renderer

        def decimal(value: Any) -> str:
            return render(value) if type(value) is Decimal else _json_text(spec, value)

        return decimal

    def text(value: Any) -> str:
        # (a text's own text, for every kind but decimal and boolean: _json_text's last line)
        return _quoted(value) if type(value) is str else _json_text(spec, value)

    return text


def _place(obj: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


#: The Python codec of an encoding (looked up once).
_python_codec = functools.lru_cache(maxsize=64)(python_codec)

#: A string as ``json.dumps(text, ensure_ascii=False)`` writes it (the C function it uses).
_quoted = json.encoder.encode_basestring


def dumps(value: Any, indent: int | None, level: int = 0) -> str:
    """Serialize with decimals exact and non-ASCII as is (what ``json.dumps`` writes with
    ``ensure_ascii=False``, and a Decimal as its own text, trailing zeros kept)."""
    pieces: list[str] = []
    _dump(value, indent, level, pieces)
    return "".join(pieces)


def _dump(value: Any, indent: int | None, level: int, out: list[str]) -> None:
    kind = type(value)
    if kind is _Slot:
        out.append(value)
    elif kind is str:
        out.append(_quoted(value))
    elif value is None:
        out.append("null")
    elif value is True or value is False:
        out.append("true" if value else "false")
    elif kind is int:
        out.append(int.__repr__(value))
    elif kind is dict:
        if not value:
            out.append("{}")
            return
        pad = ", " if indent is None else ",\n" + " " * (indent * (level + 1))
        out.append("{" if indent is None else "{\n" + " " * (indent * (level + 1)))
        first = True
        for k, v in value.items():
            if not first:
                out.append(pad)
            first = False
            out.append(_quoted(str(k)))
            out.append(": ")
            _dump(v, indent, level + 1, out)
        out.append("}" if indent is None else "\n" + " " * (indent * level) + "}")
    elif kind is list:
        if not value:
            out.append("[]")
            return
        pad = ", " if indent is None else ",\n" + " " * (indent * (level + 1))
        out.append("[" if indent is None else "[\n" + " " * (indent * (level + 1)))
        for i, v in enumerate(value):
            if i:
                out.append(pad)
            _dump(v, indent, level + 1, out)
        out.append("]" if indent is None else "\n" + " " * (indent * level) + "]")
    elif isinstance(value, Decimal):
        out.append(format(value, "f"))
    elif isinstance(value, bool | int | str):
        out.append(json.dumps(value, ensure_ascii=False))
    else:
        raise MappingError(f"cannot write a {type(value).__name__} as JSON")


# ---------------------------------------------------------------------- compiled routes

#: A route compiled for one JSON record: its object, where it is, and the unique rule's
#: first places (``(level, field, value) -> where``) -> the bytes of its one document and
#: the target header values its file name reads; None when it cannot vouch for the
#: record (the general way then reads, maps and writes it, and reports what is wrong).
RouteFunction = Callable[
    [dict[str, Any], str, dict[tuple[str, str, object], str]],
    tuple[bytes, tuple[Any, ...]] | None,
]

#: A quick rule (``xchange.mapping.QuickRule``): target field, how, source field, what.
_Rule = tuple[str, str, str | None, Any]

#: How many values of a table rule are remembered (its values are few; a cap bounds a
#: rule whose are not).
_REMEMBERED = 4096

_MISSING = object()


class _Source:
    """Code reading one level's fields (the record's, or a line's) into local variables."""

    def __init__(self, code: _Code, specs: list[FieldSpec], obj: str, prefix: str) -> None:
        self.names: dict[str, str] = {}
        for name, key, parse, number, spec in _plain_fields(specs):
            if parse is None or spec.key == ".":
                raise _Unfit(f"field {name} is read the general way")
            var = f"{prefix}{len(self.names)}"
            self.names[name] = var
            try:
                empty = parse(None)
            except FieldValueError:
                empty = _MISSING
            code.line(f"r = {obj}.get({code.const(key)})")
            code.line("if type(r) is str:")
            code.line(f"    {var} = {_parsed(code, spec, 'r')}")
            code.line("elif r is None:")
            if empty is _MISSING:
                code.line("    return None")
            else:
                code.line(f"    {var} = {code.const(empty)}")
            if number is not None:
                code.line("elif type(r) is int:")
                code.line(f"    {var} = {code.const(number)}(r)")
                code.line(f"elif type(r) is {code.const(Decimal)}:")
                code.line(f"    {var} = {code.const(_number_reader(spec))}(r)")
            code.line("else:")
            code.line("    return None")


def _parsed(code: _Code, spec: FieldSpec, text: str) -> str:
    """The expression of ``spec.parser(text)`` for a text ``text`` (a variable): a text
    the field takes as it is (:attr:`FieldSpec.takes_text_as_is`) without a call."""
    parse = code.const(spec.parser)
    if not spec.takes_text_as_is:
        return f"{parse}({text})"
    space = code.const(" ")
    return (
        f"({text} if {text}.isascii() and {text}.isprintable() and {text} "
        f"and {text}[0] != {space} and {text}[-1] != {space} else {parse}({text}))"
    )


def _number_reader(spec: FieldSpec) -> Callable[[Decimal], Any]:
    """A number field's value from a JSON fraction, as :meth:`JsonCodec._values` reads it
    when nothing is wrong (anything wrong raises: the general way reports it)."""
    parse = spec.parser

    def read(value: Decimal) -> Any:
        text = _fraction_text(spec, value)
        if text is None:
            raise FieldValueError("type", "number out of range")
        return parse(text)

    return read


class _Unfit(Exception):
    """A route (or part of one) that the compiled function does not take."""


class _Code:
    """Python source being generated, with its constants: every name, key, value and
    function from layouts, mappings and data is passed as a constant (``c0``, ``c1``,
    ...), never written into the source as text."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: list[Any] = []
        self._known: dict[int, str] = {}
        self.depth = 2

    def const(self, value: Any) -> str:
        name = self._known.get(id(value))
        if name is None or self.consts[int(name[1:])] is not value:
            name = f"c{len(self.consts)}"
            self.consts.append(value)
            self._known[id(value)] = name
        return name

    def line(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def build(self) -> Any:
        names = ", ".join(f"c{i}" for i in range(len(self.consts)))
        source = "\n".join(
            [
                "def make(consts):",
                f"    ({names},) = consts" if self.consts else "    pass",
                "    def compiled(node, where, first):",
                *self.lines,
                "    return compiled",
            ]
        )
        scope: dict[str, Any] = {}
        exec(compile(source, "<compiled route>", "exec"), scope)  # noqa: S102 - our own code
        return scope["make"](tuple(self.consts))


def _target_values(
    code: _Code, rules: list[_Rule], scope: dict[str, str], specs: list[FieldSpec], prefix: str
) -> dict[str, tuple[str, str | None]]:
    """Code computing each target field of a section from the source variables in
    ``scope``: per field, its target variable, and the variable holding its JSON text
    when the code made that too (a number written at its field's scale)."""
    out: dict[str, tuple[str, str | None]] = {}
    by_name = {spec.name: spec for spec in specs}
    for i, (name, how, source, what) in enumerate(rules):
        var = f"{prefix}{i}"
        written: str | None = None
        value = scope.get(source, "None") if source is not None else "None"
        spec = by_name.get(name)
        if (
            how in ("same", "coerce")
            and spec is not None
            and spec.type == "decimal"
            and spec.scale is not None
            and spec.rule_free
        ):
            # A number at the target's scale: checked and written by one quantize (what
            # ``coerce`` checks and the field's writer writes, for a decimal that is no
            # negative zero); anything else the field's own way.
            written = f"s{prefix}{i}"
            quantum = code.const(Decimal(1).scaleb(-spec.scale))
            number = f"type({value}) is {code.const(Decimal)}"
            code.line(f"if {number} and ({value} or not {value}.is_signed()):")
            code.line(f"    q = {value}.quantize({quantum})")
            code.line(f"    if q != {value}:")
            code.line("        return None")
            code.line(f"    {var} = {value}")
            code.line(f"    {written} = {code.const(format)}(q, {code.const('f')})")
            code.line("else:")
            code.line(f"    {var} = {value if how == 'same' else f'{code.const(what)}({value})'}")
            code.line(f"    {written} = {code.const(_writer(spec))}({var})")
        elif how == "same":
            code.line(f"{var} = {value}")
        elif how == "coerce" or how == "call":
            code.line(f"{var} = {code.const(what)}({value})")
        elif how == "const":
            code.line(f"{var} = {code.const(what)}")
            if spec is not None:
                try:
                    written = code.const(_writer(spec)(what))  # (written once)
                except (FieldValueError, MappingError):
                    written = None
        elif how == "text":
            trim, case, coerce = what
            code.line(f"{var} = {value}")
            code.line(f"if type({var}) is str:")
            if trim:
                code.line(f"    {var} = {var}.strip()")
            if case is not None:
                code.line(f"    {var} = {var}.{'upper' if case == 'upper' else 'lower'}()")
            parsed = (
                _parsed(code, spec, var) if spec is not None else f"{code.const(coerce)}({var})"
            )
            code.line(f"    {var} = {parsed} if {var} else {code.const(coerce)}(None)")
            code.line("else:")
            code.line(f"    {var} = {code.const(coerce)}({var})")
        elif how == "table":
            memo: dict[Any, Any] = {}
            fill = functools.partial(_remember, memo, what)
            code.line(f"{var} = {code.const(memo)}.get({value}, {code.const(_MISSING)})")
            code.line(f"if {var} is {code.const(_MISSING)}:")
            code.line(f"    {var} = {code.const(fill)}({value})")
        else:
            raise _Unfit(f"rule {how}")
        out[name] = (var, written)
    return out


def _write(code: _Code, var: str, kind: str | None, write: Callable[[Any], str]) -> str:
    """The expression of what the field's writer ``write`` writes for ``var``: its usual
    type written without a call (a text, an integer), a date's text remembered."""
    if kind == "integer":
        usual = f"{code.const(int.__repr__)}({var})"
        return f"({usual} if type({var}) is int else {code.const(write)}({var}))"
    if kind in ("date", "datetime"):
        memo: dict[Any, str] = {}
        fill = functools.partial(_remember_text, memo, write)
        return f"({code.const(memo)}.get({var}) or {code.const(fill)}({var}))"
    if kind not in ("boolean", "decimal"):  # (a text, for every other kind: see _writer)
        return (
            f"({code.const(_quoted)}({var}) if type({var}) is str else {code.const(write)}({var}))"
        )
    return f"{code.const(write)}({var})"


def _remember_text(memo: dict[Any, str], write: Callable[[Any], str], value: Any) -> str:
    """``write(value)``, remembered for a date or a time (while there are few)."""
    text = write(value)
    if type(value) in (date, datetime) and len(memo) < _REMEMBERED:
        memo[value] = text
    return text


def _remember(memo: dict[Any, Any], value_of: Callable[[Any], Any], value: Any) -> Any:
    """``value_of(value)``, remembered for a text (while there are few)."""
    found = value_of(value)
    if type(value) is str and len(memo) < _REMEMBERED:
        memo[value] = found
    return found


def _written(
    code: _Code,
    form: _Form,
    values: dict[str, tuple[str, str | None]],
    specs: list[FieldSpec],
    lists: str | None,
) -> str:
    """The expression of an object's text (``form``) from the target variables."""
    kinds = {spec.name: spec.type for spec in specs}
    parts: list[str] = []
    for name, write, _ in form.slots:
        if name is None:
            if lists is None:
                raise _Unfit("a list in the template")
            parts.append(lists)
            continue
        if name not in values:
            parts.append(code.const("null"))
            continue
        var, written = values[name]
        parts.append(written if written is not None else _write(code, var, kinds.get(name), write))
    return f"{code.const(form.fmt)} % ({', '.join(parts)},)"


def compile_route(
    source: Layout,
    target: Layout,
    header: list[_Rule],
    lines: list[_Rule] | None,
    names: list[str],
) -> RouteFunction | None:
    """One function per record for a JSON-to-JSON route of one document per record
    whose rules are quick (``header``, ``lines``: ``RecordMapper.quick_rules``): the
    record's fields read, checked, mapped and written as the general way does for a
    record with nothing wrong, as one function (None when the route does more than it
    takes: fields outside the record or at dotted keys, groups, several documents per
    file, ...). ``names``: the target header fields the file name reads."""
    try:
        return _compiled(source, target, header, lines, names)
    except _Unfit:
        return None


def _compiled(
    source: Layout,
    target: Layout,
    header: list[_Rule],
    lines: list[_Rule] | None,
    names: list[str],
) -> RouteFunction:
    opts, out = source.json_, target.json_
    nested = source.shape == "nested"
    if (
        source.groups
        or target.groups
        or source.outside()
        or out.batch_key
        or nested != (target.shape == "nested")
        or (nested and lines is None)
        or any(f.unique for f in source.line_fields)
    ):
        raise _Unfit("the route")
    code = _Code()
    # Every key one the layout reads (else the general way says what the others are).
    keys = _keys(source)
    if any(not below.lines for _, below in keys.record.inner):
        raise _Unfit("objects inside records")
    code.line(f"if not node.keys() <= {code.const(frozenset(keys.record.children))}:")
    code.line("    return None")
    record = _Source(code, source.fields, "node", "v")
    head_scope = dict(record.names)
    shape = _shape(target, None if out.ndjson else out.indent, 0)
    lists: str | None = None
    if nested:
        assert lines is not None
        key = opts.lines or "lines"
        if "." in key:
            raise _Unfit("dotted lines")
        slots = [items for name, items, _ in shape.form.slots if name is None]
        if len(slots) != 1 or slots[0].scalar is not None or slots[0].form is None:
            raise _Unfit("the target's lines")
        listed: _List = slots[0]
        assert listed.form is not None
        code.line(f"items = node.get({code.const(key)})")
        if source.min_lines == 0:
            code.line("if items is None:")
            code.line("    items = ()")
            code.line("elif type(items) is not list:")
        else:
            code.line(f"if type(items) is not list or len(items) < {code.const(source.min_lines)}:")
        code.line("    return None")
        # Line rules that read only the record's fields (or nothing): once per record,
        # their text too.
        own = {spec.name for spec in source.line_fields}
        once = [rule for rule in lines if rule[2] is None or rule[2] not in own]
        each = [rule for rule in lines if rule not in once]
        fixed = _target_values(code, once, head_scope, target.line_fields, "h")
        kinds = {spec.name: spec for spec in target.line_fields}
        writers = {name: write for name, write, _ in listed.form.slots if name is not None}
        for i, (name, (var, written)) in enumerate(fixed.items()):
            if written is None and name in kinds and name in writers:
                text = _write(code, var, kinds[name].type, writers[name])
                code.line(f"sh{i} = {text}")
                fixed[name] = (var, f"sh{i}")
        code.line("texts = []")
        code.line("for item in items:")
        code.depth += 1
        below = keys.record.children[key]
        if below.inner or below.scalar:
            raise _Unfit("objects inside lines")
        code.line(f"if type(item) is not {code.const(dict)}:")
        code.line("    return None")
        code.line(f"if not item.keys() <= {code.const(frozenset(below.children))}:")
        code.line("    return None")
        line = _Source(code, source.line_fields, "item", "w")
        line_scope = {**head_scope, **line.names}
        line_values = {**fixed, **_target_values(code, each, line_scope, target.line_fields, "u")}
        item_text = _written(code, listed.form, line_values, target.line_fields, None)
        code.line(f"texts.append({item_text})")
        code.depth -= 1
        code.line("if texts:")
        code.line(
            f"    lines = {code.const(listed.open)} + {code.const(listed.pad)}.join(texts) "
            f"+ {code.const(listed.close)}"
        )
        code.line("else:")
        code.line(f"    lines = {code.const('[]')}")
        lists = "lines"
    head_values = _target_values(code, header, head_scope, target.fields, "t")
    text = _written(code, shape.form, head_values, target.fields, lists)
    code.line(f"text = {text} + {code.const(chr(10))}")
    code.line(f"data = text.encode({code.const(_python_codec(target.encoding))})")
    unique = [spec for spec in source.fields if spec.unique]
    for i, spec in enumerate(unique):
        var = record.names[spec.name]
        code.line(f"k{i} = ({code.const('')}, {code.const(spec.name)}, {var})")
        code.line(f"if {var} is not None and k{i} in first:")
        code.line("    return None")
    for i, spec in enumerate(unique):
        code.line(f"if {record.names[spec.name]} is not None:")
        code.line(f"    first[k{i}] = where")
    shown = ", ".join(head_values[name][0] if name in head_values else "None" for name in names)
    code.line(f"return data, ({shown}{',' if names else ''})")
    body = code.lines
    code.lines = ["        try:", *["    " + text for text in body]]
    # A record the function cannot vouch for goes the general way; what the data can
    # raise is expected, anything else is said once (the route then runs slower, as right).
    expected = code.const(_EXPECTED)
    said = code.const(_said_once(target.name))
    code.lines += [
        f"        except {expected}:",
        "            return None",
        "        except Exception as exc:",
        f"            {said}(exc)",
        "            return None",
    ]
    made: RouteFunction = code.build()
    return made


#: What a record's data can make the compiled function raise (a value of another type or
#: shape, a broken rule, a value the target cannot hold).
_EXPECTED = (
    KeyError,
    IndexError,
    TypeError,
    ValueError,
    AttributeError,
    ArithmeticError,
    MappingError,
)


def _said_once(route: str) -> Callable[[BaseException], None]:
    said: list[bool] = []

    def say(exc: BaseException) -> None:
        if not said:
            said.append(True)
            log.warning(
                "json.compiled_fallback",
                layout=route,
                error=f"{type(exc).__name__}: {exc}",
                reason="the compiled reading failed unexpectedly; records go the general "
                "way (same outputs, slower)",
            )

    return say

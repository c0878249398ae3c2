"""XML through lxml (the only module that imports it), hardened.

The parser resolves no entities, loads no DTD, touches no network and no local file,
and keeps libxml2's limits on (``huge_tree=False``). A document that carries a DOCTYPE
is refused at its first element: with entity resolution off, a hostile DTD would
otherwise pass through as data. Records are streamed with ``iterparse`` and cleared
once read, so memory stays flat however long the file is.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, BinaryIO

from lxml import etree

from xchange.codecs import Chunk, per_layout
from xchange.codecs.text import CHUNK, Encoder, bom_encoding, python_codec, text_reading
from xchange.errors import DecodeError, MappingError
from xchange.layout import (
    FieldSpec,
    FieldValueError,
    GroupSpec,
    Layout,
    XmlOptions,
    few_lines,
    group_count,
    parse_field,
)
from xchange.mapping import Document, Record
from xchange.report import Report

#: Records per chunk of the columnar fast path.
CHUNK_RECORDS = 20_000
#: Bytes of text given to the parser at a time (the records one feed completes are read
#: together, see :class:`_Batch`): what ``iterparse`` reads at a time. Twice that read
#: batches no quicker, and records one at a time 3-4% slower (more of the tree at once).
FEED = 32768

PARSER_OPTIONS: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_pis": True,
}


def hardened_parser() -> etree.XMLParser:
    """The parser for whole documents (schemas, XSD-validated layouts)."""
    return etree.XMLParser(**PARSER_OPTIONS)


def _clark(name: str, ns: dict[str, str], default: str | None = None) -> str:
    """``w:Item`` -> ``{urn}Item`` using the layout's prefixes."""
    if name.startswith("{"):
        return name
    prefix, sep, local = name.partition(":")
    if sep:
        if prefix == "xml" and "xml" not in ns:  # (bound by XML itself: xml:lang)
            return f"{{http://www.w3.org/XML/1998/namespace}}{local}"
        if prefix not in ns:
            raise DecodeError(f"namespace prefix {prefix!r} is not declared in the layout")
        return f"{{{ns[prefix]}}}{local}"
    return f"{{{default}}}{name}" if default else name


def _syntax_error(origin: str, exc: etree.XMLSyntaxError) -> DecodeError:
    line = exc.position[0] if exc.position else "?"
    text = " ".join(str(exc.msg if hasattr(exc, "msg") and exc.msg else exc).split())
    return DecodeError(f"{origin}: line {line}: XML not well-formed: {text}")


class _Prolog:
    """Parser target that stops at the first element, noting any DOCTYPE on the way."""

    class Done(Exception):
        pass

    def __init__(self) -> None:
        self.found: str | None = None
        #: The first element's tag (Clark notation), None if there is none.
        self.root: str | None = None

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        self.found = f"<!DOCTYPE {name}{' PUBLIC ' + pubid if pubid else ''}" + (
            f" SYSTEM {system}>" if system else ">"
        )
        raise self.Done

    def start(self, tag: str, attrib: Any) -> None:
        self.root = tag
        raise self.Done

    def close(self) -> None:
        return None


_DECLARED = re.compile(rb"""^<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")


#: Encodings whose text each larger one reads identically (a declaration of the smaller
#: agrees with a layout of the larger, and the other way round: the larger reads both).
_FAMILIES = (("gb2312", "gbk", "gb18030"), ("big5", "big5hkscs"), ("shift_jis", "cp932"))


def _label(declared: str) -> str:
    """An encoding label as exporters write it, in a form Python knows: ``x-gbk``,
    ``GB-18030``, ``GB_2312-80`` (labels the WHATWG Encoding Standard lists too)."""
    try:
        codecs.lookup(declared)
        return declared
    except LookupError:
        pass
    bare = declared.lower().removeprefix("x-").replace("-", "").replace("_", "")
    bare = {"gb231280": "gb2312", "csgb2312": "gb2312", "sjis": "shift_jis"}.get(bare, bare)
    try:
        codecs.lookup(bare)
    except LookupError:
        return declared  # (said not known by the caller)
    return bare


def _canonical(name: str) -> str:
    found = codecs.lookup(name).name
    return {"utf-8-sig": "utf-8", "utf-16-le": "utf-16", "utf-16-be": "utf-16"}.get(found, found)


def _agreeing(declared: str, layout_encoding: str) -> str | None:
    """The encoding that reads a document whose declaration (or byte-order mark) says
    ``declared`` under a layout that says ``layout_encoding``, or None when they do not
    agree: the same encoding, ASCII under any ASCII-based one, or two of one family
    (GB2312 < GBK < GB18030: the larger reads both)."""
    mine, theirs = _canonical(layout_encoding), _canonical(declared)
    if mine == theirs:
        return declared
    if theirs == "ascii" and "a".encode(mine) == b"a":
        return layout_encoding
    for family in _FAMILIES:
        if mine in family and theirs in family:
            return family[max(family.index(mine), family.index(theirs))]
    return None


def document_encoding(stream: BinaryIO, layout: Layout, origin: str) -> str:
    """The encoding an XML document is read with: what its byte-order mark or XML
    declaration says, which must agree with the layout's encoding (see :func:`_agreeing`;
    ``declared_encoding = "trust"`` takes the document's word); else the layout's
    (``auto``: detected).

    Raises:
        DecodeError: the document and its layout say different encodings, or the
            declaration names an encoding that is not known.
    """
    assert layout.xml is not None
    start = stream.tell()
    head = stream.read(1024)
    stream.seek(start)
    said, how = bom_encoding(head), "its byte-order mark"
    if said is None:
        found = _DECLARED.match(head)
        if found is None:
            return layout.encoding
        declared = _label(found.group(1).decode("ascii"))
        try:
            codecs.lookup(declared)
        except LookupError:
            raise DecodeError(
                f"{origin}: line 1: the XML declaration names encoding {declared!r}, "
                "which is not known"
            ) from None
        said, how = declared, f"its XML declaration (encoding={declared!r})"
    if layout.encoding.lower() == "auto" or layout.xml.declared_encoding == "trust":
        agreed: str | None = said
    else:
        agreed = _agreeing(said, layout.encoding)
    if agreed is None:
        raise DecodeError(
            f"{origin}: line 1: the document says it is {said} ({how}), layout "
            f"{layout.name} says {layout.encoding}: one of them is wrong, and reading it "
            "either way could garble every name (fix the export or the layout's encoding; "
            'declared_encoding = "trust" in [xml] reads each file as it declares)'
        )
    # GB2312 files usually hold GBK text: GBK reads GB2312 text identically.
    return "gbk" if codecs.lookup(agreed).name == "gb2312" else agreed


class _Transcoded:
    """The document's bytes decoded by xchange's own codecs and handed to lxml as UTF-8:
    one decoding for every route (libxml2's GB18030 tables differ from the standard), the
    text checks applied, and decode errors named by line. It can be read from the start
    again (``seek(0)``), which is all the prolog check needs."""

    def __init__(
        self, stream: BinaryIO, encoding: str, origin: str, check: Callable[[str, int], None]
    ) -> None:
        self.stream = stream
        self.start = stream.tell()
        self.encoding = encoding
        self.origin = origin
        self.check = check
        #: Lines given to the check already (reading again from the start skips them).
        self.checked = 0
        self.seek(0)

    def tell(self) -> int:
        return self.position

    def seek(self, position: int) -> int:
        if position != 0:
            raise io.UnsupportedOperation("a transcoded document is read from its start only")
        self.stream.seek(self.start)
        self.decoder = codecs.getincrementaldecoder(python_codec(self.encoding))("strict")
        self.pending = b""
        self.lines = 0
        self.done = False
        self.first = True
        self.position = 0
        return 0

    def read(self, size: int = -1) -> bytes:
        while not self.done and (size < 0 or len(self.pending) < size):
            self._more()
        size = len(self.pending) if size < 0 else size
        out, self.pending = self.pending[:size], self.pending[size:]
        self.position += len(out)
        return out

    def _more(self) -> None:
        chunk = self.stream.read(CHUNK)
        self.done = not chunk
        try:
            text = self.decoder.decode(chunk, final=self.done)
        except UnicodeDecodeError as exc:
            line = self.lines + exc.object.count(b"\n", 0, exc.start) + 1
            bad = exc.object[exc.start : exc.end].hex(" ")
            raise DecodeError(
                f"{self.origin}: line {line}: bytes {bad} are not valid {self.encoding} "
                "(the document is not in the encoding it declares, or its layout declares)"
            ) from None
        if self.first:
            text = text.removeprefix("\ufeff")
            self.first = False
        if text and self.lines >= self.checked:
            self.check(text, self.lines + 1)
            self.checked = self.lines + text.count("\n") + 1
        self.lines += text.count("\n")
        self.pending += text.encode("utf-8")


def _reading(stream: BinaryIO, layout: Layout, origin: str, report: Report) -> Any:
    """The document as UTF-8 for lxml (see :class:`_Transcoded`)."""
    start = stream.tell()
    if not stream.read(1):
        raise DecodeError(f"{origin}: the file is empty")
    stream.seek(start)
    declared = document_encoding(stream, layout, origin)
    encoding, check = text_reading(
        stream, declared, layout.mojibake, origin, report, plausible=layout.check_text
    )
    return _Transcoded(stream, encoding, origin, check)


def _refuse_doctype(stream: BinaryIO, origin: str, encoding: str | None = None) -> str | None:
    """Look at the prolog only; refuse a DOCTYPE before any tree or entity exists. Returns
    the root element's tag (None: no element, or not well-formed before it)."""
    prolog = _Prolog()
    parser = etree.XMLParser(target=prolog, encoding=encoding, **PARSER_OPTIONS)
    start = stream.tell()
    try:
        while chunk := stream.read(65536):
            parser.feed(chunk)
        parser.close()
    except _Prolog.Done:
        pass
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(origin, exc) from None
    finally:
        stream.seek(start)
    if prolog.found is not None:
        raise DecodeError(
            f"{origin}: the document has a DOCTYPE ({prolog.found}); "
            "documents with a DTD are refused (entity and DTD attacks)"
        )
    return prolog.root


def iter_elements(
    stream: BinaryIO, origin: str, *, allow_doctype: bool = False, encoding: str | None = None
) -> Iterator[tuple[str, etree._Element]]:
    """Stream ``(event, element)`` pairs; refuse a DOCTYPE unless told otherwise.
    ``encoding`` overrides what the document declares (a transcoded stream).

    Raises:
        DecodeError: not well-formed, or a DOCTYPE (with the line).
    """
    if not allow_doctype:
        _refuse_doctype(stream, origin, encoding)
    events = etree.iterparse(stream, events=("start", "end"), encoding=encoding, **PARSER_OPTIONS)
    found = False
    try:
        for event, element in events:
            found = True
            yield event, element
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(origin, exc) from None
    if not found:
        raise DecodeError(f"{origin}: the file holds no XML element")


def iter_tagged(
    stream: BinaryIO,
    origin: str,
    tags: Sequence[str],
    events: tuple[str, ...] = ("end",),
) -> Iterator[tuple[str, Any]]:
    """Stream ``(event, element)`` pairs of the elements named ``tags`` (Clark names) only,
    hardened as every parse here, a DOCTYPE refused: for the parts of a workbook
    (:mod:`xchange.codecs.xlsx_codec`), whose rows must reach Python without the cost of
    every other element's events. The caller clears what it has read.

    Raises:
        DecodeError: not well-formed, or a DOCTYPE.
    """
    _refuse_doctype(stream, origin)
    parsed = etree.iterparse(stream, events=events, tag=list(tags), **PARSER_OPTIONS)
    try:
        yield from parsed
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(origin, exc) from None


def check_well_formed(data: bytes, origin: str, *, allow_doctype: bool = False) -> None:
    """Parse a whole document without keeping it (conformance checks and validation)."""
    for event, element in iter_elements(io.BytesIO(data), origin, allow_doctype=allow_doctype):
        if event == "end":
            element.clear(keep_tail=True)


class _Reported(Exception):
    """A header value's problem, reported once already for this document."""


def _text_of(node: etree._Element) -> str:
    """An element's text as a value: its text around any comments (``a<!-- c -->b`` is
    ``ab``).

    Raises:
        FieldValueError: the element holds elements: its text is not one value, and
            reading only the part before the first would drop the rest.
    """
    if not len(node):
        return node.text or ""
    parts = [node.text or ""]
    for child in node:
        if isinstance(child.tag, str):
            raise FieldValueError(
                "type",
                f"<{_local(node.tag)}> holds the element <{_local(child.tag)}>, not a value",
            )
        parts.append(child.tail or "")  # a comment (processing instructions are removed)
    return "".join(parts)


class _Getter:
    """Where one field's value is, parsed once per read: text at ``a/b`` or an attribute
    at ``a/@c`` / ``@c`` below the record; a path that starts with ``/`` is taken from the
    document's root (header values for line-level records)."""

    __slots__ = ("attr", "multiple", "ns", "path", "root", "separator", "steps")

    def __init__(self, spec: FieldSpec, ns: dict[str, str]) -> None:
        self.path = spec.key
        self.multiple = spec.multiple
        self.separator = spec.separator
        self.ns = ns
        node_path, _, attr = spec.key.partition("@")
        node_path = node_path.rstrip("/")
        self.attr = _clark(attr, ns) if attr else None
        self.root: str | None = None
        if node_path.startswith("/"):
            first, _, node_path = node_path.strip("/").partition("/")
            self.root = _clark(first, ns)
        self.steps = node_path or None

    def get_all(self, element: etree._Element) -> list[str]:
        """Every value the path matches (``multiple = "all"``)."""
        base = element
        if self.root is not None:
            base = element.getroottree().getroot()
            if base.tag != self.root:
                return []
        nodes = [base] if self.steps is None else base.findall(self.steps, namespaces=self.ns)
        values = (n.get(self.attr) if self.attr is not None else _text_of(n) for n in nodes)
        return [v for v in values if v is not None]

    def get(self, element: etree._Element) -> str | None:
        """The value below ``element``; None: absent.

        Raises:
            FieldValueError: the path matches several elements and the field does not
                say what that means (``multiple``).
        """
        base = element
        if self.root is not None:
            base = element.getroottree().getroot()
            if base.tag != self.root:
                return None
        if self.steps is None:
            nodes = [base]
        elif self.multiple == "first":
            found = base.find(self.steps, namespaces=self.ns)
            nodes = [] if found is None else [found]
        else:
            nodes = base.findall(self.steps, namespaces=self.ns)
        if len(nodes) == 1:
            node = nodes[0]
            return node.get(self.attr) if self.attr is not None else _text_of(node)
        present = [
            v
            for v in (n.get(self.attr) if self.attr is not None else _text_of(n) for n in nodes)
            if v is not None
        ]
        if not present:
            return None
        if self.multiple == "reject":
            raise FieldValueError(
                "multiple",
                f"path {self.path!r} matches {len(nodes)} elements where one is expected (say "
                'what that means with multiple = "first", "last" or "join" on the field)',
            )
        if self.multiple == "last":
            return present[-1]
        if self.multiple == "join":
            return self.separator.join(present)
        return present[0]


def _cached(
    element: etree._Element,
    spec: FieldSpec,
    getter: _Getter,
    absolute: dict[str, str | FieldValueError],
) -> str | None:
    """``_get``, with the values at absolute paths (a document's header, the same for
    every line-level record) looked up once per document.

    Raises:
        FieldValueError: as ``_get`` (the first time).
        _Reported: that problem again, for a later record of the same document.
    """
    if getter.root is None:
        return getter.get(element)
    key = f"{spec.multiple}{spec.separator}{spec.key}"
    known = absolute.get(key)
    if isinstance(known, FieldValueError):
        raise _Reported
    if known is None:
        try:
            found = getter.get(element)
        except FieldValueError as exc:
            absolute[key] = exc
            raise
        if found is None:
            return None  # maybe later in the document: look again next time
        absolute[key] = known = found
    return known


#: A header value whose problem was reported for an earlier record of the document.
_REPORTED = _Reported()
_PLAIN_STEP = re.compile(r"(?:\{[^{}]*\})?[^\W\d][\w.-]*(?::[^\W\d][\w.-]*)?")


class _Extractor:
    """Reads the raw values of a record's (or a line's) fields, as :class:`_Getter` gives
    them, in one pass over the element's children: a field at a child (``w:Sku``, or
    ``w:Warehouse/@code``) or on the element itself (``@no``) is taken from that pass; a
    longer path, a repeated child and header values go through the getter (header
    values once per document)."""

    def __init__(self, specs: list[FieldSpec], ns: dict[str, str]) -> None:
        self.specs = specs
        #: Per field: (spec, getter, kind, tag): kind "child" (tag: the child's), "self",
        #: "absolute" (tag: its key in the document's cache of header values), "getter".
        self.plan: list[tuple[FieldSpec, _Getter, str, str | None]] = []
        default = "" in ns or None in ns  # (an unprefixed step would take a default)
        for spec in specs:
            getter = _Getter(spec, ns)
            kind, tag = "getter", None
            if spec.multiple != "all" and getter.root is not None:
                kind, tag = "absolute", f"{spec.multiple}{spec.separator}{spec.key}"
            elif spec.multiple != "all":
                if getter.steps is None:
                    kind = "self"
                elif _PLAIN_STEP.fullmatch(getter.steps) and not (
                    default and ":" not in getter.steps and "{" not in getter.steps
                ):
                    kind, tag = "child", _clark(getter.steps, ns)
            self.plan.append((spec, getter, kind, tag))
        self.children = any(kind == "child" for _, _, kind, _ in self.plan)
        #: Whether every value read since this was last set was text or absent.
        self.clean = True

    def values(
        self, element: etree._Element, absolute: dict[str, str | FieldValueError]
    ) -> list[Any]:
        """Each field's raw value: text, None (absent), a list (``multiple = "all"``), a
        FieldValueError (a path matching several elements), or ``_REPORTED``."""
        children: dict[Any, etree._Element] = {}
        repeated: set[Any] = set()
        if self.children:
            children = {child.tag: child for child in element}
            if len(children) != len(element):  # a tag given twice: the first one counts
                children = {}
                for child in element:
                    tag = child.tag
                    if tag in children:
                        repeated.add(tag)
                    else:
                        children[tag] = child
        out: list[Any] = []
        for spec, getter, kind, tag in self.plan:
            if kind == "child" and tag not in repeated:
                node = children.get(tag)
                if node is None:
                    out.append(None)
                    continue
                if getter.attr is not None:
                    out.append(node.get(getter.attr))
                    continue
                if not len(node):
                    out.append(node.text or "")
                    continue
                # Comments or elements inside: the query says what the value is.
            if kind == "absolute" and type(known := absolute.get(tag)) is str:  # type: ignore[arg-type]
                out.append(known)
            elif kind == "self":
                attr = getter.attr
                out.append(element.get(attr) if attr is not None else (element.text or ""))
            elif spec.multiple == "all":
                try:
                    out.append(getter.get_all(element))
                except FieldValueError as exc:
                    out.append(exc)
                self.clean = False
            else:
                try:
                    out.append(_cached(element, spec, getter, absolute))
                except _Reported:
                    out.append(_REPORTED)
                    self.clean = False
                except FieldValueError as exc:
                    out.append(exc)
                    self.clean = False
        return out

    def typed(
        self, raw: Sequence[Any], where: str, report: Report, failed: set[str]
    ) -> dict[str, Any]:
        """The record's typed values from its raw ones; problems go to ``report``."""
        values: dict[str, Any] = {}
        for spec, value in zip(self.specs, raw, strict=True):
            if value is _REPORTED:
                failed.add(spec.name)
                values[spec.name] = None
            elif isinstance(value, FieldValueError):
                report.add(where, spec.shown, value.rule, None, value.message)
                failed.add(spec.name)
                values[spec.name] = None
            elif isinstance(value, list):
                parsed = [parse_field(spec, text, where, report, failed) for text in value]
                values[spec.name] = [v for v in parsed if v is not None]
            else:
                values[spec.name] = parse_field(spec, value, where, report, failed)
        return values


#: Attributes of the XML Schema instance namespace (``xsi:schemaLocation``, ``xsi:type``)
#: say how to validate a document, not what it holds: never unknown input.
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
#: What XML counts as white space between elements (not U+3000 nor U+00A0: those are text).
_XML_SPACE = " \t\r\n"


def _clip(text: str, limit: int = 120) -> str:
    """A name or path from the document, shortened for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Node:
    """One element of what a layout reads: its children by tag, the attributes fields
    read on it, whether a field reads its text (then what is inside is that value's
    business), and what unknown input at or below it means."""

    __slots__ = ("attr_policy", "attrs", "children", "kind", "policy", "single", "value")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.attrs: set[str] = set()
        self.attr_policy: dict[str, str] = {}
        self.value = False
        #: "record" (walked as each record is read) or "line".
        self.kind: str | None = None
        self.policy: str | None = None
        #: An element that holds the records or lines: once in its parent (a second one
        #: would merge two lists into one document without a word).
        self.single = False

    def at(self, steps: list[str]) -> _Node:
        node = self
        for step in steps:
            node = node.children.setdefault(step, _Node())
        return node


def _split(path: str, ns: dict[str, str]) -> tuple[bool, list[str], str | None]:
    """A field's path as (from the root?, element steps in Clark notation, attribute)."""
    node_path, _, attr = path.partition("@")
    absolute = node_path.startswith("/")
    steps = [_clark(step, ns) for step in node_path.strip("/").split("/") if step and step != "."]
    return absolute, steps, _clark(attr, ns) if attr else None


class _Accounting:
    """Every element, attribute and text of a document is read into a field, declared by
    the layout (``unknown`` / ``unknown_in``), or a problem: the record's subtree is walked
    as each record is read, what is beside the records as they are dropped, and the rest
    of the document at its end."""

    def __init__(self, layout: Layout) -> None:
        opts = layout.xml
        assert opts is not None
        ns = opts.namespaces
        self.layout = layout
        self.document = _Node()
        records = _records_steps(opts)
        self.record_tag = records[-1]
        self.record = self.document.at(records)
        self.record.kind = "record"
        self.line: _Node | None = None
        if layout.shape == "nested":
            line_steps = [
                _clark(p, ns) for p in "/".join(x for x in (opts.lines, opts.line) if x).split("/")
            ]
            self.line = self.record.at(line_steps)
            self.line.kind = "line"
            for depth in range(1, len(line_steps)):
                self.record.at(line_steps[:depth]).single = True
        for specs, base in ((layout.fields, self.record), (layout.line_fields, self.line)):
            for spec in specs:
                absolute, steps, attr = _split(spec.key, ns)
                node = (self.document if absolute else base or self.record).at(steps)
                if attr is not None:
                    node.attrs.add(attr)
                else:
                    node.value = True
        #: Each group's item element, by the group's name.
        self.items: dict[str, _Node] = {}
        self._groups(layout, "record", self.record, ns)
        if self.line is not None:
            self._groups(layout, "lines", self.line, ns)
        for path, policy in layout.unknown_in.items():
            absolute, steps, attr = _split(path, ns)
            # A path below the record is also below each line (``Discount`` on a line)
            # and each group's item.
            bases = [self.document] if absolute else [self.record, self.line, *self.items.values()]
            for base in bases:
                if base is None:
                    continue
                node = base.at(steps)
                if attr is not None:
                    node.attr_policy[attr] = policy
                else:
                    node.policy = policy
        self.base: str = layout.unknown
        #: What unknown input in a record means, before the record's own ``unknown_in``.
        self.record_policy: str = self.base
        node = self.document
        for step in records[:-1]:
            node = node.children[step]
            self.record_policy = node.policy or self.record_policy
        self.prefixes = {uri: prefix for prefix, uri in ns.items() if prefix}
        #: The records' path, as messages show it.
        self.shown = "/" + "/".join(self.name(t) for t in records)

    def _groups(self, layout: Layout, level: str, base: _Node, ns: dict[str, str]) -> None:
        """The groups held by ``level``'s elements (at ``base``), and below them."""
        for group in layout.children(level):
            steps = [_clark(p, ns) for p in group.path.split("/")]
            item = self.items[group.name] = base.at(steps)
            for depth in range(1, len(steps)):
                base.at(steps[:depth]).single = True
            for spec in group.fields:
                absolute, field_steps, attr = _split(spec.key, ns)
                node = (self.document if absolute else item).at(field_steps)
                if attr is not None:
                    node.attrs.add(attr)
                else:
                    node.value = True
            self._groups(layout, group.name, item, ns)

    def name(self, tag: str) -> str:
        """A tag as paths in the layout write it: ``w:Line`` where the layout has a prefix
        for its namespace, else its local name."""
        uri = _ns(tag)
        if not uri:
            return tag
        if uri == _XML_NS:
            return f"xml:{_local(tag)}"
        prefix = self.prefixes.get(uri)
        return f"{prefix}:{_local(tag)}" if prefix else tag

    def walk(
        self,
        element: etree._Element,
        node: _Node,
        policy: str,
        path: str,
        report: Report,
    ) -> None:
        """Check ``element`` (at ``node`` of the tree) and below, its lines included;
        ``path`` shows where it is."""
        policy = node.policy or policy
        names = element.keys()
        if names:
            for attr in names:
                if attr in node.attrs or attr.startswith(_XSI):
                    continue
                self._unknown(
                    node.attr_policy.get(attr, policy),
                    element.sourceline,
                    f"{path}/@{self.name(attr)}",
                    f"the attribute {_local(attr)}={element.get(attr)!r} on "
                    f"<{_local(element.tag)}>",
                    report,
                )
        if node.value:
            return  # its text is a field's value (which says if elements are inside)
        text = element.text
        if text is not None and text.strip(_XML_SPACE):
            self._text(policy, element, text, path, report)
        children = node.children
        seen: set[str] | None = None
        for child in element:
            tail = child.tail
            if tail is not None and tail.strip(_XML_SPACE):
                self._text(policy, element, tail, path, report)
            tag = child.tag
            below = children.get(tag)
            if below is None:
                if isinstance(tag, str):  # (not a comment)
                    self._unknown(
                        policy,
                        child.sourceline,
                        f"{path}/{self.name(tag)}",
                        f"<{_local(tag)}>" + (f" (namespace {_ns(tag)})" if _ns(tag) else ""),
                        report,
                    )
                continue
            if below.kind == "record":
                continue  # walked as it is read
            if below.single:
                seen = seen if seen is not None else set()
                if tag in seen:
                    self._twice(child, f"{path}/{self.name(tag)}", report)
                seen.add(tag)
            if below.value and below.policy is None and not child.keys():
                continue  # the usual value element: nothing else to look at
            self.walk(child, below, policy, f"{path}/{self.name(tag)}", report)

    def _twice(self, element: etree._Element, path: str, report: Report) -> None:
        report.add(
            f"line {element.sourceline}",
            _clip(path),
            "structure",
            None,
            f"<{_clip(_local(element.tag))}> is here a second time, where layout "
            f"{self.layout.name} has one: what it holds would be merged into one list without "
            "a word (is this two documents in one file?)",
        )

    def dropped(self, element: etree._Element, report: Report) -> None:
        """A sibling before a record, about to be dropped (a record read already, a
        comment, or anything else): what it is, and its tail, accounted for."""
        self.stray(element, report)
        tail = element.tail
        if tail is not None and tail.strip(_XML_SPACE):
            parent = element.getparent()
            self._text(
                self._place(parent)[1],
                parent,
                tail,
                self.shown.rpartition("/")[0],
                report,
                line=element.sourceline,
            )

    def stray(self, element: etree._Element, report: Report) -> None:
        """An element beside the records that is not one (seen as the records are
        dropped): accounted for by the layout, or a problem."""
        tag = element.tag
        if not isinstance(tag, str) or tag == self.record_tag:
            return
        node, policy = self._place(element.getparent())
        below = node.children.get(tag) if node is not None else None
        shown = f"{self.shown.rpartition('/')[0]}/{self.name(tag)}"
        if below is None:
            self._unknown(
                policy,
                element.sourceline,
                shown,
                f"<{_local(tag)}>"
                + (f" (namespace {_ns(tag)})" if _ns(tag) else "")
                + f" among the records <{_local(self.record_tag)}>",
                report,
            )
        else:
            self.walk(element, below, policy, shown, report)

    def finish(self, root: etree._Element | None, report: Report) -> None:
        """The rest of the document (what is not a record), once it is read whole."""
        if root is None:
            return
        node = self.document.at([root.tag])
        if node.kind != "record":  # (a document that is one record was walked as one)
            self.walk(root, node, self.base, f"/{self.name(root.tag)}", report)

    def _place(self, element: etree._Element | None) -> tuple[_Node | None, str]:
        """Where an element is in what the layout reads (None: outside it), and what
        unknown input there means (the nearest enclosing declared path's policy)."""
        steps: list[str] = []
        while element is not None:
            steps.append(element.tag)
            element = element.getparent()
        policy: str = self.base
        node: _Node | None = self.document
        for step in reversed(steps):
            node = node.children.get(step) if node is not None else None
            if node is not None:
                policy = node.policy or policy
        return node, policy

    def _text(
        self,
        policy: str,
        element: etree._Element,
        text: str,
        path: str,
        report: Report,
        *,
        line: int | None = None,
    ) -> None:
        shown = " ".join(text.split()) or repr(text)
        shown = shown if len(shown) <= 40 else shown[:40] + "..."
        holds = "beside its elements" if len(element) else "(the layout reads only its attributes)"
        self._unknown(
            policy,
            line or element.sourceline,
            f"{path}/text()",
            f"the text {shown!r} of <{_clip(_local(element.tag))}> {holds}",
            report,
        )

    def _unknown(self, policy: str, line: int | None, path: str, what: str, report: Report) -> None:
        if policy == "ignore":
            return
        message = f"{_clip(what)} is not in layout {self.layout.name}"
        declared = _clip(path)
        if policy == "warn":
            report.warn(f'line {line} {declared}: {message}: not read (unknown = "warn")')
            return
        if "{" in declared:
            how = (
                "its namespace has no prefix in the layout: add one under [xml] namespaces "
                "and use it in a field's path or under [unknown_in]"
            )
        else:
            how = f'declare it as a field, or add "{declared}" = "ignore" under [unknown_in]'
        report.add(
            f"line {line}",
            declared,
            "unknown",
            None,
            f"{message} (its content would be lost: {how})",
        )


#: The layout's :class:`_Accounting` (made once per layout).
_accounting = per_layout(_Accounting)


def _ns(tag: str) -> str:
    """The namespace of a tag in Clark notation ("" for none)."""
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""


def _records_steps(opts: XmlOptions) -> list[str]:
    """The records path as tags in Clark notation, from the root down."""
    path = (opts.records or f"/{opts.root}").strip("/")
    return [_clark(step, opts.namespaces) for step in path.split("/")]


def _records_path(layout: Layout) -> tuple[str, bool]:
    """How records are located in messages: ``/StockCount/Lines/Line`` and whether each
    gets its number (``[3]``; not when the records are the documents' roots)."""
    assert layout.xml is not None
    steps = _records_steps(layout.xml)
    return "/" + "/".join(_local(t) for t in steps), len(steps) > 1


def _local(tag: object) -> str:
    """The local part of a tag in Clark notation, for messages (whatever the tag holds)."""
    return str(tag).rpartition("}")[2]


class _Rows:
    """Consecutive records read at once by :class:`_Batch`: their values as columns (one
    per field, in the layout's order) and the line each record starts on."""

    __slots__ = ("columns", "lines")

    def __init__(self, columns: list[list[Any]], lines: list[int]) -> None:
        self.columns = columns
        self.lines = lines


_TEXT = attrgetter("text")
#: What may follow an end tag's name: its ``>``, or white space before it.
_ENDS = (b">", b" ", b"\t", b"\r", b"\n")
_LINE = attrgetter("sourceline")


class _Batch:
    """Reads the records one feed of the parser completed, all at once, where a few
    XPath queries over their parent (compiled once per layout, run in libxml2) vouch that
    each record is of the usual shape: attributes fields read and no other, child
    elements that are fields' values (each at most once, holding one text or none and
    nothing else: no attribute, element or comment), and only white space (or comments)
    beside them. Such a record is read exactly as :meth:`_Extractor.values`
    reads it, and :meth:`_Accounting.walk` would find nothing to say of it. Records of
    which the queries cannot vouch for every one are read one at a time the general way,
    which reports what is wrong exactly as it always has.

    For layouts whose fields are all a child's text, an attribute of the record, or a
    header value (see :func:`_batch`). The queries run on the records' parent when it
    holds nothing but the last record read before (cleared: no attribute, no child) and
    the records of this feed; they use simple steps only (libxml2 evaluates a predicate
    for each node: ``self::`` tests would cost more than reading the children in Python).
    """

    def __init__(self, plan: list[tuple[str, Any]], check: Any, children: Any, attrs: Any):
        #: Per field: ("child", (texts query, elements query)), ("self", (values query,
        #: attribute)) or ("absolute", (key in the document's header values, its getter,
        #: whether its path goes into a record)).
        self.plan = plan
        #: Whether anything is beside or inside the records that the plan does not read.
        self.check = check
        #: How many elements the records hold, and how many attributes.
        self.children = children
        self.attrs = attrs

    def read(
        self,
        parent: etree._Element,
        found: list[etree._Element],
        absolute: dict[str, str | FieldValueError],
    ) -> list[list[Any]] | None:
        """The values of ``found`` (its parent's children but the first), or None (the
        queries cannot vouch for every record: read them one at a time)."""
        n = len(found)
        if self.check(parent):
            return None
        header: dict[str, str | None] = {}
        for kind, what in self.plan:
            if kind != "absolute":
                continue
            key, getter, inside = what
            known = absolute.get(key)
            if type(known) is str:
                header[key] = known
                continue
            if known is not None or inside:
                return None  # (a problem, reported the general way; a path into a record)
            # Not found yet: what the general way would find for each of these records
            # (the document's tree is the same for all of them; a value found is kept,
            # as the general way keeps it).
            try:
                value = getter.get(found[0])
            except FieldValueError:
                return None  # (the general way reports it, once)
            if value is not None:
                absolute[key] = value
            header[key] = value
        columns: list[list[Any]] = []
        children = attrs = 0
        for kind, what in self.plan:
            if kind == "absolute":
                columns.append([header[what[0]]] * n)
                continue
            if kind == "child":
                texts, elements = what
                values = texts(parent)
                if len(values) != n:
                    # (an empty element has no text node; an absent one no element)
                    nodes = elements(parent)
                    if len(nodes) == n:
                        values = [t or "" for t in map(_TEXT, nodes)]
                    else:
                        index = {id(e): i for i, e in enumerate(found)}
                        values = [None] * n
                        for node in nodes:
                            values[index[id(node.getparent())]] = node.text or ""
                        children += len(nodes) - n  # (added back below)
                children += n
            else:
                query, attr = what
                values = query(parent)
                attrs += len(values)
                if len(values) != n:
                    values = [e.get(attr) for e in found]
            columns.append(values)
        if self.children(parent) != children or self.attrs(parent) != attrs:
            return None  # an element or an attribute no field reads
        return columns


def _batch(layout: Layout) -> _Batch | None:
    """The batch reader of a ``rows`` layout, or None when a field is read some other
    way (a longer path, ``multiple = "all"``, a record's own text, a child's attribute)
    or the layout says something of the children fields read (``unknown_in``)."""
    opts = layout.xml
    assert opts is not None
    if layout.shape != "rows" or layout.groups:
        return None
    account = _accounting(layout)
    record = account.record
    if record.value:
        return None
    extract = _Extractor(layout.fields, opts.namespaces)
    prefixes: dict[str, str] = {}

    def name(tag: str) -> str:
        uri = _ns(tag)
        if not uri:
            return tag
        prefix = prefixes.setdefault(uri, f"p{len(prefixes)}")
        return f"{prefix}:{_local(tag)}"

    records = _records_steps(opts)
    wanted: list[tuple[str, str]] = []
    getters: dict[str, tuple[_Getter, bool]] = {}
    for spec, getter, kind, tag in extract.plan:
        node = record.children.get(tag) if kind == "child" and tag is not None else None
        if kind == "absolute" and tag is not None:
            wanted.append(("absolute", tag))
            steps = _split(spec.key, opts.namespaces)[1]
            getters[tag] = (getter, steps[: len(records)] == records)
        elif (
            node is not None
            and getter.attr is None
            and node.value
            and node.policy is None
            and not node.attrs
            and not node.attr_policy
            and node.kind is None
            and not node.single
            and ("child", tag) not in wanted
        ):
            wanted.append(("child", tag or ""))
        elif kind == "self" and getter.attr is not None and ("self", getter.attr) not in wanted:
            wanted.append(("self", getter.attr))
        else:
            return None
    plan: list[tuple[str, Any]] = []
    try:
        names = {what: name(what) for kind, what in wanted if kind != "absolute"}
        ns = {prefix: uri for uri, prefix in prefixes.items()}
        # (processing instructions are not there: the parser removes them; a comment
        # among a record's children is passed over by the general way too)
        problems = [
            "*/text()[normalize-space()]",
            "*/*/*",
            "*/*/comment()",
            "*/*/@*",
            "*/*/text()[2]",
            "text()[normalize-space()]",
            *(f"*/{names[what]}[2]" for kind, what in wanted if kind == "child"),
        ]
        check = etree.XPath(" or ".join(problems), namespaces=ns)
        for kind, what in wanted:
            if kind == "absolute":
                plan.append((kind, (what, *getters[what])))
            elif kind == "child":
                texts = etree.XPath(f"*/{names[what]}/text()", namespaces=ns, smart_strings=False)
                elements = etree.XPath(f"*/{names[what]}", namespaces=ns)
                plan.append((kind, (texts, elements)))
            else:
                query = etree.XPath(f"*/@{names[what]}", namespaces=ns, smart_strings=False)
                plan.append((kind, (query, what)))
    except etree.XPathError:  # (a name XPath cannot say)
        return None
    return _Batch(plan, check, etree.XPath("count(*/*)"), etree.XPath("count(*/@*)"))


_batches = per_layout(_batch)


class XmlCodec:
    """The XML codec."""

    def __init__(self, *, batches: bool = True) -> None:
        #: Whether the columnar path reads runs of records of the usual shape at once
        #: (:class:`_Batch`; else one at a time, the general way).
        self.batches = batches

    # ------------------------------------------------------------------ reading

    def records(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report
    ) -> Iterator[Record]:
        opts = layout.xml
        assert opts is not None  # the layout model requires [xml] for the xml codec
        ns = opts.namespaces
        head = _Extractor(layout.fields, ns)
        lines = _Extractor(layout.line_fields, ns)
        absolute: dict[str, str | FieldValueError] = {}  # header values of this document
        shown, numbered = _records_path(layout)
        line_path = "/".join(p for p in (opts.lines, opts.line) if p)
        line_shown = "/".join(_local(_clark(p, ns)) for p in line_path.split("/"))
        groups = {
            g.name: (
                g,
                _Extractor(g.fields, ns),
                "/".join(_local(_clark(p, ns)) for p in g.path.split("/")),
            )
            for g in layout.groups
        }
        for item in self._walk(stream, layout, origin, report):
            assert type(item) is tuple  # (no batch reader: one record at a time)
            element, number = item
            path = f"{shown}[{number}]" if numbered else shown
            where = f"line {element.sourceline} {path}"
            failed: set[str] = set()
            values = head.typed(head.values(element, absolute), where, report, failed)
            found: list[Record] = []
            if layout.shape == "nested":
                for j, line in enumerate(element.findall(line_path, namespaces=ns), start=1):
                    at = f"line {line.sourceline} {path}/{line_shown}[{j}]"
                    line_failed: set[str] = set()
                    line_values = lines.typed(lines.values(line, absolute), at, report, line_failed)
                    below = (
                        self._groups(
                            line, f"{path}/{line_shown}[{j}]", "lines", groups, ns, absolute, report
                        )
                        if groups
                        else {}
                    )
                    found.append(Record(at, line_values, failed=line_failed, groups=below))
                if len(found) < layout.min_lines:
                    report.add(
                        where,
                        line_path,
                        "lines",
                        None,
                        few_lines(len(found), layout.min_lines, f"<{line_shown}>"),
                    )
            held = (
                self._groups(element, path, "record", groups, ns, absolute, report)
                if groups
                else {}
            )
            yield Record(where, values, found, failed=failed, groups=held)

    def _groups(
        self,
        element: etree._Element,
        path: str,
        level: str,
        groups: dict[str, tuple[GroupSpec, _Extractor, str]],
        ns: dict[str, str],
        absolute: dict[str, str | FieldValueError],
        report: Report,
    ) -> dict[str, list[Record]]:
        """The items of each group ``level``'s element (at ``path``) holds, and theirs."""
        out: dict[str, list[Record]] = {}
        for name, (group, extract, shown) in groups.items():
            if group.under != level:
                continue
            items: list[Record] = []
            for j, item in enumerate(element.findall(group.path, namespaces=ns), start=1):
                item_path = f"{path}/{shown}[{j}]"
                at = f"line {item.sourceline} {item_path}"
                failed: set[str] = set()
                values = extract.typed(extract.values(item, absolute), at, report, failed)
                below = self._groups(item, item_path, name, groups, ns, absolute, report)
                items.append(Record(at, values, failed=failed, groups=below))
            problem = group_count(group, len(items))
            if problem:
                report.add(f"line {element.sourceline} {path}", group.path, "group", None, problem)
            out[name] = items
        return out

    def chunks(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report
    ) -> Iterator[Chunk]:
        """The records (of a ``rows`` layout) ``CHUNK_RECORDS`` at a time as columns of
        raw text, each value read as :meth:`records` reads it (the columnar fast path)."""
        return self._chunks(stream, layout, origin, report, native=False)

    def fast_chunks(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report
    ) -> Iterator[Chunk]:
        """As :meth:`chunks`, each chunk of plain text also as Arrow columns (for
        :mod:`xchange.codecs.arrow`). Never starts over: what it reads is what
        :meth:`chunks` reads."""
        return self._chunks(stream, layout, origin, report, native=True)

    def _chunks(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report, *, native: bool
    ) -> Iterator[Chunk]:
        opts = layout.xml
        assert opts is not None and layout.shape == "rows"
        extract = _Extractor(layout.fields, opts.namespaces)
        batch = _batches(layout) if self.batches else None
        keys = [f.key for f in layout.fields]
        absolute: dict[str, str | FieldValueError] = {}
        # Records read one at a time wait as rows (tuples of texts: the collector stops
        # following them, where it would follow a list every time it runs while the
        # chunk is read); records read in a batch come as columns.
        rows: list[tuple[Any, ...]] = []
        columns: list[list[Any]] = [[] for _ in keys]
        lines: list[int] = []
        offset = 0
        extract.clean = True
        path = _records_path(layout)

        def flush() -> None:
            # (column by column: ``zip(*rows)`` would hold an iterator per row, which the
            # collector then follows as long-lived, and so looks at everything more often)
            for i, column in enumerate(columns):
                column.extend(map(itemgetter(i), rows))
            rows.clear()

        for item in self._walk(stream, layout, origin, report, batch, absolute):
            if type(item) is _Rows:
                flush()
                for column, values in zip(columns, item.columns, strict=True):
                    column.extend(values)
                lines.extend(item.lines)
            else:
                element = item[0]  # type: ignore[index]
                rows.append(tuple(extract.values(element, absolute)))
                lines.append(element.sourceline)
            while len(lines) >= CHUNK_RECORDS:
                flush()
                cut = [column[:CHUNK_RECORDS] for column in columns]
                yield self._chunk(extract, keys, cut, lines[:CHUNK_RECORDS], path, offset, native)
                columns = [column[CHUNK_RECORDS:] for column in columns]
                del lines[:CHUNK_RECORDS]
                offset += CHUNK_RECORDS
                extract.clean = True
        flush()
        if lines:
            yield self._chunk(extract, keys, columns, lines, path, offset, native)

    @staticmethod
    def _chunk(
        extract: _Extractor,
        keys: list[str],
        columns: list[list[Any]],
        lines: list[int],
        path: tuple[str, bool],
        offset: int,
        native: bool,
    ) -> Chunk:
        shown, numbered = path

        def typed(report: Report) -> Iterator[Record]:
            rows = zip(*columns, strict=True) if columns else ((),) * len(lines)
            for i, (values, line) in enumerate(zip(rows, lines, strict=True), start=offset + 1):
                where = f"line {line} {shown}[{i}]" if numbered else f"line {line} {shown}"
                failed: set[str] = set()
                yield Record(where, extract.typed(values, where, report, failed), failed=failed)

        arrow = None
        if native and extract.clean:
            from xchange.codecs.arrow import text_block

            block = text_block(columns, len(lines))
            if block is not None:
                arrow = (block, {key: i for i, key in enumerate(keys)})
        return Chunk(
            dict(zip(keys, columns, strict=True)), len(lines), offset, extract.clean, typed, arrow
        )

    def _walk(
        self,
        stream: BinaryIO,
        layout: Layout,
        origin: str,
        report: Report,
        batch: _Batch | None = None,
        absolute: dict[str, str | FieldValueError] | None = None,
    ) -> Iterator[tuple[etree._Element, int] | _Rows]:
        """Each record element with its number (from 1), in document order; cleared (and its
        read siblings dropped) once the consumer asks for the next, so memory stays flat.
        With a ``batch`` reader, the records of a run it vouches for come as one
        :class:`_Rows` instead (read, accounted for, and dropped).

        Only the records' own end events reach Python (a pull parser with ``tag=``); the
        root is checked from the prolog, and a record's ancestors against the records path.
        """
        opts = layout.xml
        assert opts is not None
        text = _reading(stream, layout, origin, report)
        if opts.xsd:
            start = stream.tell()
            self._validate_xsd(text, layout, opts, origin, report)
            if report:
                return
            stream.seek(start)
            text = _reading(stream, layout, origin, Report(origin))
        steps = _records_steps(opts)
        if _refuse_doctype(text, origin, "utf-8") != steps[0]:
            self._nothing_found(text, layout, steps, origin, report)  # raises: the root
            return
        parser = etree.XMLPullParser(
            events=("end",), tag=steps[-1], encoding="utf-8", **PARSER_OPTIONS
        )
        above = steps[-2::-1]
        count = 0
        account = _accounting(layout)
        record_tag = steps[-1]
        #: The last parent found to be on the records path (records are siblings: their
        #: ancestors are checked once; lxml gives a live element the same object).
        placed: etree._Element | None = None
        #: The last record read (cleared, its parent's first child while it is there).
        last: etree._Element | None = None
        root: etree._Element | None = None
        done = False
        #: The records' end tag as the document writes it (``b"</w:Line"``): each feed
        #: ends after the last one in it, so that the records it completes are all there
        #: is in their parent but the last one read before (see :class:`_Batch`). (Read
        #: one at a time or not, the feeds end at the same places: what is read of the
        #: document when a record is, header values after the records included, too.)
        marker: bytes | None = None
        pending = b""
        try:
            while not done:
                more = text.read(FEED)
                data, pending = pending + more, b""
                if more and marker is not None:
                    cut = data.rfind(marker)
                    while cut >= 0 and data[cut + len(marker) : cut + len(marker) + 1] not in _ENDS:
                        cut = data.rfind(marker, 0, cut)  # (``</LineItem``, or cut short)
                    close = data.find(b">", cut) if cut >= 0 else -1
                    if close >= 0:
                        data, pending = data[: close + 1], data[close + 1 :]
                if data:
                    parser.feed(data)
                else:
                    root, done = parser.close(), True
                found = [element for _, element in parser.read_events()]
                if (
                    batch is not None
                    and absolute is not None
                    and placed is not None
                    and last is not None
                    and found
                    and len(placed) == len(found) + 1
                    and placed[:] == [last, *found]
                ):
                    columns = batch.read(placed, found, absolute)
                    if columns is not None:
                        count += len(found)
                        yield _Rows(columns, list(map(_LINE, found)))
                        last = found[-1]
                        last.clear(keep_tail=True)
                        del placed[: len(found)]
                        continue
                for element in found:
                    node = element
                    parent = element.getparent()
                    if parent is not None and parent is placed:
                        above_ok = True
                    else:
                        above_ok = False
                        for tag in above:
                            node = node.getparent()
                            if node is None or node.tag != tag:
                                break
                        else:
                            above_ok = node.getparent() is None
                            if above_ok:
                                placed = parent
                    if not above_ok:
                        continue
                    count += 1
                    account.walk(
                        element, account.record, account.record_policy, account.shown, report
                    )
                    yield element, count
                    element.clear(keep_tail=True)
                    last = element
                    if marker is None:
                        prefix = element.prefix
                        local = _local(record_tag)
                        end = f"</{prefix}:{local}" if prefix else f"</{local}"
                        marker = end.encode("utf-8")
                    parent = element.getparent()
                    while element.getprevious() is not None:
                        first = parent[0]
                        tail = first.tail
                        if first.tag != record_tag or (tail and tail.strip(_XML_SPACE)):
                            account.dropped(first, report)
                        del parent[0]
            account.finish(root, report)
        except etree.XMLSyntaxError as exc:
            raise _syntax_error(origin, exc) from None
        if count == 0:
            self._nothing_found(text, layout, steps, origin, report)

    @staticmethod
    def _nothing_found(
        text: Any, layout: Layout, steps: list[str], origin: str, report: Report
    ) -> None:
        """The records path matched nothing: read the document again, element by element,
        to say where the path stops matching (or that the root is another element).

        Raises:
            DecodeError: the root is not the layout's, or the document is not well-formed.
        """
        text.seek(0)
        shown = "/" + "/".join(_local(t) for t in steps)
        stack: list[str] = []
        #: Children seen under each matched prefix of the records path.
        seen: list[list[str]] = [[] for _ in steps]
        for event, element in iter_elements(text, origin, encoding="utf-8"):
            if event == "end":
                stack.pop()
                element.clear(keep_tail=True)
                continue
            if not stack and element.tag != steps[0]:
                raise DecodeError(
                    f"{origin}: line {element.sourceline}: root element is "
                    f"<{_local(element.tag)}>, layout {layout.name} expects "
                    f"<{_local(steps[0])}>"
                )
            depth = len(stack)
            if 0 < depth < len(steps) and stack == steps[:depth]:
                names = seen[depth]
                if len(names) < 10 and element.tag not in names:
                    names.append(element.tag)
            stack.append(element.tag)
        depth = 1
        while depth < len(steps) and steps[depth] in seen[depth]:
            depth += 1
        if depth >= len(steps):
            return  # (cannot happen: the path would have matched)
        if depth == len(steps) - 1 and not seen[depth]:
            return  # the records' element is there and empty: nothing to do (as [] in JSON)
        found = ", ".join(f"<{_local(t)}>" for t in seen[depth]) or "nothing"
        under = "/" + "/".join(_local(t) for t in steps[:depth])
        report.add(
            "line 1",
            "(records)",
            "records",
            None,
            f"the records path {shown} matches nothing in this document: under {under} "
            f"there is no <{_local(steps[depth])}> (found {found})",
        )

    @staticmethod
    def _validate_xsd(
        stream: BinaryIO, layout: Layout, opts: XmlOptions, origin: str, report: Report
    ) -> None:
        """Validate against the layout's XSD (this needs the whole tree in memory)."""
        assert opts.xsd is not None
        xsd_path = Path(layout.source_file).parent / opts.xsd
        try:
            schema = etree.XMLSchema(etree.parse(str(xsd_path), hardened_parser()))
        except (OSError, etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
            raise MappingError(f"{xsd_path}: cannot load the XSD: {exc}") from None
        _refuse_doctype(stream, origin, "utf-8")
        try:
            doc = etree.parse(stream, etree.XMLParser(encoding="utf-8", **PARSER_OPTIONS))
        except etree.XMLSyntaxError as exc:
            raise _syntax_error(origin, exc) from None
        if not schema.validate(doc):
            for err in schema.error_log:
                report.add(f"line {err.line}", err.path or "(document)", "xsd", None, err.message)

    # ------------------------------------------------------------------ writing

    def write(self, docs: Iterable[Document], layout: Layout, origin: str, out: Any) -> int:
        opts = layout.xml
        assert opts is not None  # the layout model requires [xml] for the xml codec
        nsmap = {None: opts.namespace} if opts.namespace else None
        encoder = Encoder(layout.encoding, origin)
        out.write(encoder(f'<?xml version="1.0" encoding="{layout.encoding.upper()}"?>\n'))
        count = 0
        if not opts.batch_root:
            for doc in docs:
                if count:
                    raise MappingError(
                        f"{origin}: several documents for one XML file, "
                        f"but layout {layout.name} has no batch_root"
                    )
                element = self._document(doc, layout, opts, nsmap)
                if opts.indent:
                    etree.indent(element, space=opts.indent)
                out.write(encoder(etree.tostring(element, encoding="unicode") + "\n"))
                count += 1
            out.write(encoder("", final=True))
            return count
        root = etree.Element(self._q(opts, opts.batch_root), nsmap=nsmap)
        head, _, _ = etree.tostring(root, encoding="unicode").rpartition("/>")
        out.write(encoder(head + ">\n"))
        for doc in docs:
            element = self._document(doc, layout, opts, nsmap)
            if opts.indent:
                etree.indent(element, space=opts.indent, level=1)
            out.write(encoder(opts.indent + etree.tostring(element, encoding="unicode") + "\n"))
            count += 1
        out.write(encoder(f"</{head[1:].split()[0]}>\n", final=True))
        return count

    @staticmethod
    def _q(opts: XmlOptions, name: str) -> str:
        return _clark(name, opts.namespaces, opts.namespace)

    def _document(
        self, doc: Document, layout: Layout, opts: XmlOptions, nsmap: Any
    ) -> etree._Element:
        root = etree.Element(self._q(opts, opts.root), nsmap=nsmap)
        self._fields(root, layout.fields, doc.header, opts)
        if layout.shape == "nested":
            parent = etree.SubElement(root, self._q(opts, opts.lines)) if opts.lines else root
            for line in doc.lines:
                element = etree.SubElement(parent, self._q(opts, opts.line or "Line"))
                self._fields(element, layout.line_fields, line, opts)
                self._groups_out(element, layout, "lines", line, opts)
        self._groups_out(root, layout, "record", doc.header, opts)
        return root

    def _groups_out(
        self,
        element: etree._Element,
        layout: Layout,
        level: str,
        values: dict[str, Any],
        opts: XmlOptions,
    ) -> None:
        """The groups ``level``'s element holds, after its fields (and lines): each
        group's enclosing elements once (also when it has no item), then its items."""
        for group in layout.children(level):
            *outer, item_tag = group.path.split("/")
            parent = element
            for step in outer:
                # One enclosing element: the one a field (or the lines) wrote, if any.
                tag = self._q(opts, step)
                found = parent.find(tag)
                parent = found if found is not None else etree.SubElement(parent, tag)
            for item in values.get(group.name) or ():
                node = etree.SubElement(parent, self._q(opts, item_tag))
                self._fields(node, group.fields, item, opts)
                self._groups_out(node, layout, group.name, item, opts)

    def _fields(
        self,
        parent: etree._Element,
        specs: list[FieldSpec],
        values: dict[str, Any],
        opts: XmlOptions,
    ) -> None:
        for spec in specs:
            text = spec.render(values.get(spec.name))
            node_path, _, attr = spec.key.partition("@")
            node = parent
            for step in [s for s in node_path.split("/") if s and s != "."]:
                tag = self._q(opts, step)
                last = node[-1] if len(node) else None
                # Consecutive fields under the same path share one element.
                node = last if last is not None and last.tag == tag else etree.SubElement(node, tag)
            try:
                if attr:
                    node.set(_clark(attr, opts.namespaces), text)
                else:
                    node.text = text
            except ValueError as exc:  # control characters XML cannot carry
                raise MappingError(f"field {spec.name}: {exc}") from None

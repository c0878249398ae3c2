"""XML through lxml (the only module that imports it), hardened.

The parser resolves no entities, loads no DTD, touches no network and no local file,
and keeps libxml2's limits on (``huge_tree=False``). A document that carries a DOCTYPE
is refused at its first element: with entity resolution off, a hostile DTD would
otherwise pass through as data. Records are streamed with ``iterparse`` and cleared
once read, so memory stays flat however long the file is.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from lxml import etree

from xchange.codecs.text import Encoder
from xchange.errors import DecodeError, MappingError
from xchange.layout import FieldSpec, Layout, XmlOptions, parse_field
from xchange.mapping import Document, Record
from xchange.report import Report

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

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        self.found = f"<!DOCTYPE {name}{' PUBLIC ' + pubid if pubid else ''}" + (
            f" SYSTEM {system}>" if system else ">"
        )
        raise self.Done

    def start(self, tag: str, attrib: Any) -> None:
        raise self.Done

    def close(self) -> None:
        return None


def _refuse_doctype(stream: BinaryIO, origin: str) -> None:
    """Look at the prolog only; refuse a DOCTYPE before any tree or entity exists."""
    prolog = _Prolog()
    parser = etree.XMLParser(target=prolog, **PARSER_OPTIONS)
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


def iter_elements(
    stream: BinaryIO, origin: str, *, allow_doctype: bool = False
) -> Iterator[tuple[str, etree._Element]]:
    """Stream ``(event, element)`` pairs; refuse a DOCTYPE unless told otherwise.

    Raises:
        DecodeError: not well-formed, or a DOCTYPE (with the line).
    """
    if not allow_doctype:
        _refuse_doctype(stream, origin)
    events = etree.iterparse(stream, events=("start", "end"), **PARSER_OPTIONS)
    found = False
    try:
        for event, element in events:
            found = True
            yield event, element
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(origin, exc) from None
    if not found:
        raise DecodeError(f"{origin}: the file holds no XML element")


def check_well_formed(data: bytes, origin: str, *, allow_doctype: bool = False) -> None:
    """Parse a whole document without keeping it (conformance checks and validation)."""
    for event, element in iter_elements(io.BytesIO(data), origin, allow_doctype=allow_doctype):
        if event == "end":
            element.clear(keep_tail=True)


def _get(element: etree._Element, path: str, ns: dict[str, str]) -> str | None:
    """Text at ``a/b`` or attribute at ``a/@c`` / ``@c`` below ``element``; a path that
    starts with ``/`` is taken from the document's root (header values for line-level
    records). None: absent."""
    node_path, _, attr = path.partition("@")
    node_path = node_path.rstrip("/")
    node: etree._Element | None = element
    if node_path.startswith("/"):
        root = element.getroottree().getroot()
        first, _, rest = node_path.strip("/").partition("/")
        if root.tag != _clark(first, ns):
            return None
        node = root if not rest else root.find(rest, namespaces=ns)
    elif node_path:
        node = element.find(node_path, namespaces=ns)
    if node is None:
        return None
    if attr:
        value: str | None = node.get(_clark(attr, ns))
        return value
    return node.text or ""


def _cached(
    element: etree._Element, path: str, ns: dict[str, str], absolute: dict[str, str]
) -> str | None:
    """``_get``, with the values at absolute paths (a document's header, the same for
    every line-level record) looked up once per document."""
    if not path.startswith("/"):
        return _get(element, path, ns)
    if path not in absolute:
        found = _get(element, path, ns)
        if found is None:
            return None  # maybe later in the document: look again next time
        absolute[path] = found
    return absolute[path]


def _local(tag: object) -> str:
    """The local part of a tag in Clark notation, for messages (whatever the tag holds)."""
    return str(tag).rpartition("}")[2]


class XmlCodec:
    """The XML codec."""

    # ------------------------------------------------------------------ reading

    def records(
        self, stream: BinaryIO, layout: Layout, origin: str, report: Report
    ) -> Iterator[Record]:
        opts = layout.xml
        assert opts is not None  # the layout model requires [xml] for the xml codec
        if opts.xsd:
            self._validate_xsd(stream, layout, opts, origin, report)
            if report:
                return
        ns = opts.namespaces
        steps = [_clark(s, ns) for s in (opts.records or f"/{opts.root}").strip("/").split("/")]
        shown = "/" + "/".join(_local(t) for t in steps)
        count = 0
        stack: list[str] = []
        absolute: dict[str, str] = {}  # header values by absolute path, for this document
        for event, element in iter_elements(stream, origin):
            if event == "start":
                if not stack and element.tag != steps[0]:
                    raise DecodeError(
                        f"{origin}: line {element.sourceline}: root element is "
                        f"<{_local(element.tag)}>, layout {layout.name} expects "
                        f"<{_local(steps[0])}>"
                    )
                stack.append(element.tag)
                continue
            if stack == steps:
                count += 1
                where = shown if len(steps) == 1 else f"{shown}[{count}]"
                yield self._record(element, where, layout, opts, report, absolute)
                element.clear(keep_tail=True)
                while element.getprevious() is not None:
                    del element.getparent()[0]
            stack.pop()

    def _record(
        self,
        element: etree._Element,
        path: str,
        layout: Layout,
        opts: XmlOptions,
        report: Report,
        absolute: dict[str, str],
    ) -> Record:
        ns = opts.namespaces
        where = f"line {element.sourceline} {path}"
        values = {
            f.name: parse_field(f, _cached(element, f.key, ns, absolute), where, report)
            for f in layout.fields
        }
        lines: list[Record] = []
        if layout.shape == "nested":
            line_path = "/".join(p for p in (opts.lines, opts.line) if p)
            shown = "/".join(_local(_clark(p, ns)) for p in line_path.split("/"))
            for j, line in enumerate(element.findall(line_path, namespaces=ns), start=1):
                at = f"line {line.sourceline} {path}/{shown}[{j}]"
                line_values = {
                    f.name: parse_field(f, _cached(line, f.key, ns, absolute), at, report)
                    for f in layout.line_fields
                }
                lines.append(Record(at, line_values))
        return Record(where, values, lines)

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
        _refuse_doctype(stream, origin)
        start = stream.tell()
        try:
            doc = etree.parse(stream, hardened_parser())
        except etree.XMLSyntaxError as exc:
            raise _syntax_error(origin, exc) from None
        finally:
            stream.seek(start)
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
        return root

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
            for step in [s for s in node_path.split("/") if s]:
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

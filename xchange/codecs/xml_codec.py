"""XML through lxml, hardened: no entities resolved, no DTD loaded, no network.

A document that carries a DOCTYPE is refused before parsing: with entity
resolution off, a hostile DTD would otherwise pass through as data.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from xchange.codecs.text import encode
from xchange.errors import DecodeError, MappingError
from xchange.layout import FieldSpec, Layout, XmlOptions
from xchange.mapping import Document, Record
from xchange.report import Report


def hardened_parser() -> etree.XMLParser:
    """The only XML parser xchange uses."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=True,
    )


def _qname(opts: XmlOptions, name: str) -> str:
    return f"{{{opts.namespace}}}{name}" if opts.namespace else name


class XmlCodec:
    """The XML codec."""

    def read(self, data: bytes, layout: Layout, origin: str, report: Report) -> list[Record]:
        raise DecodeError(f"{origin}: reading XML documents is not available yet")

    def write(self, docs: list[Document], layout: Layout, origin: str) -> bytes:
        opts = layout.xml
        assert opts is not None  # the layout model requires [xml] for the xml codec
        nsmap = {None: opts.namespace} if opts.namespace else None
        elements = [self._document(doc, layout, opts, nsmap) for doc in docs]
        if opts.batch_root:
            root = etree.Element(_qname(opts, opts.batch_root), nsmap=nsmap)
            root.extend(elements)
        elif len(elements) == 1:
            root = elements[0]
        else:
            raise MappingError(
                f"{origin}: {len(elements)} documents for one XML file, "
                f"but layout {layout.name} has no batch_root"
            )
        if opts.indent:
            etree.indent(root, space=opts.indent)
        text = etree.tostring(root, encoding="unicode")
        declaration = f'<?xml version="1.0" encoding="{layout.encoding.upper()}"?>\n'
        return encode(declaration + text + "\n", layout.encoding, origin)

    def _document(
        self, doc: Document, layout: Layout, opts: XmlOptions, nsmap: Any
    ) -> etree._Element:
        root = etree.Element(_qname(opts, opts.root), nsmap=nsmap)
        self._fields(root, layout.fields, doc.header, opts)
        if layout.shape == "nested":
            parent = etree.SubElement(root, _qname(opts, opts.lines)) if opts.lines else root
            for line in doc.lines:
                element = etree.SubElement(parent, _qname(opts, opts.line or "Line"))
                self._fields(element, layout.line_fields, line, opts)
        return root

    @staticmethod
    def _fields(
        parent: etree._Element, specs: list[FieldSpec], values: dict[str, Any], opts: XmlOptions
    ) -> None:
        for spec in specs:
            child = etree.SubElement(parent, _qname(opts, spec.key))
            try:
                child.text = spec.render(values.get(spec.name))
            except ValueError as exc:  # control characters XML cannot carry
                raise MappingError(f"field {spec.name}: {exc}") from None
